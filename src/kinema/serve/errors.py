"""How the API answers errors: OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx
status and a one-line message for bad input; a 500 says only "internal server error" and the traceback goes
to the server log."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinema.errors import KinemaError
from kinema.serve.guard import error_body
from kinema.serve.store import QueueFull, StoreUnavailable
from kinema.serve.uploads import UploadError

log = logging.getLogger("kinema.serve")

# The fields a request may name; an error message that starts with one of them names that parameter.
PARAMS = {"prompt", "model", "seconds", "size", "seed", "steps", "guidance", "negative_prompt", "expand", "storyboard",
          "context_noise", "anchor", "expand_with", "loras", "step_cache", "mode", "strength", "direction", "name",
          "input_reference", "video", "video_end"}
SHOWN_CHARS = 80  # of a value the client sent, quoted in an error message


class ApiError(Exception):
    """An error answered with ``status`` and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())
        self.param, self.code, self.kind = param, code, kind


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """A value the client sent, as an error message quotes it: cut to ``limit`` characters, so that a huge one
    is not echoed back whole."""
    return value if len(value) <= limit else value[:limit - 3] + "..."


def guess_param(message: str) -> str | None:
    word = re.split(r"[\s':]", message, maxsplit=1)[0]
    return word if word in PARAMS else None


def validation_message(error: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """One line for the first problem: 'seed: Input should be a valid integer'."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = location[0] if location else None
    where = ".".join(location) or "request"
    value = first.get("input")
    if first.get("type") == "string_pattern_mismatch" and isinstance(value, str):
        return f"{where} '{shown(value)}': not a valid id", param
    if first.get("type") == "missing":
        return f"{where}: required", param
    return f"{where}: {first.get('msg', 'invalid')}", param


def add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, param, code, kind), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return answer(error.status, error.message, error.param, error.code, error.kind)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, error: QueueFull) -> JSONResponse:
        return answer(429, str(error), None, "queue_full", "rate_limit_error", {"retry-after": "5"})

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, error: StoreUnavailable) -> JSONResponse:
        log.error("%s", error)
        return answer(503, "the job store is unavailable; try again shortly", None, "store_unavailable",
                      "server_error", {"retry-after": "5"})

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, error: UploadError) -> JSONResponse:
        return answer(error.status, str(error), error.param)

    @app.exception_handler(KinemaError)
    async def kinema_error(_: Request, error: KinemaError) -> JSONResponse:
        return answer(400, str(error), guess_param(str(error)))

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        message, param = validation_message(error)
        return answer(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        path = shown(request.url.path, 200)
        message = {404: f"no route {request.method} {path}",
                   405: f"method {request.method} is not allowed on {path}"}.get(error.status_code, str(error.detail))
        return answer(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, shown(request.url.path, 200), exc_info=error)
        return answer(500, "internal server error (see the server log)", kind="server_error")
