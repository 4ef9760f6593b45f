"""Attribute adherence: object colour, shape, size and count, sky and ground, check by check."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import VideoAnalysis
from kinema.eval.metrics.tracks import detection_at, framing_of_frames, majority, real_track, tracks_of

ATTRIBUTE_CHECKS = ("object", "size", "count", "sky", "ground")


def attribute_checks(analysis: VideoAnalysis, expected: dict) -> dict[str, list[bool]]:
    """Each attribute check, by kind (``ATTRIBUTE_CHECKS``), as a list of pass/fail.

    ``object``: each expected object is found (a track of its colour and shape); ``size``: its size class
    where it can be measured (clean detections in wide shots with a measured scale); ``count``: the number
    of distinct colour and shape tracks equals the number of expected objects (thrown-in ones included;
    objects marked ``in_view: False`` may be missing); ``sky`` and ``ground``: the majority over frames.
    A diagnostic outside the score, ``object_colour``: a track of each expected object's colour, of any
    shape (an object found by colour but not by shape lost its shape).
    """
    checks: dict[str, list[bool]] = {name: [] for name in (*ATTRIBUTE_CHECKS, "object_colour")}
    objects = expected.get("objects") or []
    framing = framing_of_frames(analysis, expected)
    for obj in objects:
        tracks = tracks_of(analysis, obj.get("color"), obj.get("shape"))
        if not tracks and obj.get("in_view") is False:
            continue  # never in view, so not seeing it is right
        checks["object"].append(bool(tracks))
        checks["object_colour"].append(bool(tracks_of(analysis, obj.get("color"), None)))
        if tracks and obj.get("size"):
            sizes = [d.size for t in tracks for f in t.frames
                     if (d := detection_at(analysis, t, f)) is not None and d.clean and framing[f] == "wide"
                     and analysis.frames[f].scale_known]
            if sizes:
                checks["size"].append(majority(sizes) == obj["size"])
    if objects:
        keys = {t.key for t in analysis.tracks if real_track(analysis, t)}
        shown = sum(1 for o in objects if o.get("in_view") is not False)
        checks["count"].append(shown <= len(keys) <= len(objects))
    for name in ("sky", "ground"):
        if expected.get(name):
            checks[name].append(majority([getattr(f, name) for f in analysis.frames]) == expected[name])
    return checks


def pass_rate(checks: list[bool]) -> float | None:
    return float(np.mean(checks)) if checks else None


def attribute_rate(checks: dict[str, list[bool]]) -> float | None:
    """The fraction of ``attribute_checks`` that pass, all kinds pooled (the ``object_colour`` diagnostic aside)."""
    return pass_rate([ok for name in ATTRIBUTE_CHECKS for ok in checks[name]])


def attribute_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Attribute adherence: the fraction of ``attribute_checks`` that pass (the ``object_colour``
    diagnostic aside)."""
    return attribute_rate(attribute_checks(analysis, expected))
