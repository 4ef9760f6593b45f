"""Where a pipeline runs and in what precision: ``--device`` and ``--dtype``, resolved in one place.

``resolve_device`` turns a device name (``cpu``, ``cuda``, ``cuda:N``, ``mps``; None or ``auto``: the best this
machine has) into a ``torch.device``, checked against what is really there, so that a request for a GPU that is
missing is a one-line error before any model loads. ``resolve_dtype`` turns a dtype name (``float32``,
``bfloat16``, ``float16``; None or ``auto``) into a ``torch.dtype``: ``auto`` is bfloat16 where the device
computes in it natively (a CUDA GPU with bf16 support, Ampere and later), float32 elsewhere (the CPU runs the
small default model fastest in float32). The CLI, the server, the suites and ``KinemaPipeline.to`` all resolve
through these two functions.
"""

from __future__ import annotations

import os

import torch

from kinema.errors import KinemaError

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
DTYPE_CHOICES = "float32, bfloat16, float16 or auto"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def local_rank() -> int:
    """This process's rank on its machine under torchrun (0 alone): the GPU a bare 'cuda' means."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return 0


def best_device() -> torch.device:
    """The fastest device here: a CUDA GPU (under torchrun, the process's own), else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A checked ``torch.device`` for ``device`` (None or 'auto': ``best_device``); one-line KinemaError for a
    name torch does not know or a device this machine does not have."""
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        return best_device()
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise KinemaError(f"device '{device}': choose {DEVICE_CHOICES}") from None
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            reason = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise KinemaError(f"device '{device}': {reason} (use --device cpu)")
        index = resolved.index if resolved.index is not None else local_rank()
        if index >= torch.cuda.device_count():
            raise KinemaError(f"device '{device}': there are {torch.cuda.device_count()} CUDA GPU(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    if resolved.type == "mps":
        if not mps_available():
            raise KinemaError(f"device '{device}': Apple's MPS is not available here (use --device cpu)")
        return torch.device("mps")
    raise KinemaError(f"device '{device}': choose {DEVICE_CHOICES}")


def supports_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (not emulated)."""
    if device.type == "cuda":  # natively: Ampere and later (older GPUs only emulate it, slowly)
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "mps":
        backend = torch.backends.mps
        return bool(getattr(backend, "is_macos_or_newer", lambda *_: False)(14, 0))
    return False


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype the models run in on ``device``: the given one (checked), or for None/'auto' bfloat16 where
    ``device`` supports it natively, else float32."""
    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() in ("", "auto")):
        return torch.bfloat16 if supports_bfloat16(device) else torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        resolved = DTYPES.get(str(dtype).strip().lower().removeprefix("torch."))
        if resolved is None:
            raise KinemaError(f"dtype '{dtype}': choose {DTYPE_CHOICES}")
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise KinemaError(f"dtype '{dtype}': choose {DTYPE_CHOICES}")
    if resolved == torch.bfloat16 and device.type != "cpu" and not supports_bfloat16(device):
        raise KinemaError(f"dtype bfloat16: device '{device}' does not compute in it; use float16 or float32")
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """'float32', 'bfloat16', 'float16': the names --dtype takes."""
    return str(dtype).removeprefix("torch.")


def describe(device: torch.device) -> str:
    """The device in words, for logs and provenance: 'cpu', 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
