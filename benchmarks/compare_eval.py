"""Two runs of one prompt suite, measure by measure, with the run-to-run noise of the first. Prints JSON lines.

    python benchmarks/compare_eval.py REFERENCE/eval.json OTHER/eval.json

Typically the reference is the teacher at its defaults and the other its few-step transformer, or the same model
with step caching (``kinema eval suite ... --out DIR``; both runs on the same prompts and seeds). Per measure:
the reference's value, the other's, their difference and the reference's noise band, 2 standard errors of what a
rerun at other seeds would read: with K > 1 videos a prompt (``--samples K``), the spread of the K one-video
means (std / sqrt(K)); with one video a prompt, the spread over videos (std / sqrt(n), which also holds the
prompts' spread, so it is wider). ``within_noise`` is true when the other run is better, or worse by less than
the band. Measures: attributes, motion direction, bounces, permanence, colour drift, vanish and appear events a
clip (single clips); drift, permanence and window seams (60 s clips); cuts kept and attributes per shot
(storyboards).

Only the clips both runs made are compared (matched by file name), so a run with ``--limit N`` or fewer
``--samples`` is set against the same prompts and seeds of a fuller reference run.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

# measure -> (how a clip gives it, whether lower is better)
MEASURES: dict[str, tuple[Callable[[dict], float | None], bool]] = {
    "attributes": (lambda c: (c.get("scores") or {}).get("attributes"), False),
    "motion_direction": (lambda c: (c.get("scores") or {}).get("motion_direction"), False),
    "bounces": (lambda c: (c.get("scores") or {}).get("bounces"), False),
    "permanence": (lambda c: (c.get("scores") or {}).get("permanence"), False),
    "color_drift": (lambda c: (c.get("scores") or {}).get("color_drift"), True),
    "vanish_events": (lambda c: (c.get("scores") or {}).get("vanish_events"), True),
    "spawn_events": (lambda c: (c.get("scores") or {}).get("spawn_events"), True),
    "long_drift": (lambda c: (c.get("stability") or {}).get("drift_max"), True),
    "long_permanence": (lambda c: (c.get("stability") or {}).get("permanence"), False),
    "window_seam_ratio": (lambda c: ((c.get("stability") or {}).get("seams") or {}).get("seam_ratio"), True),
    "cuts_kept": (lambda c: _mean([cut["kept"] for cut in (c.get("cross_shot") or {}).get("cuts", [])]), False),
    "shot_attributes": (lambda c: _mean([s["scores"].get("attributes") for s in c.get("shots") or []]), False),
}
SAMPLE = re.compile(r"^\d+(?:-(\d+))?\.")


def _mean(values: list) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def values(report: dict, measure: str) -> dict[str, float]:
    """Each clip's value of a measure, by file name (clips where it cannot be read are left out)."""
    read = MEASURES[measure][0]
    return {c["file"]: float(v) for c in report["clips"] if (v := read(c)) is not None}


def noise(by_file: dict[str, float]) -> float | None:
    """One standard error of the run's mean: over its one-video runs when it has several, else over videos."""
    samples: dict[int, list[float]] = {}
    for name, value in by_file.items():
        match = SAMPLE.match(name)
        samples.setdefault(int(match.group(1) or 0) if match else 0, []).append(value)
    if len(samples) > 1:
        means = [float(np.mean(v)) for v in samples.values()]
        return float(np.std(means, ddof=1) / np.sqrt(len(means)))
    flat = list(by_file.values())
    return float(np.std(flat, ddof=1) / np.sqrt(len(flat))) if len(flat) > 1 else None


def common_clips(reference: dict, other: dict) -> tuple[dict, dict]:
    """Both reports reduced to the clips (file names) they share."""
    shared = {c["file"] for c in reference["clips"]} & {c["file"] for c in other["clips"]}
    return tuple({**report, "clips": [c for c in report["clips"] if c["file"] in shared]}
                 for report in (reference, other))


def compare(reference: dict, other: dict) -> list[dict]:
    lines = []
    reference, other = common_clips(reference, other)
    for measure, (_, lower_is_better) in MEASURES.items():
        ref, oth = values(reference, measure), values(other, measure)
        if not ref or not oth:
            continue
        a, b = float(np.mean(list(ref.values()))), float(np.mean(list(oth.values())))
        error = noise(ref)
        band = None if error is None else 2 * error
        better = (b <= a) if lower_is_better else (b >= a)
        lines.append({"measure": measure, "reference": round(a, 4), "other": round(b, 4),
                      "difference": round(b - a, 4), "noise_band": None if band is None else round(band, 4),
                      "clips": [len(ref), len(oth)],
                      "within_noise": better or (band is not None and abs(b - a) <= band)})
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    args = parser.parse_args(argv)
    reference, other = (json.loads(p.read_text(encoding="utf-8")) for p in (args.reference, args.other))
    lines = compare(reference, other)
    for line in lines:
        print(json.dumps({"reference_model": reference.get("model"), "other_model": other.get("model"), **line}))
    return lines


if __name__ == "__main__":
    main()
