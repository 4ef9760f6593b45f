"""``kinema generate``: a video (or an image) from a prompt, in any mode, one request or a batch.

Under ``torchrun --nproc_per_node N -m kinema generate ...`` the N processes make each video together
(``KinemaPipeline.enable_parallel``: guidance's two passes on two halves of the ranks, every pass's tokens shared
within a half) and rank 0 writes it: the same video as one process makes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from kinema.cli.errors import rank
from kinema.cli.options import Device, Dtype, Offload
from kinema.errors import KinemaError


class GenerateCommand(TyperCommand):
    """``kinema generate``, with ``--connect`` checked before click reads it: click would take an option that
    follows a single video (``--connect A -o B``) as the second video and then complain about B."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        for n, arg in enumerate(args):
            if arg == "--connect":
                videos = args[n + 1:n + 3]
                if len(videos) < 2 or any(video.startswith("-") for video in videos):
                    given = " ".join(v for v in videos if not v.startswith("-")) or "nothing"
                    raise KinemaError(f"--connect takes two videos, --connect FIRST LAST (got {given})")
        return super().parse_args(ctx, args)


def generate(
    prompt: Annotated[str | None, typer.Argument(help="What to generate.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file: .mp4 (H.264), .webm (VP9), .gif, or "
                                                                 ".png/.jpg for an image.")] = Path("out.mp4"),
    seconds: Annotated[float | None, typer.Option(
        help="Length in seconds (for --extend/--connect: seconds added; default: the model's, 4 for kinema-tiny).",
        show_default=False)] = None,
    frames: Annotated[int | None, typer.Option(help="Exact frame count (1 + 4k); overrides --seconds.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, multiples of 8, any aspect ratio (default: the "
                                                  "model's, 64x64 for kinema-tiny, 832x480 for Wan2.1).",
                                             show_default=False)] = None,
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
    sampler: Annotated[str | None, typer.Option(
        help="euler, heun, ar (frame by frame) or scheduler (a Wan folder's own; default: the model's).")] = None,
    model: Annotated[str | None, typer.Option(help="A model folder, or the name of a packaged model "
                                                   "(default: kinema-tiny).")] = None,
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
    expand: Annotated[bool | None, typer.Option(
        "--expand/--no-expand", help="Expand the prompt into the caption style the model was trained on "
                                     "(printed and stored in the metadata; default: the model's, on for models "
                                     "trained on the world's captions, off for Wan; a storyboard's shots only "
                                     "with --expand).", show_default=False)] = None,
    expand_with: Annotated[str | None, typer.Option(
        help="Extend the prompt with this OpenAI-compatible chat endpoint (a local llama.cpp, vLLM or Ollama "
             "server, e.g. http://127.0.0.1:8080/v1); on a timeout or a bad answer the prompt is used as written.")
                           ] = None,
    lora: Annotated[list[str] | None, typer.Option(
        help="A LoRA file (.safetensors, diffusers/PEFT or a community Wan format) as FILE or FILE:SCALE; "
             "repeat for more. Wan2.2 A14B: FILE goes to the high-noise expert, low=FILE to the low-noise one.")
                           ] = None,
    split_guidance: Annotated[bool, typer.Option(
        "--split-guidance/--no-split-guidance", help="Under torchrun: guidance's two passes on two halves of the "
                                                     "ranks (an even number), or every rank on every pass.")] = True,
    step_cache: Annotated[float | None, typer.Option(
        help="Step caching: reuse the later blocks' residual while the first block's changes by less than this "
             "(diffusers' First-Block Cache; 0.05-0.2 is typical, 0: off; default: the model's).")] = None,
    crf: Annotated[int | None, typer.Option(
        help="Video quality: the H.264 (or VP9) CRF, lower is better; 0 is lossless H.264, which some browsers "
             "do not play (default: 12).", show_default=False)] = None,
    device: Device = None,
    offload: Offload = "none",
    dtype: Dtype = None,
) -> None:
    """Generate a video (or an image) from a prompt, in any mode; writes provenance metadata and a sidecar JSON."""
    from kinema.inference.generate import check_inputs, check_placement
    from kinema.inference.request import validate
    from kinema.inference.settings import read_defaults
    from kinema.weights import find_model

    settings = dict(seconds=seconds, frames=frames, size=size, fps=fps, steps=steps, guidance=guidance, seed=seed,
                    negative_prompt=negative_prompt, image=str(image) if image else None,
                    extend=str(extend) if extend else None, direction=direction, loop=loop,
                    connect=[str(c) for c in connect] if connect else [], edit=str(edit) if edit else None,
                    strength=strength, sampler=sampler, window=window, context=context,
                    context_noise=context_noise, anchor=anchor, expand=expand, expand_with=expand_with,
                    loras=list(lora or []), step_cache=step_cache, crf=crf)
    if storyboard is not None or shot:
        if prompts is not None:
            raise KinemaError("--storyboard/--shot make one video; they cannot be combined with --prompts")
        settings["storyboard"] = storyboard_settings(prompt, storyboard, shot)
        prompt = prompt or ""
    requests = requests_for(prompt, output, prompts, out_dir, settings)
    check_placement(device, dtype, offload)
    folder = find_model(model)
    defaults = read_defaults(folder)  # the model's defaults, read before any weights load
    for request in requests:  # every request, and its input files, is checked before the model loads
        check_inputs(request, validate(request, defaults).mode)
    pipe = load_with_progress(folder, device, dtype, offload, quiet=rank() > 0)
    with parallel_ranks(pipe, split_guidance) as this_rank:
        if this_rank == 0:
            run_all(pipe, requests)
        else:  # the same work; rank 0 writes the files
            with tempfile.TemporaryDirectory() as scratch:
                run_all(pipe, scratch_outputs(requests, Path(scratch)), quiet=True)


@contextlib.contextmanager
def parallel_ranks(pipe: Any, split_guidance: bool = True) -> Iterator[int]:
    """Under torchrun: join the process group and make each video on all ranks together; yields this rank (0 in
    one process). The ranks leave the group together when the block ends well, at once when it raises."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        yield 0
        return
    from kinema.train.distributed import cleanup, init_distributed

    on_gpu = next(pipe.transformer.parameters()).is_cuda
    runtime = init_distributed(device="cuda" if on_gpu else "cpu")  # gloo for a pipeline on the CPU
    finished = False
    try:
        layout = pipe.enable_parallel(split_guidance)
        if runtime.rank == 0:
            typer.echo(f"{runtime.world_size} ranks make each video: guidance's passes on {layout.branches} "
                       f"{'halves' if layout.branches == 2 else 'group'} of {layout.sequence} rank"
                       f"{'s' if layout.sequence > 1 else ''}, sharing each pass's tokens", err=True)
        yield runtime.rank
        finished = True
    finally:
        cleanup(synchronize=finished)


def scratch_outputs(requests: list, folder: Path) -> list:
    """The requests with their outputs in ``folder`` (each under its own number), for ranks that do not write."""
    return [dataclasses.replace(r, output=str(folder / f"{n}{Path(r.output).suffix}")) for n, r in enumerate(requests)]


def load_with_progress(folder: Path, device: str | None, dtype: str | None, offload: str = "none",
                       quiet: bool = False):
    """Load a model, saying so first (imports and weights take seconds) and where the time went after
    (``quiet``: neither, as on the ranks that do not write). The text encoder is freed after each encoding (a Wan
    UMT5 is several GB that sampling does not need)."""
    import time

    from kinema.cli.progress import Printer

    printer = Printer()
    if not quiet:
        printer.line(f"loading model {folder.name}…")
    started = time.monotonic()
    import torch  # noqa: F401 (imports are timed on their own: most of the start-up is imports)

    import kinema.inference.pipeline  # noqa: F401 (diffusers and kinema's models)
    from kinema.inference.generate import load_pipeline

    imported = time.monotonic()
    pipe = load_pipeline(folder, device, dtype, release_text_encoder=True, offload=offload)
    loaded = time.monotonic()
    pipe.text_encoder  # noqa: B018 (load it now, inside the timing, not at the first prompt)
    encoder = time.monotonic()
    from kinema.devices import dtype_name

    if not quiet:
        printer.line(f"loaded {pipe.name} on {pipe._execution_device} ({dtype_name(pipe.dtype)}) in "
                     f"{encoder - started:.1f} s: imports {imported - started:.1f} s, weights "
                     f"{loaded - imported:.1f} s, text encoder {encoder - loaded:.1f} s")
    return pipe


def storyboard_settings(prompt: str | None, path: Path | None, shots: list[str] | None) -> dict:
    """The storyboard of --storyboard FILE or of --shot flags, as a Request holds it; PROMPT is its scene when
    the storyboard has none."""
    from kinema.inference.storyboard import Storyboard, load_storyboard, storyboard_from_flags

    if path is not None and shots:
        raise KinemaError("give either --storyboard FILE or --shot flags, not both")
    board = load_storyboard(path) if path is not None else storyboard_from_flags(shots or [], prompt)
    if prompt and not board.scene:
        board = Storyboard(board.shots, prompt.strip())
    return board.to_dict()


def requests_for(prompt: str | None, output: Path, prompts: Path | None, out_dir: Path | None,
                 settings: dict) -> list:
    """One Request for PROMPT, or one per line of a --prompts file (its own settings over the flags')."""
    from kinema.inference.request import Request, read_prompts_file

    if prompts is None:
        if prompt is None:
            raise KinemaError("missing PROMPT (or --prompts FILE, --storyboard FILE, --shot ...)")
        return [Request(prompt=prompt, output=str(output), **settings)]
    if prompt is not None:
        raise KinemaError("give either a PROMPT or --prompts FILE, not both")
    if out_dir is None:
        raise KinemaError("--prompts needs --out-dir")
    requests = []
    for n, item in enumerate(read_prompts_file(prompts)):
        name = item.pop("name", None) or f"{n:04d}"
        merged = {**settings, **item}
        suffix = ".png" if merged.get("frames") == 1 else ".mp4"
        requests.append(Request(output=str(out_dir / f"{name}{suffix}"), **merged))
    return requests


def run_all(pipe, requests: list, quiet: bool = False) -> None:
    """Generate each request in turn with a progress bar that stays (plain lines without a terminal), after an
    estimate where a request is far beyond this machine; print where each went (``quiet``: none of it)."""
    from kinema.cli.progress import Generation, Printer, show_pipeline_log
    from kinema.inference.estimate import estimate, far_beyond
    from kinema.inference.generate import call_arguments, run

    printer = Printer()
    if not quiet:
        show_pipeline_log(printer)
    for request in requests:
        prepared = call_arguments(pipe, request)
        if quiet:
            run(pipe, request, None, prepared)
            continue
        warning = far_beyond(estimate(pipe, pipe.resolve_call(**prepared[1])), pipe._execution_device)
        if warning is not None:
            printer.line(f"warning: {warning}")
        progress = Generation(Path(request.output).name, printer)
        try:
            written = run(pipe, request, progress.update, prepared)
        finally:
            took = progress.close()
        typer.echo(f"wrote {written} ({took:.1f} s)")
