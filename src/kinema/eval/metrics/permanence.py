"""Permanence: objects neither vanish nor appear, except at the frame's edges or behind the occluder."""

from __future__ import annotations

from itertools import pairwise

from kinema.eval.analyzer import ObjectDetection, Track, VideoAnalysis
from kinema.eval.metrics.tracks import detection_at, real_track

MAX_GAP_FRAMES = 1  # a track may miss this many frames in a row without counting as vanishing


def _near_edge(analysis: VideoAnalysis, det: ObjectDetection, velocity: tuple[float, float]) -> bool:
    """The object touches the frame edge, or would cross it within a frame at its velocity."""
    if det.touches_border:
        return True
    x0, y0, x1, y1 = det.bbox
    dx, dy = velocity
    margin = 1.0
    return (min(x0, x0 + dx) <= margin or max(x1, x1 + dx) >= analysis.width - margin
            or min(y0, y0 + dy) <= margin or max(y1, y1 + dy) >= analysis.height - margin)


def _near_occluder(analysis: VideoAnalysis, det: ObjectDetection, velocity: tuple[float, float], frame: int) -> bool:
    if det.occluded or det.near_occluder:
        return True
    box = analysis.frames[frame].occluder_bbox
    if box is None:
        return False
    x0, _, x1, _ = det.bbox
    reach = abs(velocity[0]) + det.radius_px
    return x1 + reach >= box[0] and x0 - reach <= box[2]


def _step(track: Track, frame: int, other: int) -> tuple[float, float]:
    """The track's displacement from ``other`` to ``frame`` (0, 0 if it was not seen at ``other``):
    one more such step from ``frame`` is where it was heading (other = frame - 1) or came from
    (other = frame + 1)."""
    positions = dict(zip(track.frames, zip(track.col, track.row)))
    if other not in positions:
        return 0.0, 0.0
    return positions[frame][0] - positions[other][0], positions[frame][1] - positions[other][1]


def _explained(analysis: VideoAnalysis, track: Track, frame: int, other: int) -> bool:
    det = detection_at(analysis, track, frame)
    step = _step(track, frame, other)
    return det is not None and (_near_edge(analysis, det, step) or _near_occluder(analysis, det, step, frame))


def _touching(analysis: VideoAnalysis, track: Track, frame: int, real: set[int]) -> bool:
    """The track's detection at ``frame`` touches (within a pixel) another real track's: two objects side by
    side can read as one blob for a few frames."""
    det = detection_at(analysis, track, frame)
    if det is None:
        return False
    x0, y0, x1, y1 = det.bbox
    return any(o.track != track.id and o.track in real and o.bbox[0] <= x1 + 1 and o.bbox[2] >= x0 - 1
               and o.bbox[1] <= y1 + 1 and o.bbox[3] >= y0 - 1 for o in analysis.frames[frame].objects)


def permanence_events(analysis: VideoAnalysis, expected: dict) -> tuple[int, int, int]:
    """(unexplained vanishings, unexplained appearances, tracks).

    Within a shot, a track that ends early, starts late, or misses more than MAX_GAP_FRAMES frames in a row
    (at the shot's ends too) must do so at the frame edge, at or behind the occluder, or (appearing) at a
    thrown-in event. A track that misses frames and comes back may also do so where it touches another
    object (the two read as one blob for a while); a track that starts or ends beside another object is
    still counted, since that is how a blob that splits off or melts into another looks.
    Tracks seen for fewer than MIN_TRACK_FRAMES frames are detector noise and not counted.
    """
    thrown_in = [int(e["frame"]) for e in expected.get("events") or [] if e.get("kind") == "thrown_in"]
    vanish = spawn = 0
    tracks = [t for t in analysis.tracks if real_track(analysis, t)]
    real = {t.id for t in tracks}
    for track in tracks:
        for shot in analysis.shots:
            frames = [f for f in track.frames if shot.start <= f < shot.end]
            if not frames:
                continue
            ends = [frames[-1]] if frames[-1] < shot.end - 1 - MAX_GAP_FRAMES else []
            starts = [frames[0]] if frames[0] > shot.start + MAX_GAP_FRAMES else []
            for a, b in pairwise(frames):
                if b - a > MAX_GAP_FRAMES + 1 and not (_touching(analysis, track, a, real)
                                                       and _touching(analysis, track, b, real)):
                    ends.append(a)
                    starts.append(b)
            vanish += sum(not _explained(analysis, track, f, f - 1) for f in ends)
            spawn += sum(not _explained(analysis, track, f, f + 1) and not any(abs(f - e) <= 3 for e in thrown_in)
                         for f in starts)
    return vanish, spawn, len(tracks)


def permanence_score(analysis: VideoAnalysis, expected: dict) -> tuple[float | None, int, int]:
    """Object permanence: 1 if nothing vanishes or appears mid-shot without a reason (frame edge,
    occluder, cut, thrown-in event), else 1 - violations / tracks, at least 0."""
    vanish, spawn, tracks = permanence_events(analysis, expected)
    if tracks == 0:
        return None, vanish, spawn
    return float(max(0.0, 1.0 - (vanish + spawn) / tracks)), vanish, spawn
