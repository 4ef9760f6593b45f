"""Rectified-flow training objective with a noise level per latent frame.

The path is x_t = (1 - t) x_0 + t ε and the model regresses the velocity v = ε - x_0
(Lipman et al. 2023; Liu et al. 2023). t is drawn logit-normal (Esser et al. 2024, SD3) and then
shifted toward noise by a factor that grows with the token count, because larger videos keep more
signal at a given t.

Every latent frame has its own t. Known frames (an input image, the context of an extension,
the other end of a connection) enter clean with t = 0 and are excluded from the loss. Training
draws random conditioning masks so that one model serves every mode, and sometimes independent
per-frame levels, as in diffusion forcing (Chen et al. 2024), so that context may itself be noisy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

MASK_MODES = ("none", "first", "first_k", "last_k", "first_last", "forcing")


@dataclass
class FlowConfig:
    logit_mean: float = 0.0
    logit_std: float = 1.0
    base_shift: float = 1.0  # shift at base_tokens
    max_shift: float = 3.0  # shift at max_tokens (interpolated in log space, clamped)
    base_tokens: int = 64
    max_tokens: int = 4096
    # Probability of each conditioning mode during training.
    mask_probs: dict[str, float] = field(default_factory=lambda: {
        "none": 0.4, "first": 0.2, "first_k": 0.15, "last_k": 0.1, "first_last": 0.05, "forcing": 0.1})
    context_noise_max: float = 0.0  # known frames may carry up to this much noise (0: always clean)

    def __post_init__(self) -> None:
        unknown = set(self.mask_probs) - set(MASK_MODES)
        if unknown:
            raise ValueError(f"unknown mask modes {sorted(unknown)} (allowed: {', '.join(MASK_MODES)})")
        if any(p < 0 for p in self.mask_probs.values()) or sum(self.mask_probs.values()) <= 0:
            raise ValueError("mask_probs must be non-negative with a positive sum")


def shift_for_tokens(tokens: int, config: FlowConfig) -> float:
    """Timestep shift for a latent with this many patch tokens (log-linear between the two ends)."""
    lo, hi = math.log(config.base_tokens), math.log(config.max_tokens)
    frac = min(max((math.log(max(tokens, 1)) - lo) / (hi - lo), 0.0), 1.0)
    return math.exp(math.log(config.base_shift) + frac * (math.log(config.max_shift) - math.log(config.base_shift)))


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Map t in [0, 1] toward 1 (more noise) for shift > 1: s t / (1 + (s - 1) t)."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_times(shape: tuple[int, ...], config: FlowConfig, shift: float, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Logit-normal flow times, shifted."""
    z = torch.randn(shape, generator=generator, device=device) * config.logit_std + config.logit_mean
    return shift_time(torch.sigmoid(z), shift)


def sample_condition(batch: int, frames: int, config: FlowConfig, shift: float,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame times (B, F') and the known-frame mask (B, F') for a training batch.

    Known frames get t = 0 (or a small noise level if ``context_noise_max`` > 0); unknown frames
    share one t per clip, except in "forcing" mode where every frame has its own.
    """
    modes = list(config.mask_probs)
    probs = torch.tensor([config.mask_probs[m] for m in modes], dtype=torch.float64)
    picks = torch.multinomial(probs / probs.sum(), batch, replacement=True, generator=generator)
    known = torch.zeros(batch, frames, dtype=torch.bool)
    clip_t = sample_times((batch, 1), config, shift, generator).expand(batch, frames).clone()
    frame_t = sample_times((batch, frames), config, shift, generator)
    k_draw = torch.randint(1, max(2, frames), (batch,), generator=generator)
    for i in range(batch):
        mode = modes[int(picks[i])]
        k = int(min(k_draw[i], max(frames - 1, 1)))
        if frames == 1:
            continue  # an image: always generated
        if mode == "first":
            known[i, 0] = True
        elif mode == "first_k":
            known[i, :k] = True
        elif mode == "last_k":
            known[i, frames - k:] = True
        elif mode == "first_last":
            known[i, 0] = known[i, -1] = True
        elif mode == "forcing":
            clip_t[i] = frame_t[i]
    t = torch.where(known, torch.zeros_like(clip_t), clip_t)
    if config.context_noise_max > 0:
        noise_level = torch.rand(batch, frames, generator=generator) * config.context_noise_max
        t = torch.where(known, noise_level, t)
    return t, known


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t ε with t per frame: x0, noise (B, C, F', H', W'); t (B, F')."""
    t = t[:, None, :, None, None].to(x0.dtype)
    return (1.0 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def flow_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean squared velocity error over the unknown frames only. known: (B, F') bool."""
    err = (prediction.float() - velocity_target(x0, noise).float()) ** 2  # (B, C, F', H', W')
    weight = (~known).to(err.dtype)[:, None, :, None, None].expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)
