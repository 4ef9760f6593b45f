"""User-facing errors.

Every problem caused by input (a flag, a config file, a video, a checkpoint) is raised as a
``KinemaError`` whose message is one line that names the field, the value and what is allowed.
The CLI prints it as ``error: <message>`` and exits with status 2 (``kinema.cli.errors``); the HTTP API turns
it into a 4xx.
"""

from __future__ import annotations


class KinemaError(Exception):
    """An error the user can fix. ``str(error)`` is a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(KinemaError):
    """A config file or override is invalid."""


class MediaError(KinemaError):
    """A video or image file cannot be read or written."""
