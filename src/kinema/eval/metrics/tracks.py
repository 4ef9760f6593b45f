"""What every measure shares: which frames are static, which tracks are real objects, runs of frames, shots."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import ObjectDetection, Track, VideoAnalysis, wide_scale
from kinema.world.camera import ZOOM

STATIC_FRAMINGS = ("wide", "medium")
MIN_TRACK_FRAMES = 3  # shorter tracks are detector noise, not objects


def framing_of_frames(analysis: VideoAnalysis, expected: dict) -> list[str | None]:
    """The expected framing of every frame (None where the expectation names none)."""
    framing: list[str | None] = [None] * analysis.num_frames
    for shot in expected.get("shots") or []:
        for f in range(max(0, int(shot["start"])), min(analysis.num_frames, int(shot["end"]))):
            framing[f] = shot.get("framing")
    return framing


def static_frames(analysis: VideoAnalysis, expected: dict) -> np.ndarray:
    """(F,) bool: the camera holds still. From the expected framings where given, else measured."""
    static = np.zeros(analysis.num_frames, bool)
    for shot in analysis.shots:
        static[shot.start:shot.end] = shot.static
    for f, framing in enumerate(framing_of_frames(analysis, expected)):
        if framing is not None:
            static[f] = framing in STATIC_FRAMINGS
    return static


def shot_index(analysis: VideoAnalysis, expected: dict, frame: int) -> int:
    """The shot that holds ``frame``: from the expected shots where given, else the detected ones."""
    for n, shot in enumerate(expected.get("shots") or []):
        if int(shot["start"]) <= frame < int(shot["end"]):
            return n
    return analysis.shot_of(frame)


def scale_at(analysis: VideoAnalysis, expected_framing: str | None, frame: int) -> float | None:
    """Pixels per metre: measured by the analyzer, else implied by the expected framing, else None."""
    info = analysis.frames[frame]
    if info.scale_known:
        return info.scale
    if expected_framing in ZOOM:
        return wide_scale(analysis.width, analysis.height) / ZOOM[expected_framing]
    return None


def real_track(analysis: VideoAnalysis, track: Track) -> bool:
    """Seen long enough to be an object, or cut short by the clip's start or end and seen without a break from
    there (two lone detections a few frames apart are noise, not an object)."""
    frames, last = track.frames, analysis.num_frames - 1
    unbroken = frames[-1] - frames[0] == len(frames) - 1
    return len(frames) >= MIN_TRACK_FRAMES or (unbroken and (frames[0] == 0 or frames[-1] == last))


def tracks_of(analysis: VideoAnalysis, color: str | None, shape: str | None) -> list[Track]:
    return [t for t in analysis.tracks
            if real_track(analysis, t) and t.color == color and (shape is None or t.shape == shape)]


def detection_at(analysis: VideoAnalysis, track: Track, frame: int) -> ObjectDetection | None:
    return next((d for d in analysis.frames[frame].objects if d.track == track.id), None)


def track_runs(analysis: VideoAnalysis, frames: list[int], keep: np.ndarray) -> list[list[int]]:
    """Split sorted frames into runs of consecutive frames that ``keep`` allows, within one shot."""
    runs: list[list[int]] = []
    for f in frames:
        if not keep[f]:
            continue
        if runs and f == runs[-1][-1] + 1 and analysis.shot_of(f) == analysis.shot_of(runs[-1][-1]):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def majority(values: list):
    values = [v for v in values if v is not None]
    if not values:
        return None
    names, counts = np.unique(np.array(values, dtype=object), return_counts=True)
    return names[int(np.argmax(counts))]
