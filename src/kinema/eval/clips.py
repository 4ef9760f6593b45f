"""Score a folder of clips that has a manifest (``kinema eval clips DIR``)."""

from __future__ import annotations

import math
from pathlib import Path

from kinema.errors import KinemaError

# Columns of the printed table: metric name, heading, and whether higher is better.
TABLE = [
    ("attributes", "attr", True),
    ("motion_direction", "motion", True),
    ("bounces", "bounce", True),
    ("parabola_residual_px", "parab px", False),
    ("gravity_consistency", "gravity", True),
    ("parabola_fit", "parab fit", True),
    ("rebound", "rebound", True),
    ("permanence", "perm", True),
    ("marks_kept", "marks", True),
    ("color_drift", "drift", False),
    ("cross_shot_consistency", "x-shot", True),
    ("shot_count", "cuts", True),
]


def expectation_from_record(record: dict, ground_truth: dict | None = None) -> dict:
    """What a clip should show, from its manifest line (the format ``kinema world make`` writes).

    With the clip's ground truth, each object also gets ``in_view``: whether at least half of it is
    in the frame on two frames or more (a thrown-in object may never come into view).
    """
    scene = record.get("scene")
    if not isinstance(scene, dict):
        raise KinemaError(f"manifest line for '{record.get('file')}' has no 'scene' object")
    expected = {
        "sky": scene.get("sky"),
        "ground": scene.get("ground"),
        "occluder": scene.get("occluder"),
        "objects": [{k: o.get(k) for k in ("color", "shape", "size", "material", "paint", "action")}
                    for o in scene.get("objects", [])],
        "shots": [{k: s.get(k) for k in ("start", "end", "framing", "subject")} for s in record.get("shots", [])],
        "fps": record.get("fps"),
        "gravity": scene.get("gravity", 9.81),
        "events": record.get("events", []),
    }
    if ground_truth is not None and "in_frame" in ground_truth:
        shown = (ground_truth["in_frame"] >= 0.5) & ground_truth["present"]  # (F, N)
        for n, obj in enumerate(expected["objects"]):
            obj["in_view"] = bool(shown[:, n].sum() >= 2)
    if ground_truth is not None and "row" in ground_truth and "present" in ground_truth:
        import numpy as np

        from kinema.eval.metrics import bounce_in_rows

        rows = np.where(ground_truth["present"], ground_truth["row"], np.nan)  # (F, N)
        events = []
        for event in expected["events"]:
            ids = event.get("objects") or []
            if event.get("kind") == "bounce" and len(ids) == 1 and 0 <= ids[0] < rows.shape[1]:
                event = {**event, "visible": bounce_in_rows(rows[:, ids[0]], int(event["frame"]))}
            events.append(event)
        expected["events"] = events
    return expected


def evaluate_folder(folder: str | Path, progress: bool = True) -> dict:
    """Analyze and score every clip listed in ``folder/manifest.jsonl``."""
    from tqdm import tqdm

    from kinema.eval.analyzer import analyze_file
    from kinema.eval.metrics import clip_targets, score_clip, summarize
    from kinema.world.dataset import load_ground_truth, read_manifest

    folder = Path(folder)
    records = read_manifest(folder)
    clips = []
    for record in tqdm(records, desc="eval", unit="clip", disable=not progress or None):
        path = folder / record["file"]
        analysis = analyze_file(path)
        truth = load_ground_truth(folder, record) if record.get("ground_truth") else None
        scores = score_clip(analysis, expectation_from_record(record, truth))
        clips.append({"file": record["file"], "caption": record.get("caption", ""), "scores": scores})
    scores = [c["scores"] for c in clips]
    return {"folder": str(folder), "clips": clips, "summary": summarize(scores), "clip_targets": clip_targets(scores)}


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_attribute_checks(summary: dict) -> str | None:
    """One line: the pass rate of each kind of attribute check, or None when no clip had any."""
    from kinema.eval.metrics import ATTRIBUTE_CHECKS

    colour = summary.get("attributes_object_colour")
    parts = []
    for name in ATTRIBUTE_CHECKS:
        value = summary.get(f"attributes_{name}")
        if value is None:
            continue
        by_colour = f" (by colour alone {colour:.2f})" if name == "object" and colour is not None else ""
        parts.append(f"{name} {value:.2f}{by_colour}")
    return "attribute checks: " + ", ".join(parts) if parts else None


def format_table(report: dict) -> str:
    """A fixed-width table: one row per clip, then the mean."""
    heads = ["clip", *(h for _, h, _ in TABLE)]
    rows = [[c["file"], *(_cell(c["scores"].get(k)) for k, _, _ in TABLE)] for c in report["clips"]]
    rows.append(["mean", *(_cell(report["summary"].get(k)) for k, _, _ in TABLE)])
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in [heads, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
