"""The studio's page, script and style, and the liveness check: the public paths (``kinema.serve.guard``)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kinema.serve.state import state_of

STATIC = resources.files("kinema.serve") / "static"

router = APIRouter()
studio = {name: (STATIC / name).read_text(encoding="utf-8") for name in ("index.html", "studio.js", "studio.css")}


@router.get("/", include_in_schema=False)
async def studio_page() -> HTMLResponse:
    return HTMLResponse(studio["index.html"])


@router.get("/studio.js", include_in_schema=False)
async def studio_script() -> Response:
    return Response(studio["studio.js"], media_type="text/javascript")


@router.get("/studio.css", include_in_schema=False)
async def studio_style() -> Response:
    return Response(studio["studio.css"], media_type="text/css")


@router.get("/healthz", summary="Liveness: the server answers and its worker, if it has one, runs")
async def healthz(request: Request) -> dict:
    state = state_of(request)
    alive = state.worker is None or state.worker.alive  # without one, workers elsewhere run the jobs
    # expand: whether the model expands prompts by default (the studio's expansion switch starts there); size and
    # size_multiple: the model's default size and the multiple its sizes come in, for the studio's size choices
    return {"status": "ok" if alive else "worker stopped", "model": state.pipe.name,
            "expand": bool(getattr(state.pipe.defaults, "expand", False)), "size": state.pipe.defaults.size,
            "size_multiple": getattr(state.pipe, "size_multiple", 8)}
