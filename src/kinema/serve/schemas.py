"""What the API's request bodies may hold: pydantic models (which also make the OpenAPI schema), the id path
parameters, and how a body's sampling settings become ``kinema.inference.request.Request`` fields."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kinema.frames import MAX_PROMPT_CHARS
from kinema.serve.jobs import CHARACTER_ID, JOB_ID


def number_or_text(value: float | str) -> float:
    """Seconds as OpenAI sends them ("4") or as a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number such as 4 or 2.5") from None
    return value


Seconds = Annotated[float | str, AfterValidator(number_or_text)]


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
                                                "was trained on (default: the model's, on for the embedded model; the "
                                                "expansion is in the metadata)")
    expand_with: bool | None = Field(None, description="kinema: extend the prompt with the chat endpoint the server "
                                     "was started with (kinema serve --expand-with URL); falls back to the prompt "
                                     "as written")
    loras: list[str] | None = Field(None, max_length=8, description="kinema: LoRAs the server offers, each NAME or "
                                    "NAME:SCALE (a .safetensors file in its --lora-dir); low=NAME for "
                                    "Wan2.2 A14B's low-noise expert")
    context_noise: float | None = Field(None, ge=0, lt=1, description="kinema, long videos: noise level in [0, 1) "
                                        "of the frames each later pass continues from (default: the model's)")
    anchor: float | None = Field(None, ge=0, le=1, description="kinema, long videos: strength in [0, 1] with which "
                                 "each later pass keeps the levels and contrast of its shot's opening (default: the "
                                 "model's; 0: off)")
    step_cache: float | None = Field(None, ge=0, le=1, description="kinema: step caching threshold in [0, 1]: the "
                                     "later blocks' residual is reused while the first block's output changes by "
                                     "less than this between steps (First-Block Cache; 0.1 is typical; default: "
                                     "the model's; 0: off)")


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


VideoId = Annotated[str, PathParam(pattern=JOB_ID.pattern, description="video_ and 32 hex digits")]
CharacterId = Annotated[str, PathParam(pattern=CHARACTER_ID.pattern, description="char_ and 32 hex digits")]


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


def sampling_fields(params: Sampling) -> dict:
    """The Request fields of the sampling settings a body gave."""
    fields = {"seed": params.seed, "steps": params.steps, "guidance": params.guidance,
              "negative_prompt": params.negative_prompt}
    if params.expand is not None:
        fields["expand"] = params.expand
    for name in ("context_noise", "anchor", "expand_with", "loras", "step_cache"):
        if getattr(params, name) is not None:
            fields[name] = getattr(params, name)
    return fields
