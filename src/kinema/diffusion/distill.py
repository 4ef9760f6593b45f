"""Few-step distillation as piecewise rectified flow (PeRFlow, Yan et al. 2024; reflow, Liu et al. 2023).

A teacher samples by N Euler steps from flow time 1 to 0. Cut its schedule into K windows of N / K steps and
keep the teacher's latents at the K + 1 window boundaries, s_0 (noise) .. s_K (the video), at times
tau_0 = 1 > .. > tau_K = 0. Inside window j the student learns the straight line between the boundaries: at
x_t = s_j + u (s_{j+1} - s_j), t = tau_j + u (tau_{j+1} - tau_j) (u in [0, 1)) its velocity target is the
window's slope (s_{j+1} - s_j) / (tau_{j+1} - tau_j). A student that fits it reaches the teacher's boundaries
with one Euler step a window: K steps in all, on the same schedule (the K-step schedule's times are every
(N / K)-th of the N-step one's). The teacher's trajectories are recorded with its guidance, so the student
needs one pass a step where the teacher needed two (guidance folded in).

The student keeps the teacher's architecture and the plain Euler sampler, so the same recipe serves any
velocity model: kinema's DiT, a Wan transformer, joint sampling of all latent frames, or frame-by-frame
sampling with a frame cache, where every frame gets its own window and point (each frame's denoising from noise
to clean, given the frames before it, is what takes K steps).
"""

from __future__ import annotations

import torch


def window_boundaries(steps: int, windows: int) -> list[int]:
    """The step indices 0, N/K, 2N/K, .., N at which a teacher's N-step trajectory is kept for K windows."""
    if windows < 1 or steps < windows or steps % windows:
        raise ValueError(f"{steps} teacher steps cannot be cut into {windows} windows (need a multiple)")
    every = steps // windows
    return list(range(0, steps + 1, every))


def sample_points(batch: int, frames: int, windows: int, generator: torch.Generator, per_frame: bool,
                  boundary: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A window (B, F') long and a place u in it (B, F') in [0, 1) for every latent frame: one draw per clip
    (joint sampling), or per frame (frame by frame). With probability ``boundary`` u is 0, a window's start,
    where the K-step sampler evaluates the student."""
    columns = frames if per_frame else 1
    window = torch.randint(0, windows, (batch, columns), generator=generator)
    u = torch.rand(batch, columns, generator=generator)
    u = torch.where(torch.rand(batch, columns, generator=generator) < boundary, torch.zeros_like(u), u)
    return window.expand(batch, frames), u.expand(batch, frames)


def window_point(states: torch.Tensor, times: torch.Tensor, window: torch.Tensor,
                 u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's input and target at a place in a window.

    states: (B, K + 1, C, F', H, W) the teacher's latents at the window boundaries; times: (B, K + 1) their flow
    times, from 1 down; window, u: (B, F'). Returns x_t (B, C, F', H, W), t (B, F') and the window's slope
    (B, C, F', H, W), the velocity that carries x_t to the window's end in a straight line."""
    b, _, c, f, h, w = states.shape
    index = window[:, None, None, :, None, None].expand(b, 1, c, f, h, w)
    start = states.gather(1, index)[:, 0]  # (B, C, F', H, W)
    end = states.gather(1, index + 1)[:, 0]
    t0, t1 = times.gather(1, window), times.gather(1, window + 1)  # (B, F')
    slope = (end - start) / (t1 - t0)[:, None, :, None, None]
    x = start + u[:, None, :, None, None] * (end - start)
    return x, t0 + u * (t1 - t0), slope
