"""Making a job: the input media a request uploads or names, the checks a job must pass, and storing it for
the worker. ``submit_from_video`` is the one path of remix, edit and extend: a new job that keeps a source
video under a new prompt."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from kinema.inference.request import OUTPUT_NAME as FILE_NAME
from kinema.inference.request import Request as GenerateRequest
from kinema.serve import characters as character_tools
from kinema.serve.body import Body, parse_fields, parse_json, read_body
from kinema.serve.errors import ApiError, shown
from kinema.serve.jobs import JOB_ID, OUTPUT_NAME, check_request, seconds_text, stored_params
from kinema.serve.schemas import Sampling
from kinema.serve.state import ServerState, state_of, video_object
from kinema.serve.store import Job, QueueFull
from kinema.serve.uploads import (
    IMAGE_TYPES,
    VIDEO_TYPES,
    check_declared_type,
    check_image,
    check_video,
    decode_data_url,
    save_stream,
)

Source = tuple[Path, np.ndarray, float]  # a checked input video: its path in the job's folder, frames, fps


def check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model not in (state.pipe.name, "kinema"):
        raise ApiError(400, f"model '{shown(model)}': this server serves '{state.pipe.name}'", "model",
                       "model_not_found")


def check_queue(state: ServerState) -> None:
    counts = state.store.counts()
    if counts["queued"] + counts["in_progress"] >= state.config.max_queue:
        raise QueueFull(f"the queue is full ({state.config.max_queue} jobs waiting or running); "
                        "try again when some have finished")


def get_job(state: ServerState, video_id: str) -> Job:
    job = state.store.get(video_id)
    if job is None:
        raise ApiError(404, f"no video '{shown(video_id)}'", "video_id", "not_found")
    return job


def link(source: Path, target: Path) -> None:
    """Give a job its own copy of another job's file (a hard link where possible), so deleting one
    job never takes another's input."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


async def image_input(state: ServerState, body: Body, name: str, folder: Path) -> Path | None:
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


async def video_input(state: ServerState, body: Body, name: str, folder: Path,
                      required: bool = False) -> Source | None:
    """A video from an upload or {"id": completed video}, checked: (path, frames, fps), or None if absent."""
    if name in body.files:
        upload = body.files[name]
        declared = check_declared_type(upload.content_type, name, "video")
        target = folder / (name + VIDEO_TYPES.get(declared, ""))
        await run_in_threadpool(save_stream, upload.file, target, state.config.max_upload_bytes, name)
        return await checked_video(state, target, name)
    if body.fields.get(name) is not None:
        value = body.fields[name]
        if not isinstance(value, dict) or set(value) != {"id"} or not isinstance(value["id"], str):
            raise ApiError(400, f"{name}: upload a video file, or give {{\"id\": \"video_...\"}} of a completed "
                                "video", name)
        if not JOB_ID.fullmatch(value["id"]):
            raise ApiError(400, f"{name}.id '{shown(value['id'])}': not a valid id", name)
        source = state.store.get(value["id"])
        if source is None:
            raise ApiError(404, f"{name}.id: no video '{value['id']}'", name, "not_found")
        if source.status != "completed" or source.output is None:
            raise ApiError(409, f"{name}.id: video '{source.id}' is {source.status}; only a completed video can "
                                "be used", name)
        return await linked_video(state, source, folder / (name + ".mp4"), name)
    if required:
        raise ApiError(400, f"{name}: required (upload a video, or give {{\"id\": \"video_...\"}} of a completed "
                            "video)", name)
    return None


async def linked_video(state: ServerState, source: Job, target: Path, name: str) -> Source:
    """A completed job's video, linked into a new job's folder as ``target`` and checked."""
    assert source.output is not None
    await run_in_threadpool(link, state.media / source.output, target)
    return await checked_video(state, target, name)


async def checked_video(state: ServerState, path: Path, name: str) -> Source:
    frames, fps = await run_in_threadpool(check_video, path, name, state.config.max_pixels,
                                          state.config.max_video_pixels)
    return path, frames, fps


def source_size(frames: np.ndarray) -> str:
    """A source video's size rounded down to multiples of 8 (what an edit or extension keeps)."""
    height, width = frames.shape[1:3]
    return f"{max(8, width // 8 * 8)}x{max(8, height // 8 * 8)}"


def storyboard_value(value: Any) -> dict | None:
    """A storyboard from JSON (an object) or multipart (a JSON string); kinema.inference.request.validate checks
    the rest."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_json(value, "storyboard: not valid JSON", "storyboard")
    if not isinstance(value, dict):
        raise ApiError(400, "storyboard: must be a JSON object with 'shots' (and optionally 'scene')", "storyboard")
    return value


@contextlib.contextmanager
def job_folder(state: ServerState, prefix: str = "video") -> Iterator[tuple[str, Path]]:
    """A fresh id and folder for a new job; the folder goes again if the job is not accepted."""
    job_id = f"{prefix}_{uuid.uuid4().hex}"
    folder = (state.media / job_id) if prefix == "video" else (state.media / "characters" / job_id)
    folder.mkdir(parents=True)
    try:
        yield job_id, folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def prompt_warnings(pipe: Any, request: GenerateRequest) -> list[str]:
    """What the CLI warns about a request, for the studio to show once: a prompt that names nothing a model of the
    simulated world can draw (``kinema.inference.expand.undrawable``)."""
    from kinema.inference.expand import undrawable
    from kinema.inference.storyboard import storyboard_from_dict

    if not getattr(pipe.defaults, "expand", False):  # not a model of the simulated world
        return []
    if request.storyboard is not None:
        text = " ".join(storyboard_from_dict(request.storyboard).shot_texts())
    else:
        text = request.prompt
    warning = undrawable(text)
    return [warning] if warning else []


LORA_NAME = re.compile(FILE_NAME.pattern + r"\.safetensors")  # a file name in the LoRA folder, no path


def served_loras(state: ServerState, specs: list[str]) -> list[str]:
    """A request's LoRAs, each ``[low=]NAME[:SCALE]`` of a file in the server's ``--lora-dir``, as paths there: a
    client names LoRAs the server offers, never a path of the server's machine."""
    folder = state.config.lora_dir
    if folder is None:
        raise ApiError(400, "loras: this server offers no LoRAs (start it with --lora-dir DIR)", "loras")
    resolved = []
    for spec in specs:
        expert, _, name = spec.rpartition("=")
        name, _, scale = name.partition(":")
        if not LORA_NAME.fullmatch(name) or not (folder / name).is_file():
            raise ApiError(400, f"loras: '{shown(name)}' is not a LoRA this server offers (a .safetensors file name "
                                f"in its LoRA folder)", "loras")
        if expert not in ("", "high", "low"):
            raise ApiError(400, f"loras: '{shown(expert)}=': an expert is high= or low=", "loras")
        if expert == "low" and getattr(state.pipe, "transformer_2", None) is None:
            raise ApiError(400, "loras: low= names the low-noise expert, which only Wan2.2 A14B has", "loras")
        resolved.append(f"{expert}=" * bool(expert) + str(folder / name) + (f":{scale}" if scale else ""))
    return resolved


async def submit(state: ServerState, job_id: str, folder: Path, *, prompt: str, mode: str,
                 request_fields: dict, input_frames: tuple[int, ...] = (), remixed_from: Job | None = None) -> dict:
    """Validate a job, store it (committed before this returns) and wake the worker."""
    expanded, used = character_tools.expand(prompt, state.store.characters())
    if request_fields.get("seed") is None:
        request_fields["seed"] = secrets.randbelow(2**31)
    if request_fields.get("loras"):
        request_fields["loras"] = served_loras(state, request_fields["loras"])
    if request_fields.get("expand_with") is not None:  # a client turns it on; the server names the endpoint
        if request_fields["expand_with"] and state.config.expand_with is None:
            raise ApiError(400, "expand_with: this server has no chat endpoint (start it with --expand-with URL)",
                           "expand_with")
        request_fields["expand_with"] = state.config.expand_with if request_fields["expand_with"] else None
    request = GenerateRequest(prompt=expanded, output=str(folder / OUTPUT_NAME), **request_fields)
    seconds, size = check_request(request, state.pipe, input_frames=input_frames,
                                  max_job_pixels=state.config.max_video_pixels)
    params = stored_params(request, folder)
    params["_server"] = {"mode": mode, "characters": used, "warnings": prompt_warnings(state.pipe, request)}
    length = remixed_from.seconds if remixed_from is not None else seconds_text(seconds)  # a remix keeps the length
    job = state.store.add(job_id, model=state.pipe.name, prompt=prompt, seconds=length, size=size, params=params,
                          remixed_from=remixed_from.id if remixed_from else None, max_queue=state.config.max_queue)
    if state.worker is not None:
        state.worker.notify()
    return video_object(state, job, position=True)


async def submit_from_video(request: Request, schema: type[Sampling], mode: str,
                            request_fields: Callable[[Any, Path, np.ndarray, Job | None], dict], *,
                            remix_of: str | None = None) -> dict:
    """Remix, edit and extend: a new job that keeps a source video under a new prompt.

    The source is the completed video ``remix_of`` (a remix), else the body's ``video``: an upload, or
    ``{"id": ...}`` of a completed video. ``request_fields(fields, source path, source frames, remixed job)``
    gives the job's Request fields from the body's checked ``fields``."""
    state = state_of(request)
    async with read_body(request, () if remix_of else ("video",)) as body:
        reference = None if remix_of else body.fields.pop("video", None)
        fields = parse_fields(schema, body.fields)
        source_job = None
        if remix_of is not None:
            source_job = get_job(state, remix_of)
            if source_job.status != "completed" or source_job.output is None:
                raise ApiError(409, f"video '{remix_of}' is {source_job.status}; only a completed video can be "
                                    "remixed", "video_id", "video_not_ready")
        else:
            body.fields["video"] = reference
            check_model(state, fields.model)
        check_queue(state)
        with job_folder(state) as (job_id, folder):
            if source_job is not None:
                path, frames, _ = await linked_video(state, source_job, folder / "source.mp4", "video")
            else:
                source = await video_input(state, body, "video", folder, required=True)
                assert source is not None
                path, frames, _ = source
            return await submit(state, job_id, folder, prompt=fields.prompt, mode=mode,
                                request_fields=request_fields(fields, path, frames, source_job),
                                input_frames=(len(frames),), remixed_from=source_job)
