"""The training loop shared by every model: a ``Trainer`` runs a *task* under a ``TrainConfig``.

A task is any object with

- ``model``: the ``nn.Module`` to train;
- ``loss(model, batch) -> (loss, metrics)``: a scalar tensor and a dict of floats (or 0-d tensors);
- ``batch(index, rank, world_size) -> batch``: slice ``rank`` of ``world_size`` equal slices of
  global batch number ``index``, a **pure function** of its arguments (tensors inside dicts, lists
  or tuples are moved to the device by the trainer);
- optionally ``evaluate(model) -> dict[str, float]``, run every ``eval_every`` steps and at the end.

The trainer cuts global batch ``index`` into ``world_size * accumulation`` slices and asks for
slice ``rank * accumulation + micro``, so the data of a step does not depend on how many processes
run it, and a resumed run asks for exactly the batches the interrupted one would have. Randomness
inside ``loss`` that must not depend on the process count (posterior samples, diffusion noise)
should come from a generator seeded by the batch, not from the global RNG.

Resume is exact: model, EMA, optimizer, counters, the data position and the python / numpy / torch
RNG states of every rank are checkpointed, deterministic algorithms are used on the CPU, and
``metrics.jsonl`` is cut back to the checkpoint's step, so a run killed at any moment and resumed
writes the same losses and ends with the same weights, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from kinema.config import parse_size
from kinema.errors import KinemaError
from kinema.frames import MAX_SIDE
from kinema.train import distributed as dist_utils
from kinema.train.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_latest_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)
from kinema.train.distributed import Runtime, unwrap
from kinema.train.ema import EMA

__all__ = ["Task", "TrainConfig", "TrainSummary", "Trainer", "derived_seed", "learning_rate", "seed_everything"]

logger = logging.getLogger("kinema.train")

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and logging of one run (shared by the VAE and the DiT)."""

    steps: int = 1000
    batch_size: int = 8  # global: all ranks and all micro-batches of one optimizer step together
    micro_batch_size: int | None = None  # per rank and forward pass; None: batch_size / world_size
    lr: float = 1e-4
    min_lr: float = 0.0  # where the cosine schedule ends
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.0  # applied to matrices and kernels only, not to biases and norms
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    ema_decay: float = 0.999
    ema_every: int = 1
    eval_ema: bool = True  # evaluate with the EMA weights (the ones that ship)
    eval_every: int = 0  # 0: only at the end
    save_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on CUDA only
    distributed: Literal["ddp", "fsdp"] = "ddp"
    max_bad_steps: int = 20  # stop after this many non-finite steps in a row
    # stop (saving a checkpoint) once this many minutes of this process's fit() have passed; 0: no limit.
    # A later --resume continues to `steps` on the same schedule.
    max_minutes: float = 0.0
    tensorboard: bool = False
    out_dir: Path = Path("runs/train")

    def __post_init__(self) -> None:
        _check_range("steps", self.steps, 1)
        _check_range("batch_size", self.batch_size, 1)
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise ValueError(f"max_minutes must be >= 0 (got {self.max_minutes})")
        if self.micro_batch_size is not None:
            _check_range("micro_batch_size", self.micro_batch_size, 1, self.batch_size)
            if self.batch_size % self.micro_batch_size:
                raise ValueError(f"micro_batch_size {self.micro_batch_size} must divide batch_size "
                                 f"{self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0 (got {self.lr})")
        if not (0 <= self.min_lr <= self.lr):
            raise ValueError(f"min_lr must be in [0, lr={self.lr}] (got {self.min_lr})")
        _check_range("warmup_steps", self.warmup_steps, 0)
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must each be in [0, 1) (got {list(self.betas)})")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0, 0 turns clipping off (got {self.grad_clip})")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (got {self.ema_decay})")
        _check_range("ema_every", self.ema_every, 1)
        _check_range("eval_every", self.eval_every, 0)
        _check_range("save_every", self.save_every, 1)
        _check_range("keep_last", self.keep_last, 1)
        _check_range("log_every", self.log_every, 1)
        _check_range("max_bad_steps", self.max_bad_steps, 1)

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per rank per step; a one-line KinemaError if the batch does not divide."""
        per_rank, rest = divmod(self.batch_size, world_size)
        if rest or per_rank == 0:
            raise KinemaError(f"train.batch_size {self.batch_size} must be a positive multiple of the number of "
                              f"processes ({world_size})")
        micro = self.micro_batch_size or per_rank
        if per_rank % micro:
            raise KinemaError(f"train.micro_batch_size {micro} must divide the per-process batch {per_rank} "
                              f"(train.batch_size {self.batch_size} / {world_size} processes)")
        return per_rank // micro


def _check_range(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed} (got {value})")


class Task(Protocol):
    model: nn.Module

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def batch(self, index: int, rank: int, world_size: int) -> Any: ...


@dataclass
class TrainSummary:
    step: int
    loss: float | None  # the last logged loss
    skipped_steps: int
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation, if any


def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate of 0-based step ``step``: linear warmup, then constant or cosine down to min_lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


# ----------------------------------------------------------------------------- randomness


def check_sizes(sizes: list[str]) -> None:
    """A data config's ``sizes``: at least one WIDTHxHEIGHT, each a multiple of 8 within MAX_SIDE (ValueError, as
    config checks raise)."""
    if not sizes:
        raise ValueError("sizes must list at least one WIDTHxHEIGHT")
    for text in sizes:
        try:
            parse_size(text, multiple=8, max_side=MAX_SIDE)
        except KinemaError as error:
            raise ValueError(f"sizes: {error}") from None


def derived_seed(*keys: int) -> int:
    """A 32-bit seed that is a pure function of ``keys`` (for per-batch generators)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


def seed_everything(seed: int, *streams: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA). ``seed_everything(s)`` gives identical model
    initialisation on every rank; extra ``streams`` (e.g. the rank) give independent streams."""
    value = seed if not streams else derived_seed(seed, *streams)
    random.seed(value)
    np.random.seed(value & 0xFFFFFFFF)
    torch.manual_seed(value)


def rng_state() -> dict[str, torch.Tensor]:
    """This process's python, numpy and torch RNG states as fixed-shape tensors (no pickling)."""
    _, python_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    gauss = float(state["python_gauss"][1]) if bool(state["python_gauss"][0]) else None
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), gauss))
    pos, has_gauss = (int(v) for v in state["numpy_pos"].tolist())
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"][0])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _all_rng_states() -> list[dict[str, torch.Tensor]]:
    """Every rank's RNG state, in rank order (a collective)."""
    local = rng_state()
    gathered = {name: dist_utils.all_gather_tensors(tensor) for name, tensor in local.items()}
    return [{name: tensors[r] for name, tensors in gathered.items()} for r in range(dist_utils.world_size())]


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Runs ``task`` for ``config.steps`` optimizer steps; ``fit(resume=True)`` continues from the newest checkpoint.

    Build the task's model *after* ``seed_everything(config.seed)`` so every rank starts from the
    same weights. ``run_config`` (plain data; default: ``config``) is written to ``OUT/config.yaml``
    and stored in each checkpoint; ``safetensors_metadata`` goes into the weight files' headers.
    """

    def __init__(self, task: Task, config: TrainConfig, runtime: Runtime | None = None,
                 run_config: dict[str, Any] | None = None, safetensors_metadata: dict[str, str] | None = None) -> None:
        if not isinstance(getattr(task, "model", None), nn.Module):
            raise TypeError("a training task needs a `model` attribute that is an nn.Module")
        for name in ("loss", "batch"):
            if not callable(getattr(task, name, None)):
                raise TypeError(f"a training task needs a `{name}` method")
        self.task = task
        self.config = config
        self.runtime = runtime or dist_utils.init_distributed()
        self.accumulation = config.accumulation(self.runtime.world_size)
        self.run_config = run_config if run_config is not None else _plain_config(config)
        self.safetensors_metadata = safetensors_metadata or {}
        self.model = dist_utils.wrap_model(task.model, config.distributed, self.runtime)
        self.optimizer = _make_optimizer(self.model, config)
        self.ema = EMA(self.model, decay=config.ema_decay, every=config.ema_every)
        self.step = 0
        self.counters = _fresh_counters()
        self.last_eval: dict[str, float] = {}
        self._last_saved: int | None = None
        self._metrics: _MetricsLog | None = None
        self._board = None
        self.clock = time.monotonic  # what max_minutes is measured by
        seed_everything(config.seed, 1 + self.runtime.rank)

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False) -> TrainSummary:
        config, main = self.config, self.runtime.is_main
        with _deterministic(self.runtime.device.type == "cpu"):
            self._start(resume)
            fit_started = self.clock()
            bar = _progress(config.steps, self.step, main)
            interval_seconds, interval_steps = 0.0, 0  # time in training steps only, not in saves or evals
            try:
                while self.step < config.steps:
                    started = time.perf_counter()
                    loss, grad_norm = self._train_step(self.step)
                    interval_seconds += time.perf_counter() - started
                    self.step += 1
                    interval_steps += 1
                    bar.update(1)
                    if self.step % config.log_every == 0 or self.step == config.steps:
                        record = self._log(interval_steps * config.batch_size / max(interval_seconds, 1e-9))
                        bar.set_postfix(loss=record["loss"], lr=f"{record['lr']:.2e}", refresh=False)
                        interval_seconds, interval_steps = 0.0, 0
                    self._check_bad_streak(loss, grad_norm)
                    if self._has_eval and ((config.eval_every and self.step % config.eval_every == 0)
                                           or self.step == config.steps):
                        self._evaluate()
                    if self.step % config.save_every == 0 or self.step == config.steps:
                        self.save()
                    elif self._out_of_time(fit_started):
                        self.save()
                        if main:
                            logger.info(f"stopped at step {self.step} of {config.steps}: train.max_minutes "
                                        f"{config.max_minutes:g} reached; --resume continues")
                        break
            finally:
                bar.close()
                self._close_logs()
        latest = list_checkpoints(config.out_dir)
        return TrainSummary(step=self.step, loss=self.counters["last_loss"], skipped_steps=self.counters["skipped"],
                            checkpoint=latest[-1] if latest else None, metrics=dict(self.last_eval))

    def _out_of_time(self, started: float) -> bool:
        """Whether max_minutes is spent, decided by rank 0's clock so that every rank stops at the same step."""
        if not self.config.max_minutes or self.step % self.config.log_every:
            return False
        late = float(self.clock() - started >= 60.0 * self.config.max_minutes and self.runtime.is_main)
        flag = torch.tensor([late], device=self.runtime.device)
        return bool(dist_utils.all_reduce_mean(flag).item() > 0)

    def _train_step(self, index: int) -> tuple[float, float]:
        """One optimizer step on global batch ``index``; a non-finite loss or gradient skips the update."""
        config, runtime = self.config, self.runtime
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(index, config)
        shards = runtime.world_size * self.accumulation
        sums, keys = None, None
        for micro in range(self.accumulation):
            batch = _to_device(self.task.batch(index, runtime.rank * self.accumulation + micro, shards), runtime.device)
            last = micro == self.accumulation - 1
            with dist_utils.gradient_sync(self.model, enabled=last), self._autocast():
                loss, metrics = self.task.loss(self.model, batch)
            (loss / self.accumulation).backward()
            keys = keys if keys is not None else sorted(metrics)
            values = torch.stack([loss.detach().float().reshape(())]
                                 + [_scalar(metrics.get(key, math.nan), loss.device) for key in keys])
            sums = values if sums is None else sums + values
        means = dist_utils.all_reduce_mean(sums / self.accumulation).tolist()  # (1 + len(keys),)
        grad_norm = self._clip_gradients()
        loss_value = means[0]
        if math.isfinite(loss_value) and math.isfinite(grad_norm):
            self.optimizer.step()
            self.counters["bad_streak"] = 0
            self.ema.maybe_update(index + 1)
            self._accumulate(loss_value, grad_norm, dict(zip(keys, means[1:])))
        else:
            self.counters["skipped"] += 1
            self.counters["bad_streak"] += 1
            if runtime.is_main:
                logger.warning(f"step {index + 1}: non-finite loss ({loss_value:g}) or gradient norm "
                               f"({grad_norm:g}); skipped the update")
        self.optimizer.zero_grad(set_to_none=True)
        self.counters["lr"] = learning_rate(index, config)
        return loss_value, grad_norm

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(dist_utils.full_tensor(norm))

    def _check_bad_streak(self, loss: float, grad_norm: float) -> None:
        streak = self.counters["bad_streak"]
        if streak >= self.config.max_bad_steps:
            raise KinemaError(f"training stopped at step {self.step}: {streak} steps in a row had a non-finite loss "
                              f"or gradient (last loss {loss:g}, gradient norm {grad_norm:g}); lower train.lr, "
                              f"check the data, or raise train.max_bad_steps")

    def _autocast(self):
        if self.config.precision == "bf16" and self.runtime.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ start, resume, save

    def _start(self, resume: bool) -> None:
        config, main = self.config, self.runtime.is_main
        if main:
            for path in remove_partial_checkpoints(config.out_dir):
                logger.info(f"removed the unfinished checkpoint '{path}'")
        dist_utils.barrier()
        if resume:
            checkpoint = load_latest_checkpoint(config.out_dir, warn=logger.warning if main else None)
            if checkpoint is None:
                if main:
                    logger.info(f"no checkpoint in '{config.out_dir}'; starting fresh")
            else:
                self._restore(checkpoint)
                if main:
                    logger.info(f"resumed from '{checkpoint.path}' at step {self.step}")
        elif list_checkpoints(config.out_dir):
            newest = list_checkpoints(config.out_dir)[-1]
            raise KinemaError(f"train.out_dir '{config.out_dir}' already holds checkpoints (newest '{newest.name}'); "
                              f"pass --resume to continue, or choose another train.out_dir")
        if self.runtime.device.type == "cpu" and config.precision == "bf16" and main:
            logger.info("precision bf16 applies on CUDA only; this CPU run uses fp32")
        if main:
            _write_yaml(Path(config.out_dir) / "config.yaml", self.run_config)
            self._metrics = _MetricsLog(Path(config.out_dir) / METRICS_FILE, keep_through=self.step)
            self._board = _tensorboard(Path(config.out_dir)) if config.tensorboard else None
        dist_utils.barrier()

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        where = checkpoint.path / "state.pt"
        for key in ("optimizer", "counters", "rng", "data_position"):
            if key not in state:
                raise KinemaError(f"checkpoint file '{where}': has no '{key}' entry")
        dist_utils.load_model_state_dict(self.model, checkpoint.model)
        self.ema.load_state_dict(checkpoint.ema, updates=int(state["counters"].get("ema_updates", 0)))
        dist_utils.load_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
        self.step = checkpoint.step
        if state["data_position"] != self.step:
            raise KinemaError(f"checkpoint file '{where}': data position {state['data_position']} != step {self.step}")
        self.counters = _fresh_counters() | dict(state["counters"])
        self._last_saved = self.step
        changed = _changed_keys(state.get("config"), self.run_config)
        if changed and self.runtime.is_main:
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            logger.warning(f"the config differs from the checkpoint's in {', '.join(changed[:6])}{more}; "
                           f"continuing with the new values")
        rng = state["rng"]
        if len(rng) == self.runtime.world_size:
            set_rng_state(rng[self.runtime.rank])
        else:
            if self.runtime.is_main:
                logger.warning(f"the checkpoint was written by {len(rng)} processes and this run has "
                               f"{self.runtime.world_size}; the data order is kept, random streams start anew")
            seed_everything(self.config.seed, 1 + self.runtime.rank, self.step)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank takes part, then waits)."""
        if self._last_saved == self.step:
            return None
        model_state = dist_utils.model_state_dict(self.model)
        ema_state = self.ema.state_dict()
        optimizer_state = dist_utils.optimizer_state_dict(self.model, self.optimizer)
        rng = _all_rng_states()
        path = None
        if self.runtime.is_main:
            self.counters["ema_updates"] = self.ema.updates
            state = {
                "optimizer": optimizer_state,
                "scheduler": {"schedule": self.config.schedule, "lr": self.counters["lr"]},
                "rng": rng,
                "data_position": self.step,  # the next global batch index
                "counters": dict(self.counters),
                "world_size": self.runtime.world_size,
                "config": self.run_config,
            }
            if self._metrics is not None:
                self._metrics.flush()
            path = save_checkpoint(self.config.out_dir, self.step, model_state, ema_state, state,
                                   keep_last=self.config.keep_last, metadata=self.safetensors_metadata)
        self._last_saved = self.step
        dist_utils.barrier()
        return path

    # ------------------------------------------------------------------ logging and evaluation

    def _accumulate(self, loss: float, grad_norm: float, metrics: dict[str, float]) -> None:
        counters = self.counters
        counters["interval_loss"] += loss
        counters["interval_grad_norm"] += grad_norm
        counters["interval_finite"] += 1
        for key, value in metrics.items():
            counters["interval_metrics"][key] = counters["interval_metrics"].get(key, 0.0) + value

    def _log(self, samples_per_second: float) -> dict[str, Any]:
        counters = self.counters
        finite = counters["interval_finite"]
        record = {
            "step": self.step,
            "loss": counters["interval_loss"] / finite if finite else None,
            "lr": counters["lr"],
            "grad_norm": counters["interval_grad_norm"] / finite if finite else None,
            "samples_per_s": round(samples_per_second, 3),
            "skipped": counters["skipped"],
        }
        record |= {key: value / finite for key, value in sorted(counters["interval_metrics"].items()) if finite}
        counters["last_loss"] = record["loss"]
        counters.update(interval_loss=0.0, interval_grad_norm=0.0, interval_finite=0, interval_metrics={})
        self._write(record)
        return record

    def _write(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.write(record)
        if self._board is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self._board.add_scalar(key, value, record["step"])

    @property
    def _has_eval(self) -> bool:
        return callable(getattr(self.task, "evaluate", None))

    def _evaluate(self) -> None:
        """Run the task's evaluate on rank 0 (on every rank under FSDP2, whose forward is a collective)."""
        sharded = self.config.distributed == "fsdp" and self.runtime.distributed
        if self.runtime.is_main or sharded:
            model = self.model if sharded else unwrap(self.model)
            swap = self.ema.swapped_into(model) if self.config.eval_ema else contextlib.nullcontext()
            model.eval()
            try:
                with swap, torch.no_grad(), self._autocast():
                    results = self.task.evaluate(model)
            finally:
                model.train()
            self.last_eval = {key: float(value) for key, value in results.items()}
            if self.runtime.is_main:
                self._write({"step": self.step, **{f"eval/{k}": v for k, v in self.last_eval.items()}})
                shown = ", ".join(f"{k} {v:.4g}" for k, v in self.last_eval.items())
                logger.info(f"step {self.step} eval{' (EMA)' if self.config.eval_ema else ''}: {shown}")
        dist_utils.barrier()

    def _close_logs(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._board is not None:
            self._board.close()
            self._board = None


# ----------------------------------------------------------------------------- helpers


def _fresh_counters() -> dict[str, Any]:
    return {"skipped": 0, "bad_streak": 0, "ema_updates": 0, "lr": 0.0, "last_loss": None, "interval_loss": 0.0,
            "interval_grad_norm": 0.0, "interval_finite": 0, "interval_metrics": {}}


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [changed for key in keys for changed in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if old != new else []


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _plain_config(config: TrainConfig) -> dict[str, Any]:
    from kinema.config import config_to_dict

    return config_to_dict(config)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels (dim >= 2) only, as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise KinemaError("the model has no trainable parameters")
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _scalar(value: Any, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(()).to(device)
    return torch.tensor(float(value), dtype=torch.float32, device=device)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(item, torch.Tensor) for item in batch):
        return type(batch)(_to_device(item, device) for item in batch)
    return batch


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels (CPU runs), restoring the previous settings afterwards.

    Filling fresh allocations with NaN (a debugging aid that comes with deterministic mode) is turned
    off: it does not change results and costs memory bandwidth on every allocation.
    """
    import torch.utils.deterministic as deterministic

    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    before_fill = deterministic.fill_uninitialized_memory
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
        deterministic.fill_uninitialized_memory = before_fill


def _progress(total: int, initial: int, main: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=None if main else True,
                dynamic_ncols=True)


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("train.tensorboard is on but the tensorboard package is not installed; logging to "
                       "metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


class _MetricsLog:
    """``metrics.jsonl``, cut back to the lines of steps <= ``keep_through`` (the resumed step) on open."""

    def __init__(self, path: Path, keep_through: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_through > 0 and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= keep_through:
                    kept.append(line)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        temp.replace(path)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the run's lifetime)

    def write(self, record: dict[str, Any]) -> None:
        clean = {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                 for key, value in record.items()}
        self.handle.write(json.dumps(clean) + "\n")
        self.handle.flush()  # so `tail -f` shows progress and a kill loses nothing that was logged

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
