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

from kinema.frames import MAX_FRAMES, is_windowed, latent_count, latent_length, output_frames
from kinema.inference.request import Plan, Request, validate
from kinema.inference.settings import Sampling, Windows, request_sampling, request_windows

if TYPE_CHECKING:
    from kinema.inference.pipeline import KinemaPipeline


def load_pipeline(model: str | Path | None = None) -> KinemaPipeline:
    """A KinemaPipeline from a model folder or the name of a packaged model (``kinema.weights.find_model``);
    None: the default model."""
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.weights import find_model

    return KinemaPipeline.from_pretrained(find_model(model))


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

    from kinema.media import read_image, write_image, write_video

    plan = validate(request, pipe.defaults.fps)
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
    prompt, expanded = expanded_prompt(request, plan.frames, plan.fps, log)
    result = pipe(prompt, num_frames=plan.frames, height=plan.height, width=plan.width,
                  num_inference_steps=chosen.steps, guidance_scale=chosen.guidance, generator=generator,
                  negative_prompt=request.negative_prompt, mode=plan.mode, sampler=chosen.sampler,
                  callback=progress, step_cache=chosen.step_cache, **inputs)
    frames_out: np.ndarray = result.frames[0]
    metadata = _metadata(pipe, request, plan._replace(frames=len(frames_out)), chosen, expand=request.expand,
                         expanded_prompt=expanded)
    output = Path(request.output)
    if plan.mode == "image":
        return write_image(output, frames_out[0], metadata=metadata)
    return write_video(output, frames_out, plan.fps, metadata=metadata)


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
        "few_step": chosen.few_step, "step_cache": chosen.step_cache,
        "size": f"{plan.width}x{plan.height}", "fps": plan.fps, "frames": plan.frames, "model": pipe.name,
        "model_sha256": pipe.weights_sha256, **({"few_step_sha256": pipe.few_step_sha256} if chosen.few_step else {}),
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
        prompt, expanded = expanded_prompt(request, plan.frames, plan.fps, log)
        texts, shot_starts = [prompt], [0]
    image = read_image(request.image) if plan.mode == "i2v" else None
    generator = torch.Generator().manual_seed(request.seed)
    frames_out = longvideo.generate_long(
        pipe, texts, plan.frames, plan.height, plan.width, shot_starts=shot_starts, num_inference_steps=chosen.steps,
        guidance_scale=chosen.guidance, generator=generator, negative_prompt=request.negative_prompt, image=image,
        video=video, sampler=chosen.sampler, callback=progress, step_cache=chosen.step_cache, **windows.as_dict())
    metadata = _metadata(pipe, request, plan._replace(frames=len(frames_out)), chosen,
                         expand=request.expand and board is None, expanded_prompt=expanded, **windows.as_dict(),
                         storyboard=board.to_dict() if board else None, shot_texts=texts, shot_starts=shot_starts)
    return write_video(Path(request.output), frames_out, plan.fps, metadata=metadata)
