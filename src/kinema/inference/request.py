"""A generation request: what the CLI's flags, a line of a ``--prompts`` file, a suite entry or an API call ask
for, checked once, before anything is loaded.

``validate`` checks every field (its type, then its range) and resolves the mode and the length; the limits
come from ``kinema.frames``. Each problem is one line that names the field, the value and what is allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from kinema.diffusion import SAMPLER_NAMES
from kinema.errors import KinemaError
from kinema.frames import (
    DEFAULT_SECONDS,
    DEFAULT_SIZE,
    MAX_FPS,
    MAX_FRAMES,
    MAX_PROMPT_CHARS,
    MAX_SECONDS,
    MAX_SIDE,
    MODES,
    is_latent_length,
    output_frames,
)

MAX_WINDOW = 64  # latent frames of a pass (window and context)
VIDEO_OUTPUTS = (".mp4", ".webm", ".gif")  # kinema.media.write_video: H.264, VP9, GIF
IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg")
MAX_CRF = 51  # kinema.media.write_video's range (H.264's scale)
MAX_LORAS = 8  # LoRAs applied to one generation
OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # a --prompts line's 'name': a file name, no path


@dataclass
class Request:
    """One generation: the CLI flags, or one line of a --prompts file."""

    prompt: str
    output: str = "out.mp4"
    seconds: float | None = None  # None: the model's (for --extend/--connect: what is added)
    frames: int | None = None
    size: str | None = None  # WIDTHxHEIGHT (default: the model's; DEFAULT_SIZE for kinema's own)
    fps: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    negative_prompt: str | None = None
    image: str | None = None
    extend: str | None = None
    direction: str = "forward"
    loop: bool = False
    connect: list[str] = field(default_factory=list)
    edit: str | None = None
    strength: float = 0.7
    sampler: str | None = None
    storyboard: dict | None = None  # {scene, shots: [{seconds, framing, prompt}]} (kinema.inference.storyboard)
    window: int | None = None  # long videos: latent frames per pass (default: the model's)
    context: int | None = None  # long videos: latent frames of context per pass (default: the model's)
    context_noise: float | None = None  # long videos: flow time of later passes' context frames (the model's)
    anchor: float | None = None  # long videos: pull of each later pass back to its shot's latent levels (the model's)
    # expand the prompt (a storyboard's shots) into training-style captions (kinema.inference.expand; default: the
    # model's, on for models trained on the world's captions, for a storyboard off: settings.expand_default)
    expand: bool | None = None
    expand_with: str | None = None  # an OpenAI-compatible chat endpoint that extends the prompt (kinema.inference.chat)
    loras: list[str] = field(default_factory=list)  # LoRA files, each FILE or FILE:SCALE (kinema.models.lora)
    step_cache: float | None = None  # First-Block Cache threshold in [0, 1] (default: the model's; 0: off)
    crf: int | None = None  # the video file's quality: H.264/VP9 CRF, 0 lossless (default: kinema.media's, 12)

    def mode(self) -> str:
        chosen = [name for name, on in (("image", self.image), ("extend", self.extend), ("loop", self.loop),
                                        ("connect", self.connect), ("edit", self.edit)) if on]
        if len(chosen) > 1:
            raise KinemaError(f"choose one of --image, --extend, --loop, --connect, --edit (got {', '.join(chosen)})")
        if Path(self.output).suffix.lower() in IMAGE_OUTPUTS or self.frames == 1:
            if chosen:
                raise KinemaError(f"an image output cannot be combined with --{chosen[0]}")
            return "image"
        if not chosen:
            return "t2v"
        return {"image": "i2v", "loop": "loop", "connect": "connect", "edit": "edit",
                "extend": f"extend_{self.direction}"}[chosen[0]]


class Plan(NamedTuple):
    """What a valid request makes. ``frames`` is the output's length; for the modes that keep input video
    (extend, connect, edit) it is known once the input is read (``kinema.frames.output_frames``)."""

    mode: str
    frames: int
    width: int
    height: int
    fps: float


# What each field of Request holds, as its type checks read it: (types allowed, words for the error).
_NUMBER = ((int, float), "a number")
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": ((str,), "a string"), "output": ((str,), "a string"), "seconds": _NUMBER,
    "frames": ((int,), "an integer"), "size": ((str,), "a string such as 64x64"), "fps": _NUMBER,
    "steps": ((int,), "an integer"), "guidance": _NUMBER, "seed": ((int,), "an integer"),
    "negative_prompt": ((str,), "a string"), "image": ((str,), "a file path"), "extend": ((str,), "a file path"),
    "direction": ((str,), "forward or backward"), "loop": ((bool,), "true or false"),
    "connect": ((list,), "a list of two file paths"), "edit": ((str,), "a file path"), "strength": _NUMBER,
    "sampler": ((str,), "a string"), "storyboard": ((dict,), "a mapping with 'shots'"),
    "window": ((int,), "an integer"), "context": ((int,), "an integer"), "context_noise": _NUMBER, "anchor": _NUMBER,
    "expand": ((bool,), "true or false"), "expand_with": ((str,), "a URL"),
    "loras": ((list,), "a list of FILE or FILE:SCALE strings"), "step_cache": _NUMBER,
    "crf": ((int,), "an integer"),
}
OPTIONAL = frozenset(f.name for f in fields(Request) if f.default is None)


def check_field(name: str, value: Any) -> None:
    """A field's value has the field's type (a bool is not a number); one-line KinemaError otherwise."""
    allowed, words = FIELD_TYPES[name]
    if value is None and name in OPTIONAL:
        return
    wrong_bool = isinstance(value, bool) and bool not in allowed
    if wrong_bool or not isinstance(value, allowed) or (
            name in ("connect", "loras") and not all(isinstance(path, str) for path in value)):
        raise KinemaError(f"{name} must be {words} (got {_shown(value)})")


def validate(request: Request, defaults: Any = None) -> Plan:
    """The mode, length, size and fps of a request; one-line errors before anything is loaded. ``defaults``: the
    model's (``SamplingDefaults``, or a model folder's read with ``read_defaults`` before its weights load) for
    what the request leaves unset; None: kinema.frames' defaults. Checks the output's format and the sampler too,
    so that nothing is refused after a model has loaded."""
    from kinema.config import parse_size

    for item in fields(Request):
        check_field(item.name, getattr(request, item.name))
    _check_text(request)
    check_output(request.output)
    width, height = parse_size(request.size or getattr(defaults, "size", DEFAULT_SIZE), max_side=MAX_SIDE)
    fps = getattr(defaults, "fps", 8.0) if request.fps is None else request.fps
    if not (0 < fps <= MAX_FPS):
        raise KinemaError(f"fps must be > 0 and <= {MAX_FPS:g} (got {fps:g})")
    _check_ranges(request)
    sampler = request.sampler or getattr(defaults, "sampler", None)
    if sampler is not None and sampler not in SAMPLER_NAMES:
        raise KinemaError(f"sampler '{sampler}': choose from {', '.join(SAMPLER_NAMES)}")
    mode = request.mode()
    frames = _frames(request, mode, fps, added_seconds(request, defaults))
    for path in [request.image, request.extend, request.edit, *request.connect, *lora_files(request)]:
        if path is not None and not Path(path).is_file():
            raise KinemaError(f"input file '{path}' does not exist")
    if request.expand_with is not None and not re.fullmatch(r"https?://\S+", request.expand_with):
        raise KinemaError(f"expand_with '{request.expand_with}': give an http:// or https:// URL")
    return Plan(mode, frames, width, height, fps)


def added_seconds(request: Request, defaults: Any = None) -> float:
    """The request's seconds, else the model's (for extend and connect: the seconds added)."""
    return getattr(defaults, "seconds", DEFAULT_SECONDS) if request.seconds is None else request.seconds


def check_output(output: str) -> None:
    """The output's suffix is one kinema writes (``kinema.media``): a video (.mp4, .webm, .gif) or an image (.png,
    .jpg)."""
    suffix = Path(output).suffix.lower()
    if suffix not in VIDEO_OUTPUTS and suffix not in IMAGE_OUTPUTS:
        raise KinemaError(f"output '{output}': write a video ({', '.join(VIDEO_OUTPUTS)}) or an image "
                          f"({', '.join(IMAGE_OUTPUTS)})")


def lora_files(request: Request) -> list[str]:
    """The files of a request's LoRAs (each [high=|low=]FILE[:SCALE], the scale checked)."""
    from kinema.models.lora import parse_lora_spec

    if len(request.loras) > MAX_LORAS:
        raise KinemaError(f"loras: {len(request.loras)} given, at most {MAX_LORAS}")
    return [parse_lora_spec(spec).path for spec in request.loras]


def _check_text(request: Request) -> None:
    if not request.prompt.strip() and request.storyboard is None:
        raise KinemaError("prompt is empty")
    for name in ("prompt", "negative_prompt"):
        text = getattr(request, name)
        if text is not None and len(text) > MAX_PROMPT_CHARS:
            raise KinemaError(f"{name} has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    if request.direction not in ("forward", "backward"):
        raise KinemaError(f"direction '{request.direction}': choose forward or backward")
    if request.connect and len(request.connect) != 2:
        raise KinemaError("--connect takes two videos")


def _check_ranges(request: Request) -> None:
    if request.seconds is not None and not (0 < request.seconds <= MAX_SECONDS):
        raise KinemaError(f"seconds must be > 0 and <= {MAX_SECONDS:g} (got {request.seconds:g})")
    if request.steps is not None and not (1 <= request.steps <= 1000):
        raise KinemaError(f"steps must be between 1 and 1000 (got {request.steps})")
    if request.guidance is not None and not (0 <= request.guidance <= 50):
        raise KinemaError(f"guidance must be between 0 and 50 (got {request.guidance:g})")
    if not (0 < request.strength <= 1):
        raise KinemaError(f"strength must be in (0, 1] (got {request.strength:g})")
    if not (0 <= request.seed < 2**63):
        raise KinemaError(f"seed must be between 0 and 2^63 - 1 (got {request.seed})")
    for name, value in (("window", request.window), ("context", request.context)):
        if value is not None and not (1 <= value <= MAX_WINDOW):
            raise KinemaError(f"{name} must be between 1 and {MAX_WINDOW} latent frames (got {value})")
    if request.context_noise is not None and not 0 <= request.context_noise < 1:
        raise KinemaError(f"context noise must be a number in [0, 1) (got {request.context_noise!r})")
    if request.anchor is not None and not 0 <= request.anchor <= 1:
        raise KinemaError(f"anchor must be a number in [0, 1] (got {request.anchor!r})")
    if request.step_cache is not None and not 0 <= request.step_cache <= 1:
        raise KinemaError(f"step cache must be a threshold in [0, 1] (got {request.step_cache!r})")
    if request.crf is not None and not 0 <= request.crf <= MAX_CRF:
        raise KinemaError(f"crf must be an integer between 0 (lossless) and {MAX_CRF} (got {request.crf})")


def _frames(request: Request, mode: str, fps: float, seconds: float) -> int:
    """The output's length: a storyboard's shots, else --frames, else the mode's length for the seconds (for
    the modes that keep input video, a placeholder until the input is read)."""
    if request.storyboard is not None:
        from kinema.inference.storyboard import storyboard_from_dict

        if mode not in ("t2v", "i2v"):
            raise KinemaError(f"a storyboard makes a video from text (or from --image), not with mode '{mode}'")
        if request.frames is not None:
            raise KinemaError("a storyboard sets the length from its shots; drop --frames")
        return storyboard_from_dict(request.storyboard, max_seconds=MAX_SECONDS).frame_plan(fps)[0]
    if request.frames is not None:
        frames = request.frames
        if frames < 1 or (mode != "loop" and not is_latent_length(frames)) or frames > MAX_FRAMES:
            raise KinemaError(f"frames {frames}: must be 1 + 4k (1, 5, 9, ...), at most {MAX_FRAMES}")
        return frames
    return output_frames(mode if mode in ("image", "loop") else "t2v", seconds, fps)


def read_prompts_file(path: str | Path) -> list[dict]:
    """One prompt per line, or JSON lines with a 'prompt' and per-prompt settings (any Request field but
    'output', plus 'name': the output's file name). Each line is checked here, so an error names its line."""
    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"prompts file '{path}' does not exist")
    items = []
    allowed = {f.name for f in fields(Request)} - {"output"}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("{"):
            items.append({"prompt": line})
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as e:
            message = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise KinemaError(f"{path}:{n}: not valid JSON ({message})") from None
        try:
            _check_prompt_line(item, allowed)
        except KinemaError as e:
            raise KinemaError(f"{path}:{n}: {e}") from None
        items.append(item)
    if not items:
        raise KinemaError(f"prompts file '{path}' has no prompts")
    return items


def _check_prompt_line(item: Any, allowed: set[str]) -> None:
    if not isinstance(item, dict):
        raise KinemaError("a JSON line must be an object with 'prompt'")
    unknown = set(item) - allowed - {"name"}
    if unknown:
        raise KinemaError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(allowed: name, {', '.join(sorted(allowed))})")
    if "prompt" not in item:
        raise KinemaError("needs 'prompt'")
    for name, value in item.items():
        if name == "name":
            if not isinstance(value, str) or not OUTPUT_NAME.fullmatch(value):
                raise KinemaError(f"name must be a file name of letters, digits, '.', '_' or '-' "
                                  f"(got {_shown(value)})")
        else:
            check_field(name, value)


def _shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_request(prompt: Any, num_frames: int, height: int, width: int, steps: int, guidance_scale: float,
                  mode: str, strength: float, step_cache: float = 0.0) -> None:
    """Limits checked before anything is allocated; one-line errors naming the field."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise KinemaError("prompt must be a non-empty string or a list of strings")
    for p in prompts:
        if not p.strip():
            raise KinemaError("prompt is empty")
        if len(p) > MAX_PROMPT_CHARS:
            raise KinemaError(f"prompt has {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
    if mode not in MODES:
        raise KinemaError(f"mode '{mode}': choose from {', '.join(MODES)}")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 8 or value > MAX_SIDE:
            raise KinemaError(f"{name} {value}: must be a positive multiple of 8, at most {MAX_SIDE}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_FRAMES:
        raise KinemaError(f"num_frames {num_frames}: must be between 1 and {MAX_FRAMES}")
    if mode != "loop" and not is_latent_length(num_frames):
        raise KinemaError(f"num_frames {num_frames}: must be 1 + 4k (1, 5, 9, 13, ...)")
    if mode == "loop" and (num_frames % 4 or num_frames < 8):
        raise KinemaError(f"num_frames {num_frames}: a loop needs a multiple of 4 frames, at least 8")
    if isinstance(steps, bool) or not isinstance(steps, int) or not (1 <= steps <= 1000):
        raise KinemaError(f"num_inference_steps {steps}: must be between 1 and 1000")
    if not (0.0 <= guidance_scale <= 50.0):
        raise KinemaError(f"guidance_scale {guidance_scale}: must be between 0 and 50")
    if mode == "edit" and not (0.0 < strength <= 1.0):
        raise KinemaError(f"strength {strength}: must be in (0, 1]")
    if isinstance(step_cache, bool) or not isinstance(step_cache, (int, float)) or not (0.0 <= step_cache <= 1.0):
        raise KinemaError(f"step_cache {step_cache}: must be a threshold in [0, 1] (0: off)")
