"""Prompt suites: generate every prompt of a suite with a model and score it (``kinema eval suite``).

A suite is a YAML file::

    name: basic
    description: one-object prompts over the whole vocabulary
    defaults: {seconds: 4, size: 64x64}      # any generate setting: seconds, size, fps, steps, guidance
    prompts:
      - a red ball is thrown to the right and bounces on the sand
      - {prompt: "At dusk on a snowfield, a little weighty red ball flies off to the left.", size: 96x64, seed: 3}

Each prompt's expectation comes from ``kinema.world.caption.parse_prompt``: the colours, shapes,
sizes, materials, actions, sky, ground and framing that its words name. What a prompt leaves
unsaid is not scored. Seeds default to the prompt's position in the suite, so a rerun is the
same experiment. Videos go to ``OUT/NNNN.mp4``; one already there from the same prompt, seed,
settings and model is scored again without being generated again, so an interrupted run continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from kinema.errors import KinemaError

SETTINGS = ("seconds", "size", "fps", "steps", "guidance", "seed", "sampler", "negative_prompt")
MAX_PROMPTS = 10_000


@dataclass
class SuiteItem:
    prompt: str
    settings: dict = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    description: str
    items: list[SuiteItem]


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; one-line errors that name the entry."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"suite file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise KinemaError(f"suite file '{path}' is not valid YAML: {' '.join(str(e).split())[:160]}") from None
    if not isinstance(data, dict):
        raise KinemaError(f"suite file '{path}' must be a mapping with 'prompts'")
    unknown = set(data) - {"name", "description", "defaults", "prompts"}
    if unknown:
        raise KinemaError(f"suite file '{path}': unknown key(s) {', '.join(sorted(unknown))}")
    defaults = data.get("defaults") or {}
    prompts = data.get("prompts")
    if not isinstance(defaults, dict):
        raise KinemaError(f"suite file '{path}': 'defaults' must be a mapping")
    if not isinstance(prompts, list) or not prompts:
        raise KinemaError(f"suite file '{path}': 'prompts' must be a non-empty list")
    if len(prompts) > MAX_PROMPTS:
        raise KinemaError(f"suite file '{path}': {len(prompts)} prompts (at most {MAX_PROMPTS})")
    bad = set(defaults) - set(SETTINGS)
    if bad:
        raise KinemaError(f"suite file '{path}': unknown default(s) {', '.join(sorted(bad))} "
                          f"(allowed: {', '.join(SETTINGS)})")
    items = []
    for n, entry in enumerate(prompts):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise KinemaError(f"suite file '{path}': prompt {n} needs a non-empty 'prompt' string")
        bad = set(entry) - set(SETTINGS) - {"prompt"}
        if bad:
            raise KinemaError(f"suite file '{path}': prompt {n} has unknown key(s) {', '.join(sorted(bad))}")
        settings = {"seed": n} | defaults | {k: v for k, v in entry.items() if k != "prompt"}
        items.append(SuiteItem(entry["prompt"], settings))
    return Suite(str(data.get("name") or path.stem), str(data.get("description") or ""), items)


def expectation_from_prompt(prompt: str, frames: int, fps: float) -> dict:
    """The metrics' ``expected`` dict for a prompt: what its words name, one shot over the whole clip."""
    from kinema.world.caption import parse_prompt
    from kinema.world.scene import GRAVITY

    parsed = parse_prompt(prompt)
    framing = parsed["framings"][0] if parsed["framings"] else None
    return {
        "sky": parsed["sky"], "ground": parsed["ground"], "occluder": parsed["occluder"],
        "objects": parsed["objects"],
        "shots": [{"start": 0, "end": frames, "framing": framing, "subject": 0 if parsed["objects"] else None}],
        "fps": fps, "gravity": GRAVITY, "events": [],
    }


def _same_run(path: Path, wanted: dict) -> bool:
    from kinema.media import read_metadata

    if not path.is_file():
        return False
    try:
        metadata = read_metadata(path)
    except KinemaError:
        return False
    return all(metadata.get(k) == v for k, v in wanted.items())


def run_suite(suite: Suite, pipe, out_dir: str | Path, limit: int | None = None, overrides: dict | None = None,
              progress: bool = True) -> dict:
    """Generate (or reuse) and score every prompt; writes ``OUT/eval.json`` and returns the report."""
    from tqdm import tqdm

    from kinema.eval.analyzer import analyze_file
    from kinema.eval.metrics import score_clip, summarize
    from kinema.generate import Request, run, validate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = suite.items[:limit] if limit else suite.items
    requests = []  # (request, its validated (mode, frames, width, height, fps)), all checked before any runs
    for n, item in enumerate(items):
        settings = item.settings | (overrides or {})
        try:
            request = Request(prompt=item.prompt, output=str(out_dir / f"{n:04d}.mp4"), **settings)
            requests.append((request, validate(request, pipe.defaults.fps)))
        except (TypeError, KinemaError) as e:
            raise KinemaError(f"suite '{suite.name}', prompt {n}: {e}") from None
    clips = []
    generated_seconds = []
    for request, (_, frames, width, height, fps) in tqdm(requests, desc=suite.name, unit="prompt",
                                                         disable=not progress or None):
        wanted = {"prompt": request.prompt, "seed": request.seed, "size": f"{width}x{height}", "fps": fps,
                  "steps": request.steps or pipe.defaults.steps,
                  "guidance": pipe.defaults.guidance_scale if request.guidance is None else request.guidance,
                  "model_sha256": pipe.weights_sha256, "frames": frames}
        path = Path(request.output)
        took = None
        if not _same_run(path, wanted):
            start = time.perf_counter()
            run(pipe, request)
            took = time.perf_counter() - start
            generated_seconds.append(took)
        scores = score_clip(analyze_file(path), expectation_from_prompt(request.prompt, frames, fps))
        clips.append({"file": path.name, "prompt": request.prompt, "seed": request.seed, "size": f"{width}x{height}",
                      "frames": frames, "generate_seconds": took, "scores": scores})
    report = {
        "suite": suite.name, "model": pipe.name, "model_sha256": pipe.weights_sha256, "clips": clips,
        "summary": summarize([c["scores"] for c in clips]),
        "generate_seconds_median": (sorted(generated_seconds)[len(generated_seconds) // 2]
                                    if generated_seconds else None),
    }
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
