"""New videos from a source video: remix a completed one, edit or extend an uploaded (or completed) one. All
three keep the source under a new prompt, through ``kinema.serve.submit.submit_from_video``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from kinema.serve.schemas import EditVideo, ExtendVideo, RemixVideo, VideoId, request_doc, sampling_fields
from kinema.serve.store import Job
from kinema.serve.submit import source_size, submit_from_video

DEFAULT_STRENGTH = 0.7  # how far an edit or a remix goes from its source

router = APIRouter()


@router.post("/v1/videos/{video_id}/remix", summary="Remix a completed video under a new prompt (video to video)",
             openapi_extra=request_doc(RemixVideo, {}))
async def remix_video(request: Request, video_id: VideoId) -> dict:
    def fields_of(fields: Any, path: Path, frames: np.ndarray, source: Job | None) -> dict:
        assert source is not None  # a remix keeps its source's size and length
        return {"edit": str(path), "size": source.size, "seconds": float(source.seconds),
                "strength": DEFAULT_STRENGTH if fields.strength is None else fields.strength, **sampling_fields(fields)}

    return await submit_from_video(request, RemixVideo, "remix", fields_of, remix_of=video_id)


@router.post("/v1/videos/edits", summary="Edit an uploaded (or completed) video under a prompt",
             openapi_extra=request_doc(EditVideo, {"video": "The video to edit"}))
async def edit_video(request: Request) -> dict:
    def fields_of(fields: Any, path: Path, frames: np.ndarray, _: Job | None) -> dict:
        return {"edit": str(path), "size": fields.size or source_size(frames),
                "strength": DEFAULT_STRENGTH if fields.strength is None else fields.strength, **sampling_fields(fields)}

    return await submit_from_video(request, EditVideo, "edit", fields_of)


@router.post("/v1/videos/extensions", summary="Extend an uploaded (or completed) video by some seconds",
             openapi_extra=request_doc(ExtendVideo, {"video": "The video to extend"}))
async def extend_video(request: Request) -> dict:
    def fields_of(fields: Any, path: Path, frames: np.ndarray, _: Job | None) -> dict:
        return {"extend": str(path), "seconds": fields.seconds, "direction": fields.direction,
                "size": fields.size or source_size(frames), **sampling_fields(fields)}

    return await submit_from_video(request, ExtendVideo, "extend", fields_of)
