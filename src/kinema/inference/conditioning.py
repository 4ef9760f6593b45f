"""Conditioning as data: which latent frames of a video are known, and what they hold.

Every "prompt with images and video" mode is one mechanism: known latent frames enter clean (t = 0) and stay
fixed while the others are denoised (``kinema.diffusion``). A mode only says which frames are known, so it is
described as a list of items, in the manner of LTX-Video's ``ConditioningItem``: video frames (an image is a
1-frame video) that open or close the output. The pipeline encodes each item with the VAE into
``KnownLatents``; a loop's two ends are made as latents directly.

An item that closes the video drops its first latent frame when it has others: the causal VAE encodes frame 0
on its own, as an image, and such a latent only fits the start of a video.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from kinema.errors import KinemaError

Place = Literal["start", "end"]


@dataclass(frozen=True, eq=False)
class ConditioningItem:
    """Video frames known in the output: uint8 (F, H, W, 3), or (H, W, 3) for an image, resized to the output
    and cut to 1 + 4k frames; ``at`` says whether they open the video or close it."""

    frames: np.ndarray
    at: Place = "start"

    def __post_init__(self) -> None:
        if self.at not in ("start", "end"):
            raise KinemaError(f"conditioning at '{self.at}': choose start or end")


@dataclass(frozen=True, eq=False)
class KnownLatents:
    """Normalized latent frames (1 or B, C, k, H', W') held at the start or the end of the latent sequence."""

    latents: torch.Tensor
    at: Place = "start"


def conditioning_for_mode(mode: str, image: np.ndarray | None = None, video: np.ndarray | None = None,
                          video_end: np.ndarray | None = None) -> list[ConditioningItem]:
    """The known frames of the classic modes: i2v (``image`` opens the video), extend_forward (``video`` opens
    it), extend_backward (``video`` closes it) and connect (``video`` opens it, ``video_end`` closes it). The
    other modes know no frames: t2v, image, edit (its video is where sampling starts, not a known frame) and
    loop (its ends are generated)."""
    needs = {"i2v": image, "extend_forward": video, "extend_backward": video, "connect": video, "edit": video}
    if mode in needs and needs[mode] is None:
        raise KinemaError(f"mode '{mode}' needs {'an image' if mode == 'i2v' else 'a video'}")
    if mode == "connect" and video_end is None:
        raise KinemaError("mode 'connect' needs two videos")
    if mode == "i2v":
        frames = np.asarray(image)
        return [ConditioningItem(frames if frames.ndim == 3 else frames[:1])]  # an image is one frame
    if mode == "extend_forward":
        return [ConditioningItem(np.asarray(video))]
    if mode == "extend_backward":
        return [ConditioningItem(np.asarray(video), "end")]
    if mode == "connect":
        return [ConditioningItem(np.asarray(video)), ConditioningItem(np.asarray(video_end), "end")]
    return []


def hold(known: Sequence[KnownLatents], shape: tuple[int, ...],
         device: torch.device | str = "cpu") -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The known-frame mask (B, F') and the latents (B, C, F', H', W') of ``shape`` that hold ``known`` in place,
    on ``device``, or (None, None) when nothing is known. Items are placed in order, a later one over an earlier
    one."""
    if not known:
        return None, None
    batch, _, latent_frames = shape[:3]
    mask = torch.zeros(batch, latent_frames, dtype=torch.bool, device=device)
    values = torch.zeros(shape, device=device)
    for item in known:
        count = item.latents.shape[2]
        first = 0 if item.at == "start" else latent_frames - count
        for i in range(count):
            mask[:, first + i] = True
            values[:, :, first + i] = item.latents[:, :, i]
    return mask, values
