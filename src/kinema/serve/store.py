"""The server's job store: what the API and the worker need from it, whatever database holds it.

Every accepted job is committed before the request that submits it is answered, so it survives a crash of
the server or of the machine. Jobs run in submission order. A job found ``in_progress`` when the server starts
was interrupted: ``recover`` queues it again, unless it has already been started ``MAX_ATTEMPTS`` times (then
it is failed, so a job that kills the server cannot keep it down). Characters (``kinema.serve.characters``)
live in the same store.

``JobStore`` is the interface; ``kinema.serve.sqlite.SQLiteJobStore`` implements it on one SQLite file, and
``kinema.serve.app.open_store`` picks the implementation the server runs on. Another database (PostgreSQL, for
workers on several machines) is another subclass of ``JobStore`` and one more case there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from kinema.errors import KinemaError

MAX_ATTEMPTS = 3
STATUSES = ("queued", "in_progress", "completed", "failed")


class QueueFull(KinemaError):
    """The queue holds as many jobs as the server allows."""


@dataclass
class Job:
    """One stored job; ``params`` are the stored generation parameters (plain JSON)."""

    seq: int  # submission order
    id: str
    status: str  # one of STATUSES
    created_at: int
    started_at: int | None
    completed_at: int | None
    model: str
    prompt: str
    seconds: str
    size: str
    params: dict[str, Any]
    remixed_from: str | None
    output: str | None
    error: dict[str, Any] | None
    attempts: int


@dataclass
class Character:
    id: str
    name: str
    created_at: int
    description: str  # what replaces the name in a prompt, e.g. "a small red ball"
    subject: dict[str, Any]  # colour, shape, size and where the analyzer saw it
    reference: str  # the reference frame's file name, inside the character's folder


class JobStore(ABC):
    """Jobs and characters, each call short and safe to make from the API's threads and the worker at once."""

    @abstractmethod
    def close(self) -> None: ...

    # -- jobs -------------------------------------------------------------------------------------

    @abstractmethod
    def add(self, job_id: str, *, model: str, prompt: str, seconds: str, size: str, params: dict,
            remixed_from: str | None = None, max_queue: int | None = None) -> Job:
        """Insert a queued job, committed before this returns; QueueFull when ``max_queue`` jobs already wait
        or run."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        """A page of jobs by submission order, and whether more follow. KinemaError for an unknown ``after``."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per status, every status of STATUSES included."""

    @abstractmethod
    def position(self, job: Job) -> int:
        """How many queued jobs run before this one."""

    @abstractmethod
    def delete(self, job_id: str) -> Job | None:
        """Remove a job; returns it as it was (its status says whether the worker was running it)."""

    @abstractmethod
    def claim_next(self) -> Job | None:
        """Mark the oldest queued job in_progress (one more attempt) and return it; None when nothing waits."""

    @abstractmethod
    def complete(self, job_id: str, output: str) -> bool:
        """Mark a running job completed; False when it was deleted meanwhile."""

    @abstractmethod
    def fail(self, job_id: str, code: str, message: str) -> bool:
        """Mark a running job failed with an error code and a one-line message."""

    @abstractmethod
    def requeue(self, job_id: str) -> bool:
        """Put a running job back in the queue (the server is stopping); that attempt does not count."""

    @abstractmethod
    def recover(self) -> tuple[int, int]:
        """At start-up: jobs left in_progress by a crash are queued again (or failed after MAX_ATTEMPTS).
        Returns (requeued, failed)."""

    @abstractmethod
    def ids(self) -> set[str]:
        """The ids of every job and character (what the media folder may hold)."""

    # -- characters ---------------------------------------------------------------------------------

    @abstractmethod
    def add_character(self, character: Character) -> None:
        """KinemaError when a character of that name (ignoring case) exists."""

    @abstractmethod
    def get_character(self, character_id: str) -> Character | None: ...

    @abstractmethod
    def characters(self) -> list[Character]:
        """Every character, oldest first."""

