"""A server job: the stored parameters of one generation and the ``kinema.inference.request.Request`` they make.

Parameters are stored as plain JSON: the Request's fields, with input files named relative to the
job's folder (``MEDIA/<job id>/``), where the output ``video.mp4``, its sidecar ``video.json``, the
thumbnail and the spritesheet are written too. The limits a request must meet are the CLI's
(``kinema.inference.request.validate``) and the server's budget of pixels and transformer tokens per video,
all checked before a job is accepted.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from kinema.errors import KinemaError
from kinema.frames import is_windowed, latent_count, output_frames
from kinema.inference.pipeline import MAX_TOKENS_PER_PASS
from kinema.inference.request import Request, added_seconds, validate

OUTPUT_NAME = "video.mp4"
THUMBNAIL_NAME = "thumbnail.png"
SPRITESHEET_NAME = "spritesheet.png"
METADATA_NAME = "video.json"  # the sidecar kinema.media writes next to video.mp4
PATH_FIELDS = ("image", "extend", "edit")  # Request fields that name one input file
# Anchored: they are the path parameters' patterns too, which pydantic searches for anywhere in the value.
JOB_ID = re.compile(r"^video_[0-9a-f]{32}$")
CHARACTER_ID = re.compile(r"^char_[0-9a-f]{32}$")


def stored_params(request: Request, folder: Path) -> dict[str, Any]:
    """The Request as plain JSON: input files by name inside ``folder``, no output path."""
    params = {k: v for k, v in asdict(request).items() if k != "output"}
    for name in PATH_FIELDS:
        if params.get(name):
            params[name] = Path(params[name]).relative_to(folder).as_posix()
    params["connect"] = [Path(p).relative_to(folder).as_posix() for p in params.get("connect") or []]
    return params


def request_for(params: dict[str, Any], folder: Path) -> Request:
    """The Request a stored job runs, its inputs and output inside ``folder``."""
    known = {f.name for f in fields(Request)}
    values = {k: v for k, v in params.items() if k in known and k != "output"}
    for name in PATH_FIELDS:
        if values.get(name):
            values[name] = str(folder / values[name])
    values["connect"] = [str(folder / name) for name in values.get("connect") or []]
    return Request(output=str(folder / OUTPUT_NAME), **values)


def check_request(request: Request, pipe, *, input_frames: tuple[int, ...] = (),
                  max_job_pixels: int) -> tuple[float, str]:
    """Everything a job must meet before it is accepted; returns (the video's length in seconds, WxH).

    That is the requested length, except where input video is kept (extend, connect, edit) or a
    storyboard sets it: there it is the length of the whole result. ``input_frames`` are the frame counts of the
    input videos, known from the upload checks. One-line KinemaError otherwise.
    """
    mode, frames, width, height, fps = validate(request, pipe.defaults)
    pipe.check_mode(mode)
    if input_frames:  # the modes that keep input video make the input and what is added
        frames = output_frames(mode, added_seconds(request, pipe.defaults), fps, input_frames)
    pixels = frames * width * height
    if pixels > max_job_pixels:
        raise KinemaError(f"{frames} frames at {width}x{height} is {pixels:,} pixels; this server allows "
                          f"{max_job_pixels:,} per video (ask for fewer seconds or a smaller size)")
    latent_frames = latent_count(frames, mode, pipe.vae.temporal_compression)
    window = request.window or pipe.defaults.window
    if is_windowed(mode, latent_frames, window, request.storyboard is not None):  # one window a pass
        latent_frames = min(latent_frames, window)
    tokens = latent_frames * pipe.tokens_per_frame(height, width)
    if tokens > MAX_TOKENS_PER_PASS:
        raise KinemaError(f"{frames} frames at {width}x{height} is {tokens} transformer tokens a pass; one pass "
                          f"allows {MAX_TOKENS_PER_PASS} (ask for fewer seconds or a smaller size)")
    whole = input_frames or request.storyboard is not None  # the length is the result's, not the request's
    return (frames / fps if whole else added_seconds(request, pipe.defaults)), f"{width}x{height}"


def seconds_text(seconds: float) -> str:
    """Seconds as the API shows them: '4', '2.5', '1.125'."""
    return f"{round(seconds, 3):g}"
