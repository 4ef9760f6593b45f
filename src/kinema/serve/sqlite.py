"""The SQLite job store (``kinema.serve.store.JobStore``): one file in WAL mode that holds every accepted job and
character.

A job is committed (``synchronous=FULL``) before the request that submits it is answered, so an accepted job
survives a crash of the server or of the machine; jobs run in the order of the ``seq`` column. One connection
is shared by the API threads and the worker, behind a lock; every call is short. One server process uses a
file at a time (``kinema.serve.app`` locks it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from kinema.errors import KinemaError
from kinema.serve.store import MAX_ATTEMPTS, STATUSES, Character, Job, JobStore, QueueFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seconds TEXT NOT NULL,
    size TEXT NOT NULL,
    params TEXT NOT NULL,
    remixed_from TEXT,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS characters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT UNIQUE NOT NULL,
    created_at INTEGER NOT NULL,
    description TEXT NOT NULL,
    subject TEXT NOT NULL,
    reference TEXT NOT NULL
);
"""


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["params"] = json.loads(values["params"])
    values["error"] = json.loads(values["error"]) if values["error"] else None
    return Job(**values)


def _character(row: sqlite3.Row) -> Character:
    values = dict(row)
    values.pop("name_key")
    values["subject"] = json.loads(values["subject"])
    return Character(**values)


class SQLiteJobStore(JobStore):
    """Jobs and characters in one SQLite database (WAL mode, committed before the API answers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise KinemaError(f"cannot open the job database '{self.path}': {error}") from None
        if mode.lower() != "wal":
            raise KinemaError(f"the job database '{self.path}' cannot use WAL mode (got journal mode '{mode}')")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- jobs -------------------------------------------------------------------------------------

    def add(self, job_id: str, *, model: str, prompt: str, seconds: str, size: str, params: dict,
            remixed_from: str | None = None, max_queue: int | None = None) -> Job:
        """Insert a queued job; QueueFull when ``max_queue`` jobs already wait or run."""
        now = int(time.time())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if max_queue is not None:
                    waiting = self._db.execute(
                        "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'in_progress')").fetchone()[0]
                    if waiting >= max_queue:
                        raise QueueFull(f"the queue is full ({waiting} jobs waiting or running, the limit is "
                                        f"{max_queue}); try again when some have finished")
                self._db.execute(
                    "INSERT INTO jobs (id, status, created_at, model, prompt, seconds, size, params, remixed_from) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, now, model, prompt, seconds, size, json.dumps(params), remixed_from))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        """A page of jobs by submission order, and whether more follow. KinemaError for an unknown ``after``."""
        if order not in ("asc", "desc"):
            raise KinemaError(f"order '{order}': choose asc or desc")
        with self._lock:
            where, args = "", ()
            if after is not None:
                row = self._db.execute("SELECT seq FROM jobs WHERE id = ?", (after,)).fetchone()
                if row is None:
                    raise KinemaError(f"after '{after}': no such video")
                where, args = ("WHERE seq > ?" if order == "asc" else "WHERE seq < ?"), (row["seq"],)
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq {order.upper()} LIMIT ?",
                                    (*args, limit + 1)).fetchall()
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | {r["status"]: r["n"] for r in rows}

    def position(self, job: Job) -> int:
        """How many queued jobs run before this one."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?",
                                    (job.seq,)).fetchone()[0]

    def delete(self, job_id: str) -> Job | None:
        """Remove a job; returns it as it was (its status says whether the worker was running it)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return _job(row) if row else None

    def claim_next(self) -> Job | None:
        """Mark the oldest queued job in_progress and return it; None when nothing waits."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
                if row is not None:
                    self._db.execute("UPDATE jobs SET status = 'in_progress', started_at = ?, "
                                     "attempts = attempts + 1 WHERE seq = ?", (int(time.time()), row["seq"]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if row is None:
                return None
            return _job(self._db.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone())

    def complete(self, job_id: str, output: str) -> bool:
        """Mark a running job completed; False when it was deleted meanwhile."""
        return self._write(
            "UPDATE jobs SET status = 'completed', completed_at = ?, output = ?, error = NULL "
            "WHERE id = ? AND status = 'in_progress'", (int(time.time()), output, job_id)) == 1

    def fail(self, job_id: str, code: str, message: str) -> bool:
        """Mark a running job failed with an error code and a one-line message."""
        error = json.dumps({"code": code, "message": message})
        return self._write("UPDATE jobs SET status = 'failed', completed_at = ?, error = ? "
                           "WHERE id = ? AND status = 'in_progress'", (int(time.time()), error, job_id)) == 1

    def requeue(self, job_id: str) -> bool:
        """Put a running job back in the queue (the server is stopping)."""
        return self._write("UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0) "
                           "WHERE id = ? AND status = 'in_progress'", (job_id,)) == 1

    def recover(self) -> tuple[int, int]:
        """At start-up: jobs left in_progress by a crash are queued again (or failed after MAX_ATTEMPTS).

        Returns (requeued, failed)."""
        error = json.dumps({"code": "server_stopped", "message": f"the server stopped during this job "
                                                                 f"{MAX_ATTEMPTS} times; it is not retried"})
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                failed = self._db.execute(
                    "UPDATE jobs SET status = 'failed', completed_at = ?, error = ? "
                    "WHERE status = 'in_progress' AND attempts >= ?", (int(time.time()), error, MAX_ATTEMPTS)).rowcount
                requeued = self._db.execute(
                    "UPDATE jobs SET status = 'queued' WHERE status = 'in_progress'").rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return requeued, failed

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM jobs UNION SELECT id FROM characters")}

    # -- characters ---------------------------------------------------------------------------------

    def add_character(self, character: Character) -> None:
        """KinemaError when a character of that name (ignoring case) exists."""
        try:
            self._write("INSERT INTO characters (id, name, name_key, created_at, description, subject, reference) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (character.id, character.name, character.name.casefold(), character.created_at,
                         character.description, json.dumps(character.subject), character.reference))
        except sqlite3.IntegrityError:
            raise KinemaError(f"name '{character.name}': a character of that name exists") from None

    def get_character(self, character_id: str) -> Character | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM characters WHERE id = ?", (character_id,)).fetchone()
        return _character(row) if row else None

    def characters(self) -> list[Character]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM characters ORDER BY created_at, id").fetchall()
        return [_character(r) for r in rows]
