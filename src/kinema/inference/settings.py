"""The settings one generation runs with: its own where it gives them, else the model's.

A model folder carries its ``SamplingDefaults`` (``kinema.inference.pipeline``, stored in model_index.json).
Whatever a request, or a direct call of the pipeline, leaves unset comes from them here and nowhere else:
``sampling`` for steps, guidance and sampler, ``windows`` for how a long video is cut into passes. The CLI,
the server, the suite runner and the pipeline all resolve through these functions, so the metadata written
with a video says exactly what made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from kinema.errors import KinemaError


@dataclass(frozen=True)
class FewStep:
    """A few-step transformer that a model folder holds beside its own (``kinema train distill`` writes it): a
    request for at most ``max_steps`` steps is sampled with it instead, guidance folded in."""

    transformer: str = "transformer_few_step"  # its subfolder
    steps: int = 4  # the steps it was distilled for: what a request that picks it without giving steps gets
    max_steps: int = 4  # requests of at most this many steps pick it
    guidance_scale: float = 1.0  # 1: one pass a step, the teacher's guidance is in the weights
    sampler: str | None = None  # None: the model's sampler
    default: bool = False  # a request that gives no steps picks it too (when it matches the teacher)
    distilled_from: dict | None = None  # how it was made (teacher, its steps and guidance, method, windows)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= self.max_steps:
            raise KinemaError(f"few_step: steps {self.steps!r} must be an integer in [1, max_steps {self.max_steps}]")
        if not isinstance(self.transformer, str) or not self.transformer or "/" in self.transformer:
            raise KinemaError(f"few_step: transformer {self.transformer!r} must name a subfolder of the model")


def few_step_from(value: Any) -> FewStep | None:
    """A model folder's ``few_step`` entry (a mapping, as model_index.json holds it) as a FewStep."""
    if value is None or isinstance(value, FewStep):
        return value
    if not isinstance(value, dict):
        raise KinemaError(f"few_step must be a mapping (got {type(value).__name__})")
    unknown = sorted(set(value) - {f.name for f in fields(FewStep)})
    if unknown:
        raise KinemaError(f"few_step: unknown key(s) {', '.join(unknown)}")
    return FewStep(**value)


@dataclass(frozen=True)
class Sampling:
    steps: int
    guidance: float
    sampler: str
    few_step: bool = False  # sampled with the model's few-step transformer (FewStep)
    step_cache: float = 0.0  # First-Block Cache threshold (0: every block runs at every step)


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
             storyboard: bool = False, step_cache: float | None = None) -> Sampling:
    """Steps, guidance, sampler and step cache: the given ones, else the model's (``default_guidance`` for
    guidance). A model with a few-step transformer (``defaults.few_step``) samples with it when the steps asked for
    are at most its ``max_steps`` (or none are asked for and it is the default), at its own steps and guidance
    unless given, and without the model's step cache (a few steps leave nothing to reuse)."""
    few = getattr(defaults, "few_step", None)
    if few is not None and (few.default if steps is None else steps <= few.max_steps):
        return Sampling(few.steps if steps is None else steps, few.guidance_scale if guidance is None else guidance,
                        sampler or few.sampler or defaults.sampler, few_step=True, step_cache=step_cache or 0.0)
    return Sampling(defaults.steps if steps is None else steps,
                    default_guidance(defaults, storyboard) if guidance is None else guidance,
                    sampler or defaults.sampler,
                    step_cache=getattr(defaults, "step_cache", 0.0) if step_cache is None else step_cache)


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
    return sampling(defaults, request.steps, request.guidance, request.sampler, request.storyboard is not None,
                    request.step_cache)


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
