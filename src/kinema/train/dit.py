"""Train the diffusion transformer: ``kinema train dit --config configs/dit/tiny.yaml``.

Each step takes simulated-world clips (rendered on demand, or read from a latent cache), encodes
them with the frozen VAE and the frozen text encoder, draws per-frame flow times and a conditioning
mask (``kinema.diffusion.flow``) and regresses the velocity of the unknown frames. Multi-shot clips
give every latent frame its shot's caption (scene caption + shot caption); captions are dropped
at a small rate so that classifier-free guidance has an unconditional model.

Runs alike in one process or under torchrun (``python -m kinema.train.dit``).
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinema.config import config_to_dict, load_config, parse_size
from kinema.diffusion.flow import FlowConfig, add_noise, flow_loss, sample_condition, sample_times, shift_for_tokens
from kinema.errors import KinemaError
from kinema.train import distributed as dist_utils
from kinema.train.loop import TrainConfig, Trainer, TrainSummary, derived_seed, seed_everything

logger = logging.getLogger("kinema.train")


@dataclass
class DiTDataConfig:
    seed: int = 0
    sizes: list[str] = field(default_factory=lambda: ["64x64", "96x64", "64x96"])
    frames: int = 17
    fps: float = 8.0
    shots: tuple[int, int] = (1, 1)
    occluder_probability: float = 0.5
    paint_probability: float = 0.3
    # folders written by ``kinema train cache-latents``; when given, training reads these instead of
    # rendering and encoding clips on the fly (items of each latent shape are batched together)
    latent_cache: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for text in self.sizes:
            try:
                parse_size(text, multiple=8, max_side=1024)
            except KinemaError as error:
                raise ValueError(f"sizes: {error}") from None
        if self.frames < 1 or (self.frames - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k (got {self.frames})")


@dataclass
class DiTTrainConfig:
    model: str | dict[str, Any] = "tiny"  # a name in DIT_CONFIGS, or VideoDiT keyword arguments
    init: str | None = None  # a pretrained transformer folder to start from
    vae: str = "weights/kinema-tiny/vae"
    text_encoder: str = "minilm"
    caption_dropout: float = 0.1
    shot_captions: float = 0.5  # share of multi-shot clips trained with per-shot captions
    # share of batches (of clips with at least 6 latent frames) cut into long-video windows: memory frames,
    # a gap, then context and new frames, as kinema.longvideo conditions each window after the first
    memory_windows: float = 0.0
    data: DiTDataConfig = field(default_factory=DiTDataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir=Path("runs/dit")))

    def __post_init__(self) -> None:
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1) (got {self.caption_dropout})")
        if not 0.0 <= self.memory_windows <= 1.0:
            raise ValueError(f"memory_windows must be in [0, 1] (got {self.memory_windows})")


def build_dit(model: str | dict[str, Any]) -> nn.Module:
    from kinema.models.dit import DIT_CONFIGS, VideoDiT

    if isinstance(model, str):
        if model not in DIT_CONFIGS:
            raise KinemaError(f"config key 'model': unknown DiT config '{model}' ({', '.join(DIT_CONFIGS)})")
        return VideoDiT.from_name(model)
    allowed = [n for n in inspect.signature(VideoDiT.__init__).parameters if n != "self"]
    unknown = sorted(set(model) - set(allowed))
    if unknown:
        raise KinemaError(f"config key 'model': unknown VideoDiT option(s) {', '.join(unknown)}")
    return VideoDiT(**model)


def world_source(data: DiTDataConfig):
    """The simulated-world clip source that ``data`` describes (what training renders, or what a cache holds)."""
    from kinema.data.world import WorldVideoSource

    return WorldVideoSource(seed=data.seed, sizes=[parse_size(s) for s in data.sizes], frames=data.frames,
                            fps=data.fps, shots=tuple(data.shots), occluder_probability=data.occluder_probability,
                            paint_probability=data.paint_probability)


def cache_world_latents(config: DiTTrainConfig, out_dir: str | Path, clips: int, dtype: torch.dtype = torch.float16,
                        progress=None) -> Path:
    """Render ``clips`` world clips as ``config.data`` describes, encode them with ``config.vae`` and write a
    latent cache to ``out_dir`` (resumable: finished shards are kept). Returns the cache's index.json."""
    from kinema.data.latents import cache_latents
    from kinema.models.vae import VideoVAE

    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise KinemaError(f"clips must be an integer >= 1 (got {clips!r})")
    vae = VideoVAE.from_pretrained(config.vae).float().eval().requires_grad_(False)
    batch_size = config.train.batch_size
    batches = -(-clips // batch_size)

    def encode(video: torch.Tensor) -> torch.Tensor:
        return vae.normalize_latents(vae.encode(video).mode())

    return cache_latents(world_source(config.data), encode, out_dir, batches, batch_size, dtype=dtype,
                         progress=progress)


def sample_memory_window(latent_frames: int, generator: torch.Generator) -> tuple[list[int], int]:
    """A long-video window cut from a clip: (the latent frames kept, how many of them are known).

    Frame 0 is always kept as a memory frame, sometimes with a second one (as the first frame of a later
    shot); then a gap of dropped frames; then 1-3 context frames and the new frames to denoise. The kept
    frames sit next to each other in the window, as they do at generation time.
    """
    def draw(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    gap = draw(1, latent_frames - 4)  # frames 1..gap are dropped (or 2..gap with a second memory frame)
    memory = [0]
    if gap >= 2 and draw(0, 1):
        memory.append(draw(1, gap - 1))
    rest = list(range(gap + 1, latent_frames))
    context = draw(1, min(3, len(rest) - 1))
    return memory + rest, len(memory) + context


def shot_latent_index(shot_starts: list[int], latent_frames: int, temporal: int = 4) -> list[int]:
    """Which shot each latent frame belongs to: frame 0 is latent 0; frames 1 + 4(j-1) .. 4j are latent j."""
    index = []
    for j in range(latent_frames):
        first_frame = 0 if j == 0 else 1 + temporal * (j - 1)
        index.append(max(k for k, start in enumerate(shot_starts) if start <= first_frame))
    return index


class DiTTask:
    """Flow matching on VAE latents of world clips, with per-frame times and conditioning masks."""

    def __init__(self, config: DiTTrainConfig) -> None:
        from kinema.models.text import TextEncoder
        from kinema.models.vae import VideoVAE

        self.config = config
        self.model = build_dit(config.model)
        if config.init:
            from kinema.models.dit import VideoDiT

            self.model.load_state_dict(VideoDiT.from_pretrained(config.init).state_dict())
        self.vae = None if config.data.latent_cache else (
            VideoVAE.from_pretrained(config.vae).float().eval().requires_grad_(False))
        self.text = TextEncoder.default() if config.text_encoder == "minilm" else TextEncoder(config.text_encoder)
        data = config.data
        self.latents = None
        if data.latent_cache:
            from kinema.data.latents import LatentSource

            self.latents = LatentSource(data.latent_cache, seed=data.seed)
        self.source = world_source(data)

    @torch.no_grad()
    def batch(self, index: int, rank: int, world_size: int) -> dict:
        size = self.config.train.batch_size
        if self.latents is not None:
            raw = self.latents.batch(index, size, rank, world_size)
            latents = raw["latents"].float()
        else:
            raw = self.source.batch(index, size, rank, world_size)
            latents = self.vae.normalize_latents(self.vae.encode(raw["video"]).mode())  # (b, C, F', h, w)
        generator = torch.Generator().manual_seed(derived_seed(self.config.data.seed, index, rank, world_size))
        b, _, latent_frames = latents.shape[:3]
        texts: list[list[str]] = []
        frame_index = torch.zeros(b, latent_frames, dtype=torch.long)
        drop = torch.rand(b, generator=generator) < self.config.caption_dropout
        per_shot = torch.rand(b, generator=generator) < self.config.shot_captions
        for i in range(b):
            shots = raw["shot_captions"][i]
            if drop[i]:
                texts.append([""])
            elif len(shots) > 1 and per_shot[i]:
                scene = raw["scene_captions"][i]
                texts.append([f"{scene} {shot}" for shot in shots])
                frame_index[i] = torch.tensor(shot_latent_index(raw["shot_starts"][i], latent_frames))
            else:
                texts.append([raw["captions"][i]])
        sequences = max(len(t) for t in texts)
        flat = [t[min(s, len(t) - 1)] for t in texts for s in range(sequences)]
        tokens, mask = self.text.encode(flat)  # (b * S, L, D)
        tokens = tokens.view(b, sequences, *tokens.shape[1:])
        mask = mask.view(b, sequences, -1)
        window = None
        if latent_frames >= 6 and float(torch.rand(1, generator=generator)) < self.config.memory_windows:
            keep, known_count = sample_memory_window(latent_frames, generator)
            latents, frame_index = latents[:, :, keep], frame_index[:, keep]
            latent_frames = len(keep)
            window = known_count
        patch_tokens = latent_frames * (latents.shape[3] // 2) * (latents.shape[4] // 2)
        shift = shift_for_tokens(patch_tokens, self.config.flow)
        t, known = sample_condition(b, latent_frames, self.config.flow, shift, generator)
        if window is not None:  # memory + context known and clean; the new frames share one t per clip
            known = torch.zeros_like(known)
            known[:, :window] = True
            clip_t = sample_times((b, 1), self.config.flow, shift, generator).expand_as(t)
            t = torch.where(known, torch.zeros_like(t), clip_t)
        noise = torch.randn(latents.shape, generator=generator)
        return {"latents": latents, "noise": noise, "t": t, "known": known, "text": tokens, "text_mask": mask,
                "frame_text_index": frame_index}

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, noise, t = batch["latents"], batch["noise"], batch["t"]
        xt = add_noise(x0, noise, t)
        prediction = model(xt, t, batch["text"], batch["text_mask"], batch["frame_text_index"])
        loss = flow_loss(prediction, x0, noise, batch["known"])
        return loss, {"known_frames": batch["known"].float().mean().detach()}


def train_dit(config: DiTTrainConfig, resume: bool = False) -> TrainSummary:
    runtime = dist_utils.init_distributed()
    seed_everything(config.train.seed)
    task = DiTTask(config)
    trainer = Trainer(task, config.train, runtime, run_config=config_to_dict(config))
    if runtime.is_main:
        parameters = sum(p.numel() for p in task.model.parameters())
        logger.info(f"training a {parameters / 1e6:.2f}M-parameter DiT on {runtime.world_size} process(es), "
                    f"{runtime.device}; out '{config.train.out_dir}'")
    return trainer.fit(resume=resume)


def export_pipeline(config: DiTTrainConfig, out: str | Path, checkpoint: str | Path | None = None,
                    dtype: torch.dtype = torch.float16, name: str | None = None,
                    defaults: dict | None = None) -> tuple[Path, int]:
    """Write a complete pipeline folder (model_index.json, transformer/ with the EMA weights of a checkpoint,
    vae/ from ``config.vae``) that ``kinema generate --model OUT`` loads. Default: the newest checkpoint."""
    from kinema.models.vae import VideoVAE
    from kinema.pipeline import KinemaPipeline, SamplingDefaults
    from kinema.train.checkpoint import checkpoint_to_export

    found = checkpoint_to_export(config.train.out_dir, checkpoint, logger.warning)
    model = build_dit(config.model)
    model.load_state_dict(found.model | found.ema, strict=True)
    vae = VideoVAE.from_pretrained(config.vae)
    try:
        sampling = SamplingDefaults(**(defaults or {}))
    except (TypeError, ValueError) as e:
        raise KinemaError(f"bad sampling defaults: {e}") from None
    pipe = KinemaPipeline(model.eval().to(dtype), vae.to(dtype), defaults=sampling, flow=config.flow,
                          text_encoder_name=config.text_encoder)
    pipe.name = name or Path(out).name
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    pipe.save_pretrained(out)
    return Path(out), found.step


def load_dit_config(path: str | Path, overrides: list[str] | None = None) -> DiTTrainConfig:
    return load_config(DiTTrainConfig, path, overrides or [])


def main(argv: list[str] | None = None) -> None:
    from kinema.train.commands import run_train_cli

    run_train_cli(["dit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
