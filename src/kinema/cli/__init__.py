"""The ``kinema`` command line: one typer app, each command group in a module of its own.

``generate`` (``kinema.cli.generate``), ``world`` (``world``), ``eval`` (``eval``), ``train`` (``train``),
``vae`` (``vae``), ``serve`` (``serve``), ``worker`` (``worker``) and ``bench`` (``bench``). ``main`` is the
entry point of the ``kinema`` script, of ``python -m kinema`` and of ``torchrun -m kinema``;
``kinema.cli.errors`` says how it ends.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kinema.cli.bench import bench
from kinema.cli.errors import run_app
from kinema.cli.eval import eval_app
from kinema.cli.generate import GenerateCommand, generate
from kinema.cli.serve import serve
from kinema.cli.train import train_app
from kinema.cli.vae import vae_app
from kinema.cli.worker import worker
from kinema.cli.world import world_app

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kinema: text-to-video on a causal video VAE, a diffusion transformer and flow matching.")


def show_version(value: bool) -> None:
    if value:
        from kinema import __version__

        typer.echo(f"kinema {__version__}")
        raise typer.Exit()


@app.callback()
def kinema_app(version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                                     help="Print kinema's version and exit.")] = False) -> None:
    """kinema: text-to-video on a causal video VAE, a diffusion transformer and flow matching."""


app.command("generate", cls=GenerateCommand)(generate)
app.add_typer(world_app, name="world")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(vae_app, name="vae")
app.command("serve")(serve)
app.command("worker")(worker)
app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(bench)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback. ``argv``: the arguments
    (default: the command line's)."""
    run_app(app, argv)
