"""Characters: a named subject taken from an uploaded clip (``kinema.serve.characters``), which prompts can name."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kinema.serve import characters as character_tools
from kinema.serve.body import parse_fields, read_body
from kinema.serve.errors import ApiError
from kinema.serve.schemas import CharacterId, CreateCharacter, request_doc
from kinema.serve.state import character_object, state_of
from kinema.serve.submit import job_folder, video_input

router = APIRouter()


@router.post("/v1/videos/characters", summary="Create a character from the main subject of an uploaded clip",
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
        with job_folder(state, "char") as (character_id, folder):
            source = await video_input(state, body, "video", folder, required=True)
            assert source is not None
            path, frames, fps = source
            character = await run_in_threadpool(character_tools.make_character, character_id, name, frames, fps,
                                                folder, int(time.time()))
            path.unlink()
            state.store.add_character(character)
            return character_object(character)


@router.get("/v1/videos/characters/{character_id}", summary="Retrieve a character")
async def get_character(request: Request, character_id: CharacterId) -> dict:
    character = state_of(request).store.get_character(character_id)
    if character is None:
        raise ApiError(404, f"no character '{character_id}'", "character_id", "not_found")
    return character_object(character)
