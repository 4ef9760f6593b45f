"""Which job store a ``--db`` names: a PostgreSQL URL (``postgresql://user@host/database``), shared by a server and
workers on any number of machines, or else the path of a SQLite file, used by one server process."""

from __future__ import annotations

from kinema.serve.store import JobStore


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def open_job_store(db: str) -> JobStore:
    """The job store at ``db``, its tables made if it has none; one-line KinemaError when it cannot be opened."""
    if is_postgres_url(db):
        from kinema.serve.postgres import PostgresJobStore

        return PostgresJobStore(db)
    from kinema.serve.sqlite import SQLiteJobStore

    return SQLiteJobStore(db)
