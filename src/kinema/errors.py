"""User-facing errors.

Every problem caused by input (a flag, a config file, a video, a checkpoint) is raised as a
``KinemaError`` whose message is one line that names the field, the value and what is allowed.
The CLI prints it as ``error: <message>`` and exits with status 2; the HTTP API turns it into a 4xx.
"""

from __future__ import annotations

import sys


class KinemaError(Exception):
    """An error the user can fix. ``str(error)`` is a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(KinemaError):
    """A config file or override is invalid."""


class MediaError(KinemaError):
    """A video or image file cannot be read or written."""


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
