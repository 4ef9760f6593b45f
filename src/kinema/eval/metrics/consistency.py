"""Consistency over time and across cuts: colour drift, the scene and subjects kept across shots, shot count."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import VideoAnalysis
from kinema.eval.metrics.tracks import MIN_TRACK_FRAMES, detection_at

COLOR_DRIFT_LIMIT = 0.05
COMPARABLE_SIZE = 1.3  # a track's colour is compared between views whose sizes differ less than this
DRIFT_SECONDS = 10.0  # colour drift compares the first and last this many seconds (or quarters)


def _rgb_drift(first: list, last: list) -> float | None:
    first = [c for c in first if c is not None]
    last = [c for c in last if c is not None]
    if not first or not last:
        return None
    delta = np.mean(np.array(first, float), axis=0) - np.mean(np.array(last, float), axis=0)
    return float(np.linalg.norm(delta) / (255.0 * np.sqrt(3.0)))


def color_drift(analysis: VideoAnalysis) -> float | None:
    """Colour drift: the largest change, between the start and the end of the clip, of the mean
    colour of the sky, the ground and each track (RGB distance / (255 sqrt 3), 0 = none). The parts
    compared are the first and last quarter, at most DRIFT_SECONDS long."""
    count = analysis.num_frames
    if count < 2:
        return None
    part = max(1, min(count // 4, int(round(DRIFT_SECONDS * analysis.fps))))
    drifts = [
        _rgb_drift([f.sky_rgb for f in analysis.frames[:part]], [f.sky_rgb for f in analysis.frames[-part:]]),
        _rgb_drift([f.ground_rgb for f in analysis.frames[:part]], [f.ground_rgb for f in analysis.frames[-part:]]),
    ]
    for track in analysis.tracks:
        if len(track.frames) < 2 * MIN_TRACK_FRAMES:
            continue
        dets = [detection_at(analysis, track, f) for f in track.frames]
        n = max(1, min(len(dets) // 4, part))
        first, last = dets[:n], dets[-n:]
        # Chroma subsampling pales small objects, so only compare views of about the same size.
        sizes = np.median([d.radius_px for d in first]), np.median([d.radius_px for d in last])
        if max(sizes) <= COMPARABLE_SIZE * min(sizes):
            drifts.append(_rgb_drift([d.rgb for d in first], [d.rgb for d in last]))
    drifts = [d for d in drifts if d is not None]
    return max(drifts) if drifts else None


def cross_shot_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Cross-shot consistency: the fraction of cuts across which the sky and ground classes stay the
    same and every object seen after the cut was seen before it (or is expected), with the shot's
    expected subject in view. None without cuts."""
    if len(analysis.shots) < 2:
        return None
    objects = expected.get("objects") or []
    expected_keys = {(o.get("color"), o.get("shape")) for o in objects}
    shots_expected = expected.get("shots") or []

    def keys(shot) -> set:
        return {t.key for t in analysis.tracks if sum(shot.start <= f < shot.end for f in t.frames) >= 2}

    seen = keys(analysis.shots[0])
    verdicts = []
    for before, after in zip(analysis.shots, analysis.shots[1:]):
        now = keys(after)
        ok = before.sky == after.sky
        if None not in (before.ground, after.ground):
            ok = ok and before.ground == after.ground
        ok = ok and now <= (seen | expected_keys)
        subject = next((s.get("subject") for s in shots_expected if s["start"] <= after.start < s["end"]), None)
        if subject is not None and 0 <= subject < len(objects):
            ok = ok and (objects[subject].get("color"), objects[subject].get("shape")) in now
        verdicts.append(ok)
        seen |= now
    return float(np.mean(verdicts))


def shot_count_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Shots: 1 if the detected cuts are exactly the expected shot starts, else the fraction matched
    (of the larger of the two lists)."""
    shots = expected.get("shots")
    if not shots:
        return None
    wanted = {int(s["start"]) for s in shots[1:]}
    found = set(analysis.cuts)
    if not wanted and not found:
        return 1.0
    return len(wanted & found) / max(len(wanted), len(found))
