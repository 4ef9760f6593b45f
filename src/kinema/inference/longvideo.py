"""Long videos: a video of any length, made window by window.

A video longer than one transformer pass is generated in windows of latent frames. Each window
after the first is conditioned on the last ``context`` latent frames already made and on a few
``memory`` frames (the first latent frame of the video, and the first latent frame of the current
shot), the known frames of the per-frame flow mechanism. Memory frames enter clean (t = 0); the context
enters noised to the flow time ``context_noise`` and is given that t, so that a small error in the frames
just made is treated as uncertain rather than copied forward (noised context, as in diffusion forcing,
Chen et al. 2024; the model sees such frames in training's "forcing" masks). With ``anchor`` > 0, each
pass after the first then pulls the levels of its new latent frames (per channel and latent row) and their
spread back toward those of its shot's opening (``anchor_levels``), so that small shifts of tint,
brightness and contrast cannot add up from pass to pass; each frame keeps its own content about the
levels. Only the new frames are denoised, so a window of W latent frames costs the same wherever it lies:
time grows linearly with length and peak memory stays flat. The whole latent sequence is decoded once by
the chunked causal VAE, so decoding adds no seams between windows; how much the passes themselves show at
their joins is ``kinema.eval.long.window_seams``.

A storyboard (``kinema.inference.storyboard``) is made this way too: each latent frame cross-attends to its
shot's caption.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kinema.errors import KinemaError
from kinema.frames import (
    LATENT_STRIDE,
    is_latent_length,
    latent_count,
    latent_shot_starts,
    shot_of_latent_frames,
)
from kinema.inference.conditioning import conditioning_for_mode
from kinema.inference.settings import Sampling, Windows, sampling, windows

MAX_SPREAD_CHANGE = 2.0  # the anchor rescales a pass's spread by at most this factor either way


@dataclass(frozen=True)
class Window:
    """One transformer pass: the known latent frames it is conditioned on (memory frames first, then the
    context, in time order) and the new frames ``start .. start + count - 1`` it denoises."""

    known: tuple[int, ...]
    start: int
    count: int

    @property
    def frames(self) -> list[int]:
        return [*self.known, *range(self.start, self.start + self.count)]


def plan_windows(latent_frames: int, window: int, context: int, memory: int,
                 shot_latent_starts: list[int] | None = None, first_known: bool = False,
                 given: int = 0) -> list[Window]:
    """Split ``latent_frames`` into passes of at most ``window`` latent frames.

    The first pass makes frames 0 .. window-1 (frame 0 is known when ``first_known``, as in image to
    video). Each later pass is conditioned on the last ``context`` frames made and on up to ``memory``
    memory frames: frame 0, then the first frame of the shot the new frames open into, when those are not
    already in the context. With ``given`` > 0 the first ``given`` frames exist already (a video being
    extended) and every pass continues from them.
    """
    if window < 2:
        raise KinemaError(f"window {window}: must be at least 2 latent frames")
    if context < 1 or memory < 0 or context + memory >= window:
        raise KinemaError(f"window {window}, context {context}, memory {memory}: need context >= 1, memory >= 0 "
                          "and context + memory < window")
    starts = sorted(set(shot_latent_starts or [0]))
    if given:
        if given >= latent_frames:
            raise KinemaError(f"{given} of {latent_frames} latent frames are given: nothing is left to generate")
        plan, made = [], given
    else:
        plan = [Window((0,) if first_known else (), 1 if first_known else 0,
                       min(window, latent_frames) - (1 if first_known else 0))]
        made = window if latent_frames > window else latent_frames
    while made < latent_frames:
        recent = tuple(range(max(0, made - context), made))
        shot_start = max(s for s in starts if s <= made)
        candidates = [0] + ([shot_start] if shot_start < made else [])
        remembered = tuple(sorted({m for m in candidates if m not in recent}))[:memory]
        known = remembered + recent
        count = min(window - len(known), latent_frames - made)
        plan.append(Window(known, made, count))
        made += count
    return [w for w in plan if w.count > 0]


def window_start_frames(num_frames: int, window: int, context: int, memory: int,
                        shot_starts: list[int] | None = None, first_known: bool = False) -> list[int]:
    """The video frames at which a pass after the first begins its new frames, for a video of ``num_frames``
    made from text (or from an image, with ``first_known``) as ``generate_long`` plans it: where one pass's
    frames meet the next's. Latent frame j >= 1 opens at video frame 1 + 4 (j - 1)."""
    latent_frames = latent_count(num_frames)
    plan = plan_windows(latent_frames, window, context, memory, latent_shot_starts(shot_starts or [0]),
                        first_known=first_known)
    return [1 + LATENT_STRIDE * (w.start - 1) for w in plan[1:]]


def plan_for_call(pipe, call) -> list[Window]:
    """The passes ``generate_long`` makes for a resolved pipeline call (``KinemaPipeline.resolve_call``)."""
    vae_time = pipe.vae.temporal_compression
    shot_starts = call.storyboard.frame_plan(call.fps)[1] if call.storyboard is not None else [0]
    return plan_windows(latent_count(call.num_frames, stride=vae_time), call.windows.window, call.windows.context,
                        call.windows.memory, latent_shot_starts(shot_starts, vae_time),
                        first_known=call.mode == "i2v", given=call.given)


def latent_levels(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The levels and the spread of latent frames (1, C, F, H, W). A level is one per channel and latent row:
    the median over the frames and the row's positions, (1, C, 1, H, 1), so that an object covering less than
    half of a row does not move it; a picture's large areas (sky, ground, walls) run along its rows. The spread
    is one per channel: the root mean square of the frames about their levels, (1, C, 1, 1, 1), which follows
    their contrast and detail (objects included)."""
    levels = frames.permute(0, 1, 3, 2, 4).flatten(3).median(dim=3).values[:, :, None, :, None]
    spread = (frames - levels).pow(2).mean(dim=(2, 3, 4), keepdim=True).sqrt()
    return levels, spread


def anchor_levels(new: torch.Tensor, latents: torch.Tensor, start: int, shot_of: list[int],
                  references: dict[int, tuple[torch.Tensor, torch.Tensor]], strength: float) -> torch.Tensor:
    """Pull the levels and the spread (``latent_levels``) of a pass's new latent frames ``start ..`` back toward
    those of their shot's opening, by ``strength`` (1: all the way). Each frame keeps its own detail about the
    levels: only the levels move, and the spread is rescaled by (reference / now) ** strength, within
    MAX_SPREAD_CHANGE either way. A shot's reference comes from its frames made before the first pass that
    continues it (the pass that opened it, or the frames given to extend), frozen from then on; a shot that
    opens in this pass sets its own. The frames before ``start`` are in ``latents``."""
    out = new.clone()
    count = new.shape[2]
    for shot in sorted(set(shot_of[start:start + count])):
        if shot not in references:
            made = [f for f in range(start) if shot_of[f] == shot]
            if not made:
                continue
            references[shot] = latent_levels(latents[:, :, made])
        mine = [i for i in range(count) if shot_of[start + i] == shot]
        reference_levels, reference_spread = references[shot]
        frames = new[:, :, mine]
        levels, spread = latent_levels(frames)
        ratio = (reference_spread / spread.clamp_min(1e-6)) ** strength
        ratio = ratio.clamp(1 / MAX_SPREAD_CHANGE, MAX_SPREAD_CHANGE)
        out[:, :, mine] = levels - strength * (levels - reference_levels) + (frames - levels) * ratio
    return out


def encode_texts(pipe, texts: list[str], negative: str) -> tuple[dict, dict]:
    """Conditional and unconditional text for S sequences: (1, S, L, D) each, padded to one length."""
    from kinema.models.text import pad_token_batches

    tokens, mask, (neg_tokens, neg_mask) = pipe.encoded(
        lambda encoder: (*encoder.encode(texts), encoder.encode_cached(negative)))  # (S, L, D), (1, L', D)
    both, masks = pad_token_batches([(tokens, mask), (neg_tokens, neg_mask)])
    both, masks = both.to(pipe._execution_device, pipe.transformer.dtype), masks.to(pipe._execution_device)
    tokens, neg_tokens = both.split([len(texts), 1])
    mask, neg_mask = masks.split([len(texts), 1])
    sequences = len(texts)
    cond = {"text": tokens[None], "text_mask": mask[None]}
    uncond = {"text": neg_tokens[None].expand(1, sequences, -1, -1),
              "text_mask": neg_mask[None].expand(1, sequences, -1)}
    return cond, uncond


@torch.no_grad()
def generate_long(pipe, texts: list[str], num_frames: int, height: int, width: int,
                  shot_starts: list[int] | None = None, num_inference_steps: int | None = None,
                  guidance_scale: float | None = None, generator: torch.Generator | None = None,
                  negative_prompt: str | None = None, image: np.ndarray | None = None, video: np.ndarray | None = None,
                  window: int | None = None, context: int | None = None, memory: int | None = None,
                  sampler: str | None = None, shift: float | None = None,
                  callback: Callable[[int, int, torch.Tensor], None] | None = None, output_type: str = "np",
                  context_noise: float | None = None, anchor: float | None = None,
                  step_cache: float | None = None) -> np.ndarray | torch.Tensor:
    """A video of any length in windows: ``texts`` holds one caption per shot (one for a plain prompt) and
    ``shot_starts`` the first video frame of each (cuts on frames 1 + 4k). Returns uint8 frames (F, H, W, 3),
    or the normalized latents (1, C, F', H', W') with ``output_type="latent"``. ``image`` is frame 0 (image to
    video); ``video`` (1 + 4k frames) is kept as the first frames and the rest continues it (extend forward).

    A video that fits in one window is generated exactly as ``pipe(...)`` generates it (same noise, same
    result); longer ones continue window by window from the frames already made.
    """
    from kinema.diffusion.flow import shift_for_tokens

    # 1. Check inputs and resolve the settings.
    chosen = sampling(pipe.defaults, num_inference_steps, guidance_scale, sampler, step_cache=step_cache)
    settings = windows(pipe.defaults, window, context, memory, context_noise, anchor)
    shot_starts = shot_starts or [0]
    mode = check_long(texts, num_frames, height, width, chosen, settings, shot_starts, image, video)
    if pipe.frames_as_channels:
        raise KinemaError(f"{num_frames} frames need windows (or a storyboard), which Wan's image-to-video models "
                          f"do not support yet: make at most {1 + 4 * (settings.window - 1)} frames in one pass")

    # 2. Plan the passes; the latents the video opens with are known (an image, or the video being extended).
    vae_time = pipe.vae.temporal_compression
    latent_frames = latent_count(num_frames, stride=vae_time)
    lh, lw, plh, plw = pipe.latent_grid(height, width)
    channels = pipe.vae.config.z_dim
    text_index = shot_of_latent_frames(shot_starts, latent_frames)
    opening = [pipe.encode_conditioning(item, height, width).latents
               for item in conditioning_for_mode(mode, image, video)]  # (1, C, k, H', W')
    plan = plan_windows(latent_frames, settings.window, settings.context, settings.memory,
                        latent_shot_starts(shot_starts, vae_time), first_known=image is not None,
                        given=opening[0].shape[2] if video is not None else 0)
    tokens = len(plan[0].frames) * pipe.tokens_per_frame(height, width)
    shift = shift or pipe.defaults.shift or shift_for_tokens(tokens, pipe.flow)

    # 3. Encode the captions.
    negative = pipe.defaults.negative_prompt if negative_prompt is None else negative_prompt
    cond, uncond = encode_texts(pipe, texts, negative)

    # 4. Denoise pass by pass: the known frames held, only the new ones denoised, each pass anchored to its
    #    shot's opening.
    device = pipe._execution_device
    latents = torch.zeros(1, channels, latent_frames, lh, lw, device=device)
    if opening:
        latents[:, :, :opening[0].shape[2]] = opening[0]
    references: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # a shot's levels and spread (anchor_levels)
    for n, win in enumerate(plan):
        known_count = len(win.known)
        noise = pipe.noise((1, channels, win.count, plh, plw), generator)
        held, known_time = latents[:, :, list(win.known)], 0.0
        if settings.context_noise > 0 and known_count and (n > 0 or video is not None):
            held, known_time = noised_context(held, win, settings, pipe.noise(held.shape, generator))
        x = torch.cat([held, noise[..., :lh, :lw]], dim=2)
        known = torch.zeros(1, x.shape[2], dtype=torch.bool, device=device)
        known[:, :known_count] = True
        frame_cond, frame_uncond = window_text(cond, uncond, [text_index[f] for f in win.frames], len(texts))

        def progress(step: int, _total: int, x_now: torch.Tensor, *more, offset: int = n * chosen.steps):
            """The pass's steps counted over the whole video; what the callback returns goes back to the sampler."""
            if callback is not None:
                return callback(offset + step, chosen.steps * len(plan), x_now, *more)
            return None

        out = pipe.denoise(x, known if known_count else None, x if known_count else None, frame_cond, frame_uncond,
                           chosen.steps, chosen.guidance, 1.0, shift, chosen.sampler, progress, known_time=known_time,
                           generator=generator, few_step=chosen.few_step, step_cache=chosen.step_cache)
        new = out[:, :, known_count:]
        if settings.anchor > 0:
            new = anchor_levels(new, latents, win.start, text_index, references, settings.anchor)
        latents[:, :, win.start:win.start + win.count] = new

    # 5. Decode the whole latent sequence once: the chunked causal VAE adds no seams.
    if output_type == "latent":
        return latents
    return pipe.decode_latents(latents)[0]


def check_long(texts: list[str], num_frames: int, height: int, width: int, chosen: Sampling, settings: Windows,
               shot_starts: list[int], image: np.ndarray | None, video: np.ndarray | None) -> str:
    """The checks of ``generate_long``, before anything is allocated; returns the mode it makes (t2v, i2v or
    extend_forward)."""
    from kinema.inference.request import check_request

    noise = settings.context_noise
    if not (isinstance(noise, (int, float)) and 0.0 <= noise < 1.0):
        raise KinemaError(f"context noise {noise!r}: must be a flow time in [0, 1)")
    anchor = settings.anchor
    if isinstance(anchor, bool) or not (isinstance(anchor, (int, float)) and 0.0 <= anchor <= 1.0):
        raise KinemaError(f"anchor {anchor!r}: must be a strength in [0, 1]")
    if not texts:
        raise KinemaError("no caption to generate from")
    mode = "i2v" if image is not None else "extend_forward" if video is not None else "t2v"
    check_request(texts, num_frames, height, width, chosen.steps, chosen.guidance, mode, 1.0, chosen.step_cache)
    if len(shot_starts) != len(texts) or shot_starts[0] != 0 or not all(
            is_latent_length(s) for s in shot_starts[1:]) or sorted(set(shot_starts)) != shot_starts:
        raise KinemaError(f"shot starts {shot_starts}: need one per caption, from 0, increasing, cuts on 1 + 4k")
    if image is not None and video is not None:
        raise KinemaError("give an image or a video to start from, not both")
    return mode


def noised_context(held: torch.Tensor, win: Window, settings: Windows,
                   noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A pass's known frames with its context (the last frames made) noised to ``context_noise`` with ``noise``
    (held's shape), and the flow time of every frame of the pass, (1, F'): the context says it is noised; memory
    frames and an image to video's first frame stay clean."""
    levels = [settings.context_noise if f >= win.start - settings.context else 0.0 for f in win.known]
    level = torch.tensor(levels + [0.0] * win.count, device=held.device)  # (F',)
    scale = level[None, None, :len(levels), None, None]
    held = (1.0 - scale) * held + scale * noise
    return held, level[None]


def window_text(cond: dict, uncond: dict, shots: list[int], sequences: int) -> tuple[dict, dict]:
    """The text a pass attends to: with several captions, which one each of its latent frames reads (``shots``,
    per frame); one caption keeps the plain cross-attention path."""
    if sequences > 1:
        index = torch.tensor([shots], device=cond["text"].device)
        return {**cond, "frame_text_index": index}, {**uncond, "frame_text_index": index}
    return {k: v[:, 0] for k, v in cond.items()}, {k: v[:, 0] for k, v in uncond.items()}
