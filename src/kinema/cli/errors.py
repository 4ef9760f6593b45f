"""How the command line ends: user errors print one line and exit 2, never a traceback.

A ``KinemaError`` prints ``error: <message>`` (prefixed with the rank under torchrun, where several processes
share the terminal); click's parsing errors (an unknown option or command, a bad value) print one line that
points at ``--help``; anything else is an internal error, one line unless ``KINEMA_DEBUG`` is set.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from kinema.errors import KinemaError


def run_app(app: Any, argv: list[str] | None = None) -> None:
    """Run a typer app as a program and exit with its status: 0, 1 (abort or internal error), 2 (bad input)
    or 130 (interrupted)."""
    try:
        app(argv, standalone_mode=False)
    except KinemaError as e:
        typer.echo(f"{rank_prefix()}error: {e}", err=True)
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
        typer.echo(f"{rank_prefix()}error: internal error ({type(e).__name__}: {e}); set KINEMA_DEBUG=1 for a "
                   "traceback", err=True)
        sys.exit(1)


def rank() -> int:
    """This process's rank under torchrun (0 alone)."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def rank_prefix() -> str:
    """'[rank N] ' when several processes share the terminal (torchrun), else ''."""
    try:
        several = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        several = False
    return f"[rank {rank()}] " if several else ""


def _click_exception_modules() -> list:
    """click's exception module, and typer's bundled copy of click (typer 0.2x), whichever are installed."""
    modules = []
    try:
        import click.exceptions

        modules.append(click.exceptions)
    except ImportError:
        pass
    try:
        from typer._click import exceptions as bundled  # typer that carries its own click

        modules.append(bundled)
    except ImportError:
        pass
    return modules


def click_exit_status(error: BaseException) -> int | None:
    """Print a command-line parsing error (an unknown option or command, a bad value) as one line,
    ``error: <message> (see '<command> --help')``, and return the exit status for it (2 for usage, 1 for an
    abort). Returns None, printing nothing, for any other exception."""
    modules = _click_exception_modules()
    if any(isinstance(error, abort) for m in modules if (abort := getattr(m, "Abort", None)) is not None):
        return 1
    if not any(isinstance(error, m.ClickException) for m in modules):
        return None
    message = " ".join(str(error.format_message()).split())
    context = getattr(error, "ctx", None)
    path = getattr(context, "command_path", "") if context is not None else ""
    hint = f" (see '{path} --help')" if path else ""
    if message:  # no message: the command's help was asked for by giving no arguments, and is shown
        print(f"error: {message}{hint}", file=sys.stderr)
    return int(getattr(error, "exit_code", 2) or 2)
