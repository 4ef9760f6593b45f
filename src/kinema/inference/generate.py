"""What ``kinema generate`` does: validate a request, run the pipeline, write the video and its provenance."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kinema.errors import KinemaError
from kinema.frames import (
    DEFAULT_SECONDS,
    DEFAULT_SIZE,
    MAX_FPS,
    MAX_FRAMES,
    MAX_SECONDS,
    MAX_SIDE,
    is_latent_length,
    is_windowed,
    latent_count,
    latent_length,
    output_frames,
)

DEFAULT_MODEL = Path(__file__).resolve().parents[3] / "weights" / "kinema-tiny"


@dataclass
class Request:
    """One generation: the CLI flags, or one line of a --prompts file."""

    prompt: str
    output: str = "out.mp4"
    seconds: float = DEFAULT_SECONDS
    frames: int | None = None
    size: str = DEFAULT_SIZE
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
    storyboard: dict | None = None  # {scene, shots: [{seconds, framing, prompt}]} (kinema.inference.longvideo)
    window: int | None = None  # long videos: latent frames per pass (default: the model's)
    context: int | None = None  # long videos: latent frames of context per pass (default: the model's)
    context_noise: float | None = None  # long videos: flow time of later passes' context frames (the model's)
    anchor: float | None = None  # long videos: pull of each later pass back to its shot's latent levels (the model's)
    expand: bool = True  # expand the prompt into a training-style caption (kinema.inference.expand); not storyboards

    def mode(self) -> str:
        chosen = [name for name, on in (("image", self.image), ("extend", self.extend), ("loop", self.loop),
                                        ("connect", self.connect), ("edit", self.edit)) if on]
        if len(chosen) > 1:
            raise KinemaError(f"choose one of --image, --extend, --loop, --connect, --edit (got {', '.join(chosen)})")
        if self.output.lower().endswith((".png", ".jpg", ".jpeg")) or self.frames == 1:
            if chosen:
                raise KinemaError(f"an image output cannot be combined with --{chosen[0]}")
            return "image"
        if not chosen:
            return "t2v"
        return {"image": "i2v", "loop": "loop", "connect": "connect", "edit": "edit",
                "extend": f"extend_{self.direction}"}[chosen[0]]


def validate(request: Request, fps_default: float = 8.0) -> tuple[str, int, int, int, float]:
    """(mode, frames, width, height, fps) for a request; one-line errors before anything is loaded."""
    from kinema.config import parse_size

    if not isinstance(request.prompt, str) or (not request.prompt.strip() and request.storyboard is None):
        raise KinemaError("prompt is empty")
    if request.direction not in ("forward", "backward"):
        raise KinemaError(f"direction '{request.direction}': choose forward or backward")
    if request.connect and len(request.connect) != 2:
        raise KinemaError("--connect takes two videos")
    width, height = parse_size(request.size, max_side=MAX_SIDE)
    fps = request.fps or fps_default
    if not (0 < fps <= MAX_FPS):
        raise KinemaError(f"fps must be > 0 and <= {MAX_FPS:g} (got {fps:g})")
    if not (0 < request.seconds <= MAX_SECONDS):
        raise KinemaError(f"seconds must be > 0 and <= {MAX_SECONDS:g} (got {request.seconds:g})")
    if request.steps is not None and not (1 <= request.steps <= 1000):
        raise KinemaError(f"steps must be between 1 and 1000 (got {request.steps})")
    if request.guidance is not None and not (0 <= request.guidance <= 50):
        raise KinemaError(f"guidance must be between 0 and 50 (got {request.guidance:g})")
    if not isinstance(request.expand, bool):
        raise KinemaError(f"expand must be true or false (got {request.expand!r})")
    if not (0 < request.strength <= 1):
        raise KinemaError(f"strength must be in (0, 1] (got {request.strength:g})")
    if not (0 <= request.seed < 2**63):
        raise KinemaError(f"seed must be between 0 and 2^63 - 1 (got {request.seed})")
    for name, value in (("window", request.window), ("context", request.context)):
        if value is not None and not (1 <= value <= 64):
            raise KinemaError(f"{name} must be between 1 and 64 latent frames (got {value})")
    noise = request.context_noise
    if noise is not None and (isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1):
        raise KinemaError(f"context noise must be a number in [0, 1) (got {noise!r})")
    anchor = request.anchor
    if anchor is not None and (isinstance(anchor, bool) or not isinstance(anchor, (int, float))
                               or not 0 <= anchor <= 1):
        raise KinemaError(f"anchor must be a number in [0, 1] (got {anchor!r})")
    mode = request.mode()
    if request.storyboard is not None:
        from kinema.inference.storyboard import storyboard_from_dict

        if mode not in ("t2v", "i2v"):
            raise KinemaError(f"a storyboard makes a video from text (or from --image), not with mode '{mode}'")
        if request.frames is not None:
            raise KinemaError("a storyboard sets the length from its shots; drop --frames")
        frames, _ = storyboard_from_dict(request.storyboard, max_seconds=MAX_SECONDS).frame_plan(fps)
    elif request.frames is not None:
        frames = request.frames
        if frames < 1 or (mode != "loop" and not is_latent_length(frames)) or frames > MAX_FRAMES:
            raise KinemaError(f"frames {frames}: must be 1 + 4k (1, 5, 9, ...), at most {MAX_FRAMES}")
    else:  # the modes that keep input video count their length once the input is read (``run``)
        frames = output_frames(mode if mode in ("image", "loop") else "t2v", request.seconds, fps)
    for path in [request.image, request.extend, request.edit, *request.connect]:
        if path is not None and not Path(path).is_file():
            raise KinemaError(f"input file '{path}' does not exist")
    return mode, frames, width, height, fps


def load_pipeline(model: str | Path | None):
    from kinema.inference.pipeline import KinemaPipeline

    folder = Path(model) if model else DEFAULT_MODEL
    if model is None and not (folder / "model_index.json").is_file():
        raise KinemaError(f"the embedded model is not in this checkout yet ('{folder}' has no model_index.json); "
                          "pass --model DIR")
    return KinemaPipeline.from_pretrained(folder)


def expanded_prompt(request: Request, frames: int, fps: float, log=None) -> tuple[str, str | None]:
    """(the prompt the model sees, the expansion or None). See kinema.inference.expand."""
    if not request.expand or request.storyboard is not None:
        return request.prompt, None
    from kinema.inference.expand import expand_prompt

    expanded = expand_prompt(request.prompt, seed=request.seed, seconds=max(frames - 1, 0) / fps, fps=fps)
    if expanded is not None and log is not None:
        log(f"expanded prompt: {expanded}")
    return (expanded or request.prompt), expanded


def run(pipe, request: Request, progress=None, log=None) -> Path:
    """Generate one request with a loaded pipeline and write the output (+ sidecar JSON). ``log`` receives
    one-line notes for the user (the expanded prompt)."""
    import torch

    from kinema.media import read_image, read_video, write_image, write_video

    mode, frames, width, height, fps = validate(request, pipe.defaults.fps)
    window = request.window or pipe.defaults.window
    videos: list[np.ndarray] = []  # input videos, cut to 1 + 4k frames
    if mode in ("extend_forward", "extend_backward", "connect", "edit"):
        paths = request.connect if mode == "connect" else [request.extend if mode != "edit" else request.edit]
        for path in paths:
            video, _ = read_video(path, max_frames=MAX_FRAMES)
            videos.append(video[:latent_length(len(video))])
        frames = output_frames(mode, request.seconds, fps, [len(v) for v in videos])
    latent_frames = latent_count(frames, mode, pipe.vae.temporal_compression)
    if is_windowed(mode, latent_frames, window, request.storyboard is not None):
        return _run_long(pipe, request, mode, frames, width, height, fps, progress, log,
                         video=videos[0] if videos else None)
    kwargs: dict = {}
    if mode == "i2v":
        kwargs["image"] = read_image(request.image)
    if videos:
        kwargs["video"] = videos[0]
    if mode == "connect":
        kwargs["video_end"] = videos[1]
    if mode == "edit":
        kwargs["strength"] = request.strength
    generator = torch.Generator().manual_seed(request.seed)
    prompt, expanded = expanded_prompt(request, frames, fps, log)
    result = pipe(prompt, num_frames=frames, height=height, width=width,
                  num_inference_steps=request.steps, guidance_scale=request.guidance, generator=generator,
                  negative_prompt=request.negative_prompt, mode=mode, sampler=request.sampler,
                  callback=progress, **kwargs)
    metadata = _metadata(pipe, request, mode, width, height, fps, int(result.frames.shape[1]),
                         expand=request.expand, expanded_prompt=expanded)
    frames_out: np.ndarray = result.frames[0]
    output = Path(request.output)
    if mode == "image":
        return write_image(output, frames_out[0], metadata=metadata)
    return write_video(output, frames_out, fps, metadata=metadata)


def default_guidance(defaults, storyboard: bool) -> float:
    """The model's guidance scale: ``storyboard_guidance`` for a storyboard when it is set, else ``guidance_scale``."""
    if storyboard and defaults.storyboard_guidance is not None:
        return defaults.storyboard_guidance
    return defaults.guidance_scale


def guidance_for(pipe, request: Request) -> float:
    """The guidance scale a request runs with: its own, else the model's (``default_guidance``)."""
    if request.guidance is not None:
        return request.guidance
    return default_guidance(pipe.defaults, request.storyboard is not None)


def _metadata(pipe, request: Request, mode: str, width: int, height: int, fps: float, frames: int,
              **extra) -> dict:
    """The provenance written into the output and its sidecar JSON."""
    return {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "mode": mode, "seed": request.seed,
        "steps": request.steps or pipe.defaults.steps,
        "guidance": guidance_for(pipe, request),
        "sampler": request.sampler or pipe.defaults.sampler, "size": f"{width}x{height}", "fps": fps,
        "frames": frames, "model": pipe.name, "model_sha256": pipe.weights_sha256, **extra,
        "inputs": {k: v for k, v in asdict(request).items() if k in ("image", "extend", "connect", "edit") and v},
    }


def long_video_settings(pipe, request: Request) -> dict:
    """How a video longer than one window is made: window, context, memory, context noise and anchor, from the
    request or else the model's defaults (also written into the output's metadata)."""
    return {"window": request.window or pipe.defaults.window,
            "context": pipe.defaults.context if request.context is None else request.context,
            "memory": pipe.defaults.memory,
            "context_noise": pipe.defaults.context_noise if request.context_noise is None else request.context_noise,
            "anchor": pipe.defaults.anchor if request.anchor is None else request.anchor}


def _run_long(pipe, request: Request, mode: str, frames: int, width: int, height: int, fps: float,
              progress, log=None, video: np.ndarray | None = None) -> Path:
    """A storyboard, or a video longer than one window: kinema.inference.longvideo, window by window."""
    import torch

    from kinema.inference.longvideo import generate_long
    from kinema.inference.storyboard import Storyboard, storyboard_from_dict
    from kinema.media import read_image, write_video

    board: Storyboard | None = None
    expanded = None
    if request.storyboard is not None:
        board = storyboard_from_dict(request.storyboard)
        if request.prompt.strip() and not board.scene:  # a prompt given with a storyboard is its scene
            board = Storyboard(board.shots, request.prompt.strip())
        texts = board.shot_texts()
        _, shot_starts = board.frame_plan(fps)
    else:
        prompt, expanded = expanded_prompt(request, frames, fps, log)
        texts, shot_starts = [prompt], [0]
    image = read_image(request.image) if mode == "i2v" else None
    generator = torch.Generator().manual_seed(request.seed)
    windows = long_video_settings(pipe, request)
    frames_out = generate_long(pipe, texts, frames, height, width, shot_starts=shot_starts,
                               num_inference_steps=request.steps, guidance_scale=guidance_for(pipe, request),
                               generator=generator, negative_prompt=request.negative_prompt, image=image, video=video,
                               sampler=request.sampler, callback=progress, **windows)
    metadata = _metadata(pipe, request, mode, width, height, fps, int(frames_out.shape[0]),
                         expand=request.expand and board is None, expanded_prompt=expanded, **windows,
                         storyboard=board.to_dict() if board else None, shot_texts=texts, shot_starts=shot_starts)
    return write_video(Path(request.output), frames_out, fps, metadata=metadata)


def read_prompts_file(path: str | Path) -> list[dict]:
    """One prompt per line, or JSON lines with a 'prompt' and per-prompt settings."""
    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"prompts file '{path}' does not exist")
    items = []
    allowed = set(Request.__dataclass_fields__) - {"output"}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise KinemaError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            unknown = set(item) - allowed - {"name"}
            if unknown or "prompt" not in item:
                raise KinemaError(f"{path}:{n}: needs 'prompt'; unknown keys: {', '.join(sorted(unknown)) or 'none'}")
            items.append(item)
        else:
            items.append({"prompt": line})
    if not items:
        raise KinemaError(f"prompts file '{path}' has no prompts")
    return items
