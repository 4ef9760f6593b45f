"""kinema: text-to-video with a causal video VAE, a diffusion transformer and flow matching.

The Python API, in diffusers' manner::

    import torch
    from kinema import KinemaPipeline, export_to_video

    pipe = KinemaPipeline.from_pretrained("kinema-tiny")  # a packaged model's name, or a model folder
    video = pipe("a red ball is thrown to the right and bounces on the sand",
                 generator=torch.Generator().manual_seed(0)).frames[0]
    export_to_video(video, "ball.mp4", fps=pipe.defaults.fps)

The names below load on first use, so that ``import kinema`` (and ``kinema --help``) stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "KinemaPipeline": "kinema.inference.pipeline",
    "KinemaPipelineOutput": "kinema.inference.pipeline",
    "ConditioningItem": "kinema.inference.conditioning",
    "Storyboard": "kinema.inference.storyboard",
    "Shot": "kinema.inference.storyboard",
    "export_to_video": "kinema.media",
}
__all__ = ["ConditioningItem", "KinemaPipeline", "KinemaPipelineOutput", "Shot", "Storyboard", "__version__",
           "export_to_video"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kinema' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
