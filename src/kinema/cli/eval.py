"""``kinema eval``: score videos against their captions (``clips``) or generate and score a prompt suite
(``suite``). With ``--json``, standard output holds the JSON alone; the table and notes go to standard error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kinema.cli.options import Device, Dtype

eval_app = typer.Typer(no_args_is_help=True, help="Score videos against their captions with the analyzer.")


@eval_app.command("clips")
def eval_clips(
    folder: Annotated[Path, typer.Argument(help="A folder with manifest.jsonl, such as `kinema world make` writes.")],
    json_out: Annotated[bool, typer.Option("--json", help="Also write DIR/eval.json, and print the summary as "
                                                          "JSON alone on standard output.")] = False,
) -> None:
    """Score every clip of a folder against its manifest (caption, shots, scene) and print a table."""
    from kinema.eval.clips import evaluate_folder

    report = evaluate_folder(folder)
    print_report(report, to_stderr=json_out)
    if json_out:
        path = Path(folder) / "eval.json"
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}", err=True)
        typer.echo(json.dumps(report["summary"]))


@eval_app.command("suite")
def eval_suite(
    suite: Annotated[Path, typer.Argument(help="A prompt suite, such as configs/eval/basic.yaml.")],
    model: Annotated[str | None, typer.Option(help="A model folder, or the name of a packaged model "
                                                   "(default: kinema-tiny).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where videos and eval.json go "
                                                           "(default: runs/eval/SUITE).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N prompts.")] = None,
    samples: Annotated[int, typer.Option(min=1, max=64, help="Videos per prompt, each at its own seed "
                                                              "(pooled in the summary).")] = 1,
    steps: Annotated[int | None, typer.Option(help="Sampling steps for every prompt.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale for every prompt.")] = None,
    step_cache: Annotated[float | None, typer.Option(
        help="First-Block Cache threshold in [0, 1] for every prompt (0: off; default: the model's).")] = None,
    expand: Annotated[bool | None, typer.Option(
        "--expand/--no-expand", help="Prompt expansion for every prompt (default: the model's; a storyboard's shots "
                                     "only with --expand).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON alone on standard output "
                                                          "(the table goes to standard error).")] = False,
    device: Device = None,
    dtype: Dtype = None,
) -> None:
    """Generate every prompt of a suite and score it with the analyzer against what the prompt names.

    Long clips (20 s and more) also get colour and sharpness drift and permanence; storyboards get
    cross-shot consistency and adherence per shot; both are printed next to their targets."""
    from kinema.inference.generate import load_pipeline
    from kinema.inference.suite import load_suite, run_suite

    spec = load_suite(suite)
    overrides = {k: v for k, v in (("steps", steps), ("guidance", guidance), ("expand", expand),
                                   ("step_cache", step_cache)) if v is not None}
    pipe = load_pipeline(model, device, dtype)
    folder = out or Path("runs") / "eval" / spec.name
    report = run_suite(spec, pipe, folder, limit=limit, overrides=overrides, samples=samples)
    print_report(report, to_stderr=json_out)
    typer.echo(f"wrote {folder / 'eval.json'}", err=json_out)
    if json_out:
        extra = {"targets": report["targets"]} if report.get("targets") else {}
        typer.echo(json.dumps({"suite": report["suite"], "model": report["model"], **report["summary"],
                               "generate_seconds_median": report["generate_seconds_median"], **extra}))


def print_report(report: dict, to_stderr: bool = False) -> None:
    """The table of an eval report, its attribute checks and each measure next to its target."""
    from kinema.eval.clips import format_attribute_checks, format_table
    from kinema.eval.long import format_targets
    from kinema.eval.metrics import format_clip_targets

    lines = [format_table(report), format_attribute_checks(report["summary"]),
             format_clip_targets(report["clip_targets"]),
             format_targets(report["targets"]) if report.get("targets") else None]
    for line in lines:
        if line:
            typer.echo(line, err=to_stderr)
