"""Sora's video compression network: a causal 3D-convolution VAE in the Wan2.1 family.

A video (B, 3, F, H, W) in [-1, 1] with F = 1 + 4k frames becomes latents (B, C, 1 + k, H / 8, W / 8).
Frame 0 is encoded on its own, so an image is a 1-frame video; each later latent frame summarises 4 frames.
Every layer is causal in time: a convolution sees only the current and past frames (zeros before frame 0),
and attention and normalisation work within one frame. Hence the first latents of a clip do not depend on
later frames, and a clip can be processed in temporal chunks that carry a small per-layer cache of past
frames (``chunk_frames``), with the same result as one pass over the whole clip and a memory peak that
does not grow with the clip's length.

The architecture follows Wan2.1's VAE (as in diffusers' ``AutoencoderKLWan``): causal 3x3x3 convolutions,
residual blocks with channel RMS norm and SiLU, 2x spatial resampling per level and 2x temporal
resampling at the levels named by ``temporal_downsample``, a mid block (residual, per-frame attention,
residual) and a convolution head that gives the mean and log-variance of the latent Gaussian.

Parameter names and shapes match diffusers' ``AutoencoderKLWan`` up to these key renames (``WAN_KEY_RENAMES``):

    diffusers AutoencoderKLWan                            kinema VideoVAE
    encoder.down_blocks.{i}.resample.1.{weight,bias}      encoder.down_blocks.{i}.conv.{weight,bias}
    decoder.up_blocks.{i}.upsamplers.0.resample.1.*       decoder.up_blocks.{i}.upsampler.conv.*
    decoder.up_blocks.{i}.upsamplers.0.time_conv.*        decoder.up_blocks.{i}.upsampler.time_conv.*
    (everything else: conv_in, conv_out, norm_out, mid_block.*, resnets.*, norm1/conv1/norm2/conv2,
     conv_shortcut, time_conv, attentions.0.{norm,to_qkv,proj}, quant_conv, post_quant_conv)   unchanged

and ``rename_wan_keys`` applies them, so Wan2.1 VAE weights in the diffusers layout load with a key rename
(tests/test_vae.py checks that both models then give the same outputs).

One addition: ``patch_size`` (as in Wan2.2's VAE and diffusers' ``patch_size``) folds p x p pixel patches
into channels before the encoder and unfolds them after the decoder, with one resolution level fewer. The
``tiny`` config uses p = 2: the full-resolution level, which costs most of the compute, disappears.

Speed on CPU: frames are batched into each convolution (no per-frame Python loop), and convolutions call
oneDNN directly (see ``_conv3d``); ``benchmarks/bench_vae.py`` compares with diffusers at identical config.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import is_accelerate_available
from torch import nn

from kinema.config import read_json_object
from kinema.errors import KinemaError

# A causal cache maps each layer that looks into the past to what it needs from the previous chunk (its
# last input frames). A layer's key is present once the layer has seen the clip's first frame.
CausalCache = dict[nn.Module, "torch.Tensor | None"]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes

# Wan2.1's per-channel latent statistics (from its released VAE), used to normalise latents for the DiT.
WAN21_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN21_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]

# Named sizes (step times: benchmarks/bench_vae.py --train). `wan2.1` has the dims of Wan2.1's released VAE.
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    # 2x2 patches first (as Wan2.2's VAE does), then 2 down levels: the full-resolution level, which costs
    # most of the compute, is gone; about 2 training steps/s (batch 4, 17x64x64) on 2 free CPU cores.
    "tiny": dict(patch_size=2, base_dim=16, z_dim=16, dim_mult=[1, 2, 4], num_res_blocks=1,
                 temporal_downsample=[True, True], mid_attention=True),
    "small": dict(patch_size=2, base_dim=32, z_dim=16, dim_mult=[1, 2, 4], num_res_blocks=1,
                  temporal_downsample=[True, True], mid_attention=True),
    "wan2.1": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                   temporal_downsample=[False, True, True], mid_attention=True,
                   latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD),
}

WAN_KEY_RENAMES = [  # (pattern, replacement) from diffusers' AutoencoderKLWan to VideoVAE
    (r"^encoder\.down_blocks\.(\d+)\.resample\.1\.", r"encoder.down_blocks.\1.conv."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.resample\.1\.", r"decoder.up_blocks.\1.upsampler.conv."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.up_blocks.\1.upsampler."),
]


def rename_wan_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKLWan`` state dict (Wan2.1 layout) with VideoVAE's key names."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in WAN_KEY_RENAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        renamed[key] = value
    return renamed


def _one_line(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- layers


class CausalConv3d(nn.Conv3d):
    """3D convolution that pads only the past in time: output frame t sees input frames t - k_t + 1 .. t.

    Space is zero-padded on both sides ("same" size). Without a cache the clip starts after k_t - 1 zero
    frames; with a cache, a chunk continues where the previous chunk of the same clip ended.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3) -> None:
        kernel = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, kernel, padding=(0, kernel[1] // 2, kernel[2] // 2))
        self.past_frames = kernel[0] - 1  # frames of history each output frame needs

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.past_frames == 0:
            return _conv3d(x, self)  # (B, C_out, T, H, W)
        past = cache.get(self) if cache is not None else None
        if past is None:
            x = F.pad(x, (0, 0, 0, 0, self.past_frames, 0))  # (B, C_in, p + T, H, W): zeros before frame 0
        else:
            x = torch.cat([past, x], dim=2)  # (B, C_in, p + T, H, W): the previous chunk's last frames
        if cache is not None:
            cache[self] = x[:, :, -self.past_frames :].clone()  # clone: keep 2 frames, not the whole chunk
        return _conv3d(x, self)  # (B, C_out, T, H, W)


def _conv3d(x: torch.Tensor, conv: nn.Conv3d | nn.Conv2d) -> torch.Tensor:
    """`conv` applied to (B, C, T, H, W); a Conv2d is applied to every frame (without moving time into batch).

    On CPU in float32 this calls oneDNN directly: for batch 1 PyTorch's dispatcher picks its im2col
    fallback, which is 2-6x slower for these 3D convolutions. Same result, and differentiable.
    """
    weight, stride, padding = conv.weight, tuple(conv.stride), tuple(conv.padding)
    if weight.ndim == 4:  # (C_out, C_in, kh, kw) -> (C_out, C_in, 1, kh, kw)
        weight, stride, padding = weight.unsqueeze(2), (1, *stride), (0, *padding)
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available() \
            and torch.backends.mkldnn.enabled:
        return torch.ops.aten.mkldnn_convolution(x, weight, conv.bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, conv.bias, stride, padding)


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels at each position: x / rms(x) * gamma (Wan's ``RMS_norm``, no bias)."""

    def __init__(self, channels: int, spatial_dims: int = 3, eps: float = 1e-24) -> None:
        super().__init__()
        self.eps = eps  # Wan divides by max(L2 norm, 1e-12); this is the same floor on mean(x^2), up to 1/C
        self.gamma = nn.Parameter(torch.ones(channels, *(1,) * spatial_dims))  # (C, 1, 1, 1) or (C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2)) equals Wan's F.normalize(x) * sqrt(C), at a third of the cost on CPU
        mean_square = x.float().pow(2).mean(dim=1, keepdim=True).clamp_min(self.eps)  # (B, 1, ...) in fp32
        return x * torch.rsqrt(mean_square).to(x.dtype) * self.gamma                  # same shape as x


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> dropout -> causal conv, plus a (1x1x1) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3)
        self.norm2 = ChannelRMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        shortcut = self.conv_shortcut(x)                                   # (B, C_out, T, H, W)
        x = self.conv1(F.silu(self.norm1(x)), cache)                       # (B, C_out, T, H, W)
        x = self.conv2(self.dropout(F.silu(self.norm2(x))), cache)         # (B, C_out, T, H, W)
        return x + shortcut                                                # (B, C_out, T, H, W)


class AttentionBlock(nn.Module):
    """Single-head self-attention among the pixels of each frame (no attention across time, so causal)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = ChannelRMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        h = x.transpose(1, 2).reshape(batch * frames, channels, height, width)  # (B*T, C, H, W)
        qkv = self.to_qkv(self.norm(h)).flatten(2).transpose(1, 2)              # (B*T, H*W, 3C)
        q, k, v = qkv.chunk(3, dim=-1)                                          # 3 x (B*T, H*W, C)
        h = F.scaled_dot_product_attention(q, k, v)                             # (B*T, H*W, C)
        h = h.transpose(1, 2).reshape(batch * frames, channels, height, width)  # (B*T, C, H, W)
        h = self.proj(h)                                                        # (B*T, C, H, W)
        h = h.reshape(batch, frames, channels, height, width).transpose(1, 2)   # (B, C, T, H, W)
        return x + h


class MidBlock(nn.Module):
    """Residual block, per-frame attention (optional), residual block: at the lowest resolution."""

    def __init__(self, dim: int, dropout: float = 0.0, attention: bool = True) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])
        self.attentions = nn.ModuleList([AttentionBlock(dim)] if attention else [])

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)      # (B, C, T, H, W)
        for attention in self.attentions:
            x = attention(x)               # (B, C, T, H, W)
        return self.resnets[1](x, cache)   # (B, C, T, H, W)


ResampleMode = Literal["down2d", "down3d", "up2d", "up3d"]


class Resample(nn.Module):
    """2x spatial down- or up-sampling of every frame, with 2x in time as well for the "3d" modes.

    Time is resampled causally, and frame 0 always stays on its own:
    - down3d, T = 1 + 2n frames -> 1 + n: frame 0 passes, then a stride-2 conv over frames (0,1,2), (2,3,4), ...
    - up3d, T = 1 + n frames -> 1 + 2n: frame 0 passes, then a causal conv over frames 1.. (history before
      frame 1 is zero, as in Wan) makes two output frames from each input frame.
    """

    def __init__(self, dim: int, mode: ResampleMode, out_dim: int | None = None) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("down2d", "down3d"):
            self.conv = nn.Conv2d(dim, dim, 3, stride=2)  # applied after padding right and bottom by one
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if mode == "down3d" else None
        elif mode in ("up2d", "up3d"):
            self.conv = nn.Conv2d(dim, out_dim or dim // 2, 3, padding=1)
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1)) if mode == "up3d" else None
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.mode == "up3d":
            x = self._double_frames(x, cache)                                # (B, C, T', H, W), T' = 1 + 2n
        if self.mode.startswith("up"):
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # (B, C, T, 2H, 2W)
            return _conv3d(x, self.conv)                                     # (B, C_out, T, 2H, 2W)
        x = _conv3d(F.pad(x, (0, 1, 0, 1)), self.conv)                       # (B, C, T, H/2, W/2)
        if self.mode == "down3d":
            x = self._halve_frames(x, cache)                                 # (B, C, T', H/2, W/2), T' = 1 + n
        return x

    def _halve_frames(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        if cache is None or self not in cache:  # this chunk starts the clip: frame 0 stays alone
            pairs = _conv3d(x, self.time_conv) if x.shape[2] >= 3 else x[:, :, :0]  # (B, C, n, H, W)
            out = torch.cat([x[:, :, :1], pairs], dim=2)                     # (B, C, 1 + n, H, W)
        else:  # a later chunk (even length): its windows start at the previous chunk's last frame
            out = _conv3d(torch.cat([cache[self], x], dim=2), self.time_conv)  # (B, C, T / 2, H, W)
        if cache is not None:
            cache[self] = x[:, :, -1:].clone()
        return out

    def _double_frames(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        starts_clip = cache is None or self not in cache
        first, x = (x[:, :, :1], x[:, :, 1:]) if starts_clip else (None, x)  # frame 0 is not doubled
        if cache is not None:
            cache[self] = None  # mark that frame 0 has passed
        batch, channels, frames, height, width = x.shape
        if frames:
            x = self.time_conv(x, cache)                                     # (B, 2C, T, H, W)
            x = x.view(batch, 2, channels, frames, height, width)            # (B, 2, C, T, H, W)
            x = x.permute(0, 2, 3, 1, 4, 5).reshape(batch, channels, frames * 2, height, width)  # (B, C, 2T, H, W)
        return x if first is None else torch.cat([first, x], dim=2)          # (B, C, 1 + 2T, H, W) on the first


class Encoder3d(nn.Module):
    """Video (B, 3, 1 + 4k, H, W) -> moments (B, 2C, 1 + k, H/8, W/8), for Wan2.1's 3 down levels (two of
    them temporal). With patch_size p the input is (B, 3p^2, 1 + 4k, H/p, W/p) and there is one level less."""

    def __init__(self, in_channels: int, dim: int, out_channels: int, dim_mult: list[int], num_res_blocks: int,
                 temporal_downsample: list[bool], mid_attention: bool, dropout: float) -> None:
        super().__init__()
        dims = [dim * m for m in [1, *dim_mult]]
        self.conv_in = CausalConv3d(in_channels, dims[0], 3)
        blocks: list[nn.Module] = []
        for level, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if level < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "down3d" if temporal_downsample[level] else "down2d"))
        self.down_blocks = nn.ModuleList(blocks)  # a flat list, as in Wan, so the parameter names match
        self.mid_block = MidBlock(dims[-1], dropout, mid_attention)
        self.norm_out = ChannelRMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)                       # (B, D, F, H, W)
        for block in self.down_blocks:
            x = block(x, cache)                          # (B, D * m, F / t, H / s, W / s) after each resample
        x = self.mid_block(x, cache)                     # (B, 4D, 1 + k, H/8, W/8)
        x = F.silu(self.norm_out(x))                     # (B, 4D, 1 + k, H/8, W/8)
        return self.conv_out(x, cache)                   # (B, 2C, 1 + k, H/8, W/8)


class UpBlock(nn.Module):
    """num_res_blocks + 1 residual blocks, then an optional upsampler (which halves the channels)."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float,
                 upsample: ResampleMode | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout) for i in range(num_res_blocks + 1)]
        )
        self.upsampler = Resample(out_dim, upsample) if upsample is not None else None

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)                      # (B, D_out, T, H, W)
        if self.upsampler is not None:
            x = self.upsampler(x, cache)              # (B, D_out / 2, T', 2H, 2W)
        return x


class Decoder3d(nn.Module):
    """Latents (B, C, 1 + k, h, w) -> video (B, 3, 1 + 4k, 8h, 8w), the mirror of Encoder3d (with patch_size
    p it gives (B, 3p^2, 1 + 4k, 8h/p, 8w/p), which VideoVAE unpatchifies)."""

    def __init__(self, dim: int, z_dim: int, out_channels: int, dim_mult: list[int], num_res_blocks: int,
                 temporal_upsample: list[bool], mid_attention: bool, dropout: float) -> None:
        super().__init__()
        dims = [dim * m for m in [dim_mult[-1], *reversed(dim_mult)]]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3)
        self.mid_block = MidBlock(dims[0], dropout, mid_attention)
        blocks = []
        in_dim = dims[0]
        for level, out_dim in enumerate(dims[1:]):
            upsample: ResampleMode | None = None
            if level < len(dim_mult) - 1:
                upsample = "up3d" if temporal_upsample[level] else "up2d"
            blocks.append(UpBlock(in_dim, out_dim, num_res_blocks, dropout, upsample))
            in_dim = out_dim // 2 if upsample else out_dim
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = ChannelRMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)                    # (B, 4D, 1 + k, h, w)
        x = self.mid_block(x, cache)                  # (B, 4D, 1 + k, h, w)
        for block in self.up_blocks:
            x = block(x, cache)                       # frames 1 + k -> 1 + 2k -> 1 + 4k, size x2 per level
        x = F.silu(self.norm_out(x))                  # (B, D, 1 + 4k, 8h, 8w)
        return self.conv_out(x, cache)                # (B, 3, 1 + 4k, 8h, 8w)


class DiagonalGaussianDistribution:
    """The encoder's posterior: an independent Gaussian per latent element, from (B, 2C, ...) moments."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)      # 2 x (B, C, F', h, w)
        self.logvar = logvar.clamp(-30.0, 20.0)          # as in diffusers/Wan: keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)          # (B, C, F', h, w)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise              # (B, C, F', h, w)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(posterior || N(0, I)) per sample, summed over all latent elements: (B,)."""
        kl = 0.5 * (self.mean.pow(2) + self.std.pow(2) - 1.0 - self.logvar)
        return kl.flatten(1).sum(dim=1)


# ----------------------------------------------------------------------------- the model


class LatentScaling:
    """Per-channel latent statistics (``config.latents_mean`` / ``latents_std``) and the sizes of a video VAE with
    ``temporal_compression`` and ``spatial_compression``: shared by ``VideoVAE`` and the wrapped Wan2.2 VAE."""

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.config.latents_std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(z - mean) / std per channel: what the DiT sees."""
        mean, std = self._latent_stats(latents)
        return (latents - mean) / std

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """z * std + mean per channel: back to what the decoder expects."""
        mean, std = self._latent_stats(latents)
        return latents * std + mean

    def latent_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(latent_frames, latent_height, latent_width) for a valid video size."""
        return (1 + (frames - 1) // self.temporal_compression, height // self.spatial_compression,
                width // self.spatial_compression)


class VideoVAE(ModelMixin, ConfigMixin, LatentScaling):
    """Causal video VAE: (B, 3, 1 + 4k, H, W) in [-1, 1] <-> latents (B, C, 1 + k, H/8, W/8).

    ``encode``/``decode`` take ``chunk_frames``: None processes the whole clip in one pass; N (a multiple of
    4, counted in video frames for both) goes through the clip in chunks of N frames (N / 4 latent frames)
    after the first frame, carrying a causal cache, so memory stays flat in clip length. Both give the same
    result. On CPU one pass is fastest for short clips; for long ones chunks of ~64 frames are faster too,
    as their activations stay in cache.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_dim: int = 96,
        z_dim: int = 16,
        dim_mult: tuple[int, ...] | list[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        temporal_downsample: tuple[bool, ...] | list[bool] = (False, True, True),
        mid_attention: bool = True,
        dropout: float = 0.0,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        patch_size: int = 1,
        decoder_base_dim: int | None = None,
        decoder_num_res_blocks: int | None = None,
    ) -> None:
        super().__init__()
        dim_mult, temporal_downsample = list(dim_mult), [bool(t) for t in temporal_downsample]
        _check_config(in_channels, out_channels, base_dim, z_dim, dim_mult, num_res_blocks, temporal_downsample,
                      dropout, patch_size)
        if latents_mean is None or latents_std is None:  # identity until set_latent_stats is called
            self.register_to_config(latents_mean=latents_mean or [0.0] * z_dim,
                                    latents_std=latents_std or [1.0] * z_dim)
        _check_latent_stats(self.config.latents_mean, self.config.latents_std, z_dim)
        self.temporal_compression = 2 ** sum(temporal_downsample)
        self.spatial_compression = patch_size * 2 ** (len(dim_mult) - 1)

        patch_pixels = patch_size * patch_size  # a p x p patch of C channels enters as C * p * p channels
        self.encoder = Encoder3d(in_channels * patch_pixels, base_dim, z_dim * 2, dim_mult, num_res_blocks,
                                 temporal_downsample, mid_attention, dropout)
        self.quant_conv = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, 1)
        # The decoder may be wider or deeper than the encoder: it draws the pixels, and a decoder trained alone on a
        # frozen encoder's latents (train.vae's freeze_encoder) keeps the latents a DiT learned.
        self.decoder = Decoder3d(decoder_base_dim or base_dim, z_dim, out_channels * patch_pixels, dim_mult,
                                 num_res_blocks if decoder_num_res_blocks is None else decoder_num_res_blocks,
                                 temporal_downsample[::-1], mid_attention, dropout)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform convolutions with zero bias; every residual branch and attention output starts at
        zero, so at initialisation each block is its shortcut and deep stacks train from step one."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, ChannelRMSNorm):
                nn.init.ones_(module.gamma)
        for module in self.modules():
            if isinstance(module, ResidualBlock):
                nn.init.zeros_(module.conv2.weight)
            elif isinstance(module, AttentionBlock):
                nn.init.zeros_(module.proj.weight)

    # -- construction and loading

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> VideoVAE:
        """A randomly initialised VAE of a named size in VAE_CONFIGS (tiny, small, wan2.1)."""
        if name not in VAE_CONFIGS:
            raise KinemaError(f"unknown VAE config '{name}': choose from {', '.join(VAE_CONFIGS)}")
        return cls(**{**VAE_CONFIGS[name], **overrides})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load from a local folder (config.json + safetensors). Never downloads, never unpickles.

        A missing or corrupt folder raises KinemaError with a one-line message.
        """
        folder = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
        _check_checkpoint_folder(folder)
        want_info = kwargs.pop("output_loading_info", False)
        kwargs.update(local_files_only=True, use_safetensors=True, output_loading_info=True)
        kwargs.setdefault("low_cpu_mem_usage", is_accelerate_available())  # without accelerate: no warning
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except KinemaError as error:
            raise KinemaError(f"cannot load VAE from '{folder}': {error}") from None
        except Exception as error:  # diffusers / safetensors / torch raise many types for a bad checkpoint
            raise KinemaError(f"cannot load VAE from '{folder}': {_one_line(error)}") from None
        missing = info.get("missing_keys") or []
        mismatched = info.get("mismatched_keys") or []
        if missing or mismatched:
            names = ", ".join(str(k) for k in [*missing, *mismatched][:3])
            raise KinemaError(f"cannot load VAE from '{folder}': weights do not match config.json "
                              f"({len(missing)} missing, {len(mismatched)} mismatched, e.g. {names})")
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' save_pretrained (config.json + safetensors), with the config also in the safetensors
        metadata so the weights file describes itself."""
        super().save_pretrained(save_directory, **kwargs)
        weights = Path(save_directory) / WEIGHTS_NAME
        if kwargs.get("safe_serialization", True) and kwargs.get("variant") is None and weights.is_file():
            from safetensors.torch import load_file, save_file

            state = load_file(weights)
            metadata = {"format": "pt", "kinema_config": self.to_json_string()}  # the text of config.json
            temp = weights.with_name(weights.name + ".part")
            save_file(state, temp, metadata=metadata)
            os.replace(temp, weights)

    # -- latent statistics

    def set_latent_stats(self, mean: Any, std: Any) -> None:
        """Store the per-channel latent mean and std (measured on training data) in the config."""
        mean = [float(v) for v in torch.as_tensor(mean, dtype=torch.float64).flatten()]
        std = [float(v) for v in torch.as_tensor(std, dtype=torch.float64).flatten()]
        _check_latent_stats(mean, std, self.config.z_dim)
        self.register_to_config(latents_mean=mean, latents_std=std)
        # diffusers lists the arguments __init__ was not given as defaults, and from_config drops those: these are no
        # longer defaults, so a copy made with from_config keeps them
        defaults = self.config.get("_use_default_values")
        if defaults is not None:
            kept = [k for k in defaults if k not in ("latents_mean", "latents_std")]
            self.register_to_config(_use_default_values=kept)

    # -- encode / decode

    def encode(self, video: torch.Tensor, chunk_frames: int | None = None) -> DiagonalGaussianDistribution:
        """Video (B, 3, 1 + 4k, H, W) in [-1, 1] -> posterior over latents (B, C, 1 + k, H/8, W/8)."""
        self._check_video(video)
        self.check_chunk_frames(chunk_frames)
        if chunk_frames is None:
            moments = self._encode_chunk(video)                             # (B, 2C, 1 + k, H/8, W/8)
            return DiagonalGaussianDistribution(moments)
        batch, _, frames, height, width = video.shape
        latent_frames, latent_height, latent_width = self.latent_size(frames, height, width)
        moments = video.new_empty(batch, 2 * self.config.z_dim, latent_frames, latent_height, latent_width)
        cache: CausalCache = {}
        latent_start = 0
        for start, stop in _chunks(frames, chunk_frames):
            chunk = self._encode_chunk(video[:, :, start:stop], cache)      # (B, 2C, n, H/8, W/8)
            moments[:, :, latent_start : latent_start + chunk.shape[2]] = chunk
            latent_start += chunk.shape[2]
        return DiagonalGaussianDistribution(moments)

    def decode(self, latents: torch.Tensor, chunk_frames: int | None = None, clamp: bool = True) -> torch.Tensor:
        """Latents (B, C, 1 + k, h, w) -> video (B, 3, 1 + 4k, 8h, 8w), clamped to [-1, 1] unless `clamp`
        is False (training wants the raw output)."""
        self._check_latents(latents)
        self.check_chunk_frames(chunk_frames)
        if chunk_frames is None:
            video = self._decode_chunk(latents)                              # (B, 3, 1 + 4k, 8h, 8w)
            return video.clamp(-1.0, 1.0) if clamp else video
        batch, _, latent_frames, latent_height, latent_width = latents.shape
        frames = 1 + (latent_frames - 1) * self.temporal_compression
        video = latents.new_empty(batch, self.config.out_channels, frames,
                                  latent_height * self.spatial_compression, latent_width * self.spatial_compression)
        cache: CausalCache = {}
        start = 0
        for latent_start, latent_stop in _chunks(latent_frames, chunk_frames // self.temporal_compression):
            chunk = self._decode_chunk(latents[:, :, latent_start:latent_stop], cache)  # (B, 3, n, 8h, 8w)
            video[:, :, start : start + chunk.shape[2]] = chunk.clamp(-1.0, 1.0) if clamp else chunk
            start += chunk.shape[2]
        return video

    def _encode_chunk(self, video: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = _patchify(video, self.config.patch_size)     # (B, 3p^2, T, H/p, W/p)
        x = self.encoder(x, cache)                       # (B, 2C, T', H/8, W/8)
        return self.quant_conv(x)                        # (B, 2C, T', H/8, W/8)

    def _decode_chunk(self, latents: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.post_quant_conv(latents)                # (B, C, T', h, w)
        x = self.decoder(x, cache)                       # (B, 3p^2, T, 8h/p, 8w/p)
        return _unpatchify(x, self.config.patch_size)    # (B, 3, T, 8h, 8w)

    def forward(self, video: torch.Tensor, sample_posterior: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """Whole-clip encode + decode for training: (reconstruction (B, 3, F, H, W), unclamped; posterior)."""
        posterior = self.encode(video)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()  # (B, C, 1 + k, h, w)
        return self.decode(latents, clamp=False), posterior

    # -- validation

    def _check_video(self, video: Any) -> None:
        if not isinstance(video, torch.Tensor):
            raise KinemaError(f"video must be a torch.Tensor (B, 3, frames, H, W), got {type(video).__name__}")
        channels = self.config.in_channels
        if video.ndim != 5 or video.shape[1] != channels:
            raise KinemaError(f"video must have shape (batch, {channels}, frames, height, width), "
                              f"got {tuple(video.shape)}")
        self._check_dtype("video", video)
        batch, _, frames, height, width = video.shape
        t, s = self.temporal_compression, self.spatial_compression
        if batch < 1 or frames < 1 or (frames - 1) % t:
            raise KinemaError(f"video has {frames} frames; the VAE needs 1 + {t}k frames (1, {1 + t}, {1 + 2 * t}, "
                              f"...): trim or pad the clip")
        if height < s or width < s or height % s or width % s:
            raise KinemaError(f"video size {width}x{height}: width and height must be positive multiples of {s}")

    def _check_latents(self, latents: Any) -> None:
        if not isinstance(latents, torch.Tensor):
            raise KinemaError(f"latents must be a torch.Tensor (B, C, frames, h, w), got {type(latents).__name__}")
        channels = self.config.z_dim
        if latents.ndim != 5 or latents.shape[1] != channels or 0 in latents.shape:
            raise KinemaError(f"latents must have shape (batch, {channels}, latent_frames, height, width), "
                              f"got {tuple(latents.shape)}")
        self._check_dtype("latents", latents)

    def _check_dtype(self, name: str, tensor: torch.Tensor) -> None:
        if not tensor.is_floating_point():
            hint = " (use video_to_tensor for uint8 frames)" if name == "video" else ""
            raise KinemaError(f"{name} has dtype {tensor.dtype}; expected a float tensor{hint}")
        if tensor.dtype != self.dtype and not torch.is_autocast_enabled(tensor.device.type):
            raise KinemaError(f"{name} has dtype {tensor.dtype} but the VAE's weights are {self.dtype}; "
                              f"convert one of them")

    def check_chunk_frames(self, chunk_frames: Any) -> None:
        """Raise KinemaError unless chunk_frames is None or a positive multiple of the temporal compression."""
        t = self.temporal_compression
        if chunk_frames is None:
            return
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < t or chunk_frames % t:
            raise KinemaError(f"chunk_frames must be None (whole clip) or a positive multiple of {t}, "
                              f"got {chunk_frames!r}")


def _patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C * p * p, T, H / p, W / p), channels ordered (c, p_w, p_h) as in Wan2.2."""
    if patch_size == 1:
        return x
    batch, channels, frames, height, width = x.shape
    p = patch_size
    x = x.view(batch, channels, frames, height // p, p, width // p, p)  # (B, C, T, H/p, p_h, W/p, p_w)
    x = x.permute(0, 1, 6, 4, 2, 3, 5)                                  # (B, C, p_w, p_h, T, H/p, W/p)
    return x.reshape(batch, channels * p * p, frames, height // p, width // p)


def _unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The inverse of _patchify: (B, C * p * p, T, h, w) -> (B, C, T, h * p, w * p)."""
    if patch_size == 1:
        return x
    batch, patch_channels, frames, height, width = x.shape
    p = patch_size
    x = x.view(batch, patch_channels // (p * p), p, p, frames, height, width)  # (B, C, p_w, p_h, T, h, w)
    x = x.permute(0, 1, 4, 5, 3, 6, 2)                                         # (B, C, T, h, p_h, w, p_w)
    return x.reshape(batch, patch_channels // (p * p), frames, height * p, width * p)


def _chunks(length: int, size: int) -> list[tuple[int, int]]:
    """[0, 1), then [1, 1 + size), [1 + size, 1 + 2 size), ... up to `length`: frame 0 goes alone."""
    return [(0, 1)] + [(start, min(start + size, length)) for start in range(1, length, size)]


def _check_config(in_channels: int, out_channels: int, base_dim: int, z_dim: int, dim_mult: list[int],
                  num_res_blocks: int, temporal_downsample: list[bool], dropout: float, patch_size: int) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base_dim", base_dim),
                        ("z_dim", z_dim), ("num_res_blocks", num_res_blocks), ("patch_size", patch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise KinemaError(f"VAE config {name} must be a positive integer, got {value!r}")
    if not dim_mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in dim_mult):
        raise KinemaError(f"VAE config dim_mult must be a non-empty list of positive integers, got {dim_mult!r}")
    if len(temporal_downsample) != len(dim_mult) - 1:
        raise KinemaError(f"VAE config temporal_downsample needs one entry per down level "
                          f"({len(dim_mult) - 1} for dim_mult {dim_mult}), got {temporal_downsample!r}")
    if any((base_dim * mult) % 2 for mult in dim_mult[1:]):
        raise KinemaError(f"VAE config base_dim * dim_mult[1:] must be even (the upsamplers halve the channels), "
                          f"got base_dim {base_dim} and dim_mult {dim_mult}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise KinemaError(f"VAE config dropout must be in [0, 1), got {dropout!r}")


def _check_latent_stats(mean: Any, std: Any, z_dim: int) -> None:
    mean, std = list(mean), list(std)
    if len(mean) != z_dim or len(std) != z_dim:
        raise KinemaError(f"latents_mean and latents_std need {z_dim} values (z_dim), got {len(mean)} and {len(std)}")
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
        raise KinemaError("latents_mean must be finite and latents_std finite and > 0")


def _check_checkpoint_folder(folder: Path) -> None:
    """One-line errors for the usual ways a checkpoint folder is broken, before diffusers sees it."""
    where = f"cannot load VAE from '{folder}'"
    if not folder.exists():
        raise KinemaError(f"{where}: folder does not exist")
    if not folder.is_dir():
        raise KinemaError(f"{where}: not a folder (expected config.json and {WEIGHTS_NAME})")
    read_json_object(folder / "config.json", where)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise KinemaError(f"{where}: {WEIGHTS_NAME} is missing")
    from safetensors import safe_open

    try:
        with safe_open(weights, framework="pt") as file:
            names = file.keys()
            for name in names:  # every tensor's header and byte range, not only the first
                file.get_slice(name)
    except Exception as error:
        raise KinemaError(f"{where}: {WEIGHTS_NAME} is truncated or corrupt ({_one_line(error)})") from None


# ----------------------------------------------------------------------------- frames <-> tensors


def video_to_tensor(frames: Any) -> torch.Tensor:
    """uint8 frames (F, H, W, 3) or (B, F, H, W, 3) -> float32 (B, 3, F, H, W) in [-1, 1]."""
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8:
        raise KinemaError(f"frames must be uint8 RGB, got dtype {array.dtype}")
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5 or array.shape[-1] != 3:
        raise KinemaError(f"frames must have shape (frames, H, W, 3) or (batch, frames, H, W, 3), got {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 4, 1, 2, 3)  # (B, 3, F, H, W) uint8
    return tensor.float().div_(127.5).sub_(1.0)


def tensor_to_video(video: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) float in [-1, 1] (clipped) -> uint8 frames (B, F, H, W, 3)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise KinemaError(f"video must be a tensor of shape (batch, 3, frames, H, W), got {shape}")
    video = video.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    return video.to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
