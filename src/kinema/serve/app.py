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
for bad input and a one-line message; tracebacks go to the server log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

import kinema
from kinema.errors import KinemaError
from kinema.frames import DEFAULT_SECONDS, DEFAULT_SIZE, MAX_PROMPT_CHARS
from kinema.inference.request import Request as GenerateRequest
from kinema.inference.settings import default_guidance
from kinema.media import DEFAULT_MAX_PIXELS
from kinema.serve import characters as character_tools
from kinema.serve.guard import PUBLIC_PATHS, GuardMiddleware, check_host, error_body
from kinema.serve.jobs import (
    CHARACTER_ID,
    JOB_ID,
    METADATA_NAME,
    OUTPUT_NAME,
    SPRITESHEET_NAME,
    THUMBNAIL_NAME,
    check_request,
    seconds_text,
    stored_params,
)
from kinema.serve.store import Job, JobStore, QueueFull
from kinema.serve.uploads import (
    IMAGE_TYPES,
    VIDEO_TYPES,
    UploadError,
    check_declared_type,
    check_image,
    check_video,
    decode_data_url,
    save_stream,
)
from kinema.serve.worker import Worker

log = logging.getLogger("kinema.serve")

STATIC = resources.files("kinema.serve") / "static"
MAX_FORM_FIELDS = 64
FORM_FIELD = re.compile(r"(?P<name>\w+)\[(?P<key>\w+)\]")
PARAMS = {"prompt", "model", "seconds", "size", "seed", "steps", "guidance", "negative_prompt", "expand", "storyboard",
          "context_noise", "anchor",
          "mode", "strength", "direction", "name", "input_reference", "video", "video_end"}


@dataclass
class ServerConfig:
    """What ``kinema serve`` was started with."""

    db: Path = Path("kinema-jobs.sqlite")
    media: Path | None = None  # inputs and outputs; default: '<db name>-media' next to the database
    token: str | None = None  # bearer token; None: no auth (loopback only)
    max_queue: int = 64  # jobs waiting or running; more are answered 429
    max_upload_bytes: int = 32 << 20  # a request body, uploads included
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height of an uploaded image or video frame
    max_video_pixels: int = 1 << 25  # frames x width x height of an uploaded or generated video
    poll_after_ms: int = 500  # the openai client's poll interval hint

    @property
    def media_folder(self) -> Path:
        return self.media if self.media is not None else self.db.with_name(self.db.stem + "-media")


class ApiError(Exception):
    """An error answered with ``status`` and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())
        self.param, self.code, self.kind = param, code, kind


def _guess_param(message: str) -> str | None:
    word = re.split(r"[\s':]", message, maxsplit=1)[0]
    return word if word in PARAMS else None


# -- request bodies ---------------------------------------------------------------------------------


def _number(value: float | str) -> float:
    """Seconds as OpenAI sends them ("4") or as a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number such as 4 or 2.5") from None
    return value


Seconds = Annotated[float | str, AfterValidator(_number)]


class Sampling(BaseModel):
    """kinema's sampling settings, accepted by every route that makes a video."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed: int | None = Field(None, description="kinema: random seed; the same seed and settings give the same "
                                               "video (default: a random seed, reported back)")
    steps: int | None = Field(None, description="kinema: sampling steps, 1-1000 (default: the model's)")
    guidance: float | None = Field(None, description="kinema: classifier-free guidance scale, 0-50")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                                        description="kinema: what to steer away from")
    expand: bool | None = Field(None, description="kinema: expand the prompt into the caption style the model "
                                                "was trained on (default: true; the expansion is in the metadata)")
    context_noise: float | None = Field(None, ge=0, lt=1, description="kinema, long videos: noise level in [0, 1) "
                                        "of the frames each later pass continues from (default: the model's)")
    anchor: float | None = Field(None, ge=0, le=1, description="kinema, long videos: strength in [0, 1] with which "
                                 "each later pass keeps the levels and contrast of its shot's opening (default: the "
                                 "model's; 0: off)")


class CreateVideo(Sampling):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"prompt": "a red ball is thrown to the right and bounces on the sand", "seconds": "2", "size": "64x64"},
        {"prompt": "a blue box slides on the snow", "seconds": 1, "size": "96x64", "seed": 7, "steps": 10,
         "guidance": 4.0, "mode": "loop"}]})

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                               description="What to generate (with a storyboard: defaults to its scene)")
    model: str | None = Field(None, max_length=200, description="The served model's name (optional)")
    seconds: Seconds | None = Field(None, description="Length in seconds (default 4)")
    size: str | None = Field(None, max_length=32, description="WIDTHxHEIGHT, multiples of 8 (default 64x64)")
    storyboard: dict[str, Any] | str | None = Field(
        None, description='kinema: {"scene": str, "shots": [{"seconds", "framing", "prompt"}, ...]} '
                          "(a JSON string in multipart)")
    mode: Literal["loop", "connect"] | None = Field(
        None, description="kinema: loop (a seamless loop) or connect (upload video and video_end)")



class RemixVideo(Sampling):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": "a green ball instead", "strength": 0.6}]})

    prompt: str = Field(max_length=MAX_PROMPT_CHARS, description="The prompt for the new version")
    strength: float | None = Field(None, description="kinema: how far from the source, in (0, 1] (default 0.7)")


class EditVideo(RemixVideo):
    size: str | None = Field(None, max_length=32, description="WIDTHxHEIGHT (default: the source video's)")
    model: str | None = Field(None, max_length=200)


class ExtendVideo(Sampling):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": "it rolls on", "seconds": "1"}]})

    prompt: str = Field(max_length=MAX_PROMPT_CHARS, description="The prompt for the new part")
    seconds: Seconds = Field(description="Seconds to add")
    size: str | None = Field(None, max_length=32, description="WIDTHxHEIGHT (default: the source video's)")
    direction: Literal["forward", "backward"] = Field("forward", description="kinema: add after or before")
    model: str | None = Field(None, max_length=200)


class CreateCharacter(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Rex"}]})

    name: str = Field(max_length=200, description="The character's name, as prompts will say it")


def _validation_message(error: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """One line for the first problem: 'seed: Input should be a valid integer'."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = location[0] if location else None
    where = ".".join(location) or "request"
    value = first.get("input")
    if first.get("type") == "string_pattern_mismatch" and isinstance(value, str):
        return f"{where} '{value[:80]}': not a valid id", param
    if first.get("type") == "missing":
        return f"{where}: required", param
    return f"{where}: {first.get('msg', 'invalid')}", param


def parse_fields(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        message, param = _validation_message(error)
        raise ApiError(400, message, param) from None


@dataclass
class Body:
    """A request body: plain fields (``a[b]`` multipart keys become nested dicts) and uploaded files."""

    fields: dict[str, Any]
    files: dict[str, UploadFile]


@contextlib.asynccontextmanager
async def read_body(request: Request, file_fields: tuple[str, ...]) -> AsyncIterator[Body]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object")
        yield Body(data, {})
        return
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(415, f"content type '{content_type[:60]}': send application/json or multipart/form-data")
    async with request.form(max_files=len(file_fields), max_fields=MAX_FORM_FIELDS) as form:
        body = Body({}, {})
        for key in dict.fromkeys(form.keys()):
            values = form.getlist(key)
            if len(values) > 1:
                raise ApiError(400, f"{key[:60]}: given {len(values)} times; give it once", key)
            value = values[0]
            nested = FORM_FIELD.fullmatch(key)
            if isinstance(value, UploadFile):
                if key not in file_fields:
                    raise ApiError(400, f"{key[:60]}: not a file field (files go in {', '.join(file_fields)})", key)
                body.files[key] = value
            elif nested:
                target = body.fields.setdefault(nested["name"], {})
                if not isinstance(target, dict):
                    raise ApiError(400, f"{nested['name']}: given both as a value and as {key}", nested["name"])
                target[nested["key"]] = value
            elif isinstance(body.fields.get(key), dict):
                raise ApiError(400, f"{key[:60]}: given both as a value and with [keys]", key)
            else:
                body.fields[key] = value
        for key in body.files:
            if key in body.fields:
                raise ApiError(400, f"{key}: given both as a file and as a value", key)
        yield body


def request_doc(model: type[BaseModel], files: dict[str, str], *, json_body: bool = True) -> dict:
    """An OpenAPI requestBody for a route that reads its body itself (JSON and/or multipart)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    multipart = json.loads(json.dumps(schema))
    for name, what in files.items():
        multipart["properties"][name] = {"type": "string", "format": "binary", "description": what}
        schema["properties"][name] = {"type": "object", "description": what,
                                      "properties": {"id": {"type": "string", "pattern": JOB_ID.pattern}}}
    content = {"multipart/form-data": {"schema": multipart}}
    if json_body:
        content["application/json"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


# -- state ----------------------------------------------------------------------------------------------


@dataclass
class ServerState:
    config: ServerConfig
    pipe: Any
    store: JobStore
    worker: Worker

    @property
    def media(self) -> Path:
        return self.config.media_folder


def video_object(state: ServerState, job: Job, *, position: bool = False) -> dict:
    """The OpenAI Video object of a job, with kinema's settings under ``kinema``."""
    params = job.params
    server = params.get("_server", {})
    progress = 0
    if job.status == "completed":
        progress = 100
    elif job.status == "in_progress":
        progress = state.worker.progress(job.id) or 0
    extension = {
        "mode": server.get("mode"), "seed": params.get("seed"),
        "steps": params.get("steps") or state.pipe.defaults.steps,
        "guidance": default_guidance(state.pipe.defaults, params.get("storyboard") is not None)
        if params.get("guidance") is None else params["guidance"],
        "negative_prompt": params.get("negative_prompt"), "storyboard": params.get("storyboard"),
        "context_noise": state.pipe.defaults.context_noise if params.get("context_noise") is None
        else params["context_noise"],
        "anchor": state.pipe.defaults.anchor if params.get("anchor") is None else params["anchor"],
        "expanded_prompt": params.get("prompt") if params.get("prompt") != job.prompt else None,
        "characters": server.get("characters", []),
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


def _check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model not in (state.pipe.name, "kinema"):
        raise ApiError(400, f"model '{model[:80]}': this server serves '{state.pipe.name}'", "model",
                       "model_not_found")


def _check_queue(state: ServerState) -> None:
    counts = state.store.counts()
    if counts["queued"] + counts["in_progress"] >= state.config.max_queue:
        raise QueueFull(f"the queue is full ({state.config.max_queue} jobs waiting or running); "
                        "try again when some have finished")


def _get_job(state: ServerState, video_id: str) -> Job:
    job = state.store.get(video_id)
    if job is None:
        raise ApiError(404, f"no video '{video_id}'", "video_id", "not_found")
    return job


def _link(source: Path, target: Path) -> None:
    """Give a job its own copy of another job's file (a hard link where possible), so deleting one
    job never takes another's input."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


async def _image_input(state: ServerState, body: Body, name: str, folder: Path) -> Path | None:
    """An image from an upload or a base64 data: URL, checked and saved in ``folder``; None if absent."""
    limit = state.config.max_upload_bytes
    if name in body.files:
        upload = body.files[name]
        declared = check_declared_type(upload.content_type, name, "image")
        target = folder / (name + IMAGE_TYPES.get(declared, ""))
        await run_in_threadpool(save_stream, upload.file, target, limit, name)
    elif name in body.fields and body.fields[name] is not None:
        value = body.fields[name]
        if not isinstance(value, dict) or not set(value) <= {"file_id", "image_url"}:
            raise ApiError(400, f"{name}: upload an image file, or give {{\"image_url\": \"data:...\"}}", name)
        if value.get("image_url") is None:
            raise ApiError(400, f"{name}.file_id: this server has no file store; upload the image or give "
                                "image_url as a base64 data: URL", name)
        if not isinstance(value["image_url"], str):
            raise ApiError(400, f"{name}.image_url: must be a string", name)
        target = await run_in_threadpool(decode_data_url, value["image_url"], folder / name, limit, name)
    else:
        return None
    path, _ = await run_in_threadpool(check_image, target, name, state.config.max_pixels)
    return path


async def _video_input(state: ServerState, body: Body, name: str, folder: Path,
                       required: bool = False) -> tuple[Path, np.ndarray, float] | None:
    """A video from an upload or {"id": completed video}, checked: (path, frames, fps), or None if absent."""
    if name in body.files:
        upload = body.files[name]
        declared = check_declared_type(upload.content_type, name, "video")
        target = folder / (name + VIDEO_TYPES.get(declared, ""))
        await run_in_threadpool(save_stream, upload.file, target, state.config.max_upload_bytes, name)
    elif body.fields.get(name) is not None:
        value = body.fields[name]
        if not isinstance(value, dict) or set(value) != {"id"} or not isinstance(value["id"], str):
            raise ApiError(400, f"{name}: upload a video file, or give {{\"id\": \"video_...\"}} of a completed "
                                "video", name)
        if not JOB_ID.fullmatch(value["id"]):
            raise ApiError(400, f"{name}.id '{value['id'][:80]}': not a valid id", name)
        source = state.store.get(value["id"])
        if source is None:
            raise ApiError(404, f"{name}.id: no video '{value['id']}'", name, "not_found")
        if source.status != "completed" or source.output is None:
            raise ApiError(409, f"{name}.id: video '{source.id}' is {source.status}; only a completed video can "
                                "be used", name)
        target = folder / (name + ".mp4")
        await run_in_threadpool(_link, state.media / source.output, target)
    elif required:
        raise ApiError(400, f"{name}: required (upload a video, or give {{\"id\": \"video_...\"}} of a completed "
                            "video)", name)
    else:
        return None
    frames, fps = await run_in_threadpool(check_video, target, name, state.config.max_pixels,
                                          state.config.max_video_pixels)
    return target, frames, fps


def _source_size(frames: np.ndarray) -> str:
    """A source video's size rounded down to multiples of 8 (what an edit or extension keeps)."""
    height, width = frames.shape[1:3]
    return f"{max(8, width // 8 * 8)}x{max(8, height // 8 * 8)}"


def _storyboard(value: Any) -> dict | None:
    """A storyboard from JSON (an object) or multipart (a JSON string); kinema.inference.request.validate checks
    the rest."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, "storyboard: not valid JSON", "storyboard") from None
    if not isinstance(value, dict):
        raise ApiError(400, "storyboard: must be a JSON object with 'shots' (and optionally 'scene')", "storyboard")
    return value


async def _submit(state: ServerState, job_id: str, folder: Path, *, prompt: str, mode: str,
                  request_fields: dict, input_frames: tuple[int, ...] = (), remixed_from: Job | None = None) -> dict:
    """Validate a job, store it (committed before this returns) and wake the worker."""
    expanded, used = character_tools.expand(prompt, state.store.characters())
    if request_fields.get("seed") is None:
        request_fields["seed"] = secrets.randbelow(2**31)
    request = GenerateRequest(prompt=expanded, output=str(folder / OUTPUT_NAME), **request_fields)
    seconds, size = check_request(request, state.pipe, input_frames=input_frames,
                                  max_job_pixels=state.config.max_video_pixels)
    params = stored_params(request, folder)
    params["_server"] = {"mode": mode, "characters": used}
    shown = remixed_from.seconds if remixed_from is not None else seconds_text(seconds)  # a remix keeps the length
    job = state.store.add(job_id, model=state.pipe.name, prompt=prompt, seconds=shown, size=size, params=params,
                          remixed_from=remixed_from.id if remixed_from else None, max_queue=state.config.max_queue)
    state.worker.notify()
    return video_object(state, job, position=True)


@contextlib.contextmanager
def _job_folder(state: ServerState, prefix: str = "video") -> Any:
    """A fresh id and folder for a new job; the folder goes again if the job is not accepted."""
    job_id = f"{prefix}_{uuid.uuid4().hex}"
    folder = (state.media / job_id) if prefix == "video" else (state.media / "characters" / job_id)
    folder.mkdir(parents=True)
    try:
        yield job_id, folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _sampling(params: Sampling) -> dict:
    fields = {"seed": params.seed, "steps": params.steps, "guidance": params.guidance,
              "negative_prompt": params.negative_prompt}
    if params.expand is not None:
        fields["expand"] = params.expand
    for name in ("context_noise", "anchor"):
        if getattr(params, name) is not None:
            fields[name] = getattr(params, name)
    return fields


# -- the app ------------------------------------------------------------------------------------------


VideoId = Annotated[str, PathParam(pattern=JOB_ID.pattern, description="video_ and 32 hex digits")]
CharacterId = Annotated[str, PathParam(pattern=CHARACTER_ID.pattern, description="char_ and 32 hex digits")]


def create_app(config: ServerConfig, pipe: Any, store: JobStore | None = None) -> FastAPI:
    """The FastAPI app. The store is opened (and jobs left in_progress re-queued) at start-up unless given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store or open_store(config)
        worker = Worker(opened, pipe, config.media_folder)
        app.state.kinema = ServerState(config, pipe, opened, worker)
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)
            opened.close()

    app = FastAPI(title="kinema", version=kinema.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="OpenAI-compatible video generation with kinema")
    app.add_middleware(GuardMiddleware, token=config.token, max_body=config.max_upload_bytes + (1 << 20))
    _add_error_handlers(app)
    studio = {name: (STATIC / name).read_text(encoding="utf-8") for name in ("index.html", "studio.js", "studio.css")}

    def state_of(request: Request) -> ServerState:
        return request.app.state.kinema

    @app.get("/", include_in_schema=False)
    async def studio_page() -> HTMLResponse:
        return HTMLResponse(studio["index.html"])

    @app.get("/studio.js", include_in_schema=False)
    async def studio_script() -> Response:
        return Response(studio["studio.js"], media_type="text/javascript")

    @app.get("/studio.css", include_in_schema=False)
    async def studio_style() -> Response:
        return Response(studio["studio.css"], media_type="text/css")

    @app.get("/healthz", summary="Liveness: the server answers and its worker runs")
    async def healthz(request: Request) -> dict:
        state = state_of(request)
        return {"status": "ok" if state.worker.alive else "worker stopped", "model": state.pipe.name}

    @app.post("/v1/videos", summary="Create a video", openapi_extra=request_doc(
        CreateVideo, {"input_reference": "An image: the first frame (image to video)",
                      "video": "mode=connect: the first video", "video_end": "mode=connect: the last video"}))
    async def create_video(request: Request) -> dict:
        state = state_of(request)
        async with read_body(request, ("input_reference", "video", "video_end")) as body:
            references = {k: body.fields.pop(k) for k in ("input_reference", "video", "video_end") if k in body.fields}
            fields = parse_fields(CreateVideo, body.fields)
            body.fields.update(references)
            _check_model(state, fields.model)
            if fields.mode and (body.files.get("input_reference") or body.fields.get("input_reference")):
                raise ApiError(400, f"input_reference: cannot be combined with mode={fields.mode}", "input_reference")
            storyboard = _storyboard(fields.storyboard)
            prompt = fields.prompt
            if prompt is None and storyboard is not None:  # the storyboard's scene is the prompt
                prompt = storyboard.get("scene") if isinstance(storyboard.get("scene"), str) else ""
            if prompt is None:
                raise ApiError(400, "prompt: required", "prompt")
            _check_queue(state)
            request_fields = {"seconds": DEFAULT_SECONDS if fields.seconds is None else fields.seconds,
                              "size": fields.size or DEFAULT_SIZE, **_sampling(fields)}
            if storyboard is not None:
                request_fields["storyboard"] = storyboard
            with _job_folder(state) as (job_id, folder):
                image = await _image_input(state, body, "input_reference", folder)
                mode, input_frames = "t2v", ()
                if image is not None:
                    request_fields["image"], mode = str(image), "i2v"
                if fields.mode == "loop":
                    request_fields["loop"], mode = True, "loop"
                if fields.mode == "connect":
                    first = await _video_input(state, body, "video", folder, required=True)
                    last = await _video_input(state, body, "video_end", folder, required=True)
                    assert first is not None and last is not None
                    request_fields["connect"], mode = [str(first[0]), str(last[0])], "connect"
                    input_frames = (len(first[1]), len(last[1]))
                elif any(body.files.get(k) or body.fields.get(k) is not None for k in ("video", "video_end")):
                    raise ApiError(400, "video: only with mode=connect (to edit or extend a video, use "
                                        "/v1/videos/edits or /v1/videos/extensions)", "video")
                if storyboard is not None:
                    mode = "storyboard" if mode == "t2v" else mode
                return await _submit(state, job_id, folder, prompt=prompt, mode=mode, request_fields=request_fields,
                                     input_frames=input_frames)

    @app.get("/v1/videos", summary="List videos (newest first by default)")
    async def list_videos(request: Request,
                          after: Annotated[str | None, Query(pattern=JOB_ID.pattern)] = None,
                          limit: Annotated[int, Query(ge=1, le=100)] = 20,
                          order: Annotated[Literal["asc", "desc"], Query()] = "desc") -> dict:
        state = state_of(request)
        try:
            jobs, more = state.store.list(after=after, limit=limit, order=order)
        except KinemaError as error:
            raise ApiError(404, str(error), "after", "not_found") from None
        data = [video_object(state, job) for job in jobs]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": more}

    @app.get("/v1/videos/{video_id}", summary="Retrieve a video job")
    async def retrieve_video(request: Request, video_id: VideoId) -> JSONResponse:
        state = state_of(request)
        job = _get_job(state, video_id)
        return JSONResponse(video_object(state, job, position=True),
                            headers={"openai-poll-after-ms": str(state.config.poll_after_ms)})

    @app.delete("/v1/videos/{video_id}", summary="Delete a video; a queued or running job is cancelled")
    async def delete_video(request: Request, video_id: VideoId) -> dict:
        state = state_of(request)
        job = state.store.delete(video_id)
        if job is None:
            raise ApiError(404, f"no video '{video_id}'", "video_id", "not_found")
        if not (job.status == "in_progress" and state.worker.cancel(job.id)):  # else the worker cleans up
            await run_in_threadpool(shutil.rmtree, state.media / job.id, True)
        return {"id": job.id, "object": "video.deleted", "deleted": True}

    @app.get("/v1/videos/{video_id}/content", summary="Download the video, its thumbnail, spritesheet or metadata",
             response_class=Response)
    async def video_content(request: Request, video_id: VideoId,
                            variant: Annotated[Literal["video", "thumbnail", "spritesheet", "metadata"],
                                               Query()] = "video") -> Response:
        state = state_of(request)
        job = _get_job(state, video_id)
        if job.status != "completed":
            raise ApiError(409, f"video '{video_id}' is {job.status}; its content is there once it is completed",
                           "video_id", "video_not_ready")
        name, media_type = {"video": (OUTPUT_NAME, "video/mp4"), "thumbnail": (THUMBNAIL_NAME, "image/png"),
                            "spritesheet": (SPRITESHEET_NAME, "image/png"),
                            "metadata": (METADATA_NAME, "application/json")}[variant]
        path = state.media / job.id / name
        if not path.is_file():
            raise ApiError(404, f"video '{video_id}' has no {variant} file (it may have been removed)", "variant")
        if variant == "metadata":  # input files by name: where the server keeps them is not the client's business
            metadata = json.loads(await run_in_threadpool(path.read_text, "utf-8"))
            inputs = metadata.get("inputs") or {}
            metadata["inputs"] = {key: [Path(p).name for p in value] if isinstance(value, list) else Path(value).name
                                  for key, value in inputs.items()}
            return JSONResponse(metadata)
        filename = job.id + ("" if variant == "video" else f".{variant}") + Path(name).suffix
        return FileResponse(path, media_type=media_type, filename=filename, content_disposition_type="inline")

    @app.post("/v1/videos/{video_id}/remix", summary="Remix a completed video under a new prompt (video to video)",
              openapi_extra=request_doc(RemixVideo, {}))
    async def remix_video(request: Request, video_id: VideoId) -> dict:
        state = state_of(request)
        async with read_body(request, ()) as body:
            fields = parse_fields(RemixVideo, body.fields)
            source = _get_job(state, video_id)
            if source.status != "completed" or source.output is None:
                raise ApiError(409, f"video '{video_id}' is {source.status}; only a completed video can be remixed",
                               "video_id", "video_not_ready")
            _check_queue(state)
            with _job_folder(state) as (job_id, folder):
                target = folder / "source.mp4"
                await run_in_threadpool(_link, state.media / source.output, target)
                frames, _ = await run_in_threadpool(check_video, target, "video", state.config.max_pixels,
                                                    state.config.max_video_pixels)
                request_fields = {"edit": str(target), "size": source.size, "seconds": float(source.seconds),
                                  "strength": 0.7 if fields.strength is None else fields.strength, **_sampling(fields)}
                return await _submit(state, job_id, folder, prompt=fields.prompt, mode="remix",
                                     request_fields=request_fields, input_frames=(len(frames),),
                                     remixed_from=source)

    @app.post("/v1/videos/edits", summary="Edit an uploaded (or completed) video under a prompt",
              openapi_extra=request_doc(EditVideo, {"video": "The video to edit"}))
    async def edit_video(request: Request) -> dict:
        state = state_of(request)
        async with read_body(request, ("video",)) as body:
            reference = body.fields.pop("video", None)
            fields = parse_fields(EditVideo, body.fields)
            body.fields["video"] = reference
            _check_model(state, fields.model)
            _check_queue(state)
            with _job_folder(state) as (job_id, folder):
                source = await _video_input(state, body, "video", folder, required=True)
                assert source is not None
                path, frames, _ = source
                request_fields = {"edit": str(path), "size": fields.size or _source_size(frames),
                                  "strength": 0.7 if fields.strength is None else fields.strength, **_sampling(fields)}
                return await _submit(state, job_id, folder, prompt=fields.prompt, mode="edit",
                                     request_fields=request_fields, input_frames=(len(frames),))

    @app.post("/v1/videos/extensions", summary="Extend an uploaded (or completed) video by some seconds",
              openapi_extra=request_doc(ExtendVideo, {"video": "The video to extend"}))
    async def extend_video(request: Request) -> dict:
        state = state_of(request)
        async with read_body(request, ("video",)) as body:
            reference = body.fields.pop("video", None)
            fields = parse_fields(ExtendVideo, body.fields)
            body.fields["video"] = reference
            _check_model(state, fields.model)
            _check_queue(state)
            with _job_folder(state) as (job_id, folder):
                source = await _video_input(state, body, "video", folder, required=True)
                assert source is not None
                path, frames, _ = source
                request_fields = {"extend": str(path), "seconds": fields.seconds, "direction": fields.direction,
                                  "size": fields.size or _source_size(frames), **_sampling(fields)}
                return await _submit(state, job_id, folder, prompt=fields.prompt, mode="extend",
                                     request_fields=request_fields, input_frames=(len(frames),))

    @app.post("/v1/videos/characters", summary="Create a character from the main subject of an uploaded clip",
              openapi_extra=request_doc(CreateCharacter, {"video": "A clip that shows the subject"}, json_body=False))
    async def create_character(request: Request) -> dict:
        state = state_of(request)
        async with read_body(request, ("video",)) as body:
            reference = body.fields.pop("video", None)
            fields = parse_fields(CreateCharacter, body.fields)
            body.fields["video"] = reference
            name = character_tools.check_name(fields.name)
            if any(c.name.casefold() == name.casefold() for c in state.store.characters()):
                raise ApiError(409, f"name '{name}': a character of that name exists", "name")
            with _job_folder(state, "char") as (character_id, folder):
                source = await _video_input(state, body, "video", folder, required=True)
                assert source is not None
                path, frames, fps = source
                character = await run_in_threadpool(character_tools.make_character, character_id, name, frames, fps,
                                                    folder, int(time.time()))
                path.unlink()
                state.store.add_character(character)
                return _character_object(character)

    @app.get("/v1/videos/characters/{character_id}", summary="Retrieve a character")
    async def get_character(request: Request, character_id: CharacterId) -> dict:
        character = state_of(request).store.get_character(character_id)
        if character is None:
            raise ApiError(404, f"no character '{character_id}'", "character_id", "not_found")
        return _character_object(character)

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


def _character_object(character: Any) -> dict:
    return {"id": character.id, "object": "video.character", "created_at": character.created_at,
            "name": character.name, "description": character.description, "subject": character.subject}


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, param, code, kind), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return answer(error.status, error.message, error.param, error.code, error.kind)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, error: QueueFull) -> JSONResponse:
        return answer(429, str(error), None, "queue_full", "rate_limit_error", {"retry-after": "5"})

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, error: UploadError) -> JSONResponse:
        return answer(error.status, str(error), error.param)

    @app.exception_handler(KinemaError)
    async def kinema_error(_: Request, error: KinemaError) -> JSONResponse:
        return answer(400, str(error), _guess_param(str(error)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)
        return answer(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.method} {request.url.path[:200]}",
                   405: f"method {request.method} is not allowed on {request.url.path[:200]}"}.get(
            error.status_code, str(error.detail))
        return answer(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return answer(500, "internal server error (see the server log)", kind="server_error")


# -- start-up ------------------------------------------------------------------------------------------


def open_store(config: ServerConfig) -> JobStore:
    """Open the job store, queue again the jobs a crash interrupted, and drop files no job owns."""
    store = JobStore(config.db)
    requeued, failed = store.recover()
    if requeued or failed:
        log.info("recovered %d interrupted jobs (%d queued again, %d failed)", requeued + failed, requeued, failed)
    media = config.media_folder
    media.mkdir(parents=True, exist_ok=True)
    known = store.ids()
    for folder in [*media.glob("video_*"), *media.glob("characters/char_*")]:
        if (JOB_ID.fullmatch(folder.name) or CHARACTER_ID.fullmatch(folder.name)) and folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)  # a job that was never accepted, or one deleted mid-way
    for temp in media.glob("*/.*.part"):
        temp.unlink(missing_ok=True)
    return store


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
    if not logging.getLogger("kinema").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logging.getLogger("kinema").addHandler(handler)
        logging.getLogger("kinema").setLevel(log_level.upper())
    lock = _lock_database(config.db)
    store = open_store(config)
    sock = _listen(host, port)
    app = create_app(config, pipe, store)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=5))
    log.info("kinema %s serving '%s' on http://%s:%d (studio at /, API at /v1, %s)", kinema.__version__, pipe.name,
             host, port, "bearer token required" if config.token else "no token")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if lock is not None:
            lock.close()
