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
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinema.config import config_to_dict, load_config, parse_size
from kinema.diffusion.flow import FlowConfig, add_noise, flow_loss, sample_condition, sample_times, shift_for_tokens
from kinema.errors import KinemaError
from kinema.frames import MAX_SIDE, is_latent_length, shot_of_latent_frames
from kinema.train import distributed as dist_utils
from kinema.train.loop import TrainConfig, Trainer, TrainSummary, derived_seed, seed_everything
from kinema.train.sources import check_folder_settings, folder_buckets, folder_source
from kinema.world.scene import FRAMINGS

logger = logging.getLogger("kinema.train")


@dataclass
class MixEntry:
    """One kind of clip in a streamed mix: its length, its shot count range and its share of batches."""

    frames: int = 17
    shots: tuple[int, int] = (1, 1)
    weight: float = 1.0
    seed: int | None = None  # default: data.seed + 1000 * (position in the mix)

    def __post_init__(self) -> None:
        if not is_latent_length(self.frames):
            raise ValueError(f"mix frames must be 1 + 4k (got {self.frames})")
        if not 1 <= self.shots[0] <= self.shots[1]:
            raise ValueError(f"mix shots must be [low, high] with 1 <= low <= high (got {list(self.shots)})")
        if not self.weight >= 0:
            raise ValueError(f"mix weight must be >= 0 (got {self.weight})")


@dataclass
class DiTDataConfig:
    seed: int = 0
    sizes: list[str] = field(default_factory=lambda: ["64x64", "96x64", "64x96"])
    frames: int = 17
    fps: float = 8.0
    shots: tuple[int, int] = (1, 1)
    # the camera framings later shots of multi-shot clips are drawn from (a clip's first shot is wide)
    framings: list[str] = field(default_factory=lambda: list(FRAMINGS))
    occluder_probability: float = 0.5
    paint_probability: float = 0.3
    # folders written by ``kinema train cache-latents``; when given, training reads these instead of
    # rendering and encoding clips on the fly (items of each latent shape are batched together)
    latent_cache: list[str] = field(default_factory=list)
    # streamed clips only (no latent_cache): several clip kinds, one per batch by weight; empty: frames/shots
    mix: list[MixEntry] = field(default_factory=list)
    workers: int = 0  # render processes
    prefetch: int = 2  # batches rendered ahead (with workers)
    repeat: int = 1  # steps each rendered batch serves, with fresh noise, times and masks each time
    # Your own videos instead of the world (kinema.train.sources): a folder of videos with captions, its manifest
    # (default: manifest.jsonl, metadata.jsonl or .csv in the folder, else a .txt beside each video) and its
    # buckets [frames, height, width] (default: `frames` at each of `sizes`).
    folder: str | None = None
    manifest: str | None = None
    buckets: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_folder_settings(self)
        unknown = [f for f in self.framings if f not in FRAMINGS]
        if unknown or not self.framings:
            raise ValueError(f"framings must list some of {', '.join(FRAMINGS)} (got {self.framings})")
        if self.mix and sum(entry.weight for entry in self.mix) <= 0:
            raise ValueError("mix weights must have a positive sum")
        for name in ("workers", "prefetch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1 (got {self.repeat})")
        for text in self.sizes:
            try:
                parse_size(text, multiple=8, max_side=MAX_SIDE)
            except KinemaError as error:
                raise ValueError(f"sizes: {error}") from None
        if not is_latent_length(self.frames):
            raise ValueError(f"frames must be 1 + 4k (got {self.frames})")


@dataclass
class DiTTrainConfig:
    # a name in DIT_CONFIGS, or VideoDiT keyword arguments (with `name`: that config's, overridden)
    model: str | dict[str, Any] = "tiny"
    init: str | None = None  # a pretrained transformer folder to start from
    # with init: start the tensors whose shapes differ fresh instead of refusing; after a change to spatial
    # patches r times smaller (2x2 -> 1x1), the patch layers are converted instead (set the model's
    # rope_spatial_scale to 1/r so that the tokens keep the old patches' positions)
    init_partial: bool = False
    vae: str = "src/kinema/weights/kinema-tiny/vae"
    text_encoder: str = "minilm"
    caption_dropout: float = 0.1
    shot_captions: float = 0.5  # share of multi-shot clips trained with per-shot captions
    # share of batches (of clips with at least 6 latent frames) cut into long-video windows: memory frames,
    # a gap, then context and new frames, as kinema.inference.longvideo conditions each window after the first
    memory_windows: float = 0.0
    # share of batches trained frame-causally with teacher forcing: clean (lightly noised) copies of the frames
    # come first and each noisy frame attends to the clean frames before it and to itself, as the "ar" sampler
    # generates them; the rest are joint batches with the conditioning masks
    teacher_forcing: float = 0.0
    teacher_forcing_context_noise: float = 0.1  # clean copies carry flow time drawn from [0, this]
    causal_attention: bool = False  # joint batches attend block-causally over latent frames too
    # the sampling defaults `kinema train export-dit` writes into the pipeline folder (SamplingDefaults fields,
    # for example sampler: ar for a model trained with teacher forcing); unset fields keep the library defaults
    sampling: dict[str, Any] = field(default_factory=dict)
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
    options = dict(model)
    name = options.pop("name", None)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise KinemaError(f"config key 'model': unknown VideoDiT option(s) {', '.join(unknown)}")
    if name is None:
        return VideoDiT(**options)
    if name not in DIT_CONFIGS:
        raise KinemaError(f"config key 'model.name': unknown DiT config '{name}' ({', '.join(DIT_CONFIGS)})")
    return VideoDiT.from_name(name, **options)


def load_init(model: nn.Module, path: str, partial: bool = False) -> list[str]:
    """Load a pretrained transformer folder into ``model``; returns the names of the tensors left as they were.

    Every tensor must match unless ``partial``: then tensors whose shapes differ keep their fresh values."""
    from kinema.models.dit import VideoDiT

    source = VideoDiT.from_pretrained(path, low_cpu_mem_usage=False).state_dict()
    target = model.state_dict()
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    if missing or unexpected:
        raise KinemaError(f"init {path}: not the same architecture "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    differ = [k for k in target if source[k].shape != target[k].shape]
    if differ and not partial:
        shapes = ", ".join(f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}" for k in differ[:3])
        raise KinemaError(f"init {path}: tensor shapes differ ({shapes}); set init_partial: true to start those fresh")
    converted = _repatch(source, target, differ) if differ else {}
    differ = [k for k in differ if k not in converted]
    model.load_state_dict({k: v for k, v in source.items() if k not in differ} | converted, strict=False)
    return differ


_PATCH_TENSORS = ("patch_embedding.weight", "final.proj_out.weight", "final.proj_out.bias")


def _repatch(source: dict, target: dict, differ: list[str]) -> dict[str, torch.Tensor]:
    """The patch layers of a model with r times smaller spatial patches, from a model's with larger ones.

    A small patch embeds as the large patch that repeats each of its cells r × r times (the large kernel
    summed over each r × r group), and predicts for each cell the mean of what the large patch predicted for
    that cell's r × r copies. On latents that are smooth at the large patch's scale the new model starts
    near the old one; with ``rope_spatial_scale`` 1/r its tokens also sit where the old patches did.
    Returns {} where the layers differ in any other way."""
    if not set(differ) <= set(_PATCH_TENSORS) or "patch_embedding.weight" not in differ:
        return {}
    big, small = source["patch_embedding.weight"], target["patch_embedding.weight"]  # (D, C, 1, ph, pw)
    if big.shape[:3] != small.shape[:3]:
        return {}
    (ph, pw), (qh, qw) = big.shape[3:], small.shape[3:]
    if ph % qh or pw % qw or (ph // qh) != (pw // qw):
        return {}
    r = ph // qh
    d, c = big.shape[:2]
    embed = big.reshape(d, c, 1, qh, r, qw, r).sum(dim=(4, 6))
    out_w, out_b = source["final.proj_out.weight"], source["final.proj_out.bias"]  # rows in (ph, pw, C) order
    channels = out_w.shape[0] // (ph * pw)
    if target["final.proj_out.weight"].shape[0] != channels * qh * qw:
        return {}
    out_w = out_w.reshape(qh, r, qw, r, channels, -1).mean(dim=(1, 3)).reshape(qh * qw * channels, -1)
    out_b = out_b.reshape(qh, r, qw, r, channels).mean(dim=(1, 3)).reshape(-1)
    return {"patch_embedding.weight": embed, "final.proj_out.weight": out_w, "final.proj_out.bias": out_b}


def world_source(data: DiTDataConfig, streaming: bool = False):
    """The simulated-world clip source that ``data`` describes (what training renders, or what a cache holds).

    ``streaming``: the source training renders from, a ``WorldMixSource`` when ``data.mix`` lists clip kinds,
    with ``data.workers`` render processes and ``data.prefetch``."""
    from kinema.data.world import WorldMixSource, WorldVideoSource

    def one(frames: int, shots: tuple[int, int], seed: int, pooled: bool = False) -> WorldVideoSource:
        return WorldVideoSource(seed=seed, sizes=[parse_size(s) for s in data.sizes], frames=frames, fps=data.fps,
                                shots=tuple(shots), framings=tuple(data.framings),
                                occluder_probability=data.occluder_probability,
                                paint_probability=data.paint_probability, workers=data.workers if pooled else 0,
                                prefetch=data.prefetch if pooled else 0)

    if not streaming or not data.mix:
        return one(data.frames, data.shots, data.seed, pooled=streaming)
    sources = [one(entry.frames, entry.shots, data.seed + 1000 * k if entry.seed is None else entry.seed)
               for k, entry in enumerate(data.mix)]
    return WorldMixSource(sources, [entry.weight for entry in data.mix], seed=data.seed, workers=data.workers,
                          prefetch=data.prefetch)


def training_source(data: DiTDataConfig, batch_size: int, streaming: bool = False):
    """The clips a DiT run reads: the folder of your videos that ``data.folder`` names, else the world's
    (``world_source``)."""
    if data.folder is not None:
        return folder_source(data, batch_size)
    return world_source(data, streaming)


def training_caches(data: DiTDataConfig) -> list[str]:
    """The latent caches a DiT run reads: none when ``data.folder`` names your videos, which then win over the
    config's caches (``kinema train dit --config configs/dit/tiny.yaml data.folder=DIR`` trains on DIR)."""
    if data.folder is not None and data.latent_cache:
        print(f"training straight from {data.folder}: data.latent_cache is not read", flush=True)
        return []
    return list(data.latent_cache)


def cache_training_latents(config: DiTTrainConfig, out_dir: str | Path, clips: int | None = None,
                           dtype: torch.dtype = torch.float16, progress=None) -> Path:
    """Encode ``clips`` clips of the run's source (world clips rendered as ``config.data`` describes, or your
    videos; default for a folder: one epoch, every video once) with ``config.vae`` and write a latent cache to
    ``out_dir`` (resumable: finished shards are kept). Returns the cache's index.json."""
    from kinema.data.latents import cache_latents
    from kinema.models.vae import VideoVAE

    batch_size = config.train.batch_size
    source = training_source(config.data, batch_size)
    if clips is None and config.data.folder is not None:
        clips = source.batches_per_epoch(batch_size) * batch_size
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise KinemaError(f"clips must be an integer >= 1 (got {clips!r})")
    vae = VideoVAE.from_pretrained(config.vae).float().eval().requires_grad_(False)
    batches = -(-clips // batch_size)

    def encode(video: torch.Tensor) -> torch.Tensor:
        return vae.normalize_latents(vae.encode(video).mode())

    try:
        return cache_latents(source, encode, out_dir, batches, batch_size, dtype=dtype, progress=progress)
    finally:
        source.close()


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


class DiTTask:
    """Flow matching on VAE latents of world clips, with per-frame times and conditioning masks."""

    def __init__(self, config: DiTTrainConfig, device: str | torch.device = "cpu") -> None:
        from kinema.models.text import TextEncoder
        from kinema.models.vae import VideoVAE

        self.config = config
        self.device = torch.device(device)  # where the frozen VAE and text encoder run
        self.model = build_dit(config.model)
        if config.init:
            fresh = load_init(self.model, config.init, config.init_partial)
            if fresh:
                print(f"init {config.init}: {', '.join(fresh)} start fresh (shapes differ)", flush=True)
        data = config.data
        caches = training_caches(data)
        self.vae = None if caches else (
            VideoVAE.from_pretrained(config.vae).float().eval().requires_grad_(False).to(self.device))
        self.text = (TextEncoder.default(self.device) if config.text_encoder == "minilm"
                     else TextEncoder(config.text_encoder, device=self.device))
        self.latents = None
        if caches:
            from kinema.data.latents import LatentSource

            self.latents = LatentSource(caches, seed=data.seed)
        self.source = training_source(data, config.train.batch_size, streaming=not caches)
        self._last_raw: tuple | None = None  # (key, raw batch, latents) reused by data.repeat

    def _raw(self, index: int, rank: int, world_size: int) -> tuple[dict, torch.Tensor]:
        size, repeat = self.config.train.batch_size, self.config.data.repeat
        key = (index // repeat, rank, world_size)
        if self._last_raw is not None and self._last_raw[0] == key:
            return self._last_raw[1], self._last_raw[2]
        if self.latents is not None:
            raw = self.latents.batch(key[0], size, rank, world_size)
            latents = raw["latents"].float()
        else:
            raw = self.source.batch(key[0], size, rank, world_size)
            video = raw["video"].to(self.device, non_blocking=True)
            latents = self.vae.normalize_latents(self.vae.encode(video).mode())  # (b, C, F', h, w)
        if repeat > 1:
            self._last_raw = (key, raw, latents)
        return raw, latents

    @torch.no_grad()
    def batch(self, index: int, rank: int, world_size: int) -> dict:
        raw, latents = self._raw(index, rank, world_size)
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
                frame_index[i] = torch.tensor(shot_of_latent_frames(raw["shot_starts"][i], latent_frames))
            else:
                texts.append([raw["captions"][i]])
        sequences = max(len(t) for t in texts)
        flat = [t[min(s, len(t) - 1)] for t in texts for s in range(sequences)]
        tokens, mask = self.text.encode_memoized(flat)  # (b * S, L, D)
        tokens = tokens.view(b, sequences, *tokens.shape[1:])
        mask = mask.view(b, sequences, -1)
        teacher_forcing = latent_frames > 1 and float(torch.rand(1, generator=generator)) < self.config.teacher_forcing
        window = None
        if teacher_forcing:
            _, ph, pw = self.model.config.patch_size
            shift = shift_for_tokens(latent_frames * (latents.shape[3] // ph) * (latents.shape[4] // pw),
                                     self.config.flow)
            t = sample_times((b, latent_frames), self.config.flow, shift, generator)
            context_t = torch.rand(b, latent_frames, generator=generator) * self.config.teacher_forcing_context_noise
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            context_noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            return {"latents": latents, "noise": noise, "t": t, "known": torch.zeros_like(t, dtype=torch.bool),
                    "text": tokens, "text_mask": mask, "frame_text_index": frame_index,
                    "context_t": context_t, "context_noise": context_noise}
        if latent_frames >= 6 and float(torch.rand(1, generator=generator)) < self.config.memory_windows:
            keep, known_count = sample_memory_window(latent_frames, generator)
            latents, frame_index = latents[:, :, keep], frame_index[:, keep]
            latent_frames = len(keep)
            window = known_count
        _, ph, pw = self.model.config.patch_size
        patch_tokens = latent_frames * (latents.shape[3] // ph) * (latents.shape[4] // pw)
        shift = shift_for_tokens(patch_tokens, self.config.flow)
        t, known = sample_condition(b, latent_frames, self.config.flow, shift, generator)
        if window is not None:  # memory + context known and clean; the new frames share one t per clip
            known = torch.zeros_like(known)
            known[:, :window] = True
            clip_t = sample_times((b, 1), self.config.flow, shift, generator).expand_as(t)
            t = torch.where(known, torch.zeros_like(t), clip_t)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        return {"latents": latents, "noise": noise, "t": t, "known": known, "text": tokens, "text_mask": mask,
                "frame_text_index": frame_index}

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, noise, t = batch["latents"], batch["noise"], batch["t"]
        if "context_t" in batch:
            return self.teacher_forcing_loss(model, batch)
        xt = add_noise(x0, noise, t)
        mask = None
        if self.config.causal_attention:
            from kinema.models.dit import block_causal

            mask = block_causal(x0.shape[2], x0.device)
        prediction = model(xt, t, batch["text"], batch["text_mask"], batch["frame_text_index"],
                           attention_frames=mask)
        loss = flow_loss(prediction, x0, noise, batch["known"])
        return loss, {"known_frames": batch["known"].float().mean().detach()}


    def teacher_forcing_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Velocity loss on every frame of the noisy copy, each seeing the clean copies of the frames before it."""
        from kinema.models.dit import teacher_forcing_frames

        x0, noise, t = batch["latents"], batch["noise"], batch["t"]
        frames = x0.shape[2]
        clean = add_noise(x0, batch["context_noise"], batch["context_t"])  # (B, C, F', H', W')
        noisy = add_noise(x0, noise, t)
        index = batch["frame_text_index"]
        positions = torch.arange(frames, device=x0.device).repeat(2)
        prediction = model(torch.cat([clean, noisy], dim=2), torch.cat([batch["context_t"], t], dim=1),
                           batch["text"], batch["text_mask"], torch.cat([index, index], dim=1),
                           frame_positions=positions, attention_frames=teacher_forcing_frames(frames, x0.device))
        loss = flow_loss(prediction[:, :, frames:], x0, noise, torch.zeros_like(t, dtype=torch.bool))
        return loss, {"known_frames": torch.zeros((), device=x0.device), "teacher_forcing": torch.ones(())}


def train_dit(config: DiTTrainConfig, resume: bool = False) -> TrainSummary:
    runtime = dist_utils.init_distributed()
    seed_everything(config.train.seed)
    task = DiTTask(config, device=runtime.device)
    trainer = Trainer(task, config.train, runtime, run_config=config_to_dict(config))
    if runtime.is_main:
        parameters = sum(p.numel() for p in task.model.parameters())
        logger.info(f"training a {parameters / 1e6:.2f}M-parameter DiT on {runtime.world_size} process(es), "
                    f"{runtime.device}; out '{config.train.out_dir}'")
    try:
        return trainer.fit(resume=resume)
    finally:
        task.source.close()


def export_pipeline(config: DiTTrainConfig, out: str | Path, checkpoint: str | Path | None = None,
                    dtype: torch.dtype = torch.float16, name: str | None = None,
                    defaults: dict | None = None) -> tuple[Path, int]:
    """Write a complete pipeline folder (model_index.json, transformer/ with the EMA weights of a checkpoint,
    vae/ from ``config.vae``) that ``kinema generate --model OUT`` loads. Default: the newest checkpoint."""
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.vae import VideoVAE
    from kinema.train.checkpoint import checkpoint_to_export

    found = checkpoint_to_export(config.train.out_dir, checkpoint, logger.warning)
    model = build_dit(config.model)
    model.load_state_dict(found.model | found.ema, strict=True)
    vae = VideoVAE.from_pretrained(config.vae)
    sampling = export_defaults(config, defaults)
    pipe = KinemaPipeline(model.eval().to(dtype), vae.to(dtype), defaults=sampling, flow=config.flow,
                          text_encoder_name=config.text_encoder)
    pipe.name = name or Path(out).name
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    pipe.save_pretrained(out)
    return Path(out), found.step


def export_defaults(config: DiTTrainConfig, defaults: dict | None = None):
    """The sampling defaults an export writes: the data's (``folder_defaults``), then the config's ``sampling:``
    section, then ``defaults``."""
    from kinema.inference.pipeline import SamplingDefaults

    try:
        return SamplingDefaults(**(folder_defaults(config.data) | config.sampling | (defaults or {})))
    except (TypeError, ValueError) as e:
        raise KinemaError(f"bad sampling defaults: {e}") from None


def folder_defaults(data: DiTDataConfig) -> dict:
    """The sampling defaults of a model trained on your videos (``data.folder``, or latent caches made from a
    folder): their frame rate, the first bucket's size and length, and no prompt expansion (its captions are yours,
    not the simulated world's). Empty for the world."""
    found = {"fps": data.fps, "buckets": folder_buckets(data)} if data.folder is not None else None
    for cache in data.latent_cache if found is None else ():
        try:
            source = json.loads((Path(cache) / "index.json").read_text(encoding="utf-8"))["source"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(source, dict) and source.get("source") == "folder":
            found = {"fps": float(source["fps"]), "buckets": source["buckets"]}
            break
    if found is None:
        return {}
    frames, height, width = found["buckets"][0]
    return {"fps": found["fps"], "size": f"{width}x{height}", "seconds": (frames - 1) / found["fps"], "expand": False}


def load_dit_config(path: str | Path, overrides: list[str] | None = None) -> DiTTrainConfig:
    return load_config(DiTTrainConfig, path, overrides or [])

