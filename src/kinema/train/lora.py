"""``kinema train lora``: a LoRA for a model's transformer, trained on a folder of the user's videos with captions.

The data is ``kinema.data.folder`` (a ``.txt`` caption beside each video, or a ``manifest.jsonl``), cut to one
bucket of ``frames`` x ``size``. Each step encodes a batch with the model's frozen VAE and text encoder, draws a
flow time per clip (logit-normal, shifted for the token count) and with probability ``image_conditioning`` holds
the first latent frame clean as a known frame, as the embedded model trains; the loss is the velocity error on the
other frames, and only the LoRA's A and B train. The file it writes is the diffusers format
(``kinema.models.lora.LoraAdapter.save``): ``kinema generate --lora`` and ``WanPipeline.load_lora_weights``
both read it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from kinema.config import parse_size
from kinema.diffusion.flow import add_noise, flow_loss, sample_times, shift_for_tokens
from kinema.errors import KinemaError
from kinema.frames import MAX_SIDE, is_latent_length
from kinema.inference.pipeline import KinemaPipeline
from kinema.models.lora import LoraAdapter, apply_lora

logger = logging.getLogger("kinema.train")


@dataclass
class LoraTrainConfig:
    model: str  # a model folder: a diffusers Wan folder or kinema's own
    data: str  # a folder of videos with captions
    out: str = "lora.safetensors"
    rank: int = 16
    alpha: float | None = None  # None: the rank (scale 1)
    steps: int = 500
    lr: float = 1e-4
    batch_size: int = 1
    frames: int = 17  # 1 + 4k
    size: str = "256x256"
    fps: float = 16.0
    image_conditioning: float = 0.2  # share of steps that hold the first latent frame known (image to video)
    seed: int = 0
    device: str = "cpu"
    expert: str = "high"  # Wan2.2 A14B: the expert the LoRA is for (high-noise transformer, low-noise transformer_2)

    def __post_init__(self) -> None:
        if not is_latent_length(self.frames):
            raise KinemaError(f"frames {self.frames}: must be 1 + 4k (1, 5, 9, 13, 17, ...)")
        if not 1 <= self.steps <= 10_000_000:
            raise KinemaError(f"steps must be between 1 and 10000000 (got {self.steps})")
        if not 0 < self.lr < 1:
            raise KinemaError(f"lr must be in (0, 1) (got {self.lr:g})")
        if not 1 <= self.batch_size <= 256:
            raise KinemaError(f"batch size must be between 1 and 256 (got {self.batch_size})")
        if not 0 <= self.image_conditioning <= 1:
            raise KinemaError(f"image_conditioning must be in [0, 1] (got {self.image_conditioning:g})")
        if self.expert not in ("high", "low"):
            raise KinemaError(f"expert '{self.expert}': choose high or low")
        if not Path(self.out).suffix == ".safetensors":
            raise KinemaError(f"out '{self.out}': a LoRA is written as a .safetensors file")


def train_lora(config: LoraTrainConfig, log=print) -> Path:
    """Train a LoRA on ``config.data`` and write it to ``config.out``; returns the file."""
    from kinema.data.folder import VideoFolderSource

    width, height = parse_size(config.size, max_side=MAX_SIDE)
    torch.manual_seed(config.seed)
    pipe = KinemaPipeline.from_pretrained(config.model, device=config.device)
    pipe.check_size(height, width)
    if pipe.frames_as_channels:
        raise KinemaError("train lora: Wan's image-to-video models are not supported yet (use a text-to-video or "
                          "TI2V model)")
    transformer = expert_transformer(pipe, config.expert)
    transformer.requires_grad_(False)
    source = VideoFolderSource(config.data, config.fps, [(config.frames, height, width)], config.batch_size,
                               config.seed)
    adapter = LoraAdapter(transformer, config.rank, config.alpha)
    hooks = apply_lora(transformer, adapter.layers())
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    parameters = sum(p.numel() for p in adapter.parameters())
    log(f"training a rank-{config.rank} LoRA on {len(adapter.names)} layers ({parameters / 1e6:.2f}M parameters); "
        f"{source.summary}")
    try:
        for step in range(config.steps):
            loss = lora_loss(pipe, transformer, source.batch(step), config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % 10 == 0 or step + 1 == config.steps:
                log(f"step {step + 1}/{config.steps}: loss {loss.detach().item():.4f}")
    finally:
        for hook in hooks:
            hook.remove()
    return adapter.save(config.out)


def expert_transformer(pipe: KinemaPipeline, expert: str) -> torch.nn.Module:
    """The transformer a LoRA is trained for: the model's one, or one of Wan2.2 A14B's two experts."""
    if expert == "low" and pipe.transformer_2 is None:
        raise KinemaError("train lora: expert low is Wan2.2 A14B's low-noise expert, and this model has one "
                          "transformer")
    return pipe.transformer_2 if expert == "low" else pipe.transformer


def expert_times(t: torch.Tensor, pipe: KinemaPipeline, expert: str) -> torch.Tensor:
    """Flow times in [0, 1] moved into the range the expert denoises at sampling time: above the A14B boundary for
    the high-noise expert, below it for the low-noise one; unchanged for a model with one transformer."""
    if pipe.transformer_2 is None or pipe.boundary is None:
        return t
    return pipe.boundary + (1 - pipe.boundary) * t if expert == "high" else pipe.boundary * t


def lora_loss(pipe: KinemaPipeline, transformer: torch.nn.Module, batch: dict, config: LoraTrainConfig,
              generator: torch.Generator) -> torch.Tensor:
    """Flow-matching loss of one batch of videos (B, 3, F, H, W) and captions, through the hooked transformer."""
    with torch.no_grad():
        video = batch["video"].to(pipe.vae.device, pipe.vae.dtype)
        latents = pipe.vae.normalize_latents(pipe.vae.encode(video).mode()).float()  # (B, C, F', h, w)
        text, mask = pipe.encoded(lambda encoder: encoder.encode(batch["captions"]))  # (B, L, D), (B, L)
    b, _, latent_frames, lh, lw = latents.shape
    _, ph, pw = transformer.config.patch_size
    shift = pipe.defaults.shift or shift_for_tokens(latent_frames * (lh // ph) * (lw // pw), pipe.flow)
    t = expert_times(sample_times((b, 1), pipe.flow, shift, generator), pipe, config.expert)
    t = t.expand(b, latent_frames).clone()  # (B, F')
    known = torch.zeros(b, latent_frames, dtype=torch.bool)
    if latent_frames > 1:
        known[:, 0] = torch.rand(b, generator=generator) < config.image_conditioning
    t = torch.where(known, torch.zeros_like(t), t)
    noise = torch.randn(latents.shape, generator=generator)
    device = transformer.device
    latents, noise, t, known = latents.to(device), noise.to(device), t.to(device), known.to(device)
    prediction = transformer(add_noise(latents, noise, t).to(transformer.dtype), t,
                             text.to(device, transformer.dtype), mask.to(device))
    return flow_loss(prediction, latents, noise, known)
