"""Diffusion transformer over spacetime latent patches, in the Wan2.1 block design.

kinema's two extensions reduce exactly to the plain design when unused:
- the timestep has one value per latent frame, shape (B, F'), so that known frames can enter clean
  (t = 0) next to frames being denoised; a scalar or (B,) timestep broadcasts;
- each latent frame may cross-attend to its own text sequence (its shot's caption): the text is
  (B, S, L, D) with a frame -> sequence index of shape (B, F'); S = 1 is plain cross-attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from kinema.errors import KinemaError
from kinema.models.parallel import SequenceParallel

# Sequence parallelism inside one pass: the group, and the pass's latent frames and tokens per frame.
Shards = tuple[SequenceParallel, int, int]

DIT_CONFIGS: dict[str, dict] = {
    # CPU default: 4.0M parameters.
    "tiny": dict(num_layers=6, num_attention_heads=4, attention_head_dim=48, ffn_dim=768, text_dim=384),
    "small": dict(num_layers=10, num_attention_heads=6, attention_head_dim=64, ffn_dim=1536, text_dim=384),
    "base": dict(num_layers=20, num_attention_heads=12, attention_head_dim=64, ffn_dim=3072, text_dim=384),
    # The dims of Wan2.1-T2V-1.3B (with a UMT5 text encoder).
    "wan2.1-1.3b": dict(num_layers=30, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, text_dim=4096),
}


_GELU_K = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (Wan's), written as x * sigmoid(2u) with u = sqrt(2/pi)(x + 0.044715 x^3).

    0.5 (1 + tanh(u)) = sigmoid(2u), so this is the same function (to about 5e-7 in fp32). It runs about
    twice as fast as ``F.gelu(x, approximate="tanh")`` on CPU builds whose tanh is not vectorised, and
    without autograd it works in place on one buffer.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return x * torch.sigmoid(torch.addcmul(x * _GELU_K, x * x, x, value=_GELU_K * 0.044715))
    inner = x * x
    inner.mul_(_GELU_K * 0.044715).add_(_GELU_K).mul_(x)
    return inner.sigmoid_().mul_(x)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosines first (as Wan). t: any shape -> (*t.shape, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Timestep (flow time in [0, 1], scaled by 1000 as Wan's) -> vector of size dim."""

    def __init__(self, dim: int, freq_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = timestep_embedding(t * 1000.0, self.freq_dim).to(self.linear_1.weight.dtype)  # (B, F', freq_dim)
        return self.linear_2(F.silu(self.linear_1(x)))  # (B, F', D)


class TextProjection(nn.Module):
    """Text encoder states -> model width."""

    def __init__(self, text_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(text_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.linear_2(gelu_tanh(self.linear_1(text)))


class RotaryEmbedding3D(nn.Module):
    """3D RoPE: the head dimension is split over (t, h, w) as in Wan: h and w get 2*(d//6) each.

    Positions are computed at run time for any (F', H', W'), so there is no position table;
    ``frame_positions`` lets long-video windows place their frames anywhere in time. ``spatial_scale``
    multiplies the row and column positions: 0.5 places tokens of 1×1 patches where a 2×2-patch model
    placed the patches that held them, so that such a model can be continued with smaller patches.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.spatial_scale = float(spatial_scale)
        self.h_dim = self.w_dim = 2 * (head_dim // 6)
        self.t_dim = head_dim - self.h_dim - self.w_dim
        self.theta = theta
        self._tables: dict[tuple, torch.Tensor] = {}

    def _angles(self, positions: torch.Tensor, dim: int) -> torch.Tensor:
        freqs = 1.0 / self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
        return positions.double()[:, None] * freqs[None]  # (n, dim/2)

    def forward(self, frames: int, height: int, width: int, device: torch.device | str,
                frame_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotations (N, head_dim/2, 2) as (cos, sin), N = frames * height * width in (t, h, w) order.

        The last few tables are kept: a sampler asks for the same one at every step."""
        positions = None if frame_positions is None else tuple(int(p) for p in frame_positions.tolist())
        key = (frames, height, width, str(device), positions)
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        # A plain tensor even under inference mode, so that a table made while evaluating serves training.
        with torch.inference_mode(False), torch.no_grad():
            if frame_positions is None:
                frame_positions = torch.arange(frames, device=device)
            t = self._angles(frame_positions.to(device), self.t_dim)  # (F', t_dim/2)
            h = self._angles(torch.arange(height, device=device) * self.spatial_scale, self.h_dim)  # (H', h_dim/2)
            w = self._angles(torch.arange(width, device=device) * self.spatial_scale, self.w_dim)  # (W', w_dim/2)
            angles = torch.cat([
                t[:, None, None].expand(frames, height, width, -1),
                h[None, :, None].expand(frames, height, width, -1),
                w[None, None, :].expand(frames, height, width, -1),
            ], dim=-1).reshape(frames * height * width, -1)  # (N, head_dim/2)
            table = torch.stack([angles.cos(), angles.sin()], dim=-1).float()  # (N, head_dim/2, 2)
        if len(self._tables) >= 8:
            self._tables.pop(next(iter(self._tables), None), None)
        self._tables[key] = table
        return table


def apply_rotary(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) by the table's angles. x: (..., N, d); rotation: (N, d/2, 2)
    holding (cos, sin).

    Eager: one complex product in float32, (x[2i] + i x[2i+1]) * (cos + i sin). Under ``torch.compile`` the
    same rotation is written with real tensors, which the compiler fuses into one kernel."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., N, d/2, 2)
    if torch.compiler.is_compiling():
        x1, x2 = pairs.unbind(-1)
        cos, sin = rotation.unbind(-1)
        out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    else:
        out = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rotation))
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    """Multi-head attention with RMSNorm on q and k across heads (Wan's qk norm)."""

    def __init__(self, dim: int, heads: int, eps: float, image: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        if image:  # Wan2.1 image to video: a second cross-attention, to the image's tokens, summed with the text's
            self.add_k_proj = nn.Linear(dim, dim)
            self.add_v_proj = nn.Linear(dim, dim)
            self.norm_added_k = nn.RMSNorm(dim, eps=eps)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (..., heads, n, d)

    def self_attention(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None = None,
                       past: FrameKV | None = None, shards: Shards | None = None) -> torch.Tensor:
        """``past``: keys and values of earlier frames (a frame cache), attended to before x's own; the new keys
        and values are left in ``past.new`` for the cache to keep if it commits these frames. ``shards``: x holds
        this rank's tokens only; attention runs on this rank's heads of every token (``kinema.models.parallel``),
        and a frame cache holds those heads."""
        q = apply_rotary(self.split(self.norm_q(self.to_q(x))), rope)  # (B, heads, N, d)
        k = apply_rotary(self.split(self.norm_k(self.to_k(x))), rope)  # (B, heads, N, d)
        v = self.split(self.to_v(x))  # (B, heads, N, d)
        if shards is not None:  # one all-to-all for q, k and v: (3B, heads, N_local, d) -> (3B, heads / P, N, d)
            group, frames, per_frame = shards
            q, k, v = group.heads_to_tokens(torch.cat([q, k, v]), frames, per_frame).chunk(3)
        if past is not None:
            past.new = (k, v)
            if past.keys is not None:
                k = torch.cat([past.keys, k], dim=2)  # (B, heads, N_past + N, d)
                v = torch.cat([past.values, v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, d)
        if shards is not None:
            out = group.tokens_to_heads(out, frames, per_frame)  # (B, heads, N_local, d)
        return self.to_out(out.transpose(1, 2).flatten(2))  # (B, N, D)

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of text states (B, S, L, D): the part of cross-attention that only the text decides."""
        return self.norm_k(self.to_k(text)), self.to_v(text)

    def image_kv(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of projected image tokens (B, M, D), for the image cross-attention."""
        return self.norm_added_k(self.add_k_proj(image)), self.add_v_proj(image)

    def cross_attention(self, x: torch.Tensor, text: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                        text_mask: torch.Tensor | None, frame_text_index: torch.Tensor | None,
                        frames: int, image: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, N, D) with N = F' * HW; text: (B, S, L, D), or its (keys, values) from ``text_kv``;
        text_mask: (B, S, L); index: (B, F'); image: the image tokens' (keys, values) (B, M, D) each, whose
        attention is added to the text's before the output projection (Wan2.1 image to video)."""
        b, n, dim = x.shape
        q = self.norm_q(self.to_q(x))  # (B, N, D)
        k, v = text if isinstance(text, tuple) else self.text_kv(text)  # (B, S, L, D) each
        s = k.shape[1]
        mask = None
        extra = 0.0
        if image is not None:
            out = F.scaled_dot_product_attention(self.split(q), self.split(image[0]), self.split(image[1]))
            extra = out.transpose(1, 2).flatten(2)  # (B, N, D)
        if s == 1 and frame_text_index is None:
            q = self.split(q)  # (B, heads, N, d)
            k, v = self.split(k[:, 0]), self.split(v[:, 0])  # (B, heads, L, d)
            if text_mask is not None:
                mask = text_mask[:, 0, None, None, :]  # (B, 1, 1, L)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, d)
            return self.to_out(out.transpose(1, 2).flatten(2) + extra)
        # Per-frame text: each frame's queries attend to the sequence its index picks.
        if frame_text_index is None:
            frame_text_index = torch.zeros(b, frames, dtype=torch.long, device=x.device)
        rows = torch.arange(b, device=x.device)[:, None]
        k = k[rows, frame_text_index]  # (B, F', L, D)
        v = v[rows, frame_text_index]  # (B, F', L, D)
        q = self.split(q.reshape(b * frames, n // frames, dim))  # (B*F', heads, HW, d)
        k = self.split(k.flatten(0, 1))  # (B*F', heads, L, d)
        v = self.split(v.flatten(0, 1))  # (B*F', heads, L, d)
        if text_mask is not None:
            mask = text_mask[rows, frame_text_index].flatten(0, 1)[:, None, None, :]  # (B*F', 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*F', heads, HW, d)
        return self.to_out(out.transpose(1, 2).flatten(2).reshape(b, n, dim) + extra)  # (B, N, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class ImageProjection(nn.Module):
    """Image encoder tokens (CLIP's penultimate states) -> model width: LayerNorm, GELU MLP, LayerNorm (Wan2.1's
    image embedder; its norms run in fp32)."""

    def __init__(self, image_dim: int, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(image_dim)
        self.fc1 = nn.Linear(image_dim, image_dim)
        self.fc2 = nn.Linear(image_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.norm1(image.float()).to(self.fc1.weight.dtype)  # (B, M, D_image)
        x = self.fc2(F.gelu(self.fc1(x)))  # (B, M, D)
        return self.norm2(x.float()).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """x: (B, N, D); shift, scale: (B, F', D), applied to the tokens of each frame."""
    b, n, d = x.shape
    return torch.addcmul(shift[:, :, None], x.view(b, frames, n // frames, d), 1 + scale[:, :, None]).view(b, n, d)


def add_gated(x: torch.Tensor, h: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    """x + h * gate, with gate (B, F', D) applied to the tokens of each frame."""
    b, n, d = x.shape
    shape = (b, frames, n // frames, d)
    return torch.addcmul(x.view(shape), h.view(shape), gate[:, :, None]).view(b, n, d)


class DiTBlock(nn.Module):
    """Self-attention (3D RoPE) -> cross-attention to text -> MLP, with adaLN per latent frame."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, eps: float, image: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.attn1 = Attention(dim, heads, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True)  # before cross-attention
        self.attn2 = Attention(dim, heads, eps, image)
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = FeedForward(dim, ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 1, 6, dim))

    def forward(self, hidden_states: torch.Tensor, modulation: torch.Tensor,
                text: torch.Tensor | tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor | None,
                frame_text_index: torch.Tensor | None, rope: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past: FrameKV | None = None, shards: Shards | None = None,
                image: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """hidden_states: (B, N, D), named as diffusers' blocks name it, which its cache hooks look up."""
        x = hidden_states
        frames = modulation.shape[1]
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table + modulation).unbind(2)  # (B, F', D)
        h = self.attn1.self_attention(modulate(self.norm1(x), shift1, scale1, frames), rope,
                                      attention_mask, past, shards)  # (B, N, D)
        x = add_gated(x, h, gate1, frames)
        x = x + self.attn2.cross_attention(self.norm2(x), text, text_mask, frame_text_index, frames, image)
        h = self.ffn(modulate(self.norm3(x), shift2, scale2, frames))  # (B, N, D)
        return add_gated(x, h, gate2, frames)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, out_dim)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 1, 2, dim))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table + temb[:, :, None]).unbind(2)  # (B, F', D) each
        return self.proj_out(modulate(self.norm(x), shift, scale, temb.shape[1]))


@dataclass
class FrameKV:
    """One block's self-attention keys and values of the frames in a frame cache, (B, heads, N_past, d) each, and
    those of the frames of the current call (``new``)."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    new: tuple[torch.Tensor, torch.Tensor] | None = None


class FrameCache:
    """Self-attention keys and values of the latent frames made so far, for frame-by-frame (causal) generation.

    A frame's keys and values depend only on it and the frames before it under a block-causal mask, so they are
    computed once, when the frame is committed, and every later frame attends to them (a KV cache, as in
    CausVid and Self-Forcing)."""

    def __init__(self, blocks: int) -> None:
        self.layers = [FrameKV() for _ in range(blocks)]
        self.frames = 0  # latent frames held
        self.tokens_per_frame = 0
        # Set by a sampler before the call whose keys and values it will commit: that call must run every block
        # (a step cache must not reuse an earlier call's residual for it). ``commit`` clears it.
        self.committing = False

    def commit(self, frames: int) -> None:
        """Keep the keys and values of the last call's frames (those just made, at their context noise level)."""
        if any(layer.new is None for layer in self.layers):
            raise KinemaError("frame cache: the call before a commit did not run every block")
        self.committing = False
        for layer in self.layers:
            k, v = layer.new
            layer.keys = k if layer.keys is None else torch.cat([layer.keys, k], dim=2)
            layer.values = v if layer.values is None else torch.cat([layer.values, v], dim=2)
            layer.new = None
        self.frames += frames


def block_causal(frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(F', F') bool: latent frame i may attend to frame j iff j <= i."""
    return torch.ones(frames, frames, dtype=torch.bool, device=device).tril()


def teacher_forcing_frames(frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(2F', 2F') bool for a sequence of F' clean frames followed by F' noisy ones (teacher forcing): clean frame i
    sees clean frames <= i; noisy frame i sees clean frames < i and itself, as it will when generated in turn."""
    causal = block_causal(frames, device)
    top = torch.cat([causal, torch.zeros_like(causal)], dim=1)
    bottom = torch.cat([causal.tril(-1), torch.eye(frames, dtype=torch.bool, device=device)], dim=1)
    return torch.cat([top, bottom], dim=0)


def frame_attention_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Expand a (F', F') frame-level mask to tokens, (N, N) with N = F' * tokens_per_frame."""
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


@dataclass
class TextContext:
    """Text made ready for cross-attention: the projected states (B, S, L, D), optionally every block's
    (keys, values) (each (B, S, L, D)), and the mask (B, S, L)."""

    states: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None
    mask: torch.Tensor | None
    image: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # every block's image (keys, values), (B, M, D)


class VideoDiT(ModelMixin, ConfigMixin, CacheMixin):
    """Predicts the flow-matching velocity of latent video (B, C, F', H', W').

    ``CacheMixin`` is diffusers' own: ``enable_cache(FirstBlockCacheConfig(threshold=...))`` reuses the residual of
    the blocks after the first while the first block's output barely changes from one call to the next (step
    caching; see ``enable_cache``)."""

    _supports_gradient_checkpointing = True
    _repeated_blocks = ("DiTBlock",)  # regional compilation: ``model.compile_repeated_blocks()``

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int = 16,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 4,
        attention_head_dim: int = 48,
        ffn_dim: int = 768,
        num_layers: int = 6,
        text_dim: int = 384,
        freq_dim: int = 256,
        eps: float = 1e-6,
        rope_theta: float = 10000.0,
        rope_spatial_scale: float = 1.0,
        causal: bool = False,
        image_dim: int | None = None,
    ) -> None:
        super().__init__()
        if patch_size[0] != 1:
            raise KinemaError(f"patch_size {tuple(patch_size)}: the time patch must be 1 (per-frame timesteps)")
        dim = num_attention_heads * attention_head_dim
        per_token = out_channels * math.prod(patch_size)
        if per_token > dim:
            # The final projection maps the width onto a token's latent values; narrower than them, it leaves
            # directions the velocity can never reach, and the sampler's noise stays there in every latent.
            raise KinemaError(f"patch_size {tuple(patch_size)} with {out_channels} channels gives {per_token} latent "
                              f"values a token, more than the model width {dim} ({num_attention_heads} heads x "
                              f"{attention_head_dim}): widen the model or use a smaller patch")
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=tuple(patch_size), stride=tuple(patch_size))
        self.time_embedder = TimestepEmbedder(dim, freq_dim)
        self.time_proj = nn.Linear(dim, 6 * dim)
        self.text_embedder = TextProjection(text_dim, dim)
        if not 0 < rope_spatial_scale <= 1:
            raise KinemaError(f"rope_spatial_scale {rope_spatial_scale} must be in (0, 1]")
        self.rope = RotaryEmbedding3D(attention_head_dim, rope_theta, rope_spatial_scale)
        # image_dim: Wan2.1 image to video, whose blocks also attend to an image encoder's tokens
        self.image_embedder = ImageProjection(image_dim, dim) if image_dim else None
        self.blocks = nn.ModuleList([DiTBlock(dim, ffn_dim, num_attention_heads, eps, bool(image_dim))
                                     for _ in range(num_layers)])
        self.final = FinalLayer(dim, out_channels * math.prod(patch_size), eps)
        self.gradient_checkpointing = False
        self.sequence_parallel: SequenceParallel | None = None  # set_sequence_parallel
        self.initialize_weights()

    def set_sequence_parallel(self, group: SequenceParallel | None) -> None:
        """Share every pass's tokens among the ranks of ``group`` (Ulysses; inference only), or stop (None).
        Each rank must then call the model with the same inputs; each gets the whole output."""
        if group is not None:
            group.check_heads(self.config.num_attention_heads)
        self.sequence_parallel = group

    def enable_cache(self, config) -> None:
        """diffusers' step caching (``CacheMixin.enable_cache``). First-Block Cache applies as it is: its hooks find
        the blocks by diffusers' registry of transformer blocks, where ``DiTBlock`` is entered here (hidden_states
        in, hidden_states out, as Wan's block). The other techniques do not: Pyramid Attention Broadcast and
        FasterCache wrap diffusers' own attention classes, TaylorSeer and MagCache need a step index or per-model
        calibration from the pipeline; they are refused in one line.

        A caller wraps each call in ``cache_context(name)`` and calls ``_reset_stateful_cache()`` between
        generations, as diffusers' pipelines do; ``KinemaPipeline.denoise`` does both."""
        from diffusers.hooks import FirstBlockCacheConfig
        from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

        if not isinstance(config, FirstBlockCacheConfig):
            raise KinemaError(f"{type(config).__name__}: VideoDiT supports diffusers' FirstBlockCacheConfig only")
        TransformerBlockRegistry.register(DiTBlock, TransformerBlockMetadata(return_hidden_states_index=0))
        super().enable_cache(config)

    @classmethod
    def from_name(cls, name: str, **overrides) -> VideoDiT:
        if name not in DIT_CONFIGS:
            raise KinemaError(f"unknown DiT config '{name}' (choose from {', '.join(DIT_CONFIGS)})")
        return cls(**{**DIT_CONFIGS[name], **overrides})

    def initialize_weights(self) -> None:
        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(xavier)
        w = self.patch_embedding.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embedding.bias)
        nn.init.normal_(self.time_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embedder.linear_2.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, and the output starts at zero.
        nn.init.zeros_(self.time_proj.weight)
        nn.init.zeros_(self.time_proj.bias)
        nn.init.zeros_(self.final.proj_out.weight)
        nn.init.zeros_(self.final.proj_out.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, N, D), N = F' * H'/p * W'/p

    def unpatchify(self, x: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """(B, N, C * pt * ph * pw) -> (B, C, F', H', W')."""
        pt, ph, pw = self.config.patch_size
        b = x.shape[0]
        x = x.reshape(b, frames // pt, height // ph, width // pw, pt, ph, pw, -1)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, F', pt, H'', ph, W'', pw)
        return x.reshape(b, -1, frames, height, width)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor | None = None,
                     per_block: bool = True, image: torch.Tensor | None = None) -> TextContext:
        """Project text states (B, L, D_text) or (B, S, L, D_text) to the model width and, with ``per_block``,
        compute every block's cross-attention keys and values; reused by every ``forward`` given it. ``image``:
        image encoder tokens (B, M, D_image) for a model with ``image_dim``, made into every block's image keys
        and values."""
        if text.ndim == 3:
            text = text[:, None]  # (B, 1, L, D_text)
            text_mask = None if text_mask is None else text_mask[:, None]
        if text.ndim != 4:
            raise KinemaError(f"text must be (B, L, D) or (B, S, L, D), got shape {tuple(text.shape)}")
        if text_mask is not None:
            text_mask = text_mask.bool()
        context = self.text_embedder(text)  # (B, S, L, D)
        kv = [block.attn2.text_kv(context) for block in self.blocks] if per_block else None
        if (image is None) != (self.image_embedder is None):
            raise KinemaError("an image-to-video model needs image tokens, and only it takes them" if image is None
                              else "image tokens given to a model without image cross-attention")
        image_kv = None
        if image is not None:
            tokens = self.image_embedder(image)  # (B, M, D)
            image_kv = [block.attn2.image_kv(tokens) for block in self.blocks]
        return TextContext(context, kv, text_mask, image_kv)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        text: torch.Tensor | TextContext,
        text_mask: torch.Tensor | None = None,
        frame_text_index: torch.Tensor | None = None,
        frame_positions: torch.Tensor | None = None,
        attention_frames: torch.Tensor | None = None,
        cache: FrameCache | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity for latents x (B, C, F', H', W').

        timestep: scalar, (B,) or (B, F') flow times in [0, 1].
        text: (B, L, D_text) or (B, S, L, D_text); text_mask: (B, L) or (B, S, L), True for real tokens.
            Or a ``TextContext`` from ``prepare_text`` (then text_mask is ignored): a sampler that calls the
            model many times with the same text computes the text's keys and values once.
        frame_text_index: (B, F') index into S, or None (every frame uses sequence 0).
        frame_positions: (F',) temporal RoPE positions, or None for 0..F'-1 (after a cache's frames, with one).
        attention_frames: (F', F') bool, which latent frames each frame attends to (None: all).
        cache: a ``FrameCache``: x's frames follow the cached ones and attend to them all, and causally to each
            other; ``cache.commit`` then keeps their keys and values.
        condition: (B, C_cond, F', H', W') channels joined to x before patchifying (Wan2.1 image to video: the
            known frames' mask and latents), for a model with in_channels = C + C_cond.
        """
        b, _, frames, height, width = x.shape
        _, ph, pw = self.config.patch_size
        if height % ph or width % pw:
            raise KinemaError(f"latent size {height}x{width} must be divisible by the patch size {ph}x{pw}")
        t = torch.as_tensor(timestep, dtype=torch.float32, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.ndim == 1:
            t = t[:, None].expand(b, frames)  # (B, F')
        if t.shape != (b, frames):
            raise KinemaError(f"timestep shape {tuple(t.shape)} must be (), ({b},) or ({b}, {frames})")
        if not isinstance(text, TextContext):
            text = self.prepare_text(text, text_mask, per_block=False)
        if text.states.shape[0] != b:
            raise KinemaError(f"text batch {text.states.shape[0]} does not match the latent batch {b}")
        mask = None
        per_frame = (height // ph) * (width // pw)
        if cache is not None:
            for layer in cache.layers:  # each block that runs sets its own; a block skipped leaves None
                layer.new = None
        if cache is not None and frame_positions is None:
            frame_positions = torch.arange(cache.frames, cache.frames + frames, device=x.device)
        rope = self.rope(frames, height // ph, width // pw, x.device, frame_positions)
        if cache is not None:
            if frames > 1:
                visible = torch.cat([torch.ones(frames, cache.frames, dtype=torch.bool, device=x.device),
                                     block_causal(frames, x.device)], dim=1)  # (F', F'_past + F')
                mask = visible.repeat_interleave(per_frame, 0).repeat_interleave(per_frame, 1)
        elif attention_frames is not None:
            mask = frame_attention_mask(attention_frames, per_frame)  # (N, N)
        elif self.config.causal:
            mask = frame_attention_mask(block_causal(frames, x.device), per_frame)
        h = self.patchify(x if condition is None else torch.cat([x, condition.to(x.dtype)], dim=1))  # (B, N, D)
        shards = None
        if self.sequence_parallel is not None:  # this rank's share of every frame's tokens
            shards = (self.sequence_parallel, frames, per_frame)
            tokens = self.sequence_parallel.local_tokens(frames, per_frame, x.device)
            h, rope = h[:, tokens], rope[tokens]  # (B, N_local, D), (N_local, d/2, 2)
        temb = self.time_embedder(t)  # (B, F', D)
        modulation = self.time_proj(F.silu(temb)).unflatten(-1, (6, -1))  # (B, F', 6, D)
        for n, block in enumerate(self.blocks):
            context = text.states if text.kv is None else text.kv[n]  # the states, or (keys, values)
            image = None if text.image is None else text.image[n]
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = torch.utils.checkpoint.checkpoint(block, h, modulation, context, text.mask, frame_text_index,
                                                      rope, mask, None, None, image,
                                                      use_reentrant=False)
            else:
                past = None if cache is None else cache.layers[n]
                h = block(h, modulation, context, text.mask, frame_text_index, rope, mask, past, shards,
                          image)  # (B, N, D)
        h = self.final(h, temb)  # (B, N, C * pt * ph * pw)
        if shards is not None:
            h = self.sequence_parallel.gather_tokens(h, frames, per_frame)  # every rank's tokens
        return self.unpatchify(h, frames, height, width)  # (B, C, F', H', W')
