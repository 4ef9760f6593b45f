"""Bounces at the ground, and rebounds: heavy objects rebound lower than bouncy ones."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import Track, VideoAnalysis
from kinema.eval.metrics.tracks import detection_at, shot_index, static_frames, track_runs, tracks_of
from kinema.world.scene import MATERIALS

BOUNCING_ACTIONS = ("dropped", "thrown_left", "thrown_right", "tossed", "thrown_in")
BOUNCE_RISE_PX = 0.3  # a bounce falls and then rises by at least this much
VISIBLE_BOUNCE_SPEED = 2.5  # m/s upward after impact: the bounce lasts about four frames at 8 fps
REBOUND_SPLIT = float(np.sqrt(MATERIALS["bouncy"] ** 2 * MATERIALS["heavy"] ** 2))  # rebound / drop height
MIN_DROP_PX = 3.0  # a drop this high (px) or more makes a rebound ratio worth reading


def detect_bounces(analysis: VideoAnalysis, track: Track, static: np.ndarray) -> list[dict]:
    """Bounces of a track in static shots: the object falls (row grows) and then rises.

    The contact happens between samples, so the lowest sample may sit up to a frame's travel above
    the ground. A bounce is ``at_ground`` when the bottom at its lowest sample is no more than that
    (plus a tolerance) above the ground row and no more than the tolerance below it; ``at_object``
    when another object touches it.
    """
    out = []
    rows_of = dict(zip(track.frames, track.row))
    radius_of = dict(zip(track.frames, track.radius_px))
    for run in track_runs(analysis, track.frames, static):
        rows = np.array([rows_of[f] for f in run])
        for k in range(1, len(run) - 1):
            fall, rise = rows[k] - rows[k - 1], rows[k] - rows[k + 1]
            if fall < BOUNCE_RISE_PX or rise < BOUNCE_RISE_PX:
                continue
            f = run[k]
            radius = radius_of[f]
            bottom = rows[k] + radius
            ground = analysis.frames[f].ground_row
            tolerance = max(1.0, 0.3 * radius)
            at_ground = None if ground is None else -tolerance <= ground - bottom <= tolerance + max(fall, rise)
            here = detection_at(analysis, track, f)
            at_object = here is not None and any(
                other.track != track.id
                and np.hypot(other.col - here.col, other.row - here.row) <= 1.3 * (other.radius_px + radius)
                for other in analysis.frames[f].objects)
            out.append({"frame": f, "bottom": bottom, "ground_row": ground, "at_ground": at_ground,
                        "at_object": at_object})
    return out


def bounce_in_rows(rows: np.ndarray, frame: int) -> bool:
    """Whether an object's true rows (one per frame, NaN where it is out of sight) show a bounce about
    ``frame`` that ``detect_bounces`` could see: a sample in frames ``frame - 1`` to ``frame + 2`` that
    the object falls into and rises out of by BOUNCE_RISE_PX each. A bounce whose rebound is swallowed
    (another object lands on top, or a heavy one barely lifts between two samples) shows none."""
    for k in range(max(1, frame - 1), min(len(rows) - 1, frame + 3)):
        fall, rise = rows[k] - rows[k - 1], rows[k] - rows[k + 1]
        if fall >= BOUNCE_RISE_PX and rise >= BOUNCE_RISE_PX:
            return True
    return False


def expected_bouncers(analysis: VideoAnalysis, expected: dict, static: np.ndarray) -> set[int]:
    """Objects that should be seen bouncing: with a bounce event that is high enough to see, in a
    static shot, and where the object is in view around it (when events are given; an event marked
    ``visible: False``, from the clip's ground truth, shows no bounce to see); else those whose action
    makes them fall."""
    objects = expected.get("objects") or []
    events = expected.get("events")
    if events is None:
        return {i for i, o in enumerate(objects) if o.get("action") in BOUNCING_ACTIONS}
    out = set()
    for event in events:
        ids = event.get("objects") or []
        if event.get("kind") != "bounce" or len(ids) != 1 or not (0 <= ids[0] < len(objects))\
                or event.get("visible") is False:
            continue
        frame = int(event["frame"])
        restitution = MATERIALS.get(objects[ids[0]].get("material"), 0.8)
        rebound = float(event.get("speed", VISIBLE_BOUNCE_SPEED / restitution)) * restitution
        window = range(frame - 1, frame + 3)  # the bounce happens between frames `frame` and `frame + 1`
        inside = window[0] >= 0 and window[-1] < analysis.num_frames
        if not (rebound >= VISIBLE_BOUNCE_SPEED and inside and all(static[f] for f in window)
                and len({shot_index(analysis, expected, f) for f in window}) == 1):
            continue
        tracks = tracks_of(analysis, objects[ids[0]].get("color"), objects[ids[0]].get("shape"))
        seen = {f for t in tracks for f, clean in zip(t.frames, t.clean) if clean}
        if len(seen & set(window)) >= 3:
            out.add(ids[0])
    return out


def bounce_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Bounces at the ground: 0 if an object that should bounce is never seen bouncing; otherwise
    the fraction of detected bounces (falling, then rising) that happen with the object's bottom at
    the ground row or against another object. None when nothing bounces or should."""
    static = static_frames(analysis, expected)
    objects = expected.get("objects") or []
    for i in expected_bouncers(analysis, expected, static):
        tracks = tracks_of(analysis, objects[i].get("color"), objects[i].get("shape"))
        if not any(detect_bounces(analysis, t, static) for t in tracks):
            return 0.0
    verdicts = []
    for track in analysis.tracks:
        for bounce in detect_bounces(analysis, track, static):
            if bounce["at_object"]:
                verdicts.append(True)
            elif bounce["at_ground"] is not None:
                verdicts.append(bool(bounce["at_ground"]))
    return float(np.mean(verdicts)) if verdicts else None


def _expected_object(expected: dict, track: Track) -> dict | None:
    """The one expected object with the track's colour and shape (None if none or several)."""
    found = [o for o in expected.get("objects") or [] if (o.get("color"), o.get("shape")) == track.key]
    return found[0] if len(found) == 1 else None


def rebounds(analysis: VideoAnalysis, track: Track, static: np.ndarray) -> list[dict]:
    """Ground bounces whose drop and rebound can both be read: ``ratio`` = rebound height / drop
    height, each from the ground row to the object's bottom at the highest sample of the flight
    into and out of the bounce (followed from the bounce for as long as the object keeps rising).
    Both tops must lie inside the static run, with a sample on their far side, so that neither is cut
    off by what was seen; the top before may also be the first frame of the shot (the object started
    there). The world makes the ratio restitution squared: 0.64 for bouncy objects, 0.12 for heavy."""
    rows_of = dict(zip(track.frames, track.row))
    radius_of = dict(zip(track.frames, track.radius_px))
    clean_of = dict(zip(track.frames, track.clean))
    bounces = {b["frame"]: b for b in detect_bounces(analysis, track, static) if b["at_ground"] and not b["at_object"]}
    out = []
    for run in track_runs(analysis, track.frames, static):
        rows = [rows_of[f] for f in run]
        opens_shot = run[0] == 0 or analysis.shot_of(run[0]) != analysis.shot_of(run[0] - 1)
        for k, f in enumerate(run):
            if f not in bounces:
                continue
            after = k + 1
            while after + 1 < len(run) and rows[after + 1] < rows[after]:
                after += 1
            before = k - 1
            while before - 1 >= 0 and rows[before - 1] < rows[before]:
                before -= 1
            if after + 1 >= len(run) or (before == 0 and not opens_shot):
                continue  # the top may lie outside what was seen
            top_before, top_after = run[before], run[after]
            if not (clean_of[top_before] and clean_of[top_after]):
                continue
            ground = bounces[f]["ground_row"]
            drop = ground - (rows_of[top_before] + radius_of[top_before])
            rise = ground - (rows_of[top_after] + radius_of[top_after])
            if drop >= MIN_DROP_PX:
                out.append({"frame": f, "drop_px": float(drop), "rise_px": float(rise),
                            "ratio": float(max(rise, 0.0) / drop)})
    return out


def rebound_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Heavy objects bounce lower than bouncy ones: of the readable rebounds (``rebounds``) of objects
    whose material the expectation names, the fraction on their material's side of REBOUND_SPLIT (the
    geometric mean of the two materials' restitution squared). None when none can be read."""
    static = static_frames(analysis, expected)
    verdicts = []
    for track in analysis.tracks:
        obj = _expected_object(expected, track)
        material = None if obj is None else obj.get("material")
        if material not in MATERIALS:
            continue
        for r in rebounds(analysis, track, static):
            verdicts.append((r["ratio"] < REBOUND_SPLIT) == (material == "heavy"))
    return float(np.mean(verdicts)) if verdicts else None
