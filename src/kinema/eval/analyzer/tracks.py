"""Tracks: objects linked frame to frame within each shot, joined across cuts by colour and shape."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer.results import FrameAnalysis, ObjectDetection, Track


def camera_static(analyses: list[FrameAnalysis], start: int, end: int) -> bool:
    """Whether the camera holds still over frames [start, end): the background does not shift."""
    shifts = [analyses[f].camera_shift for f in range(start + 1, end)]
    return sum(1 for dx, dy in shifts if max(abs(dx), abs(dy)) > 0.5) <= 0.2 * len(shifts)


def _link_shot(analyses: list[FrameAnalysis], start: int, end: int, fps: float) -> list[list[tuple[int, int]]]:
    """Tracklets within one shot: lists of (frame, detection index), linked greedily by colour,
    shape and distance to a constant-velocity prediction. A tracklet may skip frames (occlusion)."""
    tracklets: list[list[tuple[int, int]]] = []
    max_gap = max(2, int(round(2.0 * fps)))
    for f in range(start, end):
        detections = analyses[f].objects
        if not detections:
            continue
        pairs = []
        for t, tracklet in enumerate(tracklets):
            last_f, last_i = tracklet[-1]
            if f - last_f > max_gap:
                continue
            last = analyses[last_f].objects[last_i]
            pc, pr = last.col, last.row
            if len(tracklet) >= 2:
                prev_f, prev_i = tracklet[-2]
                prev = analyses[prev_f].objects[prev_i]
                steps = (f - last_f) / max(last_f - prev_f, 1)
                pc += (last.col - prev.col) * steps
                pr += (last.row - prev.row) * steps
            for i, det in enumerate(detections):
                if det.color != last.color:
                    continue
                distance = float(np.hypot(det.col - pc, det.row - pr))
                size = max(det.radius_px, last.radius_px, 1.0)
                if distance > 4.0 * size + 0.15 * max(len(analyses[f].objects), 1) * 0 + 6.0 * (f - last_f):
                    continue
                cost = distance / size + (0.5 if det.shape != last.shape else 0.0)
                pairs.append((cost, t, i))
        used_t, used_i = set(), set()
        for _, t, i in sorted(pairs):
            if t in used_t or i in used_i:
                continue
            used_t.add(t)
            used_i.add(i)
            tracklets[t].append((f, i))
        for i in range(len(detections)):
            if i not in used_i:
                tracklets.append([(f, i)])
    return tracklets


def majority(values: list, weights: list[float] | None = None):
    if not values:
        return None
    tally: dict = {}
    for n, v in enumerate(values):
        tally[v] = tally.get(v, 0.0) + (1.0 if weights is None else weights[n])
    return max(tally.items(), key=lambda kv: kv[1])[0]


def _look(dets: list[ObjectDetection]) -> tuple[str, str]:
    """Colour and shape of a set of detections of one object: the shape is the vote of the clean
    ones weighted by area, since big views show shape best."""
    clean = [d for d in dets if d.clean] or dets
    return dets[0].color, majority([d.shape for d in clean], [d.area for d in clean])


def build_tracks(analyses: list[FrameAnalysis], shots: list[tuple[int, int]], fps: float) -> list[Track]:
    """Tracklets per shot, joined into one track per object across cuts by colour and shape.

    A tracklet whose shape matches no free track still joins the one free track of its colour when
    it is the only tracklet of that colour in its shot: small objects' shapes can read wrong for a
    whole shot, while the same colour in two shapes at once is rare.
    """
    members: list[list[tuple[int, int, ObjectDetection]]] = []  # per track: (shot, frame, detection)
    looks: list[tuple[str, str]] = []
    for shot_index, (start, end) in enumerate(shots):
        linked = _link_shot(analyses, start, end, fps)
        tracklets = [[(shot_index, f, analyses[f].objects[i]) for f, i in t] for t in linked]
        tracklets.sort(key=len, reverse=True)
        used: set[int] = set()
        pending = []
        for tracklet in tracklets:
            look = _look([d for _, _, d in tracklet])
            match = next((n for n, other in enumerate(looks) if other == look and n not in used), None)
            if match is None:
                pending.append(tracklet)
            else:
                members[match] += tracklet
                used.add(match)
        for tracklet in pending:
            color = tracklet[0][2].color
            rivals = [t for t in tracklets if t[0][2].color == color]
            free = [n for n, other in enumerate(looks) if other[0] == color and n not in used]
            if len(free) == 1 and len(rivals) == 1:
                members[free[0]] += tracklet
                used.add(free[0])
            else:
                members.append(list(tracklet))
                looks.append(_look([d for _, _, d in tracklet]))
                used.add(len(looks) - 1)
        looks = [_look([d for _, _, d in m]) for m in members]
    tracks = []
    for n, track_members in enumerate(members):
        track_members.sort(key=lambda m: m[1])
        dets = [d for _, _, d in track_members]
        color, shape = _look(dets)
        measured = [d for _, f, d in track_members if analyses[f].scale_known and d.clean]
        track = Track(n, color, shape, majority([d.size for d in (measured or dets)]))
        for shot_index, f, det in track_members:
            det.track = n
            track.frames.append(f)
            track.shots.append(shot_index)
            track.col.append(det.col)
            track.row.append(det.row)
            track.radius_px.append(det.radius_px)
            track.clean.append(det.clean)
        tracks.append(track)
    return tracks
