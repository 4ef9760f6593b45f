"""A whole video: every frame, the cuts, the tracks and a summary of each shot."""

from __future__ import annotations

import os

import numpy as np

from kinema.eval.analyzer.cuts import detect_cuts
from kinema.eval.analyzer.frame import analyze_frame
from kinema.eval.analyzer.objects import size_class, wide_scale
from kinema.eval.analyzer.results import ShotSummary, VideoAnalysis
from kinema.eval.analyzer.tracks import build_tracks, camera_static, majority


def _as_frames(frames) -> np.ndarray:
    """Any array-like video to float32 (F, H, W, 3) in [0, 255]."""
    array = np.asarray(frames)
    if array.ndim == 2:
        array = array[None, ..., None]
    elif array.ndim == 3:
        array = array[None] if array.shape[-1] in (1, 3, 4) else array[..., None]
    if array.ndim != 4:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if array.dtype.kind == "f":
        array = np.nan_to_num(array.astype(np.float32))
        if array.size and array.max() <= 1.0:
            array = array * 255.0
    return np.clip(array.astype(np.float32), 0.0, 255.0)


def analyze_video(frames, fps: float) -> VideoAnalysis:
    """Analyse a video given as (F, H, W, 3) frames (uint8, or float in [0, 1] or [0, 255])."""
    images = _as_frames(frames)
    fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 8.0
    count = len(images)
    height, width = (images.shape[1], images.shape[2]) if count else (0, 0)
    if count == 0 or height == 0 or width == 0:
        return VideoAnalysis(fps, width, height, [], [], [], [])
    analyses = [analyze_frame(images[f], f) for f in range(count)]
    cuts = detect_cuts(images, analyses)
    bounds = list(zip([0] + cuts, cuts + [count]))
    # One scale per shot: the median of the measured ones, else the wide framing's.
    for start, end in bounds:
        known = [a.scale for a in analyses[start:end] if a.scale_known]
        scale = float(np.median(known)) if known else wide_scale(width, height)
        for a in analyses[start:end]:
            a.scale, a.scale_known = scale, bool(known)
            for obj in a.objects:
                obj.size = size_class(obj.radius_px / scale)
    tracks = build_tracks(analyses, bounds, fps)
    shots = []
    for n, (start, end) in enumerate(bounds):
        part = analyses[start:end]
        ids = sorted({o.track for a in part for o in a.objects})
        shots.append(ShotSummary(
            n, start, end,
            majority([a.sky for a in part]),
            majority([a.ground for a in part]),
            majority([a.occluder for a in part if a.occluder]) if any(a.occluder for a in part) else None,
            part[0].scale, part[0].scale_known, camera_static(analyses, start, end),
            sorted({tracks[i].key for i in ids}), ids,
        ))
    return VideoAnalysis(fps, width, height, analyses, cuts, shots, tracks)


def analyze_file(path: str | os.PathLike) -> VideoAnalysis:
    """Read a video with ``kinema.media.read_video`` and analyse it."""
    from kinema.media import read_video

    frames, fps = read_video(path)
    return analyze_video(frames, fps)
