"""Exponential moving average of a model's parameters.

``shadow = decay_n * shadow + (1 - decay_n) * param`` on every ``every``-th optimizer step, with the
warmup ``decay_n = min(decay, (1 + n) / (10 + n))`` after n updates, so that early in training the
average is not dominated by the random initialisation. The shadow is kept in float32 and has the
same layout as the parameters: plain tensors in one process or under DDP, local shards (DTensors)
under FSDP2, where ``state_dict`` gathers the full tensors (a collective: call it on every rank).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from kinema.errors import KinemaError
from kinema.train.distributed import full_tensor, unwrap

__all__ = ["EMA"]


class EMA:
    """EMA of the trainable parameters of ``model`` (its DDP wrapper is looked through)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, every: int = 1) -> None:
        if not (0.0 <= decay < 1.0):
            raise KinemaError(f"ema decay must be in [0, 1) (got {decay})")
        if every < 1:
            raise KinemaError(f"ema every must be >= 1 (got {every})")
        self.decay = decay
        self.every = every
        self.updates = 0
        self.params = {name: p for name, p in unwrap(model).named_parameters() if p.requires_grad}
        self.shadow = {name: p.detach().float().clone() for name, p in self.params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def maybe_update(self, step: int) -> bool:
        """Update after optimizer step number ``step`` (1-based) when it is a multiple of ``every``."""
        if step % self.every:
            return False
        self.update()
        return True

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        shadows = list(self.shadow.values())
        params = [p.detach().float() for p in self.params.values()]
        torch._foreach_lerp_(shadows, params, weight)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full float32 tensors on the CPU, keyed like the model's parameters (a collective under FSDP2)."""
        return {name: full_tensor(tensor).detach().cpu() for name, tensor in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing, unexpected = sorted(set(self.shadow) - set(state)), sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KinemaError(f"EMA weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, tensor in self.shadow.items():
            _copy_full_into(tensor, state[name])
        self.updates = int(updates)

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model`` (for evaluation); the live weights come back after."""
        live = {name: p.detach().clone() for name, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(live[name])


def _copy_full_into(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the full tensor ``full`` into ``target``, which may be a DTensor shard of it."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        if tuple(full.shape) != tuple(target.shape):
            raise KinemaError(f"EMA tensor shape {tuple(full.shape)} does not match the model's {tuple(target.shape)}")
        sharded = distribute_tensor(full.to(target.device_mesh.device_type, torch.float32), target.device_mesh,
                                    target.placements, src_data_rank=None)
        target.to_local().copy_(sharded.to_local())
        return
    if full.shape != target.shape:
        raise KinemaError(f"EMA tensor shape {tuple(full.shape)} does not match the model's {tuple(target.shape)}")
    target.copy_(full.to(target.device, torch.float32))
