"""Samplers for flow-matching models.

A sampler is a pure function of ``model(x, t, **extra) -> velocity`` (t per latent frame, shape
(B, F')), a schedule of flow times from 1 (noise) to 0 (data) and a callback. The model never
imports the sampler, and the sampler never imports the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kinema.diffusion.flow import shift_time

Model = Callable[..., torch.Tensor]


def flow_schedule(steps: int, shift: float = 1.0, start: float = 1.0) -> torch.Tensor:
    """steps + 1 flow times from ``start`` down to 0, uniform in t then shifted (as SD3/Wan). On the CPU whatever
    torch's default device: samplers read them as Python numbers, which on a GPU would sync at every step."""
    t = torch.linspace(start, 0.0, steps + 1, dtype=torch.float64, device="cpu")
    return shift_time(t, shift).float()


def guided(model: Model, guidance_scale: float, cond: dict, uncond: dict) -> Model:
    """Classifier-free guidance (Ho & Salimans 2022) with both passes batched together.

    ``cond`` and ``uncond`` are keyword arguments for the model that differ only in the text;
    tensors are concatenated along the batch dimension.
    """
    if guidance_scale == 1.0:
        return lambda x, t, **extra: model(x, t, **cond, **extra)

    merged = {}  # built once, so a model may cache work that depends only on these (the same objects each step)
    for key in cond:
        a, b = cond[key], uncond[key]
        merged[key] = torch.cat([a, b]) if isinstance(a, torch.Tensor) else a

    def both(x: torch.Tensor, t: torch.Tensor, **extra) -> torch.Tensor:
        v = model(torch.cat([x, x]), torch.cat([t, t]), **merged, **extra)
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    return both


def guided_split(model: Model, guidance_scale: float, own: dict,
                 exchange: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> Model:
    """Classifier-free guidance with its two passes in different processes (guidance parallelism): this one runs
    the model with ``own`` (the conditional or the unconditional keyword arguments) and ``exchange(v)`` gives
    (v_cond, v_uncond) from both; every process then takes the same guided step."""

    def one(x: torch.Tensor, t: torch.Tensor, **extra) -> torch.Tensor:
        v_cond, v_uncond = exchange(model(x, t, **own, **extra))
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    return one


def _hold_known(x: torch.Tensor, known: torch.Tensor | None, known_latents: torch.Tensor | None):
    """(x with known frames set, the (B, 1, F', 1, 1) mask or None)."""
    if known is None:
        return x, None
    mask = known[:, None, :, None, None]
    return torch.where(mask, known_latents.to(x.dtype), x), mask


KnownTime = float | torch.Tensor
Callback = Callable[[int, int, torch.Tensor], torch.Tensor | None]


def _after_step(callback: Callback | None, step: int, steps: int, x: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """Call ``callback(step, steps, x)``; latents it returns replace x (known frames stay held)."""
    if callback is None:
        return x
    replaced = callback(step, steps, x)
    if replaced is None:
        return x
    return replaced if mask is None else torch.where(mask, x, replaced.to(x.dtype))


def _frame_times(value: float, x: torch.Tensor, known: torch.Tensor | None, known_time: KnownTime = 0.0,
                 ) -> torch.Tensor:
    """Flow time ``value`` for every latent frame, ``known_time`` (a number, or one per frame, (B, F')) for
    known ones: (B, F')."""
    t = torch.full(x.shape[:1] + x.shape[2:3], value, device=x.device)
    if known is None:
        return t
    held = torch.as_tensor(known_time, dtype=t.dtype, device=t.device).expand_as(t)
    return torch.where(known, held, t)


@torch.no_grad()
def sample_euler(
    model: Model,
    x: torch.Tensor,
    times: torch.Tensor,
    known: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    known_time: KnownTime = 0.0,
) -> torch.Tensor:
    """Euler integration of dx/dt = v from times[0] to times[-1] (Liu et al. 2023, rectified flow).

    x: (B, C, F', H', W') start (noise at times[0]). Frames where ``known`` (B, F') is True are held
    at ``known_latents`` with t = ``known_time`` throughout (0: clean; a number or one per frame, (B, F')),
    so they stay bit-identical. A known time > 0 says those latents carry that much noise (noised context,
    as in diffusion forcing). ``callback(step, steps, x)`` runs after each step; latents it returns replace x.
    """
    extra_args = extra_args or {}
    x, mask = _hold_known(x, known, known_latents)
    steps = len(times) - 1
    for i in range(steps):
        v = model(x, _frame_times(float(times[i]), x, known, known_time), **extra_args)
        x_next = x + (float(times[i + 1]) - float(times[i])) * v
        x = x_next if mask is None else torch.where(mask, x, x_next)
        x = _after_step(callback, i + 1, steps, x, mask)
    return x


@torch.no_grad()
def sample_heun(
    model: Model,
    x: torch.Tensor,
    times: torch.Tensor,
    known: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    known_time: KnownTime = 0.0,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1 without churn); Euler on the last step."""
    extra_args = extra_args or {}
    x, mask = _hold_known(x, known, known_latents)
    steps = len(times) - 1
    for i in range(steps):
        t0, t1 = float(times[i]), float(times[i + 1])
        v0 = model(x, _frame_times(t0, x, known, known_time), **extra_args)
        x_next = x + (t1 - t0) * v0
        if t1 > 0:
            v1 = model(x_next, _frame_times(t1, x, known, known_time), **extra_args)
            x_next = x + (t1 - t0) * 0.5 * (v0 + v1)
        x = x_next if mask is None else torch.where(mask, x, x_next)
        x = _after_step(callback, i + 1, steps, x, mask)
    return x


def experts(high: Model, low: Model, boundary: float) -> Model:
    """Two models split by flow time (Wan2.2's mixture of experts): ``high`` while the step's time (the largest
    per-frame time, that of the frames being denoised) is at or above ``boundary``, ``low`` below it."""

    def model(x: torch.Tensor, t: torch.Tensor, **extra) -> torch.Tensor:
        # diffusers compares timesteps (flow time x 1000); the margin absorbs the float32 rounding of t / 1000
        return (high if float(t.max()) >= boundary - 1e-6 else low)(x, t, **extra)

    return model


@torch.no_grad()
def sample_scheduler(
    model: Model,
    x: torch.Tensor,
    scheduler,
    steps: int,
    start: float = 1.0,
    known: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    known_time: KnownTime = 0.0,
) -> torch.Tensor:
    """The steps of a diffusers flow-matching scheduler (Wan's: UniPC, Zhao et al. 2023, on flow sigmas), with
    kinema's known frames held as in ``sample_euler``. Starts at the first of the scheduler's times at or below
    ``start`` (an edit's strength; ``scheduler_start`` says which). The model gets flow time = timestep / the
    scheduler's training timesteps, as Wan's transformer gets the timestep. ``callback(step, steps, x)`` runs after
    each step; latents it returns replace x, as in ``sample_euler``."""
    extra_args = extra_args or {}
    first, _ = scheduler_start(scheduler, steps, start, x.device)
    timesteps = scheduler.timesteps[first:]
    scheduler.set_begin_index(first)
    total = float(scheduler.config.num_train_timesteps)
    x, mask = _hold_known(x, known, known_latents)
    for i, t in enumerate(timesteps):
        v = model(x, _frame_times(float(t) / total, x, known, known_time), **extra_args)
        x_next = scheduler.step(v, t, x, return_dict=False)[0]
        x = x_next if mask is None else torch.where(mask, x, x_next)
        x = _after_step(callback, i + 1, len(timesteps), x, mask)
    return x


def scheduler_start(scheduler, steps: int, start: float, device: torch.device | str = "cpu") -> tuple[int, float]:
    """Set the scheduler's timesteps for ``steps``; (the index of its first time at or below flow time ``start``,
    that time)."""
    scheduler.set_timesteps(steps, device=device)
    sigmas = [float(s) for s in scheduler.sigmas[: len(scheduler.timesteps)]]
    first = next((i for i, sigma in enumerate(sigmas) if sigma <= start + 1e-6), len(sigmas) - 1)
    return first, sigmas[first]


SAMPLERS = {"euler": sample_euler, "heun": sample_heun}  # joint samplers; "ar" runs frame by frame (below)


@torch.no_grad()
def sample_autoregressive(
    model: Model,
    x: torch.Tensor,
    times: torch.Tensor,
    known: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    known_time: KnownTime = 0.0,
    context_time: float = 0.0,
    context_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Latent frames one at a time, in order, each denoised from times[0] to times[-1] by Euler steps while the
    frames before it are held (the frame-causal rollout of diffusion forcing, Chen et al. 2024, and of CausVid,
    Yin et al. 2025). The model is called on the prefix of frames up to the one being made; it must attend only
    to earlier frames (a block-causal mask) for the prefix's outputs not to matter.

    Known frames (``known`` (B, F')) are kept at ``known_latents`` with their ``known_time``; frames made here
    enter later passes noised to ``context_time`` with ``context_noise`` (B, C, F', H', W'), so that the model
    does not take its own small errors for exact context.
    """
    extra_args = extra_args or {}
    b, frames = x.shape[0], x.shape[2]
    known = torch.zeros(b, frames, dtype=torch.bool, device=x.device) if known is None else known
    out, _ = _hold_known(x, known, x if known_latents is None else known_latents)
    held = torch.as_tensor(known_time, dtype=torch.float32, device=x.device).expand(b, frames).clone()
    context = out.clone()  # what later frames see: made frames noised to context_time
    to_make = [k for k in range(frames) if not bool(known[:, k].all())]
    steps = len(times) - 1
    total = steps * len(to_make)
    for n, k in enumerate(to_make):
        prefix = torch.cat([context[:, :, :k], out[:, :, k:k + 1]], dim=2)
        prefix_known = torch.ones(b, k + 1, dtype=torch.bool, device=x.device)
        prefix_known[:, k] = False
        offset = n * steps

        def step_callback(i: int, _steps: int, x_now: torch.Tensor, offset: int = offset) -> torch.Tensor | None:
            return callback(offset + i, total, x_now) if callback is not None else None

        made = sample_euler(model, prefix, times, known=prefix_known, known_latents=prefix, extra_args=extra_args,
                            callback=step_callback, known_time=held[:, :k + 1])
        out[:, :, k] = made[:, :, k]
        held[:, k] = context_time
        if context_time > 0 and context_noise is not None:
            context[:, :, k] = (1.0 - context_time) * made[:, :, k] + context_time * context_noise[:, :, k]
        else:
            context[:, :, k] = made[:, :, k]
    return out


@torch.no_grad()
def sample_autoregressive_cached(
    model: Model,
    x: torch.Tensor,
    times: torch.Tensor,
    cache,
    known: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    known_time: KnownTime = 0.0,
    context_time: float = 0.0,
    context_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sample_autoregressive`` with a frame cache: each step runs the model on the frame being made only, which
    attends to the cached keys and values of the frames before it; a frame, once made, is run once more at its
    context level and committed (``cache.commit``). ``model(x, t, cache=cache, **extra)`` places x after the
    cached frames. Known frames must come first (a prefix): they are committed together at their known time. Before
    a call whose keys and values it commits, the sampler sets ``cache.committing``.
    """
    extra_args = extra_args or {}
    b, frames = x.shape[0], x.shape[2]
    known = torch.zeros(b, frames, dtype=torch.bool, device=x.device) if known is None else known
    out, _ = _hold_known(x, known, x if known_latents is None else known_latents)
    prefix = 0
    while prefix < frames and bool(known[:, prefix].all()):
        prefix += 1
    if bool(known[:, prefix:].any()):
        raise ValueError("the frame cache needs the known frames first")
    held = torch.as_tensor(known_time, dtype=torch.float32, device=x.device).expand(b, frames)
    if prefix:
        cache.committing = True  # this call's keys and values are kept: every block must run
        model(out[:, :, :prefix], held[:, :prefix], cache=cache, **extra_args)
        cache.commit(prefix)
    steps = len(times) - 1
    total = steps * (frames - prefix)
    for n, k in enumerate(range(prefix, frames)):
        frame = out[:, :, k:k + 1]
        for i in range(steps):
            t = torch.full((b, 1), float(times[i]), device=x.device)
            v = model(frame, t, cache=cache, **extra_args)
            frame = frame + (float(times[i + 1]) - float(times[i])) * v
            if callback is not None:  # it sees the frame being made; latents it returns replace that frame
                replaced = callback(n * steps + i + 1, total, frame)
                frame = frame if replaced is None else replaced
        out[:, :, k:k + 1] = frame
        if k + 1 < frames:
            seen = frame
            if context_time > 0 and context_noise is not None:
                seen = (1.0 - context_time) * frame + context_time * context_noise[:, :, k:k + 1]
            cache.committing = True
            model(seen, torch.full((b, 1), context_time, device=x.device), cache=cache, **extra_args)
            cache.commit(1)
    return out
