"""Paint marks: marks made where paint-covered objects land, and whether they stay."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import VideoAnalysis
from kinema.eval.metrics.bounces import BOUNCING_ACTIONS
from kinema.eval.metrics.tracks import static_frames, track_runs

MARK_KEPT_SHARE = 0.8  # a mark is kept when seen in this share of its shot's frames after it appears
MIN_MARK_FRAMES = 2  # a mark must be seen in this many consecutive frames to count as made
MARK_SHADOW_METRES = 1.5  # an object this close above the ground shades the marks beneath it


def mark_tracks(analysis: VideoAnalysis, static: np.ndarray) -> list[dict]:
    """Paint marks followed through each static run of frames within a shot: a mark is a colour at a
    place on the ground (detections of its colour overlapping its extent, within 2 px). Each entry:
    ``color``, ``first`` frame seen, ``seen`` (frames seen), ``frames`` (frames from ``first`` to the
    run's end where it could be seen: where it was seen, or not behind the occluder's box)."""
    out: list[dict] = []
    frames = list(range(analysis.num_frames))
    for run in track_runs(analysis, frames, static):
        marks: list[dict] = []
        for f in run:
            for det in analysis.frames[f].marks:
                # A detection counts for every mark of its colour it overlaps: marks side by side on the ground
                # read as one stretch of paint, and each of them is seen in it.
                matches = [m for m in marks if m["color"] == det.color
                           and det.x0 < m["x1"] + 2 and m["x0"] - 2 < det.x1]
                if not matches:
                    marks.append({"color": det.color, "x0": det.x0, "x1": det.x1, "first": f, "seen": {f}})
                for match in matches:
                    match["seen"].add(f)
                    match["x0"], match["x1"] = min(match["x0"], det.x0), max(match["x1"], det.x1)
        for m in marks:
            later = [f for f in run if f >= m["first"]
                     and (f in m["seen"] or not _mark_hidden(analysis, f, m["x0"], m["x1"], m["color"]))]
            out.append({"color": m["color"], "first": m["first"], "seen": sorted(m["seen"]), "frames": later,
                        "x0": m["x0"], "x1": m["x1"], "end": run[-1]})
    return out


def _mark_hidden(analysis: VideoAnalysis, frame: int, x0: float, x1: float, color: str) -> bool:
    """Half or more of the mark's extent is out of sight: behind the occluder (widened by a pixel each side),
    under paint of another colour laid over it, or under an object on or just above the ground (the object
    and its shadow cover the band where marks are read)."""
    info = analysis.frames[frame]

    def covers(a: float, b: float) -> bool:
        return min(x1, b) - max(x0, a) >= 0.5 * (x1 - x0)

    if info.occluder_bbox is not None and covers(info.occluder_bbox[0] - 1, info.occluder_bbox[2] + 1):
        return True
    if any(m.color != color and covers(m.x0, m.x1) for m in info.marks):
        return True
    if info.ground_row is None:
        return False
    reach = MARK_SHADOW_METRES * info.scale  # a shadow fades with the object's height above the ground
    return any(covers(d.bbox[0], d.bbox[2]) and d.bbox[3] >= info.ground_row - reach for d in info.objects)


def _made(mark: dict) -> bool:
    """Seen in MIN_MARK_FRAMES consecutive frames: a mark, not a flicker of colour."""
    seen = mark["seen"]
    return any(all(f + k in seen for k in range(MIN_MARK_FRAMES)) for f in seen)


def marks_kept_score(analysis: VideoAnalysis, expected: dict, marks: list[dict] | None = None) -> float | None:
    """A paint-covered object's marks stay: of the marks made in the colour of an object the
    expectation calls paint-covered (``mark_tracks``, seen in at least MIN_MARK_FRAMES frames in a row,
    in static shots), the fraction seen in at least MARK_KEPT_SHARE of the frames from their first to
    the end of their run where they are in sight, and in one of its last two frames. A mark out of sight
    in both of those frames is not judged. None when no mark can be judged. ``marks``: ``mark_tracks``,
    if already made."""
    paint = {o.get("color") for o in expected.get("objects") or [] if o.get("paint")}
    if not paint:
        return None
    if marks is None:
        marks = mark_tracks(analysis, static_frames(analysis, expected))
    verdicts = []
    for mark in marks:
        if mark["color"] not in paint or not _made(mark) or not mark["frames"]:
            continue
        if mark["frames"][-1] < mark["end"] - 1:
            continue  # out of sight in the run's last two frames: whether it stayed cannot be seen
        visible = set(mark["frames"])
        share = len(visible & set(mark["seen"])) / len(visible)
        at_end = bool(set(mark["frames"][-2:]) & set(mark["seen"]))
        verdicts.append(share >= MARK_KEPT_SHARE and at_end)
    return float(np.mean(verdicts)) if verdicts else None


def marks_made_score(analysis: VideoAnalysis, expected: dict, marks: list[dict] | None = None) -> float | None:
    """A diagnostic beside ``marks_kept``: of the paint-covered objects that should leave a mark (a
    ``mark`` event where events are given, else a falling action), the fraction whose colour shows as
    a mark made. None when no object should mark the ground. ``marks``: ``mark_tracks``, if already made."""
    objects = expected.get("objects") or []
    events = expected.get("events")
    static = static_frames(analysis, expected)
    if events:
        # A mark appears the frame after its event and must then be seen for MIN_MARK_FRAMES frames.
        should = {int(e["objects"][0]) for e in events if e.get("kind") == "mark" and e.get("objects")
                  and int(e["frame"]) + MIN_MARK_FRAMES < analysis.num_frames
                  and static[int(e["frame"]) + 1:int(e["frame"]) + 1 + MIN_MARK_FRAMES].all()}
    else:
        should = {i for i, o in enumerate(objects) if o.get("paint") and o.get("action") in BOUNCING_ACTIONS}
    should = {i for i in should if 0 <= i < len(objects)}
    if not should:
        return None
    made = {m["color"] for m in (mark_tracks(analysis, static) if marks is None else marks) if _made(m)}
    return float(np.mean([objects[i].get("color") in made for i in sorted(should)]))
