"""Distil a model folder into a few-step transformer: ``kinema train distill --config FILE``
(``configs/distill/kinema-tiny.yaml`` for the embedded model).

The method is piecewise rectified flow (``kinema.diffusion.distill``), in three stages that each resume:

1. **Record.** The teacher (any pipeline folder) generates prompts at its own steps and guidance: single clips,
   videos long enough to be made in windows, and multi-shot clips as storyboards are made. Every pass of its
   sampler (``KinemaPipeline.denoise``: a clip, a window, with its known frames, or frame by frame with the
   frame cache) is kept as a trajectory: the latents at the K + 1 window boundaries, the known frames, the text
   and, frame by frame, what later frames saw of each frame. One file per generation,
   ``OUT/trajectories/NNNNNN.safetensors``; a rerun skips the files that exist.
2. **Train.** The student starts as a copy of the teacher's transformer and learns each window's slope at points
   inside the windows, with the teacher's guidance folded in (one pass a step), under the ``Trainer`` (exact
   resume, DDP/FSDP2). Frame-by-frame trajectories train every frame at once in the teacher-forcing layout
   (``teacher_forcing_frames``), which computes what the frame cache computes.
3. **Export.** ``OUT/pipeline``: the teacher's folder with the student beside its transformer, declared as its
   few-step transformer (``kinema.inference.settings.FewStep``): ``kinema generate --model OUT/pipeline --steps 4``
   samples with it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from kinema.config import config_to_dict, load_config, parse_size
from kinema.diffusion.distill import sample_points, window_boundaries, window_point
from kinema.errors import KinemaError
from kinema.train import distributed as dist_utils
from kinema.train.loop import TrainConfig, Trainer, TrainSummary, check_sizes, derived_seed, seed_everything

logger = logging.getLogger("kinema.train")

FORMAT = "kinema-trajectories/1"
METHOD = "piecewise rectified flow"


@dataclass
class RecordEntry:
    """One kind of generation the teacher is recorded making."""

    seconds: float = 4.0  # longer than a window: made window by window, each window a trajectory
    shots: tuple[int, int] = (1, 1)  # more than one: a multi-shot clip, made as a storyboard is (per-shot text)
    count: int = 100  # generations of this kind

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"record seconds must be > 0 (got {self.seconds})")
        if not 1 <= self.shots[0] <= self.shots[1]:
            raise ValueError(f"record shots must be [low, high] with 1 <= low <= high (got {list(self.shots)})")
        if self.count < 0:
            raise ValueError(f"record count must be >= 0 (got {self.count})")


@dataclass
class DistillDataConfig:
    prompts: str = "world"  # "world": captions of simulated scenes; else a text file, one prompt a line
    seed: int = 0
    sizes: list[str] = field(default_factory=lambda: ["64x64", "96x64", "64x96"])
    occluder_probability: float = 0.5
    paint_probability: float = 0.3
    record: list[RecordEntry] = field(default_factory=lambda: [
        RecordEntry(4.0, (1, 1), 600), RecordEntry(11.5, (1, 1), 60), RecordEntry(10.0, (3, 4), 60)])

    def __post_init__(self) -> None:
        check_sizes(self.sizes)
        if sum(entry.count for entry in self.record) < 1:
            raise ValueError("record must ask for at least one generation")


@dataclass
class DistillConfig:
    teacher: str = "src/kinema/weights/kinema-tiny"  # a pipeline folder
    windows: int = 4  # the student's steps: the teacher's steps are cut into this many windows
    teacher_steps: int | None = None  # default: the teacher's
    teacher_guidance: float | None = None  # default: the teacher's (storyboard guidance for multi-shot clips)
    boundary: float = 0.5  # share of training points at a window's start, where the K-step sampler asks
    max_steps: int | None = None  # requests of at most this many steps pick the student (default: windows)
    # recorded videos kept out of training, spread over the recording: every train.eval_every steps (and at the
    # end) the student samples each of their passes in K steps from its noise, against the teacher's result
    holdout: int = 0
    default: bool = False  # a request that gives no steps picks the student too
    dtype: Literal["fp16", "fp32"] = "fp16"  # of the exported folder
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir=Path("runs/distill")))

    def __post_init__(self) -> None:
        if self.windows < 1:
            raise ValueError(f"windows must be >= 1 (got {self.windows})")
        if self.teacher_steps is not None:
            window_boundaries(self.teacher_steps, self.windows)
        if not 0.0 <= self.boundary <= 1.0:
            raise ValueError(f"boundary must be in [0, 1] (got {self.boundary})")
        if self.max_steps is not None and self.max_steps < self.windows:
            raise ValueError(f"max_steps must be >= windows {self.windows} (got {self.max_steps})")
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0 (got {self.holdout})")


def load_distill_config(path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
    return load_config(DistillConfig, path, overrides or [])


# ----------------------------------------------------------------------------- 1. record


class TrajectoryRecorder:
    """``KinemaPipeline.trace``: for every sampler pass, the latents at the window boundaries of its steps."""

    def __init__(self, windows: int) -> None:
        self.windows = windows
        self.calls: list[dict] = []

    def __call__(self, call: dict, callback):
        times = call["times"]
        steps = len(times) - 1
        keep = window_boundaries(steps, self.windows)
        latents, known = call["latents"], call["known"]
        if known is not None:
            latents = torch.where(known[:, None, :, None, None], call["known_latents"].to(latents.dtype), latents)
        states = latents[None].repeat(len(keep), 1, 1, 1, 1, 1)  # (K + 1, B, C, F', H, W)
        prefix = leading_known(known)
        frame_by_frame = call["sampler"] == "ar"
        self.calls.append(dict(call, latents=latents, states=states, times=times[keep]))

        def record(count: int, total: int, x: torch.Tensor) -> None:
            if frame_by_frame:  # x is the frame being made after ``step`` of its steps
                made, step = divmod(count - 1, steps)
                if step + 1 in keep:
                    states[keep.index(step + 1), :, :, prefix + made] = x[:, :, 0]
            elif count in keep:
                states[keep.index(count)] = x
            if callback is not None:
                callback(count, total, x)

        return record


def leading_known(known: torch.Tensor | None) -> int:
    """How many latent frames, from the first, every batch item knows (the frame cache's known prefix)."""
    if known is None:
        return 0
    every = known.all(dim=0)
    return int(every.long().cumprod(0).sum())


def trajectory_tensors(call: dict, row: int) -> dict[str, torch.Tensor]:
    """One batch row of a recorded pass as the tensors a trajectory file holds."""
    states = call["states"][:, row].float().contiguous()  # (K + 1, C, F', H, W)
    frames = states.shape[2]
    known = call["known"][row] if call["known"] is not None else torch.zeros(frames, dtype=torch.bool)
    known_time = torch.as_tensor(call["known_time"], dtype=torch.float32).expand(
        *call["latents"].shape[:1], frames)[row]
    cond = call["cond"]
    text, mask = cond["text"][row], cond.get("text_mask")
    mask = torch.ones(text.shape[:-1], dtype=torch.bool) if mask is None else mask[row]
    if text.ndim == 2:  # one sequence: (L, D) -> (1, L, D)
        text, mask = text[None], mask[None]
    tensors = {"states": states, "times": call["times"].float(), "known": known, "known_time": known_time.clone(),
               "text": text.contiguous(), "text_mask": mask.bool().contiguous()}
    if "frame_text_index" in cond:
        tensors["frame_text_index"] = cond["frame_text_index"][row].long().contiguous()
    if call["sampler"] == "ar":  # what later frames saw of each frame: the known ones as held, the made ones noised
        made = states[-1]
        level = call["context_time"]
        context = made if call["context_noise"] is None else (1 - level) * made + level * call["context_noise"][row]
        tensors["context"] = torch.where(known[None, :, None, None], made, context.float()).contiguous()
        tensors["context_time"] = torch.where(known, known_time, torch.full_like(known_time, level))
    return tensors


@dataclass(frozen=True)
class Generation:
    """What the teacher makes for one trajectory file: texts (one per shot), where each shot starts, size."""

    index: int
    texts: list[str]
    shot_starts: list[int]
    frames: int
    width: int
    height: int
    seed: int


def generations(config: DistillConfig, fps: float) -> list[Generation]:
    """Every generation the config asks for, in order; world prompts come from simulated scenes' captions."""
    from kinema.frames import frames_for_seconds
    from kinema.world.caption import caption_clip
    from kinema.world.physics import simulate
    from kinema.world.scene import SceneOptions, sample_scene

    data = config.data
    lines = None if data.prompts == "world" else prompt_lines(data.prompts)
    made: list[Generation] = []
    for kind, entry in enumerate(data.record):
        options = SceneOptions(seconds=entry.seconds, fps=fps, shots=tuple(entry.shots),
                               occluder_probability=data.occluder_probability,
                               paint_probability=data.paint_probability)
        for n in range(entry.count):
            index = len(made)
            seed = derived_seed(data.seed, kind, n)
            width, height = parse_size(data.sizes[index % len(data.sizes)])
            frames = frames_for_seconds(entry.seconds, fps)
            if lines is not None:
                made.append(Generation(index, [lines[index % len(lines)]], [0], frames, width, height, seed))
                continue
            scene = sample_scene(seed, options)
            captions = caption_clip(scene, simulate(scene))
            if len(scene.shots) == 1:
                texts, starts = [captions.caption], [0]
            else:
                texts = [f"{captions.scene} {shot}" for shot in captions.shots]
                starts = [int(shot.start) for shot in scene.shots]
            made.append(Generation(index, texts, starts, scene.frames, width, height, seed))
    return made


def prompt_lines(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise KinemaError(f"data.prompts: '{path}' is not a file (or 'world')")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise KinemaError(f"data.prompts: '{path}' holds no prompt")
    return lines


def record_trajectories(config: DistillConfig, pipe, folder: str | Path, rank: int = 0, world_size: int = 1,
                        progress=None) -> Path:
    """Have the teacher ``pipe`` make this rank's share of the generations and write one trajectory file each;
    files that exist are kept (a rerun continues). Returns the folder."""
    from kinema.inference.longvideo import generate_long
    from kinema.inference.settings import default_guidance

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = config.teacher_steps or pipe.defaults.steps
    window_boundaries(steps, config.windows)
    todo = [g for g in generations(config, pipe.defaults.fps) if g.index % world_size == rank]
    for done, item in enumerate(todo):
        path = folder / f"{item.index:06d}.safetensors"
        if path.is_file():
            check_recorded(path, item)
        else:
            recorder = TrajectoryRecorder(config.windows)
            guidance = config.teacher_guidance
            if guidance is None:  # as a generation would: storyboards at the model's storyboard guidance
                guidance = default_guidance(pipe.defaults, storyboard=len(item.texts) > 1)
            pipe.trace = recorder
            try:
                generate_long(pipe, item.texts, item.frames, item.height, item.width, shot_starts=item.shot_starts,
                              num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                              generator=torch.Generator().manual_seed(item.seed))
            finally:
                pipe.trace = None
            write_trajectories(path, recorder.calls, {"texts": item.texts, "seed": item.seed, "guidance": guidance,
                                                      "steps": steps, "windows": config.windows,
                                                      "teacher": pipe.weights_sha256})
        if progress is not None:
            progress(done + 1, len(todo))
    return folder


def check_recorded(path: Path, item: Generation) -> None:
    """A trajectory file that exists must be of the generation planned under its name (the same texts and seed):
    a config changed between runs would otherwise mix other videos in."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            about = json.loads((f.metadata() or {}).get("about", "{}"))
    except Exception as e:  # safetensors raises several types for broken files
        raise KinemaError(f"corrupt trajectory file '{path}': {' '.join(str(e).split())[:160]}") from None
    if about.get("texts") != item.texts or about.get("seed") != item.seed:
        raise KinemaError(f"'{path}' holds another generation than the config plans under its name (data.record "
                          f"or data.seed changed?); record into a new train.out_dir")


def write_trajectories(path: Path, calls: list[dict], about: dict) -> None:
    """The passes of one generation, ``N.name`` for pass N, written atomically (a file that exists is whole)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    kinds: list[str] = []
    for call in calls:
        for row in range(call["states"].shape[1]):
            for name, tensor in trajectory_tensors(call, row).items():
                tensors[f"{len(kinds)}.{name}"] = tensor.contiguous().clone()  # no two share storage
            kinds.append(call["sampler"])
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        save_file(tensors, str(temp), metadata={"format": FORMAT, "kinds": json.dumps(kinds),
                                                "about": json.dumps(about)})
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- 2. train


def trajectory_files(folder: str | Path, holdout: int = 0) -> tuple[list[Path], list[Path]]:
    """The trajectory files of a folder, split into those to train on and ``holdout`` held out, spread evenly
    over the recording (so that every kind of generation is among them)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if len(files) <= holdout:
        raise KinemaError(f"{len(files)} trajectory files in '{folder}': nothing left to train on after holding "
                          f"out {holdout}")
    held = {round((n + 0.5) * len(files) / holdout) for n in range(holdout)} if holdout else set()
    return [f for n, f in enumerate(files) if n not in held], [f for n, f in enumerate(files) if n in held]


class TrajectorySource:
    """Recorded passes, served in batches of one shape (latents, text sequences, kind), each epoch in a new order
    (``kinema.data.batching.epoch_batches``)."""

    def __init__(self, files: list[Path], windows: int, teacher: str | None, seed: int = 0) -> None:
        from safetensors import safe_open

        self.seed = seed
        self.items: list[tuple[Path, int, str]] = []  # (file, pass, kind)
        groups: dict[tuple, list[int]] = {}
        for path in files:
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                    kinds = json.loads(meta.get("kinds", "[]"))
                    about = json.loads(meta.get("about", "{}"))
                    shapes = [(tuple(f.get_slice(f"{n}.states").get_shape()),
                               f.get_slice(f"{n}.text").get_shape()[0]) for n in range(len(kinds))]
            except Exception as e:  # safetensors raises several types for broken files
                raise KinemaError(f"corrupt trajectory file '{path}': {' '.join(str(e).split())[:160]}") from None
            if meta.get("format") != FORMAT:
                raise KinemaError(f"'{path}' is not a {FORMAT} file")
            if about.get("windows") != windows or (teacher is not None and about.get("teacher") != teacher):
                raise KinemaError(f"'{path}' was recorded for {about.get('windows')} windows of another teacher's "
                                  f"steps; record into a new train.out_dir")
            for n, (kind, (states, sequences)) in enumerate(zip(kinds, shapes)):
                groups.setdefault((kind, states, sequences), []).append(len(self.items))
                self.items.append((path, n, kind))
        self.groups = list(groups.values())
        self._plan_key: int | None = None
        self._plan: list[list[int]] = []

    def plan(self, index: int, batch_size: int) -> list[int]:
        from kinema.data.batching import epoch_batches, epoch_length

        epoch, position = divmod(index, epoch_length(self.groups, batch_size))
        if self._plan_key != epoch:
            self._plan = epoch_batches(self.groups, batch_size, self.seed, epoch)
            self._plan_key = epoch
        return self._plan[position]

    def batch(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> dict:
        """The rank's rows of batch ``index``."""
        from kinema.data.batching import rank_rows

        ids = self.plan(index, batch_size)
        return self.rows([ids[r] for r in rank_rows(batch_size, rank, world_size)])

    def rows(self, ids: list[int]) -> dict:
        """Passes of one shape: each tensor stacked, text padded to the longest."""
        from safetensors import safe_open

        rows = []
        for i in ids:
            path, n, kind = self.items[i]
            with safe_open(str(path), framework="pt") as f:
                names = [key for key in f.keys() if key.split(".", 1)[0] == str(n)]  # noqa: SIM118 (not a dict)
                rows.append({key.split(".", 1)[1]: f.get_tensor(key) for key in names} | {"kind": kind})
        length = max(row["text"].shape[1] for row in rows)
        out = {"kind": rows[0]["kind"]}
        for key in rows[0]:
            if key == "kind":
                continue
            if key in ("text", "text_mask"):  # (S, L, D) / (S, L): pad L
                out[key] = torch.stack([pad_tokens(row[key], length) for row in rows])
            else:
                out[key] = torch.stack([row[key] for row in rows])
        return out


def pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """(S, L, ...) -> (S, length, ...) with zeros (False for a mask) after the L tokens."""
    pad = torch.zeros(tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:], dtype=tensor.dtype)
    return torch.cat([tensor, pad], dim=1)


class DistillTask:
    """The student learns each window's slope at points inside the windows of the teacher's trajectories."""

    def __init__(self, config: DistillConfig, teacher: nn.Module, folder: str | Path,
                 teacher_sha256: str | None = None) -> None:
        self.config = config
        self.model = copy.deepcopy(teacher).float().train().requires_grad_(True)
        train, held = trajectory_files(folder, config.holdout)
        self.source = TrajectorySource(train, config.windows, teacher_sha256, seed=config.data.seed)
        self.heldout = TrajectorySource(held, config.windows, teacher_sha256) if held else None
        if self.heldout is not None:
            self.evaluate = self.endpoint_error  # the Trainer evaluates a task that has ``evaluate``

    @torch.no_grad()
    def batch(self, index: int, rank: int, world_size: int) -> dict:
        raw = self.source.batch(index, self.config.train.batch_size, rank, world_size)
        generator = torch.Generator().manual_seed(derived_seed(self.config.data.seed, index, rank, world_size))
        states = raw["states"]  # (B, K + 1, C, F', H, W)
        b, frames = states.shape[0], states.shape[3]
        causal = raw["kind"] == "ar"
        window, u = sample_points(b, frames, self.config.windows, generator, per_frame=causal,
                                  boundary=self.config.boundary)
        x, t, target = window_point(states, raw["times"], window, u)
        known = raw["known"]
        batch = {"x": x, "t": torch.where(known, raw["known_time"], t), "target": target, "known": known,
                 "text": raw["text"].float(), "text_mask": raw["text_mask"],
                 "frame_text_index": raw.get("frame_text_index"), "causal": causal}
        if causal:
            batch |= {"context": raw["context"], "context_t": raw["context_time"]}
        return batch

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        err = (predict(model, batch).float() - batch["target"].float()) ** 2  # (B, C, F', H, W)
        weight = (~batch["known"]).to(err.dtype)[:, None, :, None, None].expand_as(err)
        loss = (err * weight).sum() / weight.sum().clamp_min(1.0)
        return loss, {"causal": torch.tensor(float(batch["causal"]))}

    @torch.no_grad()
    def endpoint_error(self, model: nn.Module) -> dict[str, float]:
        """The student's K Euler steps from each held-out pass's noise (frame by frame: every frame at once, each
        given the teacher's frames before it) against the teacher's result: mean |difference| over the made
        frames, relative to the mean |latent| of the teacher's."""
        device = next(model.parameters()).device
        errors, scales = [], []
        for i in range(len(self.heldout.items)):
            raw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.heldout.rows([i]).items()}
            states, times, known = raw["states"], raw["times"], raw["known"]  # (1, K + 1, C, F', H, W)
            held = known[:, None, :, None, None]
            x = states[:, 0]
            for j in range(states.shape[1] - 1):
                t = torch.where(known, raw["known_time"], times[:, j:j + 1].expand_as(known))
                batch = {"x": x, "t": t, "text": raw["text"].float(), "text_mask": raw["text_mask"],
                         "frame_text_index": raw.get("frame_text_index"), "causal": raw["kind"] == "ar",
                         "context": raw.get("context"), "context_t": raw.get("context_time")}
                step = (times[:, j + 1] - times[:, j])[:, None, None, None, None]
                x = torch.where(held, x, x + step * predict(model, batch).float())
            made = (~held).expand_as(x)
            errors.append(float((x - states[:, -1]).abs()[made].mean()))
            scales.append(float(states[:, -1].abs()[made].mean()))
        return {"endpoint_error": sum(errors) / max(sum(scales), 1e-12)}


def predict(model: nn.Module, batch: dict) -> torch.Tensor:
    """The student's velocity for ``batch["x"]`` at ``batch["t"]``: a joint pass, or frame by frame every frame at
    once, each seeing the frames before it as the frame cache holds them (the teacher-forcing layout)."""
    x, index = batch["x"], batch["frame_text_index"]
    if not batch["causal"]:
        return model(x, batch["t"], batch["text"], batch["text_mask"], index)
    from kinema.models.dit import teacher_forcing_frames

    frames = x.shape[2]
    both = None if index is None else torch.cat([index, index], dim=1)
    positions = torch.arange(frames, device=x.device).repeat(2)
    return model(torch.cat([batch["context"], x], dim=2), torch.cat([batch["context_t"], batch["t"]], 1),
                 batch["text"], batch["text_mask"], both, frame_positions=positions,
                 attention_frames=teacher_forcing_frames(frames, x.device))[:, :, frames:]


# ----------------------------------------------------------------------------- the command


def load_teacher(config: DistillConfig, text_encoder=None):
    """The teacher pipeline, in float32, on the CPU (where the pipeline samples); a few-step transformer the folder
    already holds is set aside, so that every step count samples with the teacher itself."""
    from kinema.inference.pipeline import KinemaPipeline

    pipe = KinemaPipeline.from_pretrained(config.teacher, text_encoder=text_encoder)
    pipe.defaults.few_step = None
    pipe.transformer.float()
    pipe.vae.float()
    return pipe


def train_distill(config: DistillConfig, resume: bool = False, text_encoder=None) -> TrainSummary:
    """Record the teacher (this rank's share; files already written are kept), train the student, and export
    ``OUT/pipeline`` (rank 0)."""
    from tqdm import tqdm

    runtime = dist_utils.init_distributed()
    seed_everything(config.train.seed)
    pipe = load_teacher(config, text_encoder)
    folder = Path(config.train.out_dir) / "trajectories"
    with tqdm(desc="recording the teacher", unit="video", disable=None if runtime.is_main else True) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        record_trajectories(config, pipe, folder, runtime.rank, runtime.world_size, progress)
    dist_utils.barrier()
    task = DistillTask(config, pipe.transformer, folder, pipe.weights_sha256)
    if runtime.is_main:
        logger.info(f"distilling '{config.teacher}' into {config.windows} steps from {len(task.source.items)} "
                    f"recorded passes on {runtime.world_size} process(es), {runtime.device}")
    trainer = Trainer(task, config.train, runtime, run_config=config_to_dict(config))
    summary = trainer.fit(resume=resume)
    if runtime.is_main and summary.step >= config.train.steps:
        export_distilled(config, Path(config.train.out_dir) / "pipeline", pipe=pipe)
    dist_utils.barrier()
    return summary


def export_distilled(config: DistillConfig, out: str | Path, checkpoint: str | Path | None = None,
                     pipe=None) -> tuple[Path, int]:
    """The teacher's folder with the student (EMA weights of a checkpoint; default: the newest) beside its
    transformer as its few-step transformer, in ``config.dtype``."""
    from kinema.inference.settings import FewStep
    from kinema.train.checkpoint import checkpoint_to_export

    found = checkpoint_to_export(config.train.out_dir, checkpoint, logger.warning)
    pipe = pipe or load_teacher(config)
    student = copy.deepcopy(pipe.transformer)
    student.load_state_dict(found.model | found.ema, strict=True)
    dtype = torch.float16 if config.dtype == "fp16" else torch.float32
    pipe.transformer.to(dtype)
    pipe.vae.to(dtype)
    pipe.few_step_model = student.eval().to(dtype)
    teacher_steps = config.teacher_steps or pipe.defaults.steps
    pipe.defaults.few_step = FewStep(steps=config.windows, max_steps=config.max_steps or config.windows,
                                     default=config.default, distilled_from={
                                         "teacher": pipe.weights_sha256, "method": METHOD, "windows": config.windows,
                                         "teacher_steps": teacher_steps, "teacher_guidance": config.teacher_guidance,
                                         "student_step": found.step})
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    pipe.save_pretrained(out)
    return Path(out), found.step

