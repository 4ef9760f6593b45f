"""What a running server holds (its config, the loaded pipeline, the job store and the worker) and how a job
looks through the API: OpenAI's Video object, with kinema's own settings under ``kinema``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from kinema.errors import KinemaError
from kinema.inference.settings import request_sampling, request_windows
from kinema.media import DEFAULT_MAX_PIXELS
from kinema.serve.database import is_postgres_url
from kinema.serve.jobs import request_for
from kinema.serve.store import Character, Job, JobStore
from kinema.serve.worker import LEASE_SECONDS, Worker


@dataclass
class ServerConfig:
    """What ``kinema serve`` was started with."""

    db: str | Path = Path("kinema-jobs.sqlite")  # a SQLite file, or a PostgreSQL URL
    # Inputs and outputs, shared with every worker; default (SQLite only): '<db name>-media' next to the database.
    media: Path | None = None
    workers: int = 1  # workers in the server's process; 0: the API only (``kinema worker`` processes run the jobs)
    lease: float = LEASE_SECONDS  # seconds a job's claim lasts without renewal
    token: str | None = None  # bearer token; None: no auth (loopback only)
    max_queue: int = 64  # jobs waiting or running; more are answered 429
    max_upload_bytes: int = 32 << 20  # a request body, uploads included
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height of an uploaded image or video frame
    max_video_pixels: int = 1 << 25  # frames x width x height of an uploaded or generated video
    poll_after_ms: int = 500  # the openai client's poll interval hint
    lora_dir: Path | None = None  # the LoRA files a request's 'loras' may name; None: requests name none
    expand_with: str | None = None  # the chat endpoint a request's 'expand_with' uses; None: requests cannot

    @property
    def media_folder(self) -> Path:
        if self.media is not None:
            return self.media
        if is_postgres_url(str(self.db)):
            raise KinemaError("a PostgreSQL job store needs --media: the folder the server and its workers share")
        db = Path(self.db)
        return db.with_name(db.stem + "-media")


@dataclass
class ServerState:
    config: ServerConfig
    pipe: Any
    store: JobStore
    worker: Worker | None  # None: workers run elsewhere

    @property
    def media(self) -> Path:
        return self.config.media_folder


def state_of(request: Request) -> ServerState:
    """The state of the app that answers ``request`` (set up at start-up, ``kinema.serve.app``)."""
    return request.app.state.kinema


def video_object(state: ServerState, job: Job, *, position: bool = False) -> dict:
    """The OpenAI Video object of a job, with kinema's settings under ``kinema``: the ones it runs with, its own
    or else the model's (``kinema.inference.settings``)."""
    params = job.params
    server = params.get("_server", {})
    progress = 0
    if job.status == "completed":
        progress = 100
    elif job.status == "in_progress":  # the store's record, or fresher, the server's own worker's
        local = state.worker.progress(job.id) if state.worker is not None else None
        progress = max(job.progress, local or 0)
    request = request_for(params, state.media / job.id)
    chosen, windows = request_sampling(state.pipe.defaults, request), request_windows(state.pipe.defaults, request)
    extension = {
        "mode": server.get("mode"), "seed": params.get("seed"), "steps": chosen.steps, "guidance": chosen.guidance,
        "negative_prompt": params.get("negative_prompt"), "storyboard": params.get("storyboard"),
        "context_noise": windows.context_noise, "anchor": windows.anchor, "step_cache": chosen.step_cache,
        "few_step": chosen.few_step,
        "expanded_prompt": params.get("prompt") if params.get("prompt") != job.prompt else None,
        "characters": server.get("characters", []), "warnings": server.get("warnings", []),
    }
    if server.get("mode") in ("edit", "remix"):
        extension["strength"] = params.get("strength")
    if position and job.status == "queued":
        extension["queue_position"] = state.store.position(job)
    error = None
    if job.error:
        error = {"code": job.error.get("code", "generation_failed"), "message": job.error.get("message", ""),
                 "param": None, "type": None}
    return {"id": job.id, "object": "video", "created_at": job.created_at, "completed_at": job.completed_at,
            "expires_at": None, "model": job.model, "prompt": job.prompt, "seconds": job.seconds, "size": job.size,
            "status": job.status, "progress": progress, "remixed_from_video_id": job.remixed_from, "error": error,
            "kinema": extension}


def character_object(character: Character) -> dict:
    return {"id": character.id, "object": "video.character", "created_at": character.created_at,
            "name": character.name, "description": character.description, "subject": character.subject}
