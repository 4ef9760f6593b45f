"""A clip's scores, every measure at once; their targets; and a summary over many clips."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer import VideoAnalysis
from kinema.eval.metrics.attributes import attribute_checks, attribute_rate, pass_rate
from kinema.eval.metrics.bounces import bounce_score, rebound_score
from kinema.eval.metrics.consistency import COLOR_DRIFT_LIMIT, color_drift, cross_shot_score, shot_count_score
from kinema.eval.metrics.flight import gravity_fits, gravity_scores, parabola_fit_score
from kinema.eval.metrics.marks import mark_tracks, marks_kept_score, marks_made_score
from kinema.eval.metrics.motion import motion_direction_score
from kinema.eval.metrics.permanence import permanence_score
from kinema.eval.metrics.tracks import static_frames


def score_clip(analysis: VideoAnalysis, expected: dict) -> dict[str, float | None]:
    """Every metric for one clip (see the module docstring for ``expected``)."""
    fits = gravity_fits(analysis, expected)
    residual, consistency, gravity = gravity_scores(analysis, expected, fits)
    marks = mark_tracks(analysis, static_frames(analysis, expected))
    permanence, vanish, spawn = permanence_score(analysis, expected)
    drift = color_drift(analysis)
    checks = attribute_checks(analysis, expected)
    return {
        "attributes": attribute_rate(checks),
        **{f"attributes_{name}": pass_rate(values) for name, values in checks.items()},
        "motion_direction": motion_direction_score(analysis, expected),
        "bounces": bounce_score(analysis, expected),
        "parabola_residual_px": residual,
        "parabola_fit": parabola_fit_score(analysis, expected, fits),
        "rebound": rebound_score(analysis, expected),
        "gravity_consistency": consistency,
        "gravity_estimate": gravity,
        "permanence": permanence,
        "permanence_clean": None if permanence is None else float(vanish + spawn == 0),
        "vanish_events": float(vanish),
        "spawn_events": float(spawn),
        "marks_kept": marks_kept_score(analysis, expected, marks),
        "marks_made": marks_made_score(analysis, expected, marks),
        "color_drift": drift,
        "color_stability": None if drift is None else float(drift < COLOR_DRIFT_LIMIT),
        "cross_shot_consistency": cross_shot_score(analysis, expected),
        "shot_count": shot_count_score(analysis, expected),
    }


MIN_TARGET_CLIPS = 10  # a target is judged met or not over at least this many clips where its measure applies
# The embedded model's targets for single-clip measures: (metric, target, what it is), each a mean over
# clips of ``score_clip``'s value (``permanence_clean``: the fraction of clips where nothing vanishes).
CLIP_TARGETS = (
    ("attributes", 0.95, "object colour, shape, count; sky and ground"),
    ("motion_direction", 0.95, "motion direction"),
    ("parabola_fit", 0.90, "free flight fits a parabola with the world's gravity"),
    ("bounces", 0.90, "bounces only at the ground or against objects"),
    ("rebound", 0.90, "heavy objects rebound lower than bouncy ones"),
    ("permanence_clean", 0.95, "clips where no object vanishes or appears"),
    ("marks_kept", 0.90, "paint marks stay until the end"),
)


def clip_targets(scores: list[dict]) -> dict[str, dict]:
    """Each of CLIP_TARGETS over clips' ``score_clip`` values: ``value`` (the mean over the clips where
    it applies, None where it applies to none), ``clips`` (how many), ``target`` and ``met``: whether
    the value reaches the target, None when fewer than MIN_TARGET_CLIPS clips could be read."""
    out = {}
    for name, target, what in CLIP_TARGETS:
        values = [float(s[name]) for s in scores if s.get(name) is not None]
        value = float(np.mean(values)) if values else None
        met = None if len(values) < MIN_TARGET_CLIPS else bool(value >= target)
        out[name] = {"value": value, "clips": len(values), "target": target, "met": met, "what": what}
    return out


def format_clip_targets(targets: dict[str, dict]) -> str | None:
    """One line: each single-clip measure (``clip_targets``) against its target, with the number of
    clips it could be read in; None when no measure could be read in any clip (a suite of storyboards,
    whose shots are scored by ``kinema.eval.long``)."""
    if not any(t["clips"] for t in targets.values()):
        return None
    parts = []
    for name, t in targets.items():
        if t["value"] is None:
            parts.append(f"{name} - (read in no clip; >= {t['target']:.2f}, not met)")
        else:
            clips = f"{t['clips']} clip{'' if t['clips'] == 1 else 's'}"
            verdict = {True: "", False: ", not met", None: ", too few clips to judge"}[t["met"]]
            parts.append(f"{name} {t['value']:.2f} ({clips}; >= {t['target']:.2f}{verdict})")
    return "targets: " + "; ".join(parts)


def summarize(scores: list[dict]) -> dict[str, float | None]:
    """Mean of each metric over clips, ignoring None; ``clips`` counts the clips."""
    keys: list[str] = []
    for score in scores:
        keys += [k for k in score if k not in keys]
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(s[key]) for s in scores if s.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    out["clips"] = float(len(scores))
    return out
