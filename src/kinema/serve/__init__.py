"""``kinema serve``: an OpenAI-compatible video API and a web studio on one loaded pipeline.

``app`` holds the routes and errors; ``guard`` auth and body limits; ``store`` the SQLite job store;
``worker`` the thread that runs jobs; ``jobs`` how a stored job becomes a ``kinema.inference.request.Request``;
``uploads`` the checks on uploaded files; ``characters`` named subjects; ``static/`` the studio page.
The app and its heavy imports (torch, the pipeline) load on first use, so ``guard`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerConfig", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kinema.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'kinema.serve' has no attribute '{name}'")
