"""The HTTP app: OpenAI's video API on kinema's pipeline, the studio page, auth and limits.

Routes (the ``openai`` package's ``client.videos`` methods, plus kinema's own fields):

- ``POST /v1/videos`` (JSON or multipart): a new video; ``input_reference`` is an image (image to
  video); kinema extensions: seed, steps, guidance, negative_prompt, storyboard (an object, or a
  JSON string in multipart; its scene is the prompt when none is given), mode (loop, or connect with
  uploads ``video`` and ``video_end``);
- ``GET /v1/videos`` (cursor pages: after, limit, order), ``GET``/``DELETE /v1/videos/{id}``
  (DELETE of a queued or running job cancels it);
- ``GET /v1/videos/{id}/content?variant=video|thumbnail|spritesheet|metadata``;
- ``POST /v1/videos/{id}/remix``, ``POST /v1/videos/edits`` (video to video, SDEdit),
  ``POST /v1/videos/extensions``;
- ``POST /v1/videos/characters``, ``GET /v1/videos/characters/{id}`` (see ``characters``);
- ``GET /healthz``, ``GET /openapi.json``, and the studio at ``/``.

Every error is OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx status
for bad input and a one-line message; tracebacks go to the server log only (``errors``).

Here the app is assembled: the guard (``guard``), the error handlers, the routers (``routes``) and the
OpenAPI schema; and ``run_server`` serves it. Request bodies are read in ``body`` against the schemas of
``schemas``; ``submit`` makes jobs, ``store`` keeps them and ``worker`` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import kinema
from kinema.errors import KinemaError
from kinema.serve.database import is_postgres_url, open_job_store
from kinema.serve.errors import add_error_handlers
from kinema.serve.guard import PUBLIC_PATHS, GuardMiddleware, check_host
from kinema.serve.jobs import CHARACTER_ID, JOB_ID
from kinema.serve.routes import characters, edits, studio, videos
from kinema.serve.state import ServerConfig, ServerState
from kinema.serve.store import JobStore
from kinema.serve.worker import Worker, log_to_stderr

__all__ = ["ServerConfig", "create_app", "open_store", "run_server"]

log = logging.getLogger("kinema.serve")
STALE_SECONDS = 3600.0  # on a shared store: a file this old that no job owns is left over, not being written


def create_app(config: ServerConfig, pipe: Any, store: JobStore | None = None) -> FastAPI:
    """The FastAPI app. The store is opened (and jobs left in_progress re-queued) at start-up unless given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store or open_store(config)
        worker = Worker(opened, pipe, config.media_folder, lease=config.lease) if config.workers else None
        app.state.kinema = ServerState(config, pipe, opened, worker)
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await asyncio.to_thread(worker.stop)
            opened.close()

    # redirect_slashes=False: '/v1/videos/' is a 404, not a redirect to a Location built from the Host header.
    app = FastAPI(title="kinema", version=kinema.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="OpenAI-compatible video generation with kinema", redirect_slashes=False)
    app.add_middleware(GuardMiddleware, token=config.token, max_body=config.max_upload_bytes + (1 << 20))
    add_error_handlers(app)
    for group in (studio, videos, edits, characters):
        app.include_router(group.router)

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {"bearerAuth": {"type": "http",
                                                                                     "scheme": "bearer"}}
            for path, operations in schema["paths"].items():
                if path not in PUBLIC_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearerAuth": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def open_store(config: ServerConfig) -> JobStore:
    """Open the job store for ``config.db``, queue again the jobs a crash interrupted, and drop files no job
    owns."""
    store = open_job_store(str(config.db))
    requeued, failed = store.recover()
    if requeued or failed:
        log.info("recovered %d interrupted jobs (%d queued again, %d failed)", requeued + failed, requeued, failed)
    media = config.media_folder
    try:
        media.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        store.close()
        raise KinemaError(f"cannot use the media folder '{media}': {error.strerror or error}") from None
    # Where other processes share the store, what a submission or a worker is writing right now is not stray:
    # only what is older than any of that can be is.
    clean_media(media, store.ids(), STALE_SECONDS if store.shared else 0.0)
    return store


def clean_media(media: Path, known: set[str], older_than: float) -> None:
    """Remove the folders of jobs and characters the store does not hold (never accepted, or deleted mid-way) and
    unfinished temporary files, of those last changed more than ``older_than`` seconds ago."""
    cutoff = time.time() - older_than

    def stale(path: Path) -> bool:
        try:
            return path.stat().st_mtime <= cutoff
        except OSError:
            return False

    for folder in [*media.glob("video_*"), *media.glob("characters/char_*")]:
        if (JOB_ID.fullmatch(folder.name) or CHARACTER_ID.fullmatch(folder.name)) and folder.name not in known \
                and stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
    for temp in media.glob("*/.*.part"):
        if stale(temp):
            temp.unlink(missing_ok=True)


def _lock_database(db: Path) -> Any:
    """An exclusive lock next to the database, held while the server runs: two servers on one job store
    would run each other's jobs. The OS drops it when the process dies, however it dies."""
    try:
        import fcntl
    except ImportError:  # no fcntl on Windows: run one server per database there
        return None
    db.parent.mkdir(parents=True, exist_ok=True)
    handle = open(db.with_name(db.name + ".lock"), "w")  # noqa: SIM115 (held until the process exits)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise KinemaError(f"another kinema server is using the job database '{db}'") from None
    return handle


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise KinemaError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def run_server(config: ServerConfig, pipe: Any, host: str, port: int, *, log_level: str = "info") -> None:
    """Serve until interrupted (SIGINT or SIGTERM stop after the running job's current step)."""
    import uvicorn

    check_host(host, config.token)
    log_to_stderr(log_level)
    lock = None if is_postgres_url(str(config.db)) else _lock_database(Path(config.db))  # PostgreSQL is shared
    store = open_store(config)
    sock = _listen(host, port)
    app = create_app(config, pipe, store)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=5))
    log.info("kinema %s serving '%s' on http://%s:%d (studio at /, API at /v1, %s, %s)", kinema.__version__,
             pipe.name, host, port, "bearer token required" if config.token else "no token",
             "one worker in this process" if config.workers else "jobs run by 'kinema worker' processes")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if lock is not None:
            lock.close()
