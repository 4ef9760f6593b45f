"""What ``kinema generate`` does: a checked request in, the pipeline run, the video and its provenance written.

``run`` reads top to bottom: validate the request (``kinema.inference.request``), read its input files, call the
pipeline (``KinemaPipeline.__call__``, which resolves the model's defaults, expands the prompt and makes the video in
one pass or window by window, the same path the Python API takes) and write the file with the settings that made it.
The server's worker and the suite runner call ``run`` too.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kinema.errors import KinemaError
from kinema.frames import MAX_FRAMES, latent_length, output_frames
from kinema.inference.request import Plan, Request, added_seconds, validate

if TYPE_CHECKING:
    import torch

    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.lora import LoraSpec


OFFLOADS = ("none", "model", "sequential")


def load_pipeline(model: str | Path | None = None, device: Any = None, dtype: Any = None,
                  release_text_encoder: bool = False, offload: str = "none") -> KinemaPipeline:
    """A KinemaPipeline from a model folder, a diffusers Wan folder or the name of a packaged model
    (``kinema.weights.find_model``; None: the default model), on ``device`` in ``dtype`` (``check_placement``).
    ``offload`` (model or sequential: diffusers' CPU offload mechanisms) keeps the weights in host memory and moves
    each model, or each layer, to ``device`` when it runs; ``release_text_encoder`` frees the text encoder after
    each encoding (one-shot commands: a Wan UMT5 is several GB that sampling does not need)."""
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.weights import find_model

    target, precision = check_placement(device, dtype, offload)
    pipe = KinemaPipeline.from_pretrained(find_model(model), device="cpu" if offload != "none" else target,
                                          dtype=precision)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=target)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=target)
    pipe.text_encoder_device = target
    pipe.text_encoder_offload = offload != "none"
    pipe.release_text_encoder = release_text_encoder
    return pipe


def check_placement(device: Any, dtype: Any, offload: str = "none") -> tuple[torch.device, torch.dtype]:
    """The command line's --device, --dtype and --offload checked (``kinema.devices``; one-line KinemaError): the
    device (None: the best here) and the dtype (None: its precision, bfloat16 on a GPU that computes in it)."""
    from kinema.devices import resolve_device, resolve_dtype

    target = resolve_device(device)
    if offload not in OFFLOADS:
        raise KinemaError(f"offload '{offload}': choose {', '.join(OFFLOADS)}")
    if offload != "none" and target.type == "cpu":
        raise KinemaError(f"--offload {offload} moves models to a GPU as they run: give --device cuda")
    return target, resolve_dtype(dtype, target)


def call_arguments(pipe, request: Request) -> tuple[Plan, dict]:
    """A request's plan (its length known once its input videos are read) and the keyword arguments of the
    pipeline call that makes it, inputs included."""
    import torch

    from kinema.media import read_image

    plan = validate(request, pipe.defaults)
    videos = read_videos(request, plan.mode)
    if videos:  # the modes that keep input video make the input plus what they add
        added = added_seconds(request, pipe.defaults)
        plan = plan._replace(frames=output_frames(plan.mode, added, plan.fps, [len(v) for v in videos]))
    arguments: dict[str, Any] = dict(
        prompt=request.prompt or None, num_frames=plan.frames, height=plan.height, width=plan.width,
        num_inference_steps=request.steps, guidance_scale=request.guidance,
        generator=torch.Generator().manual_seed(request.seed), negative_prompt=request.negative_prompt,
        mode=plan.mode, strength=request.strength, sampler=request.sampler, storyboard=request.storyboard,
        expand=request.expand, expand_with=request.expand_with, fps=plan.fps, window=request.window,
        context=request.context, context_noise=request.context_noise, anchor=request.anchor,
        step_cache=request.step_cache)
    if plan.mode == "i2v":
        arguments["image"] = read_image(request.image)
    if videos:
        arguments["video"] = videos[0]
    if plan.mode == "connect":
        arguments["video_end"] = videos[1]
    return plan, arguments


def run(pipe, request: Request, progress=None, prepared: tuple[Plan, dict] | None = None) -> Path:
    """Generate one request with a loaded pipeline and write the output (+ sidecar JSON). ``progress(done, total,
    latents)`` counts the sampling steps, decoding, and writing the file (then ``done == total``). ``prepared``:
    the request's ``call_arguments``, when they were made already. The request's LoRAs are on the transformer for
    the call."""
    from kinema.media import write_image, write_video

    plan, arguments = prepared or call_arguments(pipe, request)
    total = [0]

    def counted(done: int, steps: int, latents) -> None:  # one more unit: writing the file
        total[0] = steps + 1
        if progress is not None:
            progress(done, steps + 1, latents)

    with pipe.loras(lora_specs(request)):  # for this request only, as diffusers' load/unload_lora_weights
        result = pipe(**arguments, callback=counted)
    frames_out: np.ndarray = result.frames[0]
    metadata = provenance(pipe, request, plan._replace(frames=len(frames_out)), result)
    output = Path(request.output)
    if plan.mode == "image":
        written = write_image(output, frames_out[0], metadata=metadata)
    else:
        written = write_video(output, frames_out, plan.fps, metadata=metadata, crf=metadata["crf"])
    if progress is not None and total[0]:
        progress(total[0], total[0], None)
    return written


def check_inputs(request: Request, mode: str) -> None:
    """The request's input files can be read (an image, each video's header), so that a bad file is refused
    before any model loads; one-line MediaError otherwise."""
    from kinema.media import read_image, video_info

    if mode == "i2v":
        read_image(request.image)  # one image: cheap to decode
    for path in (request.extend, request.edit, *request.connect):
        if path:
            video_info(path)


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


def provenance(pipe, request: Request, plan: Plan, result: Any) -> dict:
    """The provenance written into the output and its sidecar JSON: the request, what the pipeline resolved and
    ran with (``result.settings``), the text the model saw, the model and where it ran."""
    from kinema.devices import dtype_name
    from kinema.media import DEFAULT_CRF

    settings = dict(result.settings)
    expanded = result.expanded_prompts[0] if result.expanded_prompts else None
    return {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "mode": plan.mode, "seed": request.seed,
        "steps": settings.pop("steps"), "guidance": settings.pop("guidance"), "sampler": settings.pop("sampler"),
        "size": f"{plan.width}x{plan.height}", "fps": plan.fps, "frames": plan.frames, "model": pipe.name,
        "model_sha256": pipe.weights_sha256, "loras": list(request.loras), "expand_with": request.expand_with,
        "expand": settings.pop("expand", request.expand), "expanded_prompt": expanded,
        **{k: v for k, v in settings.items() if k not in ("fps", "mode")},
        "device": str(getattr(pipe, "_execution_device", "cpu")),
        "dtype": dtype_name(pipe.dtype) if hasattr(pipe, "dtype") else None,
        "inputs": {k: v for k, v in asdict(request).items() if k in ("image", "extend", "connect", "edit") and v},
    } | ({} if plan.mode == "image" else {"crf": DEFAULT_CRF if request.crf is None else request.crf})
