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

Long videos and storyboards (``configs/eval/long.yaml``, ``configs/eval/storyboard.yaml``)::

    defaults: {seconds: 60, size: 64x64}
    prompts:
      - a red ball is thrown to the right and bounces on the sand        # 60 s: stability is scored
      - storyboard:                                                     # its shots set the length
          scene: On a beach at dusk, a big bouncy red ball.
          shots:
            - {seconds: 4, framing: wide, prompt: the red ball is dropped from high up}
            - {seconds: 3, framing: close-up, prompt: the red ball bounces}

A clip of at least ``kinema.eval.long.LONG_SECONDS`` also gets ``stability``: colour and sharpness
drift between its first and last 10 s and object permanence over the whole clip. A storyboard entry
is scored per shot (the shots start at the storyboard's ``frame_plan``): ``cross_shot`` (does each
cut keep the scene and the subject) and ``shots`` (each shot against its own prompt plus the scene
prompt). ``targets`` in the report pools them over the suite, next to their targets
(``kinema.eval.long``: cross-shot consistency >= 95 %, drift <= 5 %).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from kinema.errors import KinemaError
from kinema.eval.long import LONG_SECONDS, suite_targets
from kinema.eval.metrics import expectation_from_prompt
from kinema.frames import is_windowed, latent_count
from kinema.inference.request import Plan, Request, validate
from kinema.inference.settings import expands, request_sampling, request_windows

SETTINGS = ("seconds", "size", "fps", "steps", "guidance", "seed", "sampler", "negative_prompt", "expand",
            "step_cache")
MAX_PROMPTS = 10_000
MAX_SAMPLES = 64  # videos per prompt
# settings that videos made before they were recorded were made with
UNRECORDED = {"few_step": False, "step_cache": 0.0}
SAMPLE_SEED_STRIDE = 100_000  # sample k of a prompt uses its seed + k * this (beyond any prompt's default seed)


@dataclass
class SuiteItem:
    prompt: str  # for a storyboard: its scene prompt (may be empty)
    settings: dict = field(default_factory=dict)
    storyboard: dict | None = None  # {scene, shots: [{seconds, framing, prompt}, ...]}, checked


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
        if isinstance(entry, dict) and "storyboard" in entry:
            items.append(_storyboard_item(path, n, entry, defaults))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise KinemaError(f"suite file '{path}': prompt {n} needs a non-empty 'prompt' string")
        bad = set(entry) - set(SETTINGS) - {"prompt"}
        if bad:
            raise KinemaError(f"suite file '{path}': prompt {n} has unknown key(s) {', '.join(sorted(bad))}")
        settings = {"seed": n} | defaults | {k: v for k, v in entry.items() if k != "prompt"}
        items.append(SuiteItem(entry["prompt"], settings))
    return Suite(str(data.get("name") or path.stem), str(data.get("description") or ""), items)


def _storyboard_item(path: Path, n: int, entry: dict, defaults: dict) -> SuiteItem:
    """A suite entry ``{storyboard: {scene, shots}, SETTING: ...}``: its length comes from its shots."""
    from kinema.inference.storyboard import storyboard_from_dict

    where = f"suite file '{path}': prompt {n}"
    bad = set(entry) - set(SETTINGS) - {"storyboard"}
    if "prompt" in bad:
        raise KinemaError(f"{where}: give 'prompt' or 'storyboard', not both (the storyboard has a 'scene')")
    if bad:
        raise KinemaError(f"{where} has unknown key(s) {', '.join(sorted(bad))}")
    if "seconds" in entry:
        raise KinemaError(f"{where}: seconds {entry['seconds']!r} is not allowed with a storyboard "
                          "(its shots' seconds set the length)")
    board = storyboard_from_dict(entry["storyboard"], source=f"{where}: storyboard")
    settings = ({"seed": n} | {k: v for k, v in defaults.items() if k != "seconds"}
                | {k: v for k, v in entry.items() if k != "storyboard"} | {"seconds": board.seconds})
    return SuiteItem(board.scene, settings, board.to_dict())


def _same_run(path: Path, wanted: dict, storyboard: dict | None = None) -> bool:
    from kinema.media import read_metadata

    if not path.is_file():
        return False
    try:
        metadata = read_metadata(path)
    except KinemaError:
        return False
    if not all(metadata.get(k, UNRECORDED.get(k)) == v for k, v in wanted.items()):
        return False
    if storyboard is None:
        return "storyboard" not in metadata or metadata["storyboard"] is None
    from kinema.inference.storyboard import storyboard_from_dict

    try:
        return storyboard_from_dict(metadata.get("storyboard")).to_dict() == storyboard
    except KinemaError:
        return False


def _check_plan(path: Path, frames: int, starts: list[int]) -> None:
    """The video must hold every planned shot, and its own record of the shots must agree."""
    from kinema.media import read_metadata

    if frames <= starts[-1]:
        raise KinemaError(f"'{path}' has {frames} frames but its storyboard's last shot starts at frame {starts[-1]}")
    recorded = read_metadata(path).get("shot_starts")
    if recorded is not None and [int(s) for s in recorded] != starts:
        raise KinemaError(f"'{path}': shot_starts {recorded} in its metadata differ from the storyboard's "
                          f"frame plan {starts}")


def run_suite(suite: Suite, pipe, out_dir: str | Path, limit: int | None = None, overrides: dict | None = None,
              progress: bool = True, samples: int = 1) -> dict:
    """Generate (or reuse) and score every prompt; writes ``OUT/eval.json`` and returns the report.

    ``samples``: videos per prompt. The first is ``OUT/NNNN.mp4`` at the prompt's seed; sample k > 0 is
    ``OUT/NNNN-k.mp4`` at that seed + k * SAMPLE_SEED_STRIDE. The summary pools every sample, which
    lowers the noise of one seed per prompt."""
    from tqdm import tqdm

    from kinema.eval.metrics import clip_targets, summarize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise KinemaError(f"samples must be an integer in [1, {MAX_SAMPLES}], got {samples!r}")
    runs = suite_runs(suite, pipe, out_dir, limit, overrides, samples)
    clips = [_generated_and_scored(pipe, run) for run in tqdm(runs, desc=suite.name, unit="prompt",
                                                             disable=not progress or None)]
    generated_seconds = sorted(c["generate_seconds"] for c in clips if c["generate_seconds"] is not None)
    report = {
        "suite": suite.name, "model": pipe.name, "model_sha256": pipe.weights_sha256, "samples": samples,
        "clips": clips,
        "summary": summarize([c["scores"] for c in clips]),
        # storyboards' shots are scored by the long-video measures (``targets``), not the single-clip ones
        "clip_targets": clip_targets([c["scores"] for c in clips if not c.get("cross_shot")]),
        "generate_seconds_median": generated_seconds[len(generated_seconds) // 2] if generated_seconds else None,
    }
    if any(c.get("stability") or c.get("cross_shot") for c in clips):
        report["targets"] = suite_targets(clips)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


@dataclass
class SuiteRun:
    """One video of a suite: its entry, its request, the request's checked plan and, for a storyboard, the
    first frame of each shot."""

    item: SuiteItem
    request: Request
    plan: Plan
    shot_starts: list[int] | None


def suite_runs(suite: Suite, pipe, out_dir: Path, limit: int | None = None, overrides: dict | None = None,
               samples: int = 1) -> list[SuiteRun]:
    """Every video of a suite as a checked request, before anything is generated; one-line errors that name
    the entry."""
    from kinema.inference.storyboard import storyboard_from_dict

    items = suite.items[:limit] if limit else suite.items
    runs = []
    for (n, item), k in product(enumerate(items), range(samples)):
        settings = item.settings | (overrides or {})
        try:
            if item.storyboard is not None:
                settings = settings | {"storyboard": item.storyboard}
            if k:
                settings = settings | {"seed": int(settings.get("seed", n)) + k * SAMPLE_SEED_STRIDE}
            name = f"{n:04d}.mp4" if k == 0 else f"{n:04d}-{k}.mp4"
            request = Request(prompt=item.prompt, output=str(out_dir / name), **settings)
            plan = validate(request, pipe.defaults)
            starts = None
            if item.storyboard is not None:
                starts = storyboard_from_dict(item.storyboard).frame_plan(plan.fps)[1]
            runs.append(SuiteRun(item, request, plan, starts))
        except (TypeError, KinemaError) as e:
            raise KinemaError(f"suite '{suite.name}', prompt {n}: {e}") from None
    return runs


def _generated_and_scored(pipe, run: SuiteRun) -> dict:
    """A suite video's entry in the report: generated unless the same run made it before, then scored."""
    from kinema.eval.analyzer import analyze_file
    from kinema.eval.metrics import score_clip
    from kinema.inference import generate

    request, (mode, frames, width, height, fps) = run.request, run.plan
    storyboard = run.item.storyboard
    chosen, windows = request_sampling(pipe.defaults, request), request_windows(pipe.defaults, request)
    wanted = {"prompt": request.prompt, "seed": request.seed, "size": f"{width}x{height}", "fps": fps,
              "steps": chosen.steps, "guidance": chosen.guidance, "model_sha256": pipe.weights_sha256,
              "frames": frames, "expand": expands(pipe, request), "few_step": chosen.few_step,
              "step_cache": chosen.step_cache}
    if chosen.few_step:
        wanted["few_step_sha256"] = pipe.few_step_sha256
    latent_frames = latent_count(frames, mode, pipe.vae.temporal_compression)
    windowed = is_windowed(mode, latent_frames, windows.window, storyboard is not None)
    if windowed:
        wanted |= windows.as_dict()  # made window by window: a clip made with other window settings is made again
    path = Path(request.output)
    took = None
    if not _same_run(path, wanted, storyboard):
        start = time.perf_counter()
        generate.run(pipe, request)
        took = time.perf_counter() - start
    clip = {"file": path.name, "prompt": request.prompt, "seed": request.seed, "size": f"{width}x{height}",
            "frames": frames, "generate_seconds": took}
    if run.shot_starts is not None or (frames - 1) / fps >= LONG_SECONDS:
        clip |= _score_long(path, fps, request.prompt, storyboard, run.shot_starts,
                            windows.as_dict() if windowed else None)
    else:
        clip["scores"] = score_clip(analyze_file(path), expectation_from_prompt(request.prompt, frames, fps))
    return clip


def _score_long(path: Path, fps: float, prompt: str, storyboard: dict | None, shot_starts: list[int] | None,
                windows: dict | None = None) -> dict:
    """A long clip's or a storyboard clip's fields of the report (``kinema.eval.long``). ``windows``: the
    window settings it was made with (``kinema.inference.settings.Windows``), when made window by window."""
    from kinema.eval.long import score_long_clip, score_storyboard_clip
    from kinema.inference.longvideo import window_start_frames
    from kinema.media import read_video

    video, _ = read_video(path)
    if storyboard is None or shot_starts is None:
        joins = None if windows is None else window_start_frames(
            len(video), windows["window"], windows["context"], windows["memory"])
        return score_long_clip(video, fps, prompt, window_starts=joins)
    _check_plan(path, len(video), shot_starts)
    shots = storyboard["shots"]
    scored = score_storyboard_clip(video, fps, shot_starts, [s["prompt"] for s in shots], [s["framing"] for s in shots],
                                   storyboard["scene"])
    return {"storyboard": storyboard, "shot_starts": shot_starts, **scored}
