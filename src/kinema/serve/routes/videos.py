"""The video routes of OpenAI's API: create (text, image or storyboard to video, a loop, a connection), list,
retrieve, delete and download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from kinema.errors import KinemaError
from kinema.frames import DEFAULT_SECONDS
from kinema.serve.body import parse_fields, read_body
from kinema.serve.errors import ApiError
from kinema.serve.jobs import JOB_ID, METADATA_NAME, OUTPUT_NAME, SPRITESHEET_NAME, THUMBNAIL_NAME
from kinema.serve.schemas import CreateVideo, VideoId, request_doc, sampling_fields
from kinema.serve.state import state_of, video_object
from kinema.serve.submit import (
    check_model,
    check_queue,
    get_job,
    image_input,
    job_folder,
    storyboard_value,
    submit,
    video_input,
)

router = APIRouter()


@router.post("/v1/videos", summary="Create a video", openapi_extra=request_doc(
    CreateVideo, {"input_reference": "An image: the first frame (image to video)",
                  "video": "mode=connect: the first video", "video_end": "mode=connect: the last video"}))
async def create_video(request: Request) -> dict:
    state = state_of(request)
    async with read_body(request, ("input_reference", "video", "video_end")) as body:
        references = {k: body.fields.pop(k) for k in ("input_reference", "video", "video_end") if k in body.fields}
        fields = parse_fields(CreateVideo, body.fields)
        body.fields.update(references)
        check_model(state, fields.model)
        if fields.mode and (body.files.get("input_reference") or body.fields.get("input_reference")):
            raise ApiError(400, f"input_reference: cannot be combined with mode={fields.mode}", "input_reference")
        storyboard = storyboard_value(fields.storyboard)
        prompt = fields.prompt
        if prompt is None and storyboard is not None:  # the storyboard's scene is the prompt
            prompt = storyboard.get("scene") if isinstance(storyboard.get("scene"), str) else ""
        if prompt is None:
            raise ApiError(400, "prompt: required", "prompt")
        check_queue(state)
        request_fields = {"seconds": DEFAULT_SECONDS if fields.seconds is None else fields.seconds,
                          "size": fields.size, **sampling_fields(fields)}
        if storyboard is not None:
            request_fields["storyboard"] = storyboard
        with job_folder(state) as (job_id, folder):
            image = await image_input(state, body, "input_reference", folder)
            mode, input_frames = "t2v", ()
            if image is not None:
                request_fields["image"], mode = str(image), "i2v"
            if fields.mode == "loop":
                request_fields["loop"], mode = True, "loop"
            if fields.mode == "connect":
                first = await video_input(state, body, "video", folder, required=True)
                last = await video_input(state, body, "video_end", folder, required=True)
                assert first is not None and last is not None
                request_fields["connect"], mode = [str(first[0]), str(last[0])], "connect"
                input_frames = (len(first[1]), len(last[1]))
            elif any(body.files.get(k) or body.fields.get(k) is not None for k in ("video", "video_end")):
                raise ApiError(400, "video: only with mode=connect (to edit or extend a video, use "
                                    "/v1/videos/edits or /v1/videos/extensions)", "video")
            if storyboard is not None:
                mode = "storyboard" if mode == "t2v" else mode
            return await submit(state, job_id, folder, prompt=prompt, mode=mode, request_fields=request_fields,
                                 input_frames=input_frames)


@router.get("/v1/videos", summary="List videos (newest first by default)")
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


@router.get("/v1/videos/{video_id}", summary="Retrieve a video job")
async def retrieve_video(request: Request, video_id: VideoId) -> JSONResponse:
    state = state_of(request)
    job = get_job(state, video_id)
    return JSONResponse(video_object(state, job, position=True),
                        headers={"openai-poll-after-ms": str(state.config.poll_after_ms)})


@router.delete("/v1/videos/{video_id}", summary="Delete a video; a queued or running job is cancelled")
async def delete_video(request: Request, video_id: VideoId) -> dict:
    state = state_of(request)
    job = state.store.delete(video_id)
    if job is None:
        raise ApiError(404, f"no video '{video_id}'", "video_id", "not_found")
    # A job the server's own worker runs stops at its next step, and that worker cleans up; one that a worker
    # elsewhere runs stops at its next lease renewal, and what it writes until then it removes itself.
    if not (job.status == "in_progress" and state.worker is not None and state.worker.cancel(job.id)):
        await run_in_threadpool(shutil.rmtree, state.media / job.id, True)
    return {"id": job.id, "object": "video.deleted", "deleted": True}


@router.get("/v1/videos/{video_id}/content", summary="Download the video, its thumbnail, spritesheet or metadata",
         response_class=Response)
async def video_content(request: Request, video_id: VideoId,
                        variant: Annotated[Literal["video", "thumbnail", "spritesheet", "metadata"],
                                           Query()] = "video") -> Response:
    state = state_of(request)
    job = get_job(state, video_id)
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

