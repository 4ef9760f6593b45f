"""Reading a request body: JSON or multipart (``a[b]`` keys become nested objects), uploads kept apart, and
the fields checked against a schema; one-line 4xx errors for anything else."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from kinema.serve.errors import ApiError, shown, validation_message

MAX_FORM_FIELDS = 64
FORM_FIELD = re.compile(r"(?P<name>\w+)\[(?P<key>\w+)\]")


def parse_json(text: str | bytes, invalid: str, param: str | None = None) -> Any:
    """JSON from a client; 400 with the message ``invalid`` when it is not valid JSON, or is nested too deeply to
    parse (json.loads raises RecursionError at about 1,000 levels)."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, invalid, param) from None
    except RecursionError:
        raise ApiError(400, f"{invalid} (nested too deeply)", param) from None


def parse_fields(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """A body's fields checked against a schema; 400 with the first problem."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        message, param = validation_message(error)
        raise ApiError(400, message, param) from None


@dataclass
class Body:
    """A request body: plain fields (``a[b]`` multipart keys become nested dicts) and uploaded files."""

    fields: dict[str, Any]
    files: dict[str, UploadFile]


@contextlib.asynccontextmanager
async def read_body(request: Request, file_fields: tuple[str, ...]) -> AsyncIterator[Body]:
    """The body of a request, its uploads (``file_fields`` only) open until the block ends."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        data = parse_json(await request.body(), "the body is not valid JSON")
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object")
        yield Body(data, {})
        return
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(415, f"content type '{shown(content_type, 60)}': send application/json or multipart/form-data")
    async with request.form(max_files=len(file_fields), max_fields=MAX_FORM_FIELDS) as form:
        body = Body({}, {})
        for key in dict.fromkeys(form.keys()):
            values = form.getlist(key)
            if len(values) > 1:
                raise ApiError(400, f"{shown(key, 60)}: given {len(values)} times; give it once", key)
            value = values[0]
            nested = FORM_FIELD.fullmatch(key)
            if isinstance(value, UploadFile):
                if key not in file_fields:
                    raise ApiError(400, f"{shown(key, 60)}: not a file field (files go in {', '.join(file_fields)})",
                                   key)
                body.files[key] = value
            elif nested:
                target = body.fields.setdefault(nested["name"], {})
                if not isinstance(target, dict):
                    raise ApiError(400, f"{shown(nested['name'], 60)}: given both as a value and as {shown(key, 60)}",
                                   nested["name"])
                target[nested["key"]] = value
            elif isinstance(body.fields.get(key), dict):
                raise ApiError(400, f"{shown(key, 60)}: given both as a value and with [keys]", key)
            else:
                body.fields[key] = value
        for key in body.files:
            if key in body.fields:
                raise ApiError(400, f"{shown(key, 60)}: given both as a file and as a value", key)
        yield body
