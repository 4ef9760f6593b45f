"""LoRAs for the Wan transformer (``VideoDiT``) in the format ``WanPipeline.load_lora_weights`` reads.

A LoRA file is safetensors in diffusers/PEFT naming (``transformer.blocks.0.attn1.to_q.lora_A.weight`` with the
adapter config, ``r`` and ``lora_alpha``, in the metadata as diffusers' ``save_lora_weights`` writes it), or one
of the community formats diffusers converts (original Wan ``diffusion_model.*`` keys with ``.alpha``, musubi's
``lora_unet_*``): ``WanLoraLoaderMixin.lora_state_dict`` does that conversion, on tensors read here without
unpickling anything.

A LoRA is applied as a forward hook on each adapted ``nn.Linear``: ``y = W x + b + scale * B (A x)``, the sum
PEFT computes, without touching the weights. So removing it is exact (a server applies a request's LoRAs for one
job only), and kinema's frames with a LoRA equal diffusers' with the same LoRA loaded through PEFT.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from kinema.errors import KinemaError
from kinema.models.wan import rename_wan_transformer_key

METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights keeps the adapter config
MAX_SCALE = 10.0


@dataclass
class LoraLayer:
    """One adapted linear layer: down (r, in), up (out, r), an optional up bias (out,), and alpha / r."""

    down: torch.Tensor
    up: torch.Tensor
    bias: torch.Tensor | None
    scale: float


EXPERTS = ("high", "low")  # Wan2.2 A14B: the high-noise expert (transformer) and the low-noise one (transformer_2)


class LoraSpec(NamedTuple):
    """A LoRA to apply: its file, its scale, and for Wan2.2 A14B which expert takes it (diffusers' default, the
    high-noise ``transformer``; ``low``: ``transformer_2``, as ``load_lora_weights(load_into_transformer_2=True)``)."""

    path: str
    scale: float = 1.0
    expert: str = "high"


def parse_lora_spec(spec: str) -> LoraSpec:
    """``[high=|low=]FILE[:SCALE]`` (scale 1 when absent) -> LoraSpec; one-line KinemaError for a bad scale."""
    expert, path, scale = "high", spec, 1.0
    prefix = re.fullmatch(r"(high|low)=(.*)", spec)
    if prefix:
        expert, path = prefix.group(1), prefix.group(2)
    match = re.fullmatch(r"(.+):([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)", path)
    if match:
        path, scale = match.group(1), float(match.group(2))
    if not path:
        raise KinemaError(f"lora '{spec}': give [high=|low=]FILE[:SCALE]")
    if not -MAX_SCALE <= scale <= MAX_SCALE:
        raise KinemaError(f"lora '{spec}': scale {scale:g} must be between -{MAX_SCALE:g} and {MAX_SCALE:g}")
    return LoraSpec(path, scale, expert)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file (never a pickle); one-line errors for a bad file."""
    from safetensors import safe_open

    if path.suffix != ".safetensors":
        raise KinemaError(f"lora '{path}': only .safetensors files are read (pickled .bin/.pt files are not)")
    if not path.is_file():
        raise KinemaError(f"lora '{path}' does not exist")
    try:
        with safe_open(path, framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118
    except Exception as error:
        raise KinemaError(f"lora '{path}' is not a readable safetensors file ({' '.join(str(error).split())[:160]})"
                          ) from None


def adapter_config(metadata: dict[str, str]) -> dict:
    """The PEFT adapter config diffusers stores with a LoRA (keys as given, or under ``transformer.``)."""
    try:
        config = json.loads(metadata.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        return {}
    if not isinstance(config, dict):
        return {}
    return {key.removeprefix("transformer."): value for key, value in config.items()}


def read_lora(path: str | Path) -> dict[str, LoraLayer]:
    """A LoRA file as {VideoDiT module name: LoraLayer}."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    path = Path(path)
    tensors, metadata = read_safetensors(path)
    try:
        state = WanLoraLoaderMixin.lora_state_dict(tensors)  # community formats -> diffusers names
    except Exception as error:
        raise KinemaError(f"lora '{path}': not a Wan LoRA diffusers can read ({' '.join(str(error).split())[:160]})"
                          ) from None
    state = {key.removeprefix("transformer."): value for key, value in state.items()
             if not key.startswith(("text_encoder.", "image_encoder."))}
    config = adapter_config(metadata)
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    layers: dict[str, LoraLayer] = {}
    for key in state:
        if not key.endswith(".lora_A.weight"):
            if not re.search(r"\.lora_[AB]\.(weight|bias)$", key):
                raise KinemaError(f"lora '{path}': tensor '{key}' is not a LoRA weight (only lora_A/lora_B are read)")
            continue
        module = key.removesuffix(".lora_A.weight")
        up = state.get(f"{module}.lora_B.weight")
        if up is None:
            raise KinemaError(f"lora '{path}': '{module}' has lora_A but no lora_B")
        down = state[key]
        rank = int(rank_pattern.get(module, config.get("r", down.shape[0])))
        alpha = float(alpha_pattern.get(module, config.get("lora_alpha", rank)))
        name = rename_wan_transformer_key(f"{module}.weight", down)[0].removesuffix(".weight")
        layers[name] = LoraLayer(down, up, state.get(f"{module}.lora_B.bias"), alpha / rank)
    if not layers:
        raise KinemaError(f"lora '{path}': no transformer LoRA weights in it")
    return layers


def apply_lora(model: nn.Module, layers: dict[str, LoraLayer], strength: float = 1.0) -> list[RemovableHandle]:
    """Hook each adapted linear layer of ``model``; returns the hooks (``handle.remove()`` takes the LoRA off).
    Every layer is checked before any hook is added, so a mismatched LoRA leaves the model as it was."""
    targets = []
    for name, layer in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise KinemaError(f"lora: the model has no layer '{name}' (a LoRA for another model?)") from None
        if not isinstance(module, nn.Linear) or layer.down.shape[1] != module.in_features or \
                layer.up.shape[0] != module.out_features or layer.up.shape[1] != layer.down.shape[0]:
            raise KinemaError(f"lora: shapes for '{name}' ({tuple(layer.down.shape)}, {tuple(layer.up.shape)}) do not "
                              f"fit the model's layer (a LoRA for another model size?)")
        targets.append((module, layer))
    return [module.register_forward_hook(lora_hook(module, layer, strength)) for module, layer in targets]


def lora_hook(module: nn.Linear, layer: LoraLayer, strength: float):
    """The forward hook adding ``scale * strength * B (A x)`` (+ the up bias) to the layer's output."""
    device, dtype = module.weight.device, module.weight.dtype
    scale = layer.scale * strength
    if layer.down.requires_grad:  # training: the adapter's live fp32 weights, cast at every call (no stale copy)
        down, up, bias = layer.down, layer.up, layer.bias
    else:  # inference: cast once
        down, up = layer.down.to(device, dtype), layer.up.to(device, dtype)
        bias = None if layer.bias is None else layer.bias.to(device, dtype)

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        return output + F.linear(F.linear(x, down.to(x.dtype)), up.to(x.dtype),
                                 None if bias is None else bias.to(x.dtype)) * scale

    return hook


def diffusers_module_name(name: str) -> str:
    """A VideoDiT linear layer's name in diffusers' ``WanTransformer3DModel`` (the inverse of the key rename), as
    LoRA files name it."""
    if name.startswith(("text_embedder.", "time_embedder.", "time_proj")):
        name = f"condition_embedder.{name}"
    name = name.removeprefix("final.")
    name = re.sub(r"\.to_out$", ".to_out.0", name)
    return name.replace(".ffn.fc1", ".ffn.net.0.proj").replace(".ffn.fc2", ".ffn.net.2")


# Linear layers a LoRA trained by kinema adapts: attention (self and cross) and the MLP of every block.
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out", "ffn.fc1", "ffn.fc2")


class LoraAdapter(nn.Module):
    """Trainable LoRA weights for the linear layers of ``model`` whose names end with one of ``targets``: A
    Kaiming-uniform (as PEFT), B zero, so training starts from the model itself; ``scale`` = alpha / rank."""

    def __init__(self, model: nn.Module, rank: int = 16, alpha: float | None = None,
                 targets: tuple[str, ...] = DEFAULT_TARGETS) -> None:
        super().__init__()
        if not 1 <= rank <= 1024:
            raise KinemaError(f"LoRA rank must be between 1 and 1024 (got {rank})")
        self.rank, self.alpha = rank, float(alpha if alpha is not None else rank)
        self.names = [name for name, module in model.named_modules()
                      if isinstance(module, nn.Linear) and name.endswith(targets)]
        if not self.names:
            raise KinemaError(f"no linear layer of the model ends with {', '.join(targets)}")
        reference = model.get_submodule(self.names[0]).weight
        self.down, self.up = nn.ParameterDict(), nn.ParameterDict()
        for name in self.names:
            module = model.get_submodule(name)
            down = torch.empty(rank, module.in_features, device=reference.device, dtype=torch.float32)
            nn.init.kaiming_uniform_(down, a=5 ** 0.5)
            key = name.replace(".", "__")
            self.down[key] = nn.Parameter(down)
            self.up[key] = nn.Parameter(torch.zeros(module.out_features, rank, device=reference.device))

    def layers(self) -> dict[str, LoraLayer]:
        """The live weights as LoraLayers (hooks made from them train them)."""
        return {name: LoraLayer(self.down[name.replace(".", "__")], self.up[name.replace(".", "__")], None,
                                self.alpha / self.rank) for name in self.names}

    def save(self, path: str | Path) -> Path:
        """Write the LoRA as diffusers' ``save_lora_weights`` does (``transformer.`` + diffusers' layer names,
        lora_A/lora_B, the adapter config in the metadata), so ``WanPipeline.load_lora_weights`` reads it."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {}
        for name, layer in self.layers().items():
            key = f"transformer.{diffusers_module_name(name)}"
            tensors[f"{key}.lora_A.weight"] = layer.down.detach().float().cpu().contiguous()
            tensors[f"{key}.lora_B.weight"] = layer.up.detach().float().cpu().contiguous()
        targets = sorted({diffusers_module_name(name) for name in self.names})
        config = {"transformer.r": self.rank, "transformer.lora_alpha": self.alpha,
                  "transformer.target_modules": targets, "transformer.lora_dropout": 0.0,
                  "transformer.bias": "none"}
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".part")
        save_file(tensors, temp, metadata={"format": "pt", METADATA_KEY: json.dumps(config, sort_keys=True)})
        temp.replace(path)
        return path
