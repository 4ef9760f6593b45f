"""``kinema train ...``: train the VAE and the DiT, cache latents, export weights.

The same commands run in one process or under torchrun, which launches the same entry point:
``torchrun --nproc_per_node N -m kinema train dit --config ...``. Imports stay light here (torch and the
models load inside the commands), so ``kinema --help`` is fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kinema.cli.errors import rank
from kinema.cli.options import Device

train_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Train the models (one process, or many under torchrun).")


@train_app.callback()
def _train_group() -> None:
    """Train the models (one process, or many under torchrun)."""  # a callback keeps `vae` a sub-command


ConfigPath = Annotated[Path, typer.Option("--config", help="YAML config, such as configs/vae/tiny.yaml.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in "
                                                       "train.out_dir (a fresh start if there is none).")]
Overrides = Annotated[list[str] | None, typer.Argument(help="Config overrides KEY=VALUE, such as train.steps=100 "
                                                            "train.lr=2e-4.", show_default=False)]


def run_training(train: Callable[..., Any], settings: Any, resume: bool) -> Any:
    """``train(settings, resume=resume)``, leaving the process group however it ends (at once when it raises)."""
    from kinema.train.distributed import cleanup

    try:
        summary = train(settings, resume=resume)
    except BaseException:
        cleanup()
        raise
    cleanup(synchronize=True)
    return summary


@train_app.command("vae")
def vae(config: ConfigPath, resume: Resume = False, overrides: Overrides = None) -> None:
    """Train the video VAE on simulated-world clips; writes checkpoints, metrics.jsonl and OUT/vae/."""
    from kinema.train.vae import load_vae_config, train_vae

    _setup_logging()
    settings = load_vae_config(config, overrides or [])
    summary = run_training(train_vae, settings, resume)
    if rank() == 0:
        loss = "n/a" if summary.loss is None else f"{summary.loss:.4g}"
        evaluation = "".join(f", {key} {value:.4g}" for key, value in summary.metrics.items())
        typer.echo(f"trained {summary.step} steps (loss {loss}{evaluation}, {summary.skipped_steps} skipped); "
                   f"wrote {Path(settings.train.out_dir) / 'vae'}")


@train_app.command("dit")
def dit(config: ConfigPath, resume: Resume = False, overrides: Overrides = None) -> None:
    """Train the diffusion transformer with flow matching on VAE latents of simulated-world clips."""
    from kinema.train.dit import load_dit_config, train_dit

    _setup_logging()
    settings = load_dit_config(config, overrides or [])
    summary = run_training(train_dit, settings, resume)
    if rank() == 0:
        loss = "n/a" if summary.loss is None else f"{summary.loss:.4g}"
        typer.echo(f"trained {summary.step} steps (loss {loss}, {summary.skipped_steps} skipped)")


@train_app.command("distill")
def distill(config: ConfigPath, resume: Resume = False, overrides: Overrides = None) -> None:
    """Distil a model folder into a few-step transformer (guidance folded in): record the teacher, train the
    student, write OUT/pipeline, the teacher's folder with the student beside it (picked by --steps)."""
    from kinema.train.distill import load_distill_config, train_distill
    from kinema.weights import find_model

    _setup_logging()
    settings = load_distill_config(config, overrides or [])
    settings.teacher = str(find_model(settings.teacher))
    summary = run_training(train_distill, settings, resume)
    if rank() == 0:
        loss = "n/a" if summary.loss is None else f"{summary.loss:.4g}"
        done = summary.step >= settings.train.steps
        where = f"; wrote {Path(settings.train.out_dir) / 'pipeline'}" if done else "; --resume continues"
        typer.echo(f"trained {summary.step} steps (loss {loss}, {summary.skipped_steps} skipped){where}")


@train_app.command("export-distill")
def export_distill_command(
    config: ConfigPath,
    output: Annotated[Path, typer.Option("-o", "--output", help="Pipeline folder to write.")],
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint directory (default: the newest).")] = None,
    overrides: Overrides = None,
) -> None:
    """Export a distillation run (even one still going): the teacher's folder with the student beside it."""
    from kinema.train.distill import export_distilled, load_distill_config
    from kinema.weights import find_model

    _setup_logging()
    settings = load_distill_config(config, overrides or [])
    settings.teacher = str(find_model(settings.teacher))
    folder, step = export_distilled(settings, output, checkpoint)
    typer.echo(f"wrote {folder} (few-step transformer: EMA weights of step {step})")


@train_app.command("cache-latents")
def cache_latents_command(
    config: ConfigPath,
    output: Annotated[Path, typer.Option("-o", "--out", help="Cache folder to write (resumable).")],
    clips: Annotated[int | None, typer.Option("--clips", min=1, help="How many clips to encode (world clips: "
                                                                     "required; a video folder: default, each "
                                                                     "video once).")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="Store float32 latents (default: float16).")] = False,
    overrides: Overrides = None,
) -> None:
    """Encode the clips of the DiT config's `data` section (world clips, or your videos with data.folder=DIR) with
    its VAE into a latent cache; train on it with data.latent_cache=[DIR]."""
    import torch
    from tqdm import tqdm

    from kinema.errors import KinemaError
    from kinema.train.dit import cache_training_latents, load_dit_config

    _setup_logging()
    settings = load_dit_config(config, overrides or [])
    if clips is None and settings.data.folder is None:
        raise KinemaError("--clips is needed for world clips (how many to render and encode)")
    with tqdm(unit="batch", desc="caching latents") as bar:
        index = cache_training_latents(settings, output, clips, torch.float32 if fp32 else torch.float16,
                                       progress=lambda done: bar.update(done - bar.n))
    typer.echo(f"wrote {index.parent} ({json.loads(index.read_text(encoding='utf-8'))['items']} clips)")


@train_app.command("export-vae")
def export_vae_command(
    config: ConfigPath,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write (diffusers layout).")],
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint directory (default: the newest).")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="Keep float32 weights (default: float16).")] = False,
    overrides: Overrides = None,
) -> None:
    """Export the EMA weights of a VAE training run (even one still going) with measured latent statistics."""
    import torch

    from kinema.train.vae import export_checkpoint, load_vae_config

    _setup_logging()
    settings = load_vae_config(config, overrides or [])
    folder, step = export_checkpoint(settings, output, checkpoint, torch.float32 if fp32 else torch.float16)
    typer.echo(f"wrote {folder} (EMA weights of step {step})")


@train_app.command("export-dit")
def export_dit_command(
    config: ConfigPath,
    output: Annotated[Path, typer.Option("-o", "--output", help="Pipeline folder to write.")],
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint directory (default: the newest).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name stored in the folder (default: its name).")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="Keep float32 weights (default: float16).")] = False,
    overrides: Overrides = None,
) -> None:
    """Export the EMA weights of a DiT training run, with its VAE, as a pipeline folder for `kinema generate`."""
    import torch

    from kinema.train.dit import export_pipeline, load_dit_config

    _setup_logging()
    settings = load_dit_config(config, overrides or [])
    folder, step = export_pipeline(settings, output, checkpoint, torch.float32 if fp32 else torch.float16, name)
    typer.echo(f"wrote {folder} (EMA weights of step {step})")


class _TqdmHandler(logging.Handler):
    """Log lines that do not break a running progress bar; warnings and errors say so."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        try:
            tqdm.write(prefix + self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _setup_logging() -> None:
    """The trainer's log and the data sources' (what a video folder holds and skips) as plain lines."""
    for name in ("kinema.train", "kinema.data"):
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _TqdmHandler) for handler in logger.handlers):
            handler = _TqdmHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@train_app.command("lora")
def lora_command(
    model: Annotated[str, typer.Option(help="The model folder (a diffusers Wan folder, or kinema's own).")],
    data: Annotated[Path, typer.Option(help="A folder of videos, each with a .txt caption beside it (or a "
                                            "manifest.jsonl).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The LoRA file to write (.safetensors).")] = Path(
        "lora.safetensors"),
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 500,
    rank_: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 16,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the rank, scale 1).")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Clips per step.")] = 1,
    frames: Annotated[int, typer.Option(help="Frames per clip (1 + 4k).")] = 17,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT clips are cropped and resized to.")] = "256x256",
    fps: Annotated[float, typer.Option(help="Frames per second clips are sampled at.")] = 16.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Device = None,
    expert: Annotated[str, typer.Option(help="Wan2.2 A14B: the expert to train for, high (noise) or low; load a "
                                             "low one with --lora low=FILE.")] = "high",
) -> None:
    """Train a LoRA on a folder of your own videos with captions; writes the diffusers format, which `kinema generate
    --lora` and diffusers' WanPipeline.load_lora_weights read."""
    from kinema.devices import resolve_device
    from kinema.train.lora import LoraTrainConfig, train_lora

    config = LoraTrainConfig(model=model, data=str(data), out=str(output), rank=rank_, alpha=alpha, steps=steps,
                             lr=lr, batch_size=batch_size, frames=frames, size=size, fps=fps, seed=seed,
                             device=str(resolve_device(device)), expert=expert)
    written = train_lora(config, log=typer.echo)
    typer.echo(f"wrote {written}")
