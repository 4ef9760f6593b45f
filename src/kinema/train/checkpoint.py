"""Training checkpoints: atomic directories that are either complete or invisible.

A checkpoint is a directory ``OUT/step_00001234/`` holding

- ``model.safetensors``: the full model state (weights and buffers);
- ``ema.safetensors``: the EMA of the parameters;
- ``state.pt``: everything else as plain tensors, numbers, strings, lists and dicts (optimizer,
  scheduler, RNG states, step, data position, counters, config), read back with
  ``torch.load(..., weights_only=True)``; nothing is pickled;
- ``COMPLETE``: JSON with the step and the size and sha256 of every file, written last.

``save_checkpoint`` writes into a hidden temporary directory, fsyncs every file and the directory,
then renames it into place, so a process killed at any moment leaves either the old set of
checkpoints or the new one. ``latest_checkpoint`` only ever returns complete directories; a
damaged one fails ``load_checkpoint`` with a one-line ``KinemaError`` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kinema.errors import KinemaError

__all__ = [
    "COMPLETE", "Checkpoint", "checkpoint_name", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "load_latest_checkpoint", "remove_partial_checkpoints", "save_checkpoint",
]

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
COMPLETE = "COMPLETE"
FILES = (MODEL_FILE, EMA_FILE, STATE_FILE)
FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})$")
_TEMP_PREFIXES = (".tmp-step_", ".old-step_")
_CHUNK = 1 << 20


@dataclass
class Checkpoint:
    """A checkpoint read fully into memory (CPU tensors)."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    state: dict[str, Any]


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


# ----------------------------------------------------------------------------- saving


def save_checkpoint(out_dir: str | Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    state: dict[str, Any], keep_last: int = 3, metadata: dict[str, str] | None = None) -> Path:
    """Write ``OUT/step_{step:08d}/`` atomically, delete all but the newest ``keep_last`` and return its path.

    ``metadata`` (str -> str) goes into both safetensors headers, e.g. the model config as JSON.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / checkpoint_name(step)
    temp = out_dir / f".tmp-{final.name}-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir()
    header = {"step": str(step), **(metadata or {})}
    save_file(_safetensors_ready(model), str(temp / MODEL_FILE), metadata=header | {"kind": "model"})
    save_file(_safetensors_ready(ema), str(temp / EMA_FILE), metadata=header | {"kind": "ema"})
    torch.save({"format": FORMAT_VERSION, **state, "step": step}, temp / STATE_FILE)
    record = {"format": FORMAT_VERSION, "step": step, "files": {}}
    for name in FILES:
        _fsync_file(temp / name)
        record["files"][name] = {"bytes": (temp / name).stat().st_size, "sha256": _sha256(temp / name)}
    (temp / COMPLETE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    _fsync_file(temp / COMPLETE)
    _fsync_dir(temp)
    _publish(temp, final)
    _prune(out_dir, keep_last)
    return final


def _publish(temp: Path, final: Path) -> None:
    """Rename the finished temporary directory into place (replacing an older copy of the same step)."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(temp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _prune(out_dir: Path, keep_last: int) -> None:
    for path in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def remove_partial_checkpoints(out_dir: str | Path) -> list[Path]:
    """Delete temporary directories left by saves that were killed; return what was removed."""
    out_dir = Path(out_dir)
    removed = []
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            if path.is_dir() and path.name.startswith(_TEMP_PREFIXES):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _safetensors_ready(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with no two sharing memory (safetensors refuses shared storage)."""
    ready, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else None
        if key in seen:
            tensor = tensor.clone()
        seen.add(key)
        ready[name] = tensor
    return ready


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- finding


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories (those with a COMPLETE marker), oldest step first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / COMPLETE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory in ``out_dir``, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


# ----------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint directory; any damage is a one-line KinemaError naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise KinemaError(f"checkpoint '{path}': not a directory")
    record = _read_record(path)
    for name in FILES:
        _verify_file(path / name, record["files"].get(name))
    tensors = {}
    for name in (MODEL_FILE, EMA_FILE):
        try:
            tensors[name] = load_file(str(path / name), device="cpu")
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise KinemaError(f"checkpoint file '{path / name}': not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        reason = " ".join(str(error).split())[:160]
        raise KinemaError(f"checkpoint file '{path / STATE_FILE}': cannot be read ({type(error).__name__}: "
                          f"{reason})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise KinemaError(f"checkpoint file '{path / STATE_FILE}': not a kinema training state (no step)")
    if state["step"] != record["step"]:
        raise KinemaError(f"checkpoint file '{path / STATE_FILE}': step {state['step']} does not match "
                          f"{COMPLETE} step {record['step']}")
    return Checkpoint(path=path, step=state["step"], model=tensors[MODEL_FILE], ema=tensors[EMA_FILE], state=state)


def _read_record(path: Path) -> dict:
    marker = path / COMPLETE
    if not marker.is_file():
        raise KinemaError(f"checkpoint file '{marker}': missing (the save did not finish)")
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KinemaError(f"checkpoint file '{marker}': not valid JSON ({error})") from None
    if not (isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("files"), dict)):
        raise KinemaError(f"checkpoint file '{marker}': expected a JSON object with 'step' and 'files'")
    return record


def _verify_file(file: Path, expected: Any) -> None:
    if not file.is_file():
        raise KinemaError(f"checkpoint file '{file}': missing")
    if not (isinstance(expected, dict) and "bytes" in expected and "sha256" in expected):
        raise KinemaError(f"checkpoint file '{file}': not listed in {COMPLETE}")
    size = file.stat().st_size
    if size != expected["bytes"]:
        raise KinemaError(f"checkpoint file '{file}': {size} bytes, expected {expected['bytes']} (truncated?)")
    if _sha256(file) != expected["sha256"]:
        raise KinemaError(f"checkpoint file '{file}': contents changed since it was saved (sha256 mismatch)")


def load_latest_checkpoint(out_dir: str | Path, warn: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that loads; a damaged newer one is skipped with a warning.

    Returns None when ``out_dir`` holds no complete checkpoint; raises KinemaError when there are
    some but none of them loads.
    """
    candidates = list_checkpoints(out_dir)
    errors = []
    for path in reversed(candidates):
        try:
            return load_checkpoint(path)
        except KinemaError as error:
            errors.append(str(error))
            if warn is not None:
                warn(f"skipping damaged checkpoint: {error}")
    if errors:
        raise KinemaError(f"no loadable checkpoint in '{out_dir}' ({len(errors)} damaged; newest: {errors[0]})")
    return None


def checkpoint_to_export(out_dir: str | Path, checkpoint: str | Path | None = None,
                         warn: Callable[[str], None] | None = None) -> Checkpoint:
    """``checkpoint`` if given, else the newest complete one of ``out_dir``; KinemaError when there is none."""
    found = load_checkpoint(checkpoint) if checkpoint else load_latest_checkpoint(out_dir, warn)
    if found is None:
        raise KinemaError(f"no complete checkpoint in '{out_dir}'")
    return found
