"""Train the video VAE on simulated-world clips: ``kinema train vae --config configs/vae/tiny.yaml``.

Also runnable as a module, which is what torchrun needs::

    python -m kinema.train.vae --config configs/vae/tiny.yaml train.steps=100
    torchrun --nproc_per_node 2 -m kinema.train.vae --config configs/vae/tiny.yaml

The loss is L1 and/or MSE reconstruction plus a small KL term on a sampled posterior. Evaluation
reports PSNR and SSIM on a fixed set of held-out clips whose scene seeds lie in [2**31, 2**32),
a range the world's training clips (seeds from ``clip_seed``, below 2**31) never use. At the end the
EMA weights are written as a diffusers folder ``OUT/vae/`` with the per-channel latent mean and std,
measured on training batches, stored in its config.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinema.config import config_to_dict, load_config, parse_size
from kinema.errors import KinemaError
from kinema.frames import MAX_SIDE, is_latent_length
from kinema.train import distributed as dist_utils
from kinema.train.loop import TrainConfig, Trainer, TrainSummary, check_sizes, derived_seed, seed_everything
from kinema.train.sources import check_folder_settings, folder_source

__all__ = ["VAEDataConfig", "VAELossConfig", "VAETask", "VAETrainConfig", "export_checkpoint", "export_vae", "ssim",
           "train_vae"]

logger = logging.getLogger("kinema.train")

HELD_OUT_SEED_OFFSET = 2**31  # world training clips use scene seeds below this; held-out clips above


@dataclass
class VAEDataConfig:
    """Simulated-world clips, rendered on demand (``kinema.data.world.WorldVideoSource``), or a folder of your own
    videos (``kinema.train.sources``)."""

    source: Literal["world", "folder"] = "world"  # "folder" when `folder` is given
    seed: int = 0
    sizes: list[str] = field(default_factory=lambda: ["64x64"])  # WIDTHxHEIGHT, cycled by batch index
    frames: int = 17  # 1 + 4k
    fps: float = 8.0
    shots: tuple[int, int] = (1, 3)
    occluder_probability: float = 0.5
    paint_probability: float = 0.3
    workers: int = 0  # render processes per rank
    prefetch: int = 2  # batches rendered ahead (with workers)
    eval_seed: int = 0  # picks the held-out clips
    eval_clips: int = 8  # held-out clips per size
    eval_batch_size: int = 4
    stats_batches: int = 4  # training batches the latent mean/std are measured on
    # Your own videos (kinema.train.sources): a folder of videos with captions, its manifest (default: found in the
    # folder, else .txt files) and its buckets [frames, height, width] (default: `frames` at each of `sizes`).
    # The evaluation clips are then the folder's first videos, from their start (not held out).
    folder: str | None = None
    manifest: str | None = None
    buckets: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_folder_settings(self)
        if self.folder is not None:
            self.source = "folder"
        elif self.source == "folder":
            raise ValueError("source 'folder' needs folder: the folder of your videos")
        check_sizes(self.sizes)
        if not is_latent_length(self.frames):
            raise ValueError(f"frames must be 1 + 4k (1, 5, 9, 13, 17, ...) (got {self.frames})")
        if not 0 < self.fps <= 60:
            raise ValueError(f"fps must be in (0, 60] (got {self.fps})")
        if not 1 <= self.shots[0] <= self.shots[1]:
            raise ValueError(f"shots must be [low, high] with 1 <= low <= high (got {list(self.shots)})")
        for name in ("eval_clips", "eval_batch_size", "stats_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (got {self.workers})")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (got {self.prefetch})")

    def size_list(self) -> list[tuple[int, int]]:
        return [parse_size(text, multiple=8, max_side=MAX_SIDE) for text in self.sizes]


@dataclass
class VAELossConfig:
    """Weights of the loss terms. KL is summed over latent elements per clip, hence its tiny weight."""

    l1: float = 1.0
    mse: float = 0.0
    kl: float = 1e-6
    # L1 averaged over detail pixels only: those whose colour differs from their row's median (objects,
    # marks, posts, hills). Small objects are a few percent of a frame; without this term the VAE
    # learns the sky and ground long before it keeps a ball.
    detail: float = 0.0
    detail_threshold: float = 0.12  # in [-1, 1] pixel units, any channel
    # L1 between the horizontal and vertical pixel differences of the reconstruction and of the clip: an edge that
    # comes back blurred or rounded costs as much as a wrong colour along it. L1 and MSE on pixels let a VAE round
    # a box's corners, and the analyzer then reads the box as a ball.
    edge: float = 0.0
    perceptual: float = 0.0  # not implemented yet: must stay 0
    gan: float = 0.0  # not implemented yet: must stay 0

    def __post_init__(self) -> None:
        for name in ("l1", "mse", "kl", "detail", "detail_threshold", "edge"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.l1 == 0 and self.mse == 0:
            raise ValueError("l1 and mse: at least one reconstruction weight must be > 0")
        for name in ("perceptual", "gan"):
            if getattr(self, name) != 0:
                raise ValueError(f"{name}: this loss is not available yet; set it to 0")


@dataclass
class VAETrainConfig:
    """Everything ``kinema train vae`` reads from its YAML file."""

    model: str | dict[str, Any] = "tiny"  # a name in VAE_CONFIGS, or VideoVAE keyword arguments
    init: str | None = None  # a pretrained VAE folder to start from (warm start; the config must match)
    # train the decoder only, from `init`: the encoder and the latent statistics stay as they are, so the latents
    # a DiT was trained on keep their meaning while the decoder improves
    freeze_encoder: bool = False
    # `init` has fewer latent channels (z_dim) than `model`: its channels become the first ones and the new ones
    # start where the decoder ignores them, so training starts from the init's reconstructions (widen_latents)
    widen_latents: bool = False
    # with init: start the tensors whose shapes differ (e.g. the first and last convolutions after a patch_size
    # change) fresh instead of refusing
    init_partial: bool = False
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir=Path("runs/vae")))

    def __post_init__(self) -> None:
        if self.freeze_encoder and not self.init:
            raise ValueError("freeze_encoder needs init (the VAE whose encoder is kept)")
        if self.widen_latents and (not self.init or self.freeze_encoder):
            raise ValueError("widen_latents needs init (the VAE to widen) and a trainable encoder")
        if self.init_partial and (not self.init or self.freeze_encoder or self.widen_latents):
            raise ValueError("init_partial needs init, and goes with neither freeze_encoder nor widen_latents")
        if isinstance(self.model, str):
            from kinema.models.vae import VAE_CONFIGS

            if self.model not in VAE_CONFIGS:
                raise ValueError(f"model: unknown VAE config {self.model!r} (choose from "
                                 f"{', '.join(VAE_CONFIGS)}, or give a mapping of VideoVAE options)")


def build_vae(model: str | dict[str, Any]) -> nn.Module:
    """A randomly initialised VideoVAE from a config name or a dict of its options (one-line errors)."""
    from kinema.models.vae import VideoVAE

    if isinstance(model, str):
        return VideoVAE.from_name(model)
    allowed = [name for name in inspect.signature(VideoVAE.__init__).parameters if name != "self"]
    unknown = sorted(set(model) - set(allowed))
    if unknown:
        raise KinemaError(f"config key 'model': unknown VideoVAE option(s) {', '.join(unknown)} "
                          f"(allowed: {', '.join(allowed)})")
    try:
        return VideoVAE(**model)
    except KinemaError as error:
        raise KinemaError(f"config key 'model': {error}") from None


def _grid(index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index the (rows, columns) block of a square weight that ``index`` selects on both sides."""
    rows = torch.tensor(index)
    return rows[:, None], rows[None, :]


def widen_latent_state(state: dict[str, torch.Tensor], model: nn.Module, z_dim: int) -> dict[str, torch.Tensor]:
    """The weights of a VideoVAE with ``z_dim`` latent channels, laid into ``model``, which has more.

    Latent channel c < z_dim keeps its meaning (mean at c, log-variance at Z + c of the moments, Z the new count).
    The new channels keep ``model``'s fresh initialisation on the encoder side, and every weight that carries them
    into an old channel or into the decoder is zero, so ``model`` reconstructs exactly as the old VAE did and
    learns what to put in them."""
    target = {k: v.clone() for k, v in model.state_dict().items()}
    new_z = model.config.z_dim
    moments = list(range(z_dim)) + list(range(new_z, new_z + z_dim))  # old moment i -> new index
    latent = list(range(z_dim))
    for name, value in state.items():
        if name not in target:
            raise RuntimeError(f"unexpected tensor {name}")
        out = target[name]
        if out.shape == value.shape:
            target[name] = value.clone()
        elif name in ("encoder.conv_out.weight", "encoder.conv_out.bias"):
            out[moments] = value
        elif name == "quant_conv.weight":
            out[:, moments] = 0.0  # nothing old reads a new moment ...
            out[moments] = 0.0
            out[_grid(moments)] = value  # ... and the old moments are computed as before
        elif name == "quant_conv.bias":
            out[moments] = value
        elif name == "post_quant_conv.weight":
            out[latent] = 0.0
            out[_grid(latent)] = value
        elif name == "post_quant_conv.bias":
            out[latent] = value
        elif name == "decoder.conv_in.weight":
            out.zero_()
            out[:, latent] = value
        else:
            raise RuntimeError(f"{name} {tuple(value.shape)} does not fit {tuple(out.shape)}")
    missing = set(target) - set(state)
    if missing:
        raise RuntimeError(f"missing tensor {sorted(missing)[0]}")
    return target


def load_init_weights(model: nn.Module, folder: str, encoder_only: bool = False, widen: bool = False,
                      partial: bool = False) -> list[str]:
    """Copy the weights of a pretrained VideoVAE folder into ``model`` (same architecture required), or with
    ``encoder_only`` its encoder and quant_conv and whatever else has the same shape (a wider or deeper decoder
    starts fresh), or with ``widen`` into a model with more latent channels (``widen_latent_state``), or with
    ``partial`` every tensor whose name and shape match. Returns the names of the tensors left fresh."""
    from kinema.models.vae import VideoVAE

    pretrained = VideoVAE.from_pretrained(folder)
    state = pretrained.state_dict()
    shapes = model.state_dict()
    fits = {k: v for k, v in state.items() if k in shapes and shapes[k].shape == v.shape}
    if partial:
        if not fits:
            raise KinemaError(f"config key 'init': no tensor of '{folder}' fits the model config")
        model.load_state_dict(fits, strict=False)
        model.set_latent_stats(pretrained.config.latents_mean, pretrained.config.latents_std)
        return [k for k in shapes if k not in fits]
    if widen:
        old, new = pretrained.config.z_dim, model.config.z_dim
        if new <= old:
            raise KinemaError(f"config key 'widen_latents': the model's z_dim ({new}) must be larger than "
                              f"init's ({old})")
        try:
            model.load_state_dict(widen_latent_state(state, model, old), strict=True)
        except RuntimeError as error:
            raise KinemaError(f"config key 'init': '{folder}' does not match the model config apart from z_dim "
                              f"({str(error).splitlines()[0]})") from None
        return []  # the latent statistics are measured again at export
    if encoder_only:
        differ = [k for k in shapes if k.startswith(("encoder.", "quant_conv.")) and k not in fits]
        if differ:
            raise KinemaError(f"config key 'init': '{folder}' does not match the model config (encoder tensors "
                              f"differ: {', '.join(differ[:3])})")
        model.load_state_dict(fits, strict=False)
    else:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise KinemaError(f"config key 'init': '{folder}' does not match the model config "
                              f"({str(error).splitlines()[0]}); set init_partial: true to start what differs "
                              "fresh") from None
    model.set_latent_stats(pretrained.config.latents_mean, pretrained.config.latents_std)
    return []


# ----------------------------------------------------------------------------- metrics


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    window = profile[:, None] * profile[None, :]  # (size, size)
    return window.expand(channels, 1, size, size).contiguous()  # (C, 1, size, size): one per channel


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of images (N, C, H, W): one value per image, (N,).

    A Gaussian window (11 x 11, sigma 1.5) over valid positions only, per channel, averaged over the map
    and the channels; images smaller than the window use the largest odd window that fits.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    size = min(window, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2
    a, b = a.double(), b.double()
    kernel = _gaussian_window(size, sigma, a.shape[1], a.device, a.dtype)
    channels = a.shape[1]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)  # (N, C, H - size + 1, W - size + 1)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    covariance = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(dim=1)  # (N,)


def video_psnr_ssim(reconstruction: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip PSNR (dB, over all frames) and SSIM (mean over frames) of videos (B, 3, F, H, W) in [-1, 1]."""
    a = (reconstruction.float().clamp(-1, 1) + 1) / 2  # (B, 3, F, H, W) in [0, 1]
    b = (video.float() + 1) / 2
    mse = (a - b).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)  # (B,)
    psnr = 10 * torch.log10(1.0 / mse)
    batch, channels, frames, height, width = a.shape
    frames_a = a.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)  # (B * F, 3, H, W)
    frames_b = b.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    similarity = ssim(frames_a, frames_b).view(batch, frames).mean(dim=1)  # (B,)
    return psnr, similarity.float()


# ----------------------------------------------------------------------------- the task


def detail_mask(video: torch.Tensor, threshold: float) -> torch.Tensor:
    """(b, 1, F, H, W) float mask of pixels whose colour differs from their row's median by more than
    ``threshold`` in some channel: what is not plain sky or ground in a side view."""
    median = video.median(dim=-1, keepdim=True).values  # (b, 3, F, H, 1)
    return ((video - median).abs().amax(dim=1, keepdim=True) > threshold).float()


def edge_l1(reconstruction: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the spatial differences (next pixel along W, and along H) of two (b, 3, F, H, W) videos."""
    loss = reconstruction.new_zeros(())
    for dim in (-1, -2):
        loss = loss + (reconstruction.diff(dim=dim) - video.diff(dim=dim)).abs().mean()
    return loss / 2


class VAETask:
    """The VAE as a training task: world batches, reconstruction + KL loss, held-out PSNR / SSIM."""

    def __init__(self, config: VAETrainConfig) -> None:
        from kinema.data.world import WorldVideoSource

        self.config = config
        data = config.data
        self.model = build_vae(config.model)
        if config.init:
            fresh = load_init_weights(self.model, config.init, encoder_only=config.freeze_encoder,
                                      widen=config.widen_latents, partial=config.init_partial)
            if fresh:
                logger.info(f"init {config.init}: {', '.join(fresh)} start fresh (shapes differ)")
        if config.freeze_encoder:
            self.model.encoder.requires_grad_(False)
            self.model.quant_conv.requires_grad_(False)
        if data.folder is not None:
            self.source = folder_source(data, config.train.batch_size)
        else:
            self.source = WorldVideoSource(
                seed=data.seed, sizes=data.size_list(), frames=data.frames, fps=data.fps, shots=tuple(data.shots),
                occluder_probability=data.occluder_probability, paint_probability=data.paint_probability,
                workers=data.workers, prefetch=data.prefetch)
        self._eval_videos: list[torch.Tensor] | None = None

    def batch(self, index: int, rank: int, world_size: int) -> dict:
        """Slice ``rank`` of ``world_size`` of global batch ``index``, with the seed of its posterior noise."""
        batch = self.source.batch(index, self.config.train.batch_size, rank, world_size)
        noise_seed = derived_seed(self.config.data.seed, index, rank, world_size)
        return {"video": batch["video"], "noise_seed": noise_seed}  # video (b, 3, F, H, W) in [-1, 1]

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        video = batch["video"]  # (b, 3, F, H, W)
        generator = torch.Generator(device=video.device).manual_seed(batch["noise_seed"])
        reconstruction, posterior = model(video, sample_posterior=True, generator=generator)
        error = reconstruction.float() - video  # (b, 3, F, H, W)
        l1, mse = error.abs().mean(), error.pow(2).mean()
        kl = posterior.kl().float().mean()  # KL summed over latent elements, averaged over clips
        weights = self.config.loss
        loss = weights.l1 * l1 + weights.mse * mse + weights.kl * kl
        logs = {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach()}
        if weights.detail > 0:
            mask = detail_mask(video, weights.detail_threshold)  # (b, 1, F, H, W)
            detail = (error.abs() * mask).sum() / (3 * mask.sum()).clamp(min=1.0)
            loss = loss + weights.detail * detail
            logs |= {"detail_l1": detail.detach(), "detail_share": mask.mean().detach()}
        if weights.edge > 0:
            edge = edge_l1(reconstruction.float(), video)
            loss = loss + weights.edge * edge
            logs["edge_l1"] = edge.detach()
        return loss, logs

    def held_out_videos(self) -> list[torch.Tensor]:
        """The fixed evaluation clips, in batches of one size: scene seeds 2**31 + clip_seed(eval_seed, i)."""
        if self._eval_videos is None and self.config.data.folder is not None:
            data = self.config.data
            first = folder_source(data, data.eval_batch_size, random_window=False)
            batches = -(-data.eval_clips // data.eval_batch_size)
            self._eval_videos = [first.batch(i)["video"] for i in range(min(batches, first.batches_per_epoch()))]
        if self._eval_videos is None:
            from kinema.data.batching import frames_to_video_tensor
            from kinema.data.world import render_clip
            from kinema.world.dataset import clip_seed

            data = self.config.data
            videos, clip = [], 0
            for width, height in data.size_list():
                for start in range(0, data.eval_clips, data.eval_batch_size):
                    count = min(data.eval_batch_size, data.eval_clips - start)
                    frames = [render_clip(HELD_OUT_SEED_OFFSET + clip_seed(data.eval_seed, clip + i), width, height,
                                          self.source.options)["frames"] for i in range(count)]
                    videos.append(frames_to_video_tensor(frames))  # (b, 3, F, H, W)
                    clip += count
            self._eval_videos = videos
        return self._eval_videos

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        psnr_all, ssim_all = [], []
        for video in self.held_out_videos():
            video = video.to(device)
            reconstruction, _ = model(video, sample_posterior=False)
            psnr, similarity = video_psnr_ssim(reconstruction, video)
            psnr_all.append(psnr.cpu())
            ssim_all.append(similarity.cpu())
        return {"psnr": float(torch.cat(psnr_all).mean()), "ssim": float(torch.cat(ssim_all).mean())}


# ----------------------------------------------------------------------------- export


@torch.no_grad()
def measure_latent_stats(vae: nn.Module, task: VAETask, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the posterior means over ``data.stats_batches`` training batches."""
    channel_sum = torch.zeros(vae.config.z_dim, dtype=torch.float64)
    channel_sum_sq = torch.zeros_like(channel_sum)
    count = 0
    for index in range(task.config.data.stats_batches):
        video = task.source.batch(index, task.config.train.batch_size)["video"].to(device)
        latents = vae.encode(video).mode().double().cpu()  # (B, C, F', h, w)
        channel_sum += latents.sum(dim=(0, 2, 3, 4))
        channel_sum_sq += latents.pow(2).sum(dim=(0, 2, 3, 4))
        count += latents.numel() // latents.shape[1]
    mean = channel_sum / count
    return mean, (channel_sum_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()


@torch.no_grad()
def export_vae(trainer: Trainer, task: VAETask, folder: Path) -> Path | None:
    """Write the EMA weights as a diffusers folder with latent mean/std measured on training batches.

    A collective under FSDP2 (every rank gathers); rank 0 measures and writes. Returns the folder on rank 0.
    """
    from kinema.models.vae import VideoVAE

    model_state = dist_utils.model_state_dict(trainer.model)
    ema_state = trainer.ema.state_dict()
    if not trainer.runtime.is_main:
        dist_utils.barrier()
        return None
    live = dist_utils.unwrap(trainer.model)
    vae = VideoVAE.from_config(live.config).to(trainer.runtime.device)
    vae.load_state_dict(model_state | ema_state, strict=True)
    vae.eval()
    if task.config.freeze_encoder:  # the encoder is the init's: so are its statistics
        mean = torch.tensor(live.config.latents_mean, dtype=torch.float64)
        std = torch.tensor(live.config.latents_std, dtype=torch.float64)
    else:
        mean, std = measure_latent_stats(vae, task, trainer.runtime.device)
    vae.set_latent_stats(mean.tolist(), std.tolist())
    vae.to("cpu").save_pretrained(folder)
    logger.info(f"wrote the EMA weights to '{folder}' (latent mean {_short(mean)}, std {_short(std)})")
    dist_utils.barrier()
    return folder


@torch.no_grad()
def export_checkpoint(config: VAETrainConfig, out: str | Path, checkpoint: str | Path | None = None,
                      dtype: torch.dtype = torch.float16) -> tuple[Path, int]:
    """Export the EMA weights of a checkpoint (default: the newest complete one of train.out_dir) as a
    diffusers folder with measured latent statistics, stored in ``dtype`` (fp16 for the embedded model)."""
    from kinema.models.vae import VideoVAE
    from kinema.train.checkpoint import checkpoint_to_export

    found = checkpoint_to_export(config.train.out_dir, checkpoint, logger.warning)
    task = VAETask(config)
    vae = VideoVAE.from_config(task.model.config)
    vae.load_state_dict(found.model | found.ema, strict=True)
    vae.eval()
    if not config.freeze_encoder:  # a frozen encoder keeps its init's statistics (from the model's config)
        mean, std = measure_latent_stats(vae, task, torch.device("cpu"))
        vae.set_latent_stats(mean.tolist(), std.tolist())
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its hint about keeping modules in float32 does not apply here
    vae.to(dtype).save_pretrained(out)
    task.source.close()
    return Path(out), found.step


def _short(values: torch.Tensor) -> str:
    shown = ", ".join(f"{v:.3g}" for v in values[:4].tolist())
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"


# ----------------------------------------------------------------------------- entry points


def train_vae(config: VAETrainConfig, resume: bool = False) -> TrainSummary:
    """Train (or, with ``resume``, continue) and export; runs alike in one process or under torchrun."""
    runtime = dist_utils.init_distributed()
    seed_everything(config.train.seed)  # the same initial weights on every rank
    task = VAETask(config)
    model_config = json.dumps(dict(task.model.config), sort_keys=True)
    trainer = Trainer(task, config.train, runtime, run_config=config_to_dict(config),
                      safetensors_metadata={"kinema_config": model_config})
    if runtime.is_main:
        parameters = sum(p.numel() for p in task.model.parameters())
        logger.info(f"training a {parameters / 1e6:.2f}M-parameter VAE on {runtime.world_size} process(es), "
                    f"{runtime.device}, {trainer.accumulation} micro-batch(es) per step; out '{config.train.out_dir}'")
    try:
        summary = trainer.fit(resume=resume)
        export_vae(trainer, task, Path(config.train.out_dir) / "vae")
    finally:
        task.source.close()
    return summary


def load_vae_config(path: str | Path, overrides: list[str] | None = None) -> VAETrainConfig:
    return load_config(VAETrainConfig, path, overrides or [])

