"""``kinema worker``: a process that runs the jobs of a shared job store (PostgreSQL), beside a ``kinema serve
--workers 0`` API and any number of other workers, on this machine or others.

Under ``torchrun --nproc_per_node N -m kinema worker ...`` one worker makes each video on N ranks (GPUs) together:
rank 0 claims the jobs and writes the results, the others follow it (``kinema.serve.ranks``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from kinema.cli.options import Device, Dtype, Offload
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
    split_guidance: Annotated[bool, typer.Option(
        "--split-guidance/--no-split-guidance", help="Under torchrun: guidance's two passes on two halves of the "
                                                     "ranks (an even number), or every rank on every pass.")] = True,
    device: Device = None,
    offload: Offload = "none",
    dtype: Dtype = None,
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
    from kinema.inference.generate import check_placement
    from kinema.serve.database import open_job_store

    check_placement(device, dtype, offload)  # before the job store is opened

    leader = int(os.environ.get("RANK", "0") or 0) == 0
    store = open_job_store(db) if leader else None  # before the model loads: a wrong URL is told at once
    try:
        from kinema.cli.generate import parallel_ranks
        from kinema.inference.generate import load_pipeline
        from kinema.serve.ranks import RankChannel, follow
        from kinema.serve.worker import log_to_stderr, run_worker

        log_to_stderr(log_level)
        pipe = load_pipeline(model, device, dtype, offload=offload)  # the API's model, placed for this machine
        pipe.text_encoder  # noqa: B018 (load it now: a broken install fails here, not in a job)
        with parallel_ranks(pipe, split_guidance) as rank:
            ranks = RankChannel() if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else None
            if store is not None:
                run_worker(store, pipe, media, lease=lease_seconds, poll=poll_seconds, ranks=ranks)
            else:
                assert ranks is not None and rank != 0
                follow(pipe, media, ranks)
    finally:
        if store is not None:
            store.close()
