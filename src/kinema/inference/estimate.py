"""How long a generation will take and how much memory it will need, estimated before it starts.

The work of a call is counted, not guessed: per sampling step each transformer pass costs 2 FLOPs per parameter
per token plus attention (4 N^2 d per layer for N tokens, and 4 N L d for L text tokens), twice with guidance; the
VAE's decoding is counted with torch's ``FlopCounterMode`` on a tiny latent and scaled to the video's size. This
machine's speed is then timed on one small transformer pass (``calibrate``), so the estimate holds for the device
and the thread count at hand. Memory is the weights, the activations of one pass and those of decoding a chunk of
frames, plus the decoded video. Both are rough (within a few times either way): good enough to say that a request
will take hours, not good enough for a benchmark (``benchmarks/`` measures).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from kinema.frames import latent_count

TEXT_TOKENS = 64  # text tokens a prompt is assumed to have
CHECK_FLOPS = 1e12  # below this much sampling work ...
CHECK_PIXELS = 1 << 26  # ... and this many output pixels (over all frames) a request is quick anywhere: not timed
FAR_SECONDS = 600.0  # a request longer than this is far beyond the machine
FAR_MEMORY = 0.8  # ... and so is one needing more than this share of its memory


@dataclass(frozen=True)
class Estimate:
    flops: float
    seconds: float | None  # None: not timed (the work is small)
    bytes: int
    passes: int
    steps: int

    def text(self) -> str:
        took = "" if self.seconds is None else f"about {duration(self.seconds)} and "
        return f"{took}about {self.bytes / 2**30:.1f} GiB ({self.passes} pass(es) of {self.steps} steps)"


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def pass_flops(pipe, tokens: int, guided: bool) -> float:
    """FLOPs of one transformer step over ``tokens`` patch tokens (both guidance halves when ``guided``)."""
    config = pipe.transformer.config
    inner = config.num_attention_heads * config.attention_head_dim
    parameters = sum(p.numel() for p in pipe.transformer.parameters())
    attention = config.num_layers * (4.0 * tokens * tokens * inner + 4.0 * tokens * TEXT_TOKENS * inner)
    return (2.0 * parameters * tokens + attention) * (2 if guided else 1)


def decode_flops_per_pixel(pipe) -> float:
    """FLOPs the VAE spends per output pixel per frame, counted on a tiny latent (1, C, 2, 2, 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    vae = pipe.vae
    latents = torch.zeros(1, vae.config.z_dim, 2, 2, 2, device=vae.device, dtype=vae.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        video = vae.decode(latents)
    return counter.get_total_flops() / max(1, video.shape[2] * video.shape[3] * video.shape[4])


def calibrate(pipe, tokens: int = 256) -> float:
    """This machine's FLOPs per second on one transformer step over ``tokens`` tokens (timed, after a warm-up)."""
    transformer = pipe.transformer
    device, channels = pipe._execution_device, transformer.config.in_channels
    _, ph, pw = transformer.config.patch_size
    side = max(1, int(math.sqrt(tokens)))
    x = torch.zeros(1, channels, 1, side * ph, side * pw, device=device, dtype=transformer.dtype)
    text = torch.zeros(1, TEXT_TOKENS, transformer.config.text_dim, device=device, dtype=transformer.dtype)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device)
    t = torch.zeros(1, 1, device=device)
    with torch.no_grad(), pipe.running(transformer):
        context = transformer.prepare_text(text, mask)
        transformer(x, t, context)
        synchronize(device)
        start = time.perf_counter()
        transformer(x, t, context)
        synchronize(device)
        took = max(time.perf_counter() - start, 1e-6)
    return pass_flops(pipe, side * side, False) / took


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate(pipe, call) -> Estimate:
    """The work, time and memory of a resolved pipeline call (``KinemaPipeline.resolve_call``)."""
    from kinema.inference.longvideo import plan_for_call

    per_frame = pipe.tokens_per_frame(call.height, call.width)
    latent_frames = latent_count(call.num_frames, call.mode, pipe.vae.temporal_compression)
    if call.windowed:
        pass_tokens = [len(w.frames) * per_frame for w in plan_for_call(pipe, call)]
    else:
        pass_tokens = [latent_frames * per_frame] + ([2 * per_frame] if call.mode == "loop" else [])
    videos = len(call.prompts) * call.videos_per_prompt
    guided = call.chosen.guidance != 1.0
    steps = call.chosen.steps
    sampling = videos * steps * sum(pass_flops(pipe, tokens, guided) for tokens in pass_tokens)
    pixels = videos * call.num_frames * call.height * call.width
    memory = memory_bytes(pipe, call, max(pass_tokens))
    if sampling < CHECK_FLOPS and pixels < CHECK_PIXELS:  # quick anywhere: neither counted further nor timed
        return Estimate(sampling, None, memory, len(pass_tokens) * videos, steps)
    flops = sampling + decode_flops_per_pixel(pipe) * pixels
    return Estimate(flops, flops / calibrate(pipe), memory, len(pass_tokens) * videos, steps)


def memory_bytes(pipe, call, tokens: int) -> int:
    """Weights, one pass's activations (both guidance halves), decoding a chunk of 32 latent frames, and the
    decoded video as float32 and as uint8."""
    weights = sum(p.numel() * p.element_size() for module in (pipe.transformer, pipe.vae) for p in module.parameters())
    config = pipe.transformer.config
    inner = config.num_attention_heads * config.attention_head_dim
    activations = 2 * tokens * (8 * inner + config.ffn_dim) * 4
    vae = pipe.vae.config
    chunk = min(call.num_frames, 32 * pipe.vae.temporal_compression)
    decoding = 3 * chunk * call.height * call.width * vae.base_dim * vae.dim_mult[0] * 4
    video = call.num_frames * call.height * call.width * 3 * (4 + 1) * len(call.prompts) * call.videos_per_prompt
    return int(weights + activations + decoding + video)


def machine_memory(device: torch.device) -> int | None:
    """Bytes of memory the device has: a GPU's, or the machine's RAM for the CPU (None where unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def far_beyond(found: Estimate, device: torch.device) -> str | None:
    """A one-line warning when a request will take more than FAR_SECONDS or need more than FAR_MEMORY of the
    device's memory; None when it fits the machine."""
    memory = machine_memory(device)
    slow = found.seconds is not None and found.seconds > FAR_SECONDS
    large = memory is not None and found.bytes > FAR_MEMORY * memory
    if not slow and not large:
        return None
    where = f"{device}" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    has = f" of {memory / 2**30:.0f} GiB" if memory else ""
    return (f"this request will take {found.text()}{has} on this machine ({where}); a smaller --size, fewer "
            "--seconds or fewer --steps make it quicker")
