"""One process or many: torchrun detection, process groups, DDP / FSDP2 wrapping and full state dicts.

The same training script runs as ``python -m kinema.train.vae`` or under
``torchrun --nproc_per_node N -m kinema.train.vae``; ``init_distributed`` tells the two apart from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK). Every helper here also works, as a no-op
or the obvious single-process answer, when no process group exists.

State dicts always travel *full* (unsharded, on the CPU): ``model_state_dict`` and
``optimizer_state_dict`` are collectives under FSDP2 (every rank must call them) and return the
full dicts on rank 0 (empty dicts on the other ranks); the ``load_*`` functions take the full dicts
on every rank.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from kinema.errors import KinemaError

__all__ = [
    "DistributedMode", "Runtime", "all_reduce_mean", "barrier", "cleanup", "gradient_sync", "init_distributed",
    "is_main", "load_model_state_dict", "load_optimizer_state_dict", "model_state_dict", "optimizer_state_dict",
    "rank", "unwrap", "world_size", "wrap_model",
]

DistributedMode = Literal["ddp", "fsdp"]


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise KinemaError(f"environment variable {name}={text!r}: expected an integer") from None


def init_distributed(device: str | None = None, timeout_minutes: float = 30.0) -> Runtime:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU); idempotent.

    ``device`` forces "cpu" or "cuda"; by default CUDA is used when available, one GPU per local rank.
    """
    env_rank, env_world, env_local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    world = env_world or 1
    global_rank = env_rank or 0
    local_rank = env_local if env_local is not None else global_rank
    if not (0 <= global_rank < world):
        raise KinemaError(f"RANK={global_rank} must be in [0, WORLD_SIZE={world})")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if device not in (None, "cpu", "cuda"):
        raise KinemaError(f"device {device!r}: expected 'cpu' or 'cuda'")
    if use_cuda and not torch.cuda.is_available():
        raise KinemaError("device 'cuda' requested but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        run_device = torch.device("cuda", torch.cuda.current_device())
    else:
        run_device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return Runtime(rank=global_rank, world_size=world, local_rank=local_rank, device=run_device)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return rank() == 0


def barrier() -> None:
    """Every rank waits here until all arrive (a no-op in one process)."""
    if dist.is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (a new tensor; the input is left alone)."""
    out = tensor.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def all_gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """``tensor`` from every rank (same shape and dtype everywhere), in rank order, on the CPU."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [tensor.detach().cpu().clone()]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    local = tensor.detach().to(device) if device is not None else tensor.detach()
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local.contiguous())
    return [t.cpu() for t in gathered]


FAREWELL_SECONDS = 120  # how long a rank that has finished waits for the others before it leaves anyway


def cleanup(synchronize: bool = False) -> None:
    """Leave the process group, if any. With ``synchronize`` (after a run that ended well) the ranks first
    meet at a barrier, so that none tears down its communication while another is still using it; a rank
    that does not come within FAREWELL_SECONDS is left behind. Without it (after an error) a rank leaves at
    once and never waits on a peer that may be gone."""
    if not dist.is_initialized():
        return
    if synchronize and dist.get_world_size() > 1:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=FAREWELL_SECONDS))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a peer that failed or is gone: leave anyway
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- wrapping


def wrap_model(model: nn.Module, mode: DistributedMode, runtime: Runtime) -> nn.Module:
    """Move ``model`` to the runtime's device and, with several ranks, wrap it in DDP or shard it with FSDP2.

    FSDP2 (``fully_shard``) shards each module listed by the model's optional ``fsdp_modules()``
    method (say, its transformer blocks), else each direct child that holds parameters, then the
    root, so parameters are gathered one unit at a time. Rank 0's initial weights are broadcast
    first, so ranks agree even if they were initialised differently.
    """
    model = model.to(runtime.device)
    if not runtime.distributed:
        return model
    if mode == "ddp":
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor, src=0)
        units = model.fsdp_modules() if callable(getattr(model, "fsdp_modules", None)) else [
            child for child in model.children() if any(True for _ in child.parameters())]
        for unit in units:
            fully_shard(unit)
        fully_shard(model)
        return model
    raise KinemaError(f"distributed mode {mode!r}: expected 'ddp' or 'fsdp'")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place, so it is the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on the micro-batches before the last one of a step."""
    if enabled or not dist.is_initialized():
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif _is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to a plain tensor (a collective); a plain tensor unchanged."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


# ----------------------------------------------------------------------------- full state dicts


def _full_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full model state on the CPU (a collective under FSDP2; empty on ranks other than 0 there)."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options(cpu_offload=True))
    return {name: tensor.detach().cpu() for name, tensor in unwrap(model).state_dict().items()}


def load_model_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (the same one on every rank); missing or unexpected keys raise KinemaError."""
    target = unwrap(model)
    expected = set(target.state_dict().keys())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise KinemaError(f"weights do not match the model: missing {_names(missing)}; unexpected {_names(unexpected)}")
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state, options=_full_options())
        return
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches
        raise KinemaError(f"weights do not match the model: {str(error).splitlines()[-1].strip()}") from None


def optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The full optimizer state (a collective under FSDP2; keyed by parameter name there)."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load what ``optimizer_state_dict`` returned (the same dict on every rank)."""
    try:
        if _is_fsdp(model):
            from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=_full_options())
        else:
            optimizer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise KinemaError(f"optimizer state does not match the model ({type(error).__name__}: {reason})") from None


def _names(names: list[str], shown: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
