"""Motion direction: does each object move the way its action says."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import Track, VideoAnalysis
from kinema.eval.metrics.tracks import detection_at, static_frames, tracks_of

DIRECTIONS = {"thrown_left": -1, "rolls_left": -1, "thrown_right": 1, "rolls_right": 1}
DIRECTION_SECONDS = 0.75  # motion direction is read over this long after the action starts
MIN_SPEED_PX = 0.2  # px per frame; slower counts as not moving


def _direction(analysis: VideoAnalysis, tracks: list[Track], start: int, end: int, static: np.ndarray) -> int | None:
    """Sign of the horizontal motion over frames [start, end) within the static shot of ``start``."""
    shot = analysis.shot_of(start)
    for track in tracks:
        points = [(f, c) for f, c, s in zip(track.frames, track.col, track.shots)
                  if start <= f < end and s == shot and static[f]]
        points = [(f, c) for f, c in points if not detection_at(analysis, track, f).touches_border]
        if len(points) >= 2 and points[-1][0] > points[0][0]:
            frames, cols = np.array(points, dtype=float).T
            slope = float(np.polyfit(frames, cols, 1)[0])
            return 0 if abs(slope) < MIN_SPEED_PX else int(np.sign(slope))
    return None


def motion_direction_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Motion direction: for objects thrown or rolled left or right (at the start of the clip, or by
    a later event), the sign of their horizontal motion in the first frames after, in static shots,
    matches. Not moving counts as wrong."""
    static = static_frames(analysis, expected)
    objects = expected.get("objects") or []
    starts: list[tuple[int, int, int]] = []  # (object index, frame, wanted sign)
    for i, obj in enumerate(objects):
        if obj.get("action") in DIRECTIONS:
            starts.append((i, 0, DIRECTIONS[obj["action"]]))
    for event in expected.get("events") or []:
        if event.get("kind") in DIRECTIONS and len(event.get("objects") or []) == 1:
            starts.append((int(event["objects"][0]), int(event["frame"]), DIRECTIONS[event["kind"]]))
    # Motion read after a hit would not be the action's: stop at the object's next collision or wall.
    hits = [(int(e["frame"]), set(e.get("objects") or [])) for e in expected.get("events") or []
            if e.get("kind") in ("collision", "wall")]
    checks = []
    for i, frame, wanted in starts:
        if not (0 <= i < len(objects)) or not (0 <= frame < analysis.num_frames) or not static[frame]:
            continue
        tracks = tracks_of(analysis, objects[i].get("color"), objects[i].get("shape"))
        if not tracks:
            checks.append(False)
            continue
        end = frame + max(2, int(round(DIRECTION_SECONDS * analysis.fps)) + 1)
        end = min([end] + [h + 1 for h, ids in hits if i in ids and h >= frame])
        seen = _direction(analysis, tracks, frame, end, static)
        if seen is not None:
            checks.append(seen == wanted)
    return float(np.mean(checks)) if checks else None
