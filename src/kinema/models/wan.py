"""Loaders for diffusers-format Wan2.1 / Wan2.2 folders (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` and the like).

A folder as the user downloaded it: ``model_index.json`` naming ``WanPipeline`` or ``WanImageToVideoPipeline``,
``transformer/`` (and ``transformer_2/`` for the Wan2.2 A14B pair of experts) in one safetensors file or in
shards with an index, ``vae/``, ``text_encoder/`` (UMT5), ``tokenizer/`` and ``scheduler/``.

Where kinema's classes compute what Wan's compute, the weights go into them, so every kinema capability works
on Wan weights (per-frame flow times for known frames, per-frame text for storyboards, windows):
- every Wan text-to-video transformer (Wan2.1 1.3B and 14B, Wan2.2 TI2V-5B and both A14B experts) is a
  ``VideoDiT`` after a key rename (``rename_wan_transformer_key``);
- the Wan2.1 VAE is a ``VideoVAE`` after ``rename_wan_keys``.
Wan2.2's 48-channel VAE has residual down/up blocks with averaging shortcuts and a different resampling layout;
rewriting it inside ``VideoVAE`` would double that file for one model, so ``WanVAE`` wraps diffusers' own
``AutoencoderKLWan`` behind the interface the pipeline uses, and its equality with diffusers holds by
construction. Wan's image-to-video transformers (Wan2.1 I2V with CLIP image tokens, Wan2.2 I2V A14B) are VideoDiTs
with ``image_dim`` and the known frames' mask and latents as extra input channels; ``ClipImageEncoder`` gives the
image tokens as diffusers does.

Weights are read lazily, shard by shard, straight to the target device and dtype: the model is built on the
``meta`` device and each tensor is assigned as it is read, so no full fp32 copy is ever made in host memory.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinema.config import WAN_PIPELINES, read_json_object
from kinema.errors import KinemaError
from kinema.models.dit import VideoDiT
from kinema.models.vae import LatentScaling, VideoVAE, rename_wan_keys

WEIGHTS = "diffusion_pytorch_model.safetensors"
# Wan's default negative prompt (its shared config's sample_neg_prompt): the model was trained to move away from it.
WAN_NEGATIVE_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
                       "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
                       "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
                       "杂乱的背景，三条腿，背景人很多，倒着走")


def wan_index(folder: Path) -> dict[str, Any] | None:
    """The model_index.json of a diffusers Wan folder, or None for a folder of another kind."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return index if isinstance(index, dict) and index.get("_class_name") in WAN_PIPELINES else None


# ----------------------------------------------------------------------------- lazy safetensors loading


def weight_files(folder: Path, what: str) -> list[Path]:
    """The safetensors files of a model folder: one file, or every shard its index names (each checked to exist)."""
    single = folder / WEIGHTS
    if single.is_file():
        return [single]
    index_file = folder / f"{WEIGHTS}.index.json"
    if not index_file.is_file():
        found = sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []
        hint = f" (found {', '.join(found)})" if found else ""
        raise KinemaError(f"{what}: no {WEIGHTS} nor its .index.json in '{folder}'{hint}")
    weight_map = read_json_object(index_file, what).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise KinemaError(f"{what}: {index_file.name} has no weight_map")
    shards = [folder / name for name in dict.fromkeys(weight_map.values())]
    for shard in shards:
        if not shard.is_file():
            raise KinemaError(f"{what}: shard {shard.name} named in {index_file.name} is missing")
    return shards


def stream_tensors(files: list[Path], device: torch.device, what: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor, one shard open at a time, read straight onto ``device``."""
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(file, framework="pt", device=str(device)) as handle:
                for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    yield name, handle.get_tensor(name)
        except KinemaError:
            raise
        except Exception as error:  # safetensors raises several types for a truncated or corrupt file
            raise KinemaError(f"{what}: {file.name} is truncated or corrupt ({' '.join(str(error).split())[:200]})"
                              ) from None


Rename = Callable[[str, torch.Tensor], tuple[str, torch.Tensor]]


def load_lazily(model: nn.Module, files: list[Path], rename: Rename, device: torch.device, dtype: torch.dtype,
                what: str) -> nn.Module:
    """Fill a model built on the meta device from safetensors files, tensor by tensor, on ``device`` in ``dtype``.
    Every parameter must be given once with its shape; a missing or misshapen one is a one-line KinemaError."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    loaded: set[str] = set()
    for name, tensor in stream_tensors(files, device, what):
        name, tensor = rename(name, tensor)
        if name not in expected:
            raise KinemaError(f"{what}: unexpected tensor '{name}' (the weights are not of the model config.json "
                              f"describes)")
        if tuple(tensor.shape) != expected[name]:
            raise KinemaError(f"{what}: shape mismatch for '{name}': {tuple(tensor.shape)} in the weights, "
                              f"{expected[name]} in config.json")
        model.load_state_dict({name: tensor.to(dtype) if tensor.is_floating_point() else tensor}, strict=False,
                              assign=True)
        loaded.add(name)
    missing = [name for name in expected if name not in loaded]
    if missing:
        raise KinemaError(f"{what}: {len(missing)} tensors missing from the weights, e.g. {missing[0]} "
                          f"(a shard may be missing or incomplete)")
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- the transformer


def rename_wan_transformer_key(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    """A diffusers ``WanTransformer3DModel`` tensor (text-to-video layout) with VideoDiT's name and shape."""
    key = key.removeprefix("condition_embedder.")
    key = re.sub(r"\.to_out\.0\.", ".to_out.", key)
    key = key.replace(".ffn.net.0.proj.", ".ffn.fc1.").replace(".ffn.net.2.", ".ffn.fc2.")
    key = key.replace("image_embedder.ff.net.0.proj.", "image_embedder.fc1.").replace(
        "image_embedder.ff.net.2.", "image_embedder.fc2.")
    if key in ("proj_out.weight", "proj_out.bias", "scale_shift_table"):
        key = f"final.{key}"
    if key.endswith("scale_shift_table"):  # (1, n, D) -> (1, 1, n, D): kinema modulates per latent frame
        value = value[:, None]
    return key, value


def rename_wan_transformer_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole diffusers ``WanTransformer3DModel`` state dict with VideoDiT's names and shapes."""
    return dict(rename_wan_transformer_key(key, value) for key, value in state_dict.items())


def transformer_config(config: dict[str, Any], what: str) -> dict[str, Any]:
    """VideoDiT's config for a diffusers ``WanTransformer3DModel`` config.json (text-to-video layout)."""
    if config.get("_class_name") != "WanTransformer3DModel":
        raise KinemaError(f"{what}: config.json names {config.get('_class_name')!r}, not WanTransformer3DModel")
    width = config.get("num_attention_heads", 40) * config.get("attention_head_dim", 128)
    if config.get("pos_embed_seq_len") is not None:
        raise KinemaError(f"{what}: first-last-frame models (pos_embed_seq_len) are not supported yet")
    if (config.get("image_dim") is None) != (config.get("added_kv_proj_dim") is None) or \
            config.get("added_kv_proj_dim") not in (None, width):
        raise KinemaError(f"{what}: image_dim and added_kv_proj_dim ({width}) go together, as in Wan2.1 I2V")
    if not config.get("cross_attn_norm", True) or config.get("qk_norm", "rms_norm_across_heads") != \
            "rms_norm_across_heads":
        raise KinemaError(f"{what}: only cross_attn_norm=true with qk_norm='rms_norm_across_heads' (Wan's) is "
                          f"supported")
    keys = ("in_channels", "out_channels", "patch_size", "num_attention_heads", "attention_head_dim", "ffn_dim",
            "num_layers", "text_dim", "freq_dim", "eps", "image_dim")
    defaults = dict(in_channels=16, out_channels=16, patch_size=[1, 2, 2], num_attention_heads=40,
                    attention_head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096, freq_dim=256, eps=1e-6,
                    image_dim=None)
    chosen = {key: config.get(key, defaults[key]) for key in keys}
    chosen["patch_size"] = tuple(chosen["patch_size"])
    return chosen


def load_transformer(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                     ) -> VideoDiT:
    """A Wan transformer folder (config.json + safetensors, sharded or not) as a VideoDiT on ``device``/``dtype``."""
    what = f"cannot load transformer from '{folder}'"
    config = transformer_config(read_json_object(folder / "config.json", what), what)
    files = weight_files(folder, what)
    with torch.device("meta"):
        model = VideoDiT(**config)
    return load_lazily(model, files, rename_wan_transformer_key, torch.device(device), dtype, what)


# ----------------------------------------------------------------------------- the VAE


class WanVAE(nn.Module, LatentScaling):
    """diffusers' ``AutoencoderKLWan`` (here: Wan2.2's 48-channel VAE) behind the interface of ``VideoVAE`` that the
    pipeline uses: ``encode(video).mode()``, ``decode(latents)``, ``normalize_latents`` / ``denormalize_latents``,
    ``temporal_compression``, ``spatial_compression``, ``latent_size`` and ``config.z_dim``. Its decode already
    runs one latent frame at a time with a causal cache (diffusers' own), so ``chunk_frames`` is accepted and
    not needed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.temporal_compression = int(model.config.scale_factor_temporal)
        self.spatial_compression = int(model.config.scale_factor_spatial)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, video: torch.Tensor, chunk_frames: int | None = None) -> Any:
        """Video (B, 3, 1 + 4k, H, W) in [-1, 1] -> the posterior over latents (``.mode()``, ``.sample()``)."""
        return self.model.encode(video).latent_dist

    def decode(self, latents: torch.Tensor, chunk_frames: int | None = None, clamp: bool = True) -> torch.Tensor:
        """Latents (B, C, 1 + k, h, w) -> video (B, 3, 1 + 4k, H, W)."""
        video = self.model.decode(latents, return_dict=False)[0]
        return video.clamp(-1.0, 1.0) if clamp else video


def vae_config(config: dict[str, Any], what: str) -> dict[str, Any]:
    """VideoVAE's config for a diffusers ``AutoencoderKLWan`` config.json in the Wan2.1 layout."""
    keys = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, dropout=0.0)
    chosen = {key: config.get(key, default) for key, default in keys.items()}
    chosen["temporal_downsample"] = config.get("temperal_downsample", [False, True, True])
    for key in ("latents_mean", "latents_std"):
        if key in config:
            chosen[key] = config[key]
    if config.get("attn_scales"):
        raise KinemaError(f"{what}: attn_scales {config['attn_scales']} (attention inside the levels) is not Wan's")
    return chosen


def load_vae(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
             ) -> VideoVAE | WanVAE:
    """A Wan VAE folder: the Wan2.1 layout as a VideoVAE, Wan2.2's (residual, patchified) as a ``WanVAE``."""
    what = f"cannot load VAE from '{folder}'"
    config = read_json_object(folder / "config.json", what)
    if config.get("_class_name") != "AutoencoderKLWan":
        raise KinemaError(f"{what}: config.json names {config.get('_class_name')!r}, not AutoencoderKLWan")
    files = weight_files(folder, what)
    if config.get("is_residual") or config.get("patch_size") or (config.get("decoder_base_dim") or
                                                                  config.get("base_dim")) != config.get("base_dim"):
        from diffusers import AutoencoderKLWan

        with torch.device("meta"):
            wrapped = AutoencoderKLWan.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        return WanVAE(load_lazily(wrapped, files, lambda k, v: (k, v), torch.device(device), dtype, what))
    with torch.device("meta"):
        try:
            model = VideoVAE(**vae_config(config, what))
        except TypeError as error:
            raise KinemaError(f"{what}: {error}") from None

    def rename(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
        return next(iter(rename_wan_keys({key: value}).items()))

    return load_lazily(model, files, rename, torch.device(device), dtype, what)


# ----------------------------------------------------------------------------- scheduler and defaults


def load_scheduler(folder: Path) -> Any:
    """The folder's diffusers scheduler (UniPC for the released Wan folders), from its config."""
    import diffusers

    what = f"cannot load scheduler from '{folder}'"
    config = read_json_object(folder / "scheduler_config.json", what)
    name = config.get("_class_name", "")
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.endswith("Scheduler") else None
    if cls is None:
        raise KinemaError(f"{what}: unknown scheduler {name!r}")
    try:
        return cls.from_config(config)
    except Exception as error:
        raise KinemaError(f"{what}: {' '.join(str(error).split())[:200]}") from None


def wan_kind(index: dict[str, Any], in_channels: int, z_dim: int) -> str:
    """wan2.1 (T2V 1.3B / 14B), wan2.1-i2v (CLIP image tokens and image channels), wan2.2-ti2v (5B, 48-channel
    VAE), wan2.2-a14b (a pair of experts) or wan2.2-i2v-a14b (a pair of image-to-video experts), from the index,
    the transformer's input channels and the VAE's latent channels."""
    image = in_channels > z_dim
    if index.get("boundary_ratio") is not None:
        return "wan2.2-i2v-a14b" if image else "wan2.2-a14b"
    if image:
        return "wan2.1-i2v"
    if z_dim == 48:
        return "wan2.2-ti2v"
    return "wan2.1"


def wan_defaults(kind: str, scheduler_config: Any) -> dict[str, Any]:
    """Sampling defaults of a Wan folder, as Wan's own generate.py and diffusers' model cards use them
    (``scheduler_config``: the folder's scheduler's, for its flow shift)."""
    shift = scheduler_config.get("flow_shift") or scheduler_config.get("shift")
    common = dict(steps=50, guidance_scale=5.0, sampler="scheduler", shift=float(shift) if shift else None,
                  fps=16.0, window=21, context=1, memory=2, context_noise=0.0, anchor=0.0,
                  negative_prompt=WAN_NEGATIVE_PROMPT, expand=False, size="832x480")
    if kind == "wan2.2-ti2v":
        return {**common, "fps": 24.0, "window": 31, "size": "1280x704"}
    if kind in ("wan2.2-a14b", "wan2.2-i2v-a14b"):
        return {**common, "steps": 40, "guidance_scale": 4.0, "guidance_scale_2": 3.0, "size": "1280x720"}
    return common


def folder_defaults(folder: Path) -> dict[str, Any]:
    """A Wan folder's sampling defaults from its JSON files alone (the CLI checks requests against them before any
    weights load); one-line KinemaError for a broken file."""
    index = wan_index(folder) or {}
    transformer = read_json_object(folder / "transformer" / "config.json", f"cannot load '{folder / 'transformer'}'")
    vae = read_json_object(folder / "vae" / "config.json", f"cannot load '{folder / 'vae'}'")
    scheduler = read_json_object(folder / "scheduler" / "scheduler_config.json",
                                 f"cannot load scheduler from '{folder / 'scheduler'}'")
    in_channels, z_dim = transformer.get("in_channels", 16), vae.get("z_dim", 16)
    if not isinstance(in_channels, int) or not isinstance(z_dim, int):
        raise KinemaError(f"model folder '{folder}': in_channels and z_dim must be integers")
    return wan_defaults(wan_kind(index, in_channels, z_dim), scheduler)


def size_multiple(vae: VideoVAE | WanVAE, transformer: VideoDiT) -> int:
    """Width and height of a Wan model are multiples of this: the VAE's compression times the patch."""
    _, ph, pw = transformer.config.patch_size
    return vae.spatial_compression * math.lcm(ph, pw)


def folder_sha256(folder: Path) -> str | None:
    """The sha256 that names a Wan model's weights in provenance: of its one weights file, or of the shard index
    of a sharded one (which lists every tensor's shard; hashing tens of GB on each load would take minutes)."""
    import hashlib

    for name in (WEIGHTS, f"{WEIGHTS}.index.json"):
        path = folder / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    return None


def weights_bytes(folder: Path, dtype: torch.dtype) -> int:
    """Bytes the floating-point tensors of a model folder take in ``dtype``, from the safetensors headers only."""
    from safetensors import safe_open

    size = torch.tensor([], dtype=dtype).element_size()
    total = 0
    for file in weight_files(folder, f"cannot read '{folder}'"):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                total += math.prod(handle.get_slice(name).get_shape()) * size
    return total


def check_gpu_memory(folder: Path, device: torch.device, dtype: torch.dtype) -> None:
    """A one-line KinemaError, before anything loads, when the transformer(s) alone would not fit the GPU's free
    memory, saying what would: CPU offload, or a smaller dtype."""
    free, _ = torch.cuda.mem_get_info(device)
    sizes = [weights_bytes(folder / name, dtype) for name in ("transformer", "transformer_2")
             if (folder / name).is_dir()]
    if sum(sizes) <= free:
        return
    # the A14B experts take turns: with model offload only one model is on the GPU at a time
    hint = "--offload model (one model on the GPU at a time)" if max(sizes) < free else \
        "--offload sequential (layer by layer; slow)"
    if dtype == torch.float32:
        hint += ", or --dtype bfloat16 (half the bytes)"
    name = str(dtype).removeprefix("torch.")
    raise KinemaError(f"model '{folder.name}' needs {sum(sizes) / 2**30:.1f} GiB of {name} weights on {device}, "
                      f"which has {free / 2**30:.1f} GiB free: use {hint}")


class ClipImageEncoder:
    """The image encoder of a Wan2.1 image-to-video folder (``image_encoder/`` CLIP vision, ``image_processor/``):
    an image's tokens as diffusers' ``WanImageToVideoPipeline.encode_image`` gives them, the penultimate hidden
    states (B, M, D_image)."""

    def __init__(self, folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        try:
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # no hint about torchvision's faster image processor
            self.processor = CLIPImageProcessor.from_pretrained(folder / "image_processor", local_files_only=True)
            self.model = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder",
                                                                       local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as error:
            raise KinemaError(f"cannot load the image encoder from '{folder}': {str(error).splitlines()[0]}"
                              ) from None
        self.model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, images: list[Any]) -> torch.Tensor:
        """uint8 images (H, W, 3) -> tokens (B, M, D_image), float32."""
        from PIL import Image

        pixels = self.processor(images=[Image.fromarray(image) for image in images], return_tensors="pt")
        pixels = pixels["pixel_values"].to(self.device, self.model.dtype)
        return self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].float()
