"""The PostgreSQL job store: the queue that a server and workers on any number of machines share (the queries are
``kinema.serve.sql``'s, run with psycopg 3).

Workers claim jobs with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two never take the same job and none waits on
another's claim; leases run on the database's clock. Submissions take a transaction-scoped advisory lock, so
that the queue limit holds across API processes. Each process holds one connection, shared by its threads
behind a lock (every call is short), and opens it again when it breaks; while the database cannot be reached a
call raises ``StoreUnavailable``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from kinema.errors import KinemaError
from kinema.serve.sql import SCHEMA, SQLJobStore
from kinema.serve.store import StoreUnavailable

TYPES = {"serial": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"}
SCHEMA_LOCK = 0x6B696E656D61  # advisory lock keys ('kinema'), so concurrent starts and submissions take turns
SUBMIT_LOCK = SCHEMA_LOCK + 1
CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return url.split("@")[-1] if "@" in url else url
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class _Placeholders:
    """A connection that takes the shared SQL's ``?`` placeholders."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, args: tuple = ()) -> psycopg.Cursor:
        return self.connection.execute(sql.replace("?", "%s"), args)


class PostgresJobStore(SQLJobStore):
    """Jobs and characters in a PostgreSQL database, shared by a server and any number of workers."""

    clock = "extract(epoch from clock_timestamp())::float8"
    skip_locked = "FOR UPDATE SKIP LOCKED"
    shared = True
    integrity_errors = (psycopg.errors.UniqueViolation,)

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = shown_url(url)
        try:
            options = conninfo_to_dict(url)
        except psycopg.Error as error:
            raise KinemaError(f"job database URL '{self.shown}': {first_line(error)}") from None
        self._options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "kinema"} | options
        self._lock = threading.Lock()
        self._connection: psycopg.Connection | None = None
        try:
            with self._transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
                for statement in SCHEMA.format(**TYPES).split(";"):
                    if statement.strip():
                        db.execute(statement)
        except StoreUnavailable as error:
            raise KinemaError(str(error)) from None
        except psycopg.Error as error:
            raise KinemaError(f"cannot use the job database '{self.shown}': {first_line(error)}") from None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _connect(self) -> psycopg.Connection:
        """The open connection, opened again if it is closed or broken (the database restarted, the network
        dropped)."""
        if self._connection is None or self._connection.closed or self._connection.broken:
            if self._connection is not None:
                self._connection.close()
            self._connection = psycopg.connect(autocommit=True, row_factory=dict_row, **self._options)
        return self._connection

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Placeholders]:
        with self._lock, self._unavailable():
            yield _Placeholders(self._connect())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Placeholders]:
        with self._lock, self._unavailable():
            connection = self._connect()
            with connection.transaction():
                yield _Placeholders(connection)

    def _serialise_submissions(self, db: _Placeholders) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (SUBMIT_LOCK,))

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Connection failures as StoreUnavailable (a 503 for the API, a retry for a worker)."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise StoreUnavailable(f"the job database '{self.shown}' cannot be reached: {first_line(error)}") from None
