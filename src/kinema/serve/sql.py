"""The job store's queries, written once for both databases (``kinema.serve.store.JobStore``).

``SQLJobStore`` holds every query in the SQL that SQLite and PostgreSQL share, with ``?`` placeholders;
``kinema.serve.sqlite`` and ``kinema.serve.postgres`` give it a connection and the few things that differ: the
column types of the schema, the database's clock, how a claim skips rows other workers hold (``FOR UPDATE SKIP
LOCKED``), how submissions are serialised under the queue limit, and whether a server that starts may take back
every running job (SQLite: one process uses the file) or only those whose lease ran out (PostgreSQL: workers on
other machines may be running them).

Leases: a worker claims a job for ``lease`` seconds of the database's clock and renews it while it works
(``renew``, which also records progress). A job whose lease ran out (its worker was killed, or its machine
vanished) is queued again by the next claim, or failed once it has been started ``MAX_ATTEMPTS`` times.
Only the worker holding a job's lease may complete, fail or requeue it, so a job that two workers ran (the
first one's lease ran out while it was stalled) is completed once.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import abstractmethod
from typing import Any, ClassVar, Protocol

from kinema.errors import KinemaError
from kinema.serve.store import MAX_ATTEMPTS, STATUSES, Character, Job, JobStore, QueueFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq {serial},
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seconds TEXT NOT NULL,
    size TEXT NOT NULL,
    params TEXT NOT NULL,
    remixed_from TEXT,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until {real},
    progress INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS characters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT UNIQUE NOT NULL,
    created_at BIGINT NOT NULL,
    description TEXT NOT NULL,
    subject TEXT NOT NULL,
    reference TEXT NOT NULL
);
"""
# Columns added since the first schema, with their types; a database made before them gets them on open.
ADDED_COLUMNS = {"worker": "TEXT", "lease_until": "{real}", "progress": "INTEGER NOT NULL DEFAULT 0"}
LOST_MESSAGE = (f"the worker running this job stopped {MAX_ATTEMPTS} times (a crash, or its machine vanished); "
                "it is not retried")


def job_from_row(row: Any) -> Job:
    values = dict(row)
    values["params"] = json.loads(values["params"])
    values["error"] = json.loads(values["error"]) if values["error"] else None
    return Job(**values)


def character_from_row(row: Any) -> Character:
    values = dict(row)
    values.pop("name_key")
    values["subject"] = json.loads(values["subject"])
    return Character(**values)


class Cursor(Protocol):
    """What a query runs on: ``execute(sql, args)`` returning an object with ``fetchone``, ``fetchall`` and
    ``rowcount``, whose rows read by column name (sqlite3.Row, psycopg's dict rows)."""

    def execute(self, sql: str, args: tuple = ()) -> Any: ...


class SQLJobStore(JobStore):
    """The job store on a SQL database; see the module's docstring for what a subclass gives."""

    # The database's clock, in seconds since the epoch: leases are measured by it, so that workers on machines whose
    # clocks disagree still agree on when a lease runs out.
    clock: ClassVar[str]
    # Appended to the claim's SELECT: rows other workers are claiming are skipped rather than waited for.
    skip_locked: ClassVar[str] = ""
    integrity_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    @abstractmethod
    def _session(self) -> contextlib.AbstractContextManager[Cursor]:
        """The connection, for statements that commit each on their own."""

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        """The connection inside one transaction that holds the write lock where the database has one; committed
        when the block ends, rolled back when it raises."""

    def _serialise_submissions(self, db: Cursor) -> None:
        """Inside ``add``'s transaction: make concurrent submissions take turns, so that the queue limit holds."""

    def _rows(self, sql: str, args: tuple = ()) -> list[Any]:
        with self._session() as db:
            return db.execute(sql.format(clock=self.clock), args).fetchall()

    def _write(self, sql: str, args: tuple = ()) -> int:
        with self._session() as db:
            return db.execute(sql.format(clock=self.clock), args).rowcount

    # -- jobs -------------------------------------------------------------------------------------

    def add(self, job_id: str, *, model: str, prompt: str, seconds: str, size: str, params: dict,
            remixed_from: str | None = None, max_queue: int | None = None) -> Job:
        now = int(time.time())
        with self._transaction() as db:
            self._serialise_submissions(db)
            if max_queue is not None:
                waiting = db.execute(
                    "SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'in_progress')").fetchone()["n"]
                if waiting >= max_queue:
                    raise QueueFull(f"the queue is full ({waiting} jobs waiting or running, the limit is "
                                    f"{max_queue}); try again when some have finished")
            db.execute("INSERT INTO jobs (id, status, created_at, model, prompt, seconds, size, params, remixed_from) "
                       "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, now, model, prompt, seconds, size, json.dumps(params), remixed_from))
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        if order not in ("asc", "desc"):
            raise KinemaError(f"order '{order}': choose asc or desc")
        where, args = "", ()
        if after is not None:
            rows = self._rows("SELECT seq FROM jobs WHERE id = ?", (after,))
            if not rows:
                raise KinemaError(f"after '{after}': no such video")
            where, args = ("WHERE seq > ?" if order == "asc" else "WHERE seq < ?"), (rows[0]["seq"],)
        rows = self._rows(f"SELECT * FROM jobs {where} ORDER BY seq {order.upper()} LIMIT ?", (*args, limit + 1))
        return [job_from_row(r) for r in rows[:limit]], len(rows) > limit

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {status: 0 for status in STATUSES} | {r["status"]: r["n"] for r in rows}

    def position(self, job: Job) -> int:
        return self._rows("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued' AND seq < ?", (job.seq,))[0]["n"]

    def delete(self, job_id: str) -> Job | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    def claim_next(self, worker: str, lease: float) -> Job | None:
        with self._transaction() as db:
            self._reap(db, expired_only=True)
            row = db.execute(f"SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1 {self.skip_locked}"
                             ).fetchone()
            if row is None:
                return None
            db.execute(f"UPDATE jobs SET status = 'in_progress', started_at = ?, attempts = attempts + 1, worker = ?, "
                       f"lease_until = {self.clock} + ?, progress = 0 WHERE seq = ?",
                       (int(time.time()), worker, float(lease), row["seq"]))
            return job_from_row(db.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone())

    def renew(self, job_id: str, worker: str, lease: float, progress: int) -> bool:
        return self._write("UPDATE jobs SET lease_until = {clock} + ?, progress = ? "
                           "WHERE id = ? AND status = 'in_progress' AND worker = ?",
                           (float(lease), int(progress), job_id, worker)) == 1

    def complete(self, job_id: str, worker: str, output: str) -> bool:
        return self._write("UPDATE jobs SET status = 'completed', completed_at = ?, output = ?, error = NULL, "
                           "progress = 100, lease_until = NULL WHERE id = ? AND status = 'in_progress' AND worker = ?",
                           (int(time.time()), output, job_id, worker)) == 1

    def fail(self, job_id: str, worker: str, code: str, message: str) -> bool:
        error = json.dumps({"code": code, "message": message})
        return self._write("UPDATE jobs SET status = 'failed', completed_at = ?, error = ?, lease_until = NULL "
                           "WHERE id = ? AND status = 'in_progress' AND worker = ?",
                           (int(time.time()), error, job_id, worker)) == 1

    def requeue(self, job_id: str, worker: str) -> bool:
        return self._write("UPDATE jobs SET status = 'queued', attempts = attempts - 1, worker = NULL, "
                           "lease_until = NULL, progress = 0 WHERE id = ? AND status = 'in_progress' AND worker = ?",
                           (job_id, worker)) == 1

    def recover(self) -> tuple[int, int]:
        with self._transaction() as db:
            return self._reap(db, expired_only=self.shared)

    def _reap(self, db: Cursor, expired_only: bool) -> tuple[int, int]:
        """Running jobs whose worker is gone (their lease ran out, or every one): queued again, or failed once
        started MAX_ATTEMPTS times. Returns (requeued, failed)."""
        lost = f"status = 'in_progress' AND lease_until < {self.clock}" if expired_only else "status = 'in_progress'"
        error = json.dumps({"code": "worker_lost", "message": LOST_MESSAGE})
        failed = db.execute(f"UPDATE jobs SET status = 'failed', completed_at = ?, error = ?, worker = NULL, "
                            f"lease_until = NULL WHERE {lost} AND attempts >= ?",
                            (int(time.time()), error, MAX_ATTEMPTS)).rowcount
        requeued = db.execute(f"UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL, progress = 0 "
                              f"WHERE {lost}").rowcount
        return requeued, failed

    def ids(self) -> set[str]:
        return {r["id"] for r in self._rows("SELECT id FROM jobs UNION SELECT id FROM characters")}

    # -- characters ---------------------------------------------------------------------------------

    def add_character(self, character: Character) -> None:
        try:
            self._write("INSERT INTO characters (id, name, name_key, created_at, description, subject, reference) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (character.id, character.name, character.name.casefold(), character.created_at,
                         character.description, json.dumps(character.subject), character.reference))
        except self.integrity_errors:
            raise KinemaError(f"name '{character.name}': a character of that name exists") from None

    def get_character(self, character_id: str) -> Character | None:
        rows = self._rows("SELECT * FROM characters WHERE id = ?", (character_id,))
        return character_from_row(rows[0]) if rows else None

    def characters(self) -> list[Character]:
        return [character_from_row(r) for r in self._rows("SELECT * FROM characters ORDER BY created_at, id")]

