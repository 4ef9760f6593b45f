"""The server's job store: what the API and the worker need from it, whatever database holds it.

Every accepted job is committed before the request that submits it is answered, so it survives a crash of
the server or of the machine. Jobs run in submission order. A worker claims a job with a lease that it renews
while it works; a job whose worker is gone (killed, or its machine vanished: the lease ran out; or, with one
server process on the store, any job it finds running when it starts) is queued again, unless it has already
been started ``MAX_ATTEMPTS`` times (then it is failed, so a job that kills its worker cannot keep the workers
down). Deleting a running job is how it is cancelled: its worker's next renewal finds it gone. Characters
(``kinema.serve.characters``) live in the same store.

``JobStore`` is the interface; ``kinema.serve.sql.SQLJobStore`` writes its queries once, and
``kinema.serve.sqlite.SQLiteJobStore`` (one file, one server process) and
``kinema.serve.postgres.PostgresJobStore`` (a server, and workers on any number of machines) run them.
``kinema.serve.database.open_job_store`` picks one for ``--db``: a ``postgresql://`` URL, or the path of a SQLite file.
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


class StoreUnavailable(KinemaError):
    """The job database cannot be reached now (a network database that is down or out of reach)."""


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
    worker: str | None = None  # the worker that holds the lease of a running job
    lease_until: float | None = None  # when that lease runs out, in seconds of the database's clock
    progress: int = 0  # percent done of a running job, as its worker last reported it


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

    shared: bool = False  # whether processes other than the server's (workers elsewhere) may run its jobs

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
    def claim_next(self, worker: str, lease: float) -> Job | None:
        """Take back the running jobs whose lease ran out (queued again, or failed after MAX_ATTEMPTS), then mark
        the oldest queued job in_progress (one more attempt) under ``worker``'s lease of ``lease`` seconds and
        return it; None when nothing waits. Two workers never claim the same job."""

    @abstractmethod
    def renew(self, job_id: str, worker: str, lease: float, progress: int) -> bool:
        """Extend ``worker``'s lease on a running job by ``lease`` seconds from now and record its progress; False
        when the job was deleted (cancelled) or is no longer this worker's (its lease ran out)."""

    @abstractmethod
    def complete(self, job_id: str, worker: str, output: str) -> bool:
        """Mark a running job completed; False when it was deleted meanwhile or is not ``worker``'s."""

    @abstractmethod
    def fail(self, job_id: str, worker: str, code: str, message: str) -> bool:
        """Mark a running job failed with an error code and a one-line message; False as for ``complete``."""

    @abstractmethod
    def requeue(self, job_id: str, worker: str) -> bool:
        """Put a running job back in the queue (its worker is stopping); that attempt does not count."""

    @abstractmethod
    def recover(self) -> tuple[int, int]:
        """When a server starts: running jobs whose worker is gone are queued again (or failed after
        MAX_ATTEMPTS): every running job where one process uses the store, those whose lease ran out where
        workers elsewhere share it. Returns (requeued, failed)."""

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


