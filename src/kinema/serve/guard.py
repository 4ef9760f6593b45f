"""Who may call the server and how much they may send.

Every path except the public ones (the liveness check and the studio's page, script and style,
which load before the user has pasted a token) needs ``Authorization: Bearer TOKEN`` when the
server has a token, compared in constant time. Request bodies are capped before they are read.
Anything but a loopback address needs a token, so the API is never open to a network by accident.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from kinema.errors import KinemaError

PUBLIC_PATHS = frozenset({"/", "/healthz", "/studio.js", "/studio.css"})


def check_host(host: str, token: str | None) -> None:
    """Anything but loopback needs a token: refuse to start without one."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise KinemaError(f"--host {host} is reachable from other machines: pass --token (or set KINEMA_TOKEN) so "
                          "that every API call needs it")


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Bearer-token auth on every path except the public ones, and a cap on the size of request bodies.

    A pure ASGI middleware: it sees every request before routing, so no route can be added without it.
    """

    def __init__(self, app: Any, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.token is not None and scope["path"] not in PUBLIC_PATHS and not self._authorized(headers):
            await _reply(send, 401, error_body("missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
                                               code="invalid_api_key"), {"www-authenticate": "Bearer"})
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _reply(send, 413, error_body(f"the request body is over the limit of {self.max_body:,} bytes",
                                               code="request_too_large"))
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _reply(send, 413, error_body(f"the request body is over the limit of {self.max_body:,} bytes",
                                                   code="request_too_large"))

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        scheme, _, credentials = headers.get("authorization", b"").partition(b" ")
        assert self.token is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)


async def _reply(send: Any, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
