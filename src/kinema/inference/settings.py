"""The settings one generation runs with: its own where it gives them, else the model's.

A model folder carries its ``SamplingDefaults`` (``kinema.inference.pipeline``, stored in model_index.json).
Whatever a request, or a direct call of the pipeline, leaves unset comes from them here and nowhere else:
``sampling`` for steps, guidance and sampler, ``windows`` for how a long video is cut into passes. The CLI,
the server, the suite runner and the pipeline all resolve through these functions, so the metadata written
with a video says exactly what made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    steps: int
    guidance: float
    sampler: str


@dataclass(frozen=True)
class Windows:
    """How a video longer than one pass is made (``kinema.inference.longvideo``)."""

    window: int  # latent frames per pass
    context: int  # of them, the last frames already made
    memory: int  # of them, memory frames (the first of the video, the first of the shot)
    context_noise: float  # flow time of the context frames of every pass after the first
    anchor: float  # pull of each later pass back to its shot's latent levels (0: off)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_guidance(defaults: Any, storyboard: bool) -> float:
    """The model's guidance scale: ``storyboard_guidance`` for a storyboard when it is set, else ``guidance_scale``."""
    if storyboard and defaults.storyboard_guidance is not None:
        return defaults.storyboard_guidance
    return defaults.guidance_scale


def sampling(defaults: Any, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
             storyboard: bool = False) -> Sampling:
    """Steps, guidance and sampler: the given ones, else the model's (``default_guidance`` for guidance)."""
    return Sampling(defaults.steps if steps is None else steps,
                    default_guidance(defaults, storyboard) if guidance is None else guidance,
                    sampler or defaults.sampler)


def windows(defaults: Any, window: int | None = None, context: int | None = None, memory: int | None = None,
            context_noise: float | None = None, anchor: float | None = None) -> Windows:
    """The window settings: the given ones, else the model's."""
    return Windows(window or defaults.window,
                   defaults.context if context is None else context,
                   defaults.memory if memory is None else memory,
                   defaults.context_noise if context_noise is None else context_noise,
                   defaults.anchor if anchor is None else anchor)


def request_sampling(defaults: Any, request: Any) -> Sampling:
    """What a ``Request`` samples with (a storyboard gets the model's storyboard guidance)."""
    return sampling(defaults, request.steps, request.guidance, request.sampler, request.storyboard is not None)


def request_windows(defaults: Any, request: Any) -> Windows:
    """How a ``Request`` longer than one pass is made."""
    return windows(defaults, request.window, request.context, None, request.context_noise, request.anchor)


def guidance_for(pipe: Any, request: Any) -> float:
    """The guidance scale a request runs with: its own, else the model's (``default_guidance``)."""
    return request_sampling(pipe.defaults, request).guidance


def long_video_settings(pipe: Any, request: Any) -> dict[str, Any]:
    """How a video longer than one window is made: window, context, memory, context noise and anchor, from the
    request or else the model's defaults (also written into the output's metadata)."""
    return request_windows(pipe.defaults, request).as_dict()


def expands(pipe: Any, request: Any) -> bool:
    """Whether a request's prompt is expanded with the world: its own choice, else the model's default (on for models
    trained on the world's captions, off for Wan)."""
    return pipe.defaults.expand if request.expand is None else request.expand


def model_size(pipe: Any) -> str:
    """The size (WIDTHxHEIGHT) a request that names none is made at: the model's."""
    return f"{pipe.defaults.width}x{pipe.defaults.height}"
