"""``kinema worker``: a process that runs the jobs of a shared job store (PostgreSQL), beside a ``kinema serve
--workers 0`` API and any number of other workers, on this machine or others."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kinema.cli.serve import check_store
from kinema.errors import KinemaError
from kinema.serve.database import is_postgres_url


def worker(
    db: Annotated[str, typer.Option(help="The job store the API uses: a PostgreSQL URL "
                                         "(postgresql://user@host/database).")],
    media: Annotated[Path, typer.Option(help="The folder of inputs and outputs the API and every worker share "
                                             "(a network mount across machines).")],
    model: Annotated[str | None, typer.Option(help="A model folder, or the name of a packaged model "
                                                   "(default: kinema-tiny); the API's model.")] = None,
    lease_seconds: Annotated[float, typer.Option(help="How long this worker's job waits, should the worker "
                                                      "vanish, before another worker runs it.")] = 30.0,
    poll_seconds: Annotated[float, typer.Option(help="How often an idle worker looks for a job.")] = 1.0,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Run queued jobs, oldest first, until stopped (SIGINT or SIGTERM put the running job back in the queue)."""
    if not is_postgres_url(db):
        raise KinemaError(f"--db '{db}': a worker needs a PostgreSQL job store (postgresql://...); with SQLite the "
                          "server runs its own worker")
    check_store(db, media, lease_seconds)
    if not (0.05 <= poll_seconds <= 60.0):
        raise KinemaError(f"poll-seconds must be between 0.05 and 60 (got {poll_seconds:g})")
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise KinemaError(f"log-level '{log_level}': choose critical, error, warning, info or debug")
    if not media.is_dir():
        raise KinemaError(f"--media '{media}' is not a folder (the API creates it; give the same folder)")
    from kinema.serve.database import open_job_store

    store = open_job_store(db)  # before the model loads: a wrong URL is told at once
    try:
        from kinema.inference.generate import load_pipeline
        from kinema.serve.worker import log_to_stderr, run_worker

        log_to_stderr(log_level)
        pipe = load_pipeline(model)
        pipe.text_encoder  # noqa: B018 (load it now: a broken install fails here, not in a job)
        run_worker(store, pipe, media, lease=lease_seconds, poll=poll_seconds)
    finally:
        store.close()
