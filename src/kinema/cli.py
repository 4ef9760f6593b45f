"""The ``kinema`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kinema.errors import KinemaError, click_exit_status
from kinema.models.vae_commands import vae_app
from kinema.train.commands import train_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kinema: text-to-video on a causal video VAE, a diffusion transformer and flow matching.")
world_app = typer.Typer(no_args_is_help=True, help="The simulated world: make datasets, print the vocabulary, look.")
eval_app = typer.Typer(no_args_is_help=True, help="Score videos against their captions with the analyzer.")
app.add_typer(world_app, name="world")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(vae_app, name="vae")


def _range(text: str, name: str, lo: int, hi: int) -> tuple[int, int]:
    """'2' -> (2, 2); '1-3' -> (1, 3), within [lo, hi]."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise KinemaError(f"{name} '{text}': expected a number or a range such as 1-3") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not (lo <= parts[0] <= parts[1] <= hi):
        raise KinemaError(f"{name} '{text}': expected values from {lo} to {hi}, low before high")
    return parts[0], parts[1]


def _scene_options(seconds: float, fps: float, shots: str, framings: str, objects: str,
                   occluder_probability: float, paint_probability: float):
    from kinema.frames import MAX_FPS, MAX_SECONDS
    from kinema.world.scene import FRAMINGS, SceneOptions

    if not (0 < seconds <= MAX_SECONDS):
        raise KinemaError(f"seconds must be > 0 and <= {MAX_SECONDS:g} (got {seconds:g})")
    if not (0 < fps <= MAX_FPS):
        raise KinemaError(f"fps must be > 0 and <= {MAX_FPS:g} (got {fps:g})")
    for name, p in (("occluder-probability", occluder_probability), ("paint-probability", paint_probability)):
        if not (0.0 <= p <= 1.0):
            raise KinemaError(f"{name} must be between 0 and 1 (got {p:g})")
    framing_list = tuple(f.strip() for f in framings.split(",") if f.strip())
    bad = [f for f in framing_list if f not in FRAMINGS]
    if bad or not framing_list:
        raise KinemaError(f"framings '{framings}': choose from {', '.join(FRAMINGS)}")
    return SceneOptions(seconds=seconds, fps=fps, shots=_range(shots, "shots", 1, 64), framings=framing_list,
                        objects=_range(objects, "objects", 1, 3), occluder_probability=occluder_probability,
                        paint_probability=paint_probability)


Seconds = Annotated[float, typer.Option(help="Length of each clip in seconds.")]
Size = Annotated[str, typer.Option(help="WIDTHxHEIGHT, multiples of 8.")]
Fps = Annotated[float, typer.Option(help="Frames per second.")]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same clips, bit for bit.")]
Shots = Annotated[str, typer.Option(help="Shots per clip: a number or a range such as 1-4.")]
Framings = Annotated[str, typer.Option(help="Comma-separated framings allowed for shots after the first.")]
Objects = Annotated[str, typer.Option(help="Objects per scene at the start: a number or a range within 1-3.")]
OccluderP = Annotated[float, typer.Option(help="Probability that a wall or tree stands in front.")]
PaintP = Annotated[float, typer.Option(help="Probability that an object is paint-covered.")]


@app.command("generate")
def generate(
    prompt: Annotated[str | None, typer.Argument(help="What to generate.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .mp4 (or .png for an image).")] = Path(
        "out.mp4"),
    seconds: Annotated[float, typer.Option(help="Length in seconds (for --extend/--connect: seconds added).")] = 4.0,
    frames: Annotated[int | None, typer.Option(help="Exact frame count (1 + 4k); overrides --seconds.")] = None,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT, multiples of 8 (any aspect ratio).")] = "64x64",
    fps: Annotated[float | None, typer.Option(help="Frames per second (default: the model's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps (default: the model's).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and settings give the same video.")] = 0,
    negative_prompt: Annotated[str | None, typer.Option(help="What to steer away from.")] = None,
    image: Annotated[Path | None, typer.Option(help="Image to video: this image is the first frame.")] = None,
    extend: Annotated[Path | None, typer.Option(help="Extend this video by --seconds.")] = None,
    direction: Annotated[str, typer.Option(help="forward or backward, for --extend.")] = "forward",
    loop: Annotated[bool, typer.Option("--loop", help="Make a seamless loop.")] = False,
    connect: Annotated[tuple[Path, Path] | None, typer.Option(help="Connect two videos, --seconds between.")] = None,
    edit: Annotated[Path | None, typer.Option(help="Video to video: edit this video under the prompt.")] = None,
    strength: Annotated[float, typer.Option(help="Edit strength in (0, 1]: how far from the input.")] = 0.7,
    sampler: Annotated[str | None, typer.Option(help="euler or heun (default: the model's).")] = None,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: the embedded model).")] = None,
    prompts: Annotated[Path | None, typer.Option(help="Batch: one prompt per line, or JSONL with settings.")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Batch output folder (with --prompts).")] = None,
    storyboard: Annotated[Path | None, typer.Option(
        help="Storyboard file (YAML/JSON: scene + shots of seconds, framing, prompt); PROMPT, if given, is "
             "the scene.")] = None,
    shot: Annotated[list[str] | None, typer.Option(
        help="A shot as SECONDS:FRAMING:PROMPT (framing: wide, medium, close-up, pan); repeat for more shots; "
             "PROMPT, if given, is the scene.")] = None,
    window: Annotated[int | None, typer.Option(help="Long videos: latent frames per pass.")] = None,
    context: Annotated[int | None, typer.Option(help="Long videos: latent frames of context per pass.")] = None,
    context_noise: Annotated[float | None, typer.Option(
        help="Long videos: noise level in [0, 1) of the frames each later pass continues from.")] = None,
    anchor: Annotated[float | None, typer.Option(
        help="Long videos: strength in [0, 1] with which each later pass keeps the levels and contrast of its "
             "shot's opening (0: off).")] = None,
    expand: Annotated[bool, typer.Option(
        "--expand/--no-expand", help="Expand the prompt into the caption style the model was trained on "
                                     "(printed and stored in the metadata).")] = True,
) -> None:
    """Generate a video (or an image) from a prompt, in any mode; writes provenance metadata and a sidecar JSON."""
    from tqdm import tqdm

    from kinema.inference.generate import load_pipeline, run
    from kinema.inference.request import Request, read_prompts_file, validate

    common = dict(seconds=seconds, frames=frames, size=size, fps=fps, steps=steps, guidance=guidance, seed=seed,
                  negative_prompt=negative_prompt, image=str(image) if image else None,
                  extend=str(extend) if extend else None, direction=direction, loop=loop,
                  connect=[str(c) for c in connect] if connect else [], edit=str(edit) if edit else None,
                  strength=strength, sampler=sampler, window=window, context=context,
                  context_noise=context_noise, anchor=anchor, expand=expand)
    if storyboard is not None or shot:
        from kinema.inference.storyboard import load_storyboard, storyboard_from_flags

        if storyboard is not None and shot:
            raise KinemaError("give either --storyboard FILE or --shot flags, not both")
        if prompts is not None:
            raise KinemaError("--storyboard/--shot make one video; they cannot be combined with --prompts")
        board = load_storyboard(storyboard) if storyboard is not None else storyboard_from_flags(shot, prompt)
        if prompt and not board.scene:
            board = type(board)(board.shots, prompt.strip())
        common["storyboard"] = board.to_dict()
        prompt = prompt or ""
    if prompts is not None:
        if prompt is not None:
            raise KinemaError("give either a PROMPT or --prompts FILE, not both")
        if out_dir is None:
            raise KinemaError("--prompts needs --out-dir")
        items = read_prompts_file(prompts)
        requests = []
        for n, item in enumerate(items):
            name = item.pop("name", None) or f"{n:04d}"
            merged = {**common, **item}
            suffix = ".png" if merged.get("frames") == 1 else ".mp4"
            requests.append(Request(output=str(out_dir / f"{name}{suffix}"), **merged))
    else:
        if prompt is None:
            raise KinemaError("missing PROMPT (or --prompts FILE, --storyboard FILE, --shot ...)")
        requests = [Request(prompt=prompt, output=str(output), **common)]
    for request in requests:
        validate(request)  # every request is checked before the model is loaded
    pipe = load_pipeline(model)
    for request in requests:
        with tqdm(desc=Path(request.output).name, unit="step", disable=None, leave=False) as bar:
            def progress(step: int, total: int, _latents, bar=bar) -> None:
                bar.total = total
                bar.update(step - bar.n)

            written = run(pipe, request, progress, log=tqdm.write)
        typer.echo(f"wrote {written}")


@world_app.command("make")
def world_make(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    clips: Annotated[int, typer.Option(help="Number of clips.")] = 8,
    seconds: Seconds = 4.0,
    size: Size = "64x64",
    fps: Fps = 8.0,
    seed: Seed = 0,
    shots: Shots = "1",
    framings: Framings = "wide,medium,closeup,pan",
    objects: Objects = "1-3",
    occluder_probability: OccluderP = 0.5,
    paint_probability: PaintP = 0.3,
) -> None:
    """Write N simulated clips (MP4), their ground truth and DIR/manifest.jsonl."""
    from tqdm import tqdm

    from kinema.config import parse_size
    from kinema.frames import MAX_SIDE
    from kinema.world.dataset import make_dataset

    if clips < 1 or clips > 1_000_000:
        raise KinemaError(f"clips must be between 1 and 1000000 (got {clips})")
    width, height = parse_size(size, max_side=MAX_SIDE)
    options = _scene_options(seconds, fps, shots, framings, objects, occluder_probability, paint_probability)
    with tqdm(total=clips, unit="clip", desc="world make", disable=None) as bar:
        manifest = make_dataset(out, clips, options, (width, height), seed, progress=lambda n: bar.update(1))
    typer.echo(f"wrote {clips} clips and {manifest}")


@world_app.command("vocab")
def world_vocab() -> None:
    """Print every word the captions use, by category, with its synonyms."""
    from kinema.world.caption import vocab_text

    typer.echo(vocab_text())


@world_app.command("show")
def world_show(
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG contact sheet to write.")] = Path("world.png"),
    video: Annotated[Path | None, typer.Option(help="Show this video instead of a new simulated clip.")] = None,
    seconds: Seconds = 4.0,
    size: Size = "64x64",
    fps: Fps = 8.0,
    seed: Seed = 0,
    shots: Shots = "1",
    framings: Framings = "wide,medium,closeup,pan",
    objects: Objects = "1-3",
    occluder_probability: OccluderP = 0.5,
    paint_probability: PaintP = 0.3,
    columns: Annotated[int, typer.Option(help="Frames per row.")] = 8,
    count: Annotated[int, typer.Option(help="Frames shown, evenly spaced.")] = 32,
    scale: Annotated[int, typer.Option(help="Enlargement factor.")] = 2,
) -> None:
    """Render a contact sheet PNG of a simulated clip (printing its captions), or of any video."""
    from kinema.config import parse_size
    from kinema.frames import MAX_SIDE
    from kinema.media import contact_sheet, read_video, write_image
    from kinema.world.dataset import make_clip
    from kinema.world.scene import sample_scene

    if not (1 <= columns <= 64 and 1 <= count <= 1024 and 1 <= scale <= 16):
        raise KinemaError("columns must be 1-64, count 1-1024 and scale 1-16")
    if video is not None:
        frames, _ = read_video(video)
    else:
        width, height = parse_size(size, max_side=MAX_SIDE)
        options = _scene_options(seconds, fps, shots, framings, objects, occluder_probability, paint_probability)
        clip = make_clip(sample_scene(seed, options), width, height)
        frames = clip.frames
        typer.echo(clip.captions.caption)
        for shot, text in zip(clip.scene.shots, clip.captions.shots):
            typer.echo(f"  frames {shot.start}-{shot.end - 1} [{shot.framing}]: {text}")
    write_image(output, contact_sheet(frames, columns=columns, count=count, scale=scale), sidecar=False)
    typer.echo(f"wrote {output}")


@eval_app.command("clips")
def eval_clips(
    folder: Annotated[Path, typer.Argument(help="A folder with manifest.jsonl, such as `kinema world make` writes.")],
    json_out: Annotated[bool, typer.Option("--json", help="Also write DIR/eval.json and print it.")] = False,
) -> None:
    """Score every clip of a folder against its manifest (caption, shots, scene) and print a table."""
    from kinema.eval.clips import evaluate_folder, format_attribute_checks, format_table
    from kinema.eval.metrics import format_clip_targets

    report = evaluate_folder(folder)
    typer.echo(format_table(report))
    if checks := format_attribute_checks(report["summary"]):
        typer.echo(checks)
    if targets := format_clip_targets(report["clip_targets"]):
        typer.echo(targets)
    if json_out:
        path = Path(folder) / "eval.json"
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(json.dumps(report["summary"]))
        typer.echo(f"wrote {path}")


@eval_app.command("suite")
def eval_suite(
    suite: Annotated[Path, typer.Argument(help="A prompt suite, such as configs/eval/basic.yaml.")],
    model: Annotated[Path | None, typer.Option(help="Model folder (default: the embedded model).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where videos and eval.json go "
                                                           "(default: runs/eval/SUITE).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N prompts.")] = None,
    samples: Annotated[int, typer.Option(min=1, max=64, help="Videos per prompt, each at its own seed "
                                                              "(pooled in the summary).")] = 1,
    steps: Annotated[int | None, typer.Option(help="Sampling steps for every prompt.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale for every prompt.")] = None,
    expand: Annotated[bool | None, typer.Option("--expand/--no-expand",
                                                help="Prompt expansion for every prompt (default: on).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Generate every prompt of a suite and score it with the analyzer against what the prompt names.

    Long clips (20 s and more) also get colour and sharpness drift and permanence; storyboards get
    cross-shot consistency and adherence per shot; both are printed next to their targets."""
    from kinema.eval.clips import format_attribute_checks, format_table
    from kinema.eval.long import format_targets
    from kinema.eval.metrics import format_clip_targets
    from kinema.inference.generate import load_pipeline
    from kinema.inference.suite import load_suite, run_suite

    spec = load_suite(suite)
    overrides = {k: v for k, v in (("steps", steps), ("guidance", guidance), ("expand", expand)) if v is not None}
    pipe = load_pipeline(model)
    folder = out or Path("runs") / "eval" / spec.name
    report = run_suite(spec, pipe, folder, limit=limit, overrides=overrides, samples=samples)
    typer.echo(format_table(report))
    if checks := format_attribute_checks(report["summary"]):
        typer.echo(checks)
    if targets := format_clip_targets(report["clip_targets"]):
        typer.echo(targets)
    if report.get("targets"):
        typer.echo(format_targets(report["targets"]))
    if json_out:
        extra = {"targets": report["targets"]} if report.get("targets") else {}
        typer.echo(json.dumps({"suite": report["suite"], "model": report["model"], **report["summary"],
                               "generate_seconds_median": report["generate_seconds_median"], **extra}))
    typer.echo(f"wrote {folder / 'eval.json'}")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --token.")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[str | None, typer.Option(envvar="KINEMA_TOKEN", show_envvar=True,
                                              help="Bearer token every API call must send.")] = None,
    db: Annotated[Path, typer.Option(help="SQLite job store; media go in '<name>-media' beside it.")] = Path(
        "kinema-jobs.sqlite"),
    model: Annotated[Path | None, typer.Option(help="Model folder (default: the embedded model).")] = None,
    max_queue: Annotated[int, typer.Option(help="Jobs waiting or running; more are answered 429.")] = 64,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (uploads included), in MiB.")] = 32.0,
    max_video_pixels: Annotated[int, typer.Option(help="Largest video, uploaded or generated, in frames x "
                                                       "width x height.")] = 1 << 25,
    poll_after_ms: Annotated[int, typer.Option(help="Poll interval the server suggests to clients.")] = 500,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve the OpenAI-compatible video API (/v1/videos) and the web studio (/) on one loaded model."""
    from kinema.serve.guard import check_host

    if not (1 <= port <= 65535):
        raise KinemaError(f"port must be between 1 and 65535 (got {port})")
    if not (1 <= max_queue <= 1_000_000):
        raise KinemaError(f"max-queue must be between 1 and 1000000 (got {max_queue})")
    if not (0 < max_upload_mb <= 4096):
        raise KinemaError(f"max-upload-mb must be > 0 and <= 4096 (got {max_upload_mb:g})")
    if not (1 <= max_video_pixels <= 1 << 40):
        raise KinemaError(f"max-video-pixels must be between 1 and 2^40 (got {max_video_pixels})")
    if not (10 <= poll_after_ms <= 60_000):
        raise KinemaError(f"poll-after-ms must be between 10 and 60000 (got {poll_after_ms})")
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise KinemaError(f"log-level '{log_level}': choose critical, error, warning, info or debug")
    if token is not None and not token.strip():
        raise KinemaError("token is empty")
    check_host(host, token)  # before anything heavy loads, so a refusal is immediate
    from kinema.inference.generate import load_pipeline
    from kinema.serve import ServerConfig, run_server

    config = ServerConfig(db=db, token=token, max_queue=max_queue, max_upload_bytes=int(max_upload_mb * (1 << 20)),
                          max_video_pixels=max_video_pixels, poll_after_ms=poll_after_ms)
    pipe = load_pipeline(model)
    pipe.text_encoder  # noqa: B018 (load it now: the first job should not wait, a broken install should fail here)
    run_server(config, pipe, host, port, log_level=log_level)


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="world, vae, train, dit, pipeline or long (benchmarks/bench_NAME.py).")],
) -> None:
    """Run a benchmark from the source checkout; it prints JSON lines (extra flags are passed through)."""
    import runpy

    script = BENCHMARKS / f"bench_{name}.py"
    if not script.is_file():
        available = sorted(p.stem.removeprefix("bench_") for p in BENCHMARKS.glob("bench_*.py"))
        raise KinemaError(f"no benchmark '{name}' (available: {', '.join(available) or 'none; run from a checkout'})")
    argv = [a for a in ctx.args if a != "--json"]  # every benchmark prints JSON lines
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved


def main() -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except KinemaError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # the last line of defence for the CLI
        status = click_exit_status(e)
        if status is not None:
            sys.exit(status)
        if os.environ.get("KINEMA_DEBUG"):
            raise
        typer.echo(f"error: internal error ({type(e).__name__}: {e}); set KINEMA_DEBUG=1 for a traceback", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
