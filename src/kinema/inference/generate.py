"""What ``kinema generate`` does: a checked request in, the pipeline run, the video and its provenance written.

``run`` reads top to bottom: validate the request (``kinema.inference.request``), resolve its settings
(``kinema.inference.settings``), read its input files, expand its prompt, generate in one pass
(``KinemaPipeline``) or window by window (``kinema.inference.longvideo``), and write the file with the
settings that made it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kinema.errors import KinemaError
from kinema.frames import MAX_FRAMES, is_windowed, latent_count, latent_length, output_frames
from kinema.inference.request import Plan, Request, validate
from kinema.inference.settings import Sampling, Windows, expands, model_size, request_sampling, request_windows

if TYPE_CHECKING:
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.lora import LoraSpec


def load_pipeline(model: str | Path | None = None, device: str = "cpu", dtype: str | None = None,
                  release_text_encoder: bool = False, offload: str = "none") -> KinemaPipeline:
    """A KinemaPipeline from a model folder or the name of a packaged model (``kinema.weights.find_model``);
    None: the default model. ``device`` and ``dtype`` place a diffusers Wan folder's transformer(s) (its VAE stays
    fp32); ``offload`` (model or sequential: diffusers' CPU offload mechanisms) keeps the weights in host memory and
    moves each model, or each layer, to ``device`` when it runs; ``release_text_encoder`` frees the text encoder
    after each encoding (one-shot commands: a Wan UMT5 is several GB that sampling does not need)."""

    from kinema.inference.pipeline import KinemaPipeline
    from kinema.weights import find_model

    device, chosen = check_placement(device, dtype, offload)
    pipe = KinemaPipeline.from_pretrained(find_model(model), device="cpu" if offload != "none" else device,
                                          dtype=chosen)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    pipe.text_encoder_device = device
    pipe.text_encoder_offload = offload != "none"
    pipe.release_text_encoder = release_text_encoder
    return pipe


def check_placement(device: str, dtype: str | None, offload: str):
    """The command line's --device, --dtype and --offload checked (one-line KinemaError): (device, torch dtype or
    None for the model's default: bf16 on a GPU)."""
    import torch

    device = check_device(device)
    if offload not in OFFLOADS:
        raise KinemaError(f"offload '{offload}': choose {', '.join(OFFLOADS)}")
    if offload != "none" and device == "cpu":
        raise KinemaError(f"--offload {offload} moves models to a GPU as they run: give --device cuda")
    return device, torch_dtype(dtype) or (torch.bfloat16 if device != "cpu" else None)


OFFLOADS = ("none", "model", "sequential")
DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str | None):
    """A dtype named on the command line (None: the model's default)."""
    import torch

    if name is None:
        return None
    if name not in DTYPES:
        raise KinemaError(f"dtype '{name}': choose {', '.join(DTYPES)}")
    return getattr(torch, name)


def check_device(device: str) -> str:
    """cpu, cuda or cuda:N, and only a GPU that is there; one-line KinemaError otherwise."""
    import re

    import torch

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise KinemaError(f"device '{device}': choose cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise KinemaError(f"device '{device}': no such CUDA GPU here (run on the CPU with --device cpu)")
    return device


def expanded_prompt(pipe, request: Request, frames: int, fps: float, log=None) -> tuple[str, str | None]:
    """(the prompt the model sees, the expansion or None): extended by the chat endpoint of ``expand_with``
    (kinema.inference.chat), else expanded with the world (kinema.inference.expand) when the request or, by default,
    the model asks for it."""
    if request.storyboard is not None:
        return request.prompt, None
    if request.expand_with is not None:
        from kinema.inference.chat import extend_prompt

        expanded = extend_prompt(request.prompt, request.expand_with, warn=log)
    elif expands(pipe, request):
        from kinema.inference.expand import expand_prompt

        expanded = expand_prompt(request.prompt, seed=request.seed, seconds=max(frames - 1, 0) / fps, fps=fps)
    else:
        return request.prompt, None
    if expanded is not None and log is not None:
        log(f"expanded prompt: {expanded}")
    return (expanded or request.prompt), expanded


def run(pipe, request: Request, progress=None, log=None) -> Path:
    """Generate one request with a loaded pipeline and write the output (+ sidecar JSON). ``log`` receives
    one-line notes for the user (the expanded prompt)."""
    import torch

    from kinema.media import read_image, write_image, write_video

    plan = validate(request, pipe.defaults.fps, model_size(pipe))
    chosen, windows = request_sampling(pipe.defaults, request), request_windows(pipe.defaults, request)
    videos = read_videos(request, plan.mode)
    if videos:  # the modes that keep input video make the input plus what they add
        plan = plan._replace(frames=output_frames(plan.mode, request.seconds, plan.fps, [len(v) for v in videos]))
    latent_frames = latent_count(plan.frames, plan.mode, pipe.vae.temporal_compression)
    if is_windowed(plan.mode, latent_frames, windows.window, request.storyboard is not None):
        return _run_long(pipe, request, plan, chosen, windows, progress, log, video=videos[0] if videos else None)
    inputs: dict = {}
    if plan.mode == "i2v":
        inputs["image"] = read_image(request.image)
    if videos:
        inputs["video"] = videos[0]
    if plan.mode == "connect":
        inputs["video_end"] = videos[1]
    if plan.mode == "edit":
        inputs["strength"] = request.strength
    generator = torch.Generator().manual_seed(request.seed)
    prompt, expanded = expanded_prompt(pipe, request, plan.frames, plan.fps, log)
    with pipe.loras(lora_specs(request)):
        result = pipe(prompt, num_frames=plan.frames, height=plan.height, width=plan.width,
                      num_inference_steps=chosen.steps, guidance_scale=chosen.guidance, generator=generator,
                      negative_prompt=request.negative_prompt, mode=plan.mode, sampler=chosen.sampler,
                      callback=progress, **inputs)
    frames_out: np.ndarray = result.frames[0]
    metadata = _metadata(pipe, request, plan._replace(frames=len(frames_out)), chosen, expand=expands(pipe, request),
                         expanded_prompt=expanded)
    output = Path(request.output)
    if plan.mode == "image":
        return write_image(output, frames_out[0], metadata=metadata)
    return write_video(output, frames_out, plan.fps, metadata=metadata)


def lora_specs(request: Request) -> list[LoraSpec]:
    """A request's LoRAs as (file, scale, expert)."""
    from kinema.models.lora import parse_lora_spec

    return [parse_lora_spec(spec) for spec in request.loras]


def read_videos(request: Request, mode: str) -> list[np.ndarray]:
    """The input videos of the modes that keep them (extend, connect, edit), each cut to 1 + 4k frames."""
    from kinema.media import read_video

    paths = {"extend_forward": [request.extend], "extend_backward": [request.extend], "connect": request.connect,
             "edit": [request.edit]}.get(mode, [])
    videos = [read_video(path, max_frames=MAX_FRAMES)[0] for path in paths]
    return [video[:latent_length(len(video))] for video in videos]


def _metadata(pipe, request: Request, plan: Plan, chosen: Sampling, **extra) -> dict:
    """The provenance written into the output and its sidecar JSON."""
    return {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "mode": plan.mode, "seed": request.seed,
        "steps": chosen.steps, "guidance": chosen.guidance, "sampler": chosen.sampler,
        "size": f"{plan.width}x{plan.height}", "fps": plan.fps, "frames": plan.frames, "model": pipe.name,
        "model_sha256": pipe.weights_sha256, "loras": list(request.loras), "expand_with": request.expand_with,
        **extra,
        "inputs": {k: v for k, v in asdict(request).items() if k in ("image", "extend", "connect", "edit") and v},
    }


def _run_long(pipe, request: Request, plan: Plan, chosen: Sampling, windows: Windows, progress, log=None,
              video: np.ndarray | None = None) -> Path:
    """A storyboard, or a video longer than one window: kinema.inference.longvideo, window by window."""
    import torch

    from kinema.inference import longvideo
    from kinema.inference.storyboard import Storyboard, storyboard_from_dict
    from kinema.media import read_image, write_video

    board: Storyboard | None = None
    expanded = None
    if request.storyboard is not None:
        board = storyboard_from_dict(request.storyboard)
        if request.prompt.strip() and not board.scene:  # a prompt given with a storyboard is its scene
            board = Storyboard(board.shots, request.prompt.strip())
        texts = board.shot_texts()
        _, shot_starts = board.frame_plan(plan.fps)
    else:
        prompt, expanded = expanded_prompt(pipe, request, plan.frames, plan.fps, log)
        texts, shot_starts = [prompt], [0]
    image = read_image(request.image) if plan.mode == "i2v" else None
    generator = torch.Generator().manual_seed(request.seed)
    with pipe.loras(lora_specs(request)):
        frames_out = longvideo.generate_long(
            pipe, texts, plan.frames, plan.height, plan.width, shot_starts=shot_starts,
            num_inference_steps=chosen.steps, guidance_scale=chosen.guidance, generator=generator,
            negative_prompt=request.negative_prompt, image=image, video=video, sampler=chosen.sampler,
            callback=progress, **windows.as_dict())
    metadata = _metadata(pipe, request, plan._replace(frames=len(frames_out)), chosen,
                         expand=expands(pipe, request) and board is None, expanded_prompt=expanded, **windows.as_dict(),
                         storyboard=board.to_dict() if board else None, shot_texts=texts, shot_starts=shot_starts)
    return write_video(Path(request.output), frames_out, plan.fps, metadata=metadata)
