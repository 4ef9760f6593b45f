"""The settings one generation runs with: its own where it gives them, else the model's.

A model folder carries its ``SamplingDefaults`` (stored in model_index.json under ``kinema.defaults``;
``read_defaults`` reads them without loading any weights, or torch).
Whatever a request, or a direct call of the pipeline, leaves unset comes from them here and nowhere else:
``sampling`` for steps, guidance and sampler, ``windows`` for how a long video is cut into passes. The CLI,
the server, the suite runner and the pipeline all resolve through these functions, so the metadata written
with a video says exactly what made it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kinema.config import WAN_PIPELINES
from kinema.errors import KinemaError
from kinema.frames import DEFAULT_SECONDS, DEFAULT_SIZE

log = logging.getLogger("kinema.inference")
INDEX = "model_index.json"


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


@dataclass
class SamplingDefaults:
    """A model's defaults, stored in model_index.json under ``kinema.defaults``; a call, a CLI flag or an API field
    that leaves a setting unset gets it from here (``kinema.inference.settings``)."""

    steps: int = 20
    guidance_scale: float = 4.0
    storyboard_guidance: float | None = None  # guidance for storyboards (None: guidance_scale)
    sampler: str = "euler"
    shift: float | None = None  # None: grows with the token count (FlowConfig)
    fps: float = 8.0
    seconds: float = DEFAULT_SECONDS  # length of a video from text when a call does not say
    size: str = DEFAULT_SIZE  # WIDTHxHEIGHT when a call does not say
    # Whether prompts are expanded into the simulated world's caption style (kinema.inference.expand): true for
    # models trained on world clips, false for models trained on other captions (your own videos).
    expand: bool = True
    # Long videos (kinema.inference.longvideo): latent frames per transformer pass, of which up to `context` are the
    # last frames already made and up to `memory` are memory frames (first of the video, first of the shot).
    window: int = 13
    context: int = 1  # 1 drifts less over 60 s than 2 or 4 (benchmarks/RESULTS.md, "Long videos: context")
    memory: int = 2
    # Flow time of the context frames of every pass after the first: they enter noised to this level, so small
    # errors in the frames just made are not copied forward as if they were exact; memory frames stay clean
    # (0: clean context). 0.3 drifts less over 60 s than clean context (benchmarks/RESULTS.md,
    # "Long videos: context noise").
    context_noise: float = 0.3
    # How strongly each pass after the first pulls the levels (per latent channel and row) and the spread of its
    # new frames back to those of its shot's opening (kinema.inference.longvideo.anchor_levels; 0: not at all,
    # 1: fully).
    anchor: float = 0.0
    # The "ar" sampler makes latent frames one at a time, each attending to the ones before it (a frame-causal
    # model): frames already made enter later ones noised to this flow time (0: clean).
    ar_context_noise: float = 0.0
    negative_prompt: str = ""  # what a call without a negative prompt steers away from (Wan's own for Wan models)
    guidance_scale_2: float | None = None  # Wan2.2 A14B: the low-noise expert's guidance (None: guidance_scale)
    # A few-step transformer beside this one (kinema train distill), picked by the steps a request asks for.
    few_step: FewStep | None = None
    # Step caching: diffusers' First-Block Cache at this threshold (the relative change of the first block's
    # residual under which the other blocks' residual of the call before is reused); 0: off.
    step_cache: float = 0.0
    # Fields this version of kinema does not know (written by a newer one): kept, and written back on save.
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.few_step = few_step_from(self.few_step)

    @classmethod
    def from_dict(cls, values: dict) -> SamplingDefaults:
        """Defaults from a model folder's ``kinema.defaults``; fields of a newer kinema are kept in ``extra``."""
        if not isinstance(values, dict):
            raise TypeError(f"defaults must be an object, got {type(values).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        defaults = cls(**{k: v for k, v in values.items() if k in known})
        defaults.extra = {k: v for k, v in values.items() if k not in known}
        if defaults.extra:
            log.debug("model defaults not read by this kinema: %s", ", ".join(sorted(defaults.extra)))
        return defaults

    def to_dict(self) -> dict:
        values = asdict(self)
        return {**values.pop("extra"), **values}


def read_model_index(folder: str | os.PathLike) -> dict:
    """A model folder's model_index.json as a dict; one-line KinemaError when it is missing or broken. Cheap: the
    CLI reads a model's defaults with it before any weights load."""
    folder = Path(folder)
    index_file = folder / INDEX
    if not folder.is_dir():
        raise KinemaError(f"model folder '{folder}' does not exist")
    if not index_file.is_file():
        raise KinemaError(f"model folder '{folder}' has no {INDEX}")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KinemaError(f"model folder '{folder}': {INDEX} is not valid JSON ({e})") from None
    if not isinstance(index, dict):
        raise KinemaError(f"model folder '{folder}': {INDEX} must be an object")
    return index


def read_defaults(folder: str | os.PathLike) -> SamplingDefaults:
    """A model folder's sampling defaults, without loading its weights (a diffusers Wan folder's: Wan's for its
    kind, ``kinema.models.wan.folder_defaults``)."""
    index = read_model_index(folder)
    if index.get("_class_name") in WAN_PIPELINES:
        from kinema.models.wan import folder_defaults

        return SamplingDefaults(**folder_defaults(Path(folder)))
    section = index.get("kinema")
    try:
        return SamplingDefaults.from_dict(section.get("defaults", {}) if isinstance(section, dict) else {})
    except (TypeError, ValueError) as e:
        raise KinemaError(f"model folder '{folder}': bad 'kinema.defaults' in {INDEX} ({e})") from None


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


def expand_default(defaults: Any, storyboard: Any = None) -> bool:
    """Whether prompts are expanded when a request does not say: the model's default (on for models trained on the
    world's captions, off for Wan); a storyboard's shots only when asked (measured on the storyboard suite, their
    expansion keeps the subject at more cuts and the scene at fewer, and no more cuts in all:
    benchmarks/RESULTS.md)."""
    return bool(defaults.expand) and storyboard is None


def expands(pipe: Any, request: Any) -> bool:
    """Whether a request's prompt is expanded with the world: its own choice, else ``expand_default``."""
    return expand_default(pipe.defaults, request.storyboard) if request.expand is None else request.expand
