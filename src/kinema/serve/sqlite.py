"""The SQLite job store: one file in WAL mode that holds every accepted job and character (the queries are
``kinema.serve.sql``'s).

A job is committed (``synchronous=FULL``) before the request that submits it is answered, so an accepted job
survives a crash of the server or of the machine. One connection is shared by the API threads and the worker,
behind a lock; every call is short. One server process uses a file at a time (``kinema.serve.app`` locks it), so
a server that starts takes back every job it finds running.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from kinema.errors import KinemaError
from kinema.serve.sql import ADDED_COLUMNS, SCHEMA, SQLJobStore

TYPES = {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}


class SQLiteJobStore(SQLJobStore):
    """Jobs and characters in one SQLite database (WAL mode, committed before the API answers)."""

    clock = "((julianday('now') - 2440587.5) * 86400.0)"
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA.format(**TYPES))
            have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:  # a database from before leases
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind.format(**TYPES)}")
        except (sqlite3.Error, OSError) as error:
            raise KinemaError(f"cannot open the job database '{self.path}': {error}") from None
        if mode.lower() != "wal":
            raise KinemaError(f"the job database '{self.path}' cannot use WAL mode (got journal mode '{mode}')")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
