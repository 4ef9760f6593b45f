"""``kinema serve``: the OpenAI-compatible video API and the web studio on one loaded model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from kinema.cli.options import Device, Dtype, Offload
from kinema.errors import KinemaError
from kinema.serve.database import is_postgres_url


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --token.")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[str | None, typer.Option(envvar="KINEMA_TOKEN", show_envvar=True,
                                              help="Bearer token every API call must send.")] = None,
    db: Annotated[str, typer.Option(help="Job store: a SQLite file (media go in '<name>-media' beside it), or a "
                                         "PostgreSQL URL shared with 'kinema worker' processes.")] = (
        "kinema-jobs.sqlite"),
    media: Annotated[Path | None, typer.Option(help="Folder of inputs and outputs, shared with every worker "
                                                    "(needed with PostgreSQL).")] = None,
    workers: Annotated[int, typer.Option(help="Workers in this process: 1, or 0 to serve the API only while "
                                              "'kinema worker' processes run the jobs (PostgreSQL).")] = 1,
    lease_seconds: Annotated[float, typer.Option(help="How long a job waits for a worker that is gone before "
                                                      "another runs it.")] = 30.0,
    model: Annotated[str | None, typer.Option(help="A model folder, or the name of a packaged model "
                                                   "(default: kinema-tiny).")] = None,
    max_queue: Annotated[int, typer.Option(help="Jobs waiting or running; more are answered 429.")] = 64,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (uploads included), in MiB.")] = 32.0,
    max_video_pixels: Annotated[int, typer.Option(help="Largest video, uploaded or generated, in frames x "
                                                       "width x height.")] = 1 << 25,
    poll_after_ms: Annotated[int, typer.Option(help="Poll interval the server suggests to clients.")] = 500,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
    lora_dir: Annotated[Path | None, typer.Option(help="A folder of LoRA .safetensors files that requests may name "
                                                       "in 'loras'.")] = None,
    expand_with: Annotated[str | None, typer.Option(
        help="An OpenAI-compatible chat endpoint that requests may ask to extend their prompts with "
             "('expand_with': true).")] = None,
    device: Device = None,
    offload: Offload = "none",
    dtype: Dtype = None,
) -> None:
    """Serve the OpenAI-compatible video API (/v1/videos) and the web studio (/) on one loaded model."""
    from kinema.serve.guard import check_host

    if not (1 <= port <= 65535):
        raise KinemaError(f"port must be between 1 and 65535 (got {port})")
    if not (1 <= max_queue <= 1_000_000):
        raise KinemaError(f"max-queue must be between 1 and 1000000 (got {max_queue})")
    if not (0 < max_upload_mb <= 4096):
        raise KinemaError(f"max-upload-mb must be > 0 and <= 4096 (got {max_upload_mb:g})")
    if not (1 <= max_video_pixels <= 1 << 40):
        raise KinemaError(f"max-video-pixels must be between 1 and 2^40 (got {max_video_pixels})")
    if not (10 <= poll_after_ms <= 60_000):
        raise KinemaError(f"poll-after-ms must be between 10 and 60000 (got {poll_after_ms})")
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise KinemaError(f"log-level '{log_level}': choose critical, error, warning, info or debug")
    if token is not None and not token.strip():
        raise KinemaError("token is empty")
    if workers not in (0, 1):
        raise KinemaError(f"workers must be 0 or 1 (got {workers}); for more, start 'kinema worker' processes on "
                          "a PostgreSQL job store")
    check_store(db, media, lease_seconds)
    if workers == 0 and not is_postgres_url(db):
        raise KinemaError("--workers 0 needs a PostgreSQL job store (--db postgresql://...) that 'kinema worker' "
                          "processes share; one server process uses a SQLite file")
    if expand_with is not None and not re.fullmatch(r"https?://\S+", expand_with):
        raise KinemaError(f"expand-with '{expand_with}': give an http:// or https:// URL")
    if lora_dir is not None and not lora_dir.is_dir():
        raise KinemaError(f"lora-dir '{lora_dir}' is not a folder")
    check_host(host, token)  # before anything heavy loads, so a refusal is immediate
    from kinema.inference.generate import load_pipeline
    from kinema.serve import ServerConfig, run_server

    config = ServerConfig(db=db, media=media, workers=workers, lease=lease_seconds, token=token, max_queue=max_queue,
                          max_upload_bytes=int(max_upload_mb * (1 << 20)), max_video_pixels=max_video_pixels,
                          poll_after_ms=poll_after_ms, lora_dir=lora_dir, expand_with=expand_with)
    pipe = load_pipeline(model, device, dtype, offload=offload)  # the API checks requests against the model's settings
    if workers:
        pipe.text_encoder  # noqa: B018 (load it now: the first job should not wait, a broken install should fail here)
    run_server(config, pipe, host, port, log_level=log_level)


def check_store(db: str, media: Path | None, lease_seconds: float) -> None:
    """The job store's options, checked before anything loads."""
    if not db.strip():
        raise KinemaError("db is empty: give a SQLite file or a postgresql:// URL")
    if is_postgres_url(db) and media is None:
        raise KinemaError("a PostgreSQL job store needs --media: the folder the server and its workers share "
                          "(a network mount across machines)")
    if not (2.0 <= lease_seconds <= 3600.0):
        raise KinemaError(f"lease-seconds must be between 2 and 3600 (got {lease_seconds:g})")
