"""``kinema serve``: an OpenAI-compatible video API and a web studio on one loaded pipeline.

``app`` assembles the app and serves it; ``routes/`` holds the routers (studio, videos, edits, characters);
``schemas`` what request bodies may hold and ``body`` how they are read; ``errors`` the error answers;
``submit`` how a request becomes a job, ``jobs`` how a stored job becomes a
``kinema.inference.request.Request``; ``state`` the running server and the Video object; ``store`` the job
store's interface and ``sqlite`` its SQLite implementation; ``worker`` the thread that runs jobs; ``guard``
auth and body limits; ``uploads`` the checks on uploaded files; ``characters`` named subjects; ``static/`` the
studio page. The app and its heavy imports (torch, the pipeline) load on first use, so ``guard`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerConfig", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kinema.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'kinema.serve' has no attribute '{name}'")
