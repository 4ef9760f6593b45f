"""Clips of the simulated world, on disk (MP4s plus a JSONL manifest) or streamed to training."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinema.errors import KinemaError
from kinema.frames import MAX_SECONDS, MAX_SIDE
from kinema.world.caption import Captions, caption_clip
from kinema.world.physics import Trajectory, simulate
from kinema.world.render import render
from kinema.world.scene import SceneOptions, SceneSpec, sample_scene


@dataclass
class Clip:
    scene: SceneSpec
    trajectory: Trajectory
    captions: Captions
    frames: np.ndarray  # (F, H, W, 3) uint8
    ground_truth: dict  # pixel ground truth from the renderer

    def record(self, file: str, ground_truth_file: str | None = None) -> dict:
        """The manifest line of this clip (JSON-serialisable)."""
        scene = self.scene
        f, h, w, _ = self.frames.shape
        line = {
            "file": file,
            "seed": scene.seed,
            "width": w, "height": h, "fps": scene.fps, "frames": f, "seconds": scene.seconds,
            "caption": self.captions.caption,
            "scene_caption": self.captions.scene,
            "shots": [{"start": s.start, "end": s.end, "framing": s.framing, "subject": s.subject, "caption": c}
                      for s, c in zip(scene.shots, self.captions.shots)],
            "scene": {
                "sky": scene.sky, "ground": scene.ground, "occluder": scene.occluder,
                "occluder_x": round(scene.occluder_x, 4), "gravity": scene.gravity,
                "objects": [o.describe() | {"action": o.action} for o in scene.objects],
            },
            "events": [e.to_dict() for e in self.trajectory.events],
            "marks": [{"object": m.object_id, "color": m.color, "x": round(m.x, 4),
                       "half_width": round(m.half_width, 4), "frame": m.frame} for m in self.trajectory.marks],
        }
        if ground_truth_file is not None:
            line["ground_truth"] = ground_truth_file
        return line

    def ground_truth_arrays(self) -> dict[str, np.ndarray]:
        """World and pixel ground truth as plain arrays (saved with np.savez, loaded without pickle)."""
        t = self.trajectory
        arrays = {"x": t.x, "y": t.y, "vx": t.vx, "vy": t.vy, "present": t.present, "on_ground": t.on_ground}
        arrays |= {k: np.asarray(v) for k, v in self.ground_truth.items()}
        arrays["shot_starts"] = np.array([s.start for s in self.scene.shots], dtype=np.int64)
        return arrays


def check_size(width: int, height: int) -> None:
    if width % 8 or height % 8 or width <= 0 or height <= 0:
        raise KinemaError(f"size {width}x{height}: width and height must be positive multiples of 8")
    if max(width, height) > MAX_SIDE:
        raise KinemaError(f"size {width}x{height}: the world renders at most {MAX_SIDE} pixels a side")


def make_clip(scene: SceneSpec, width: int, height: int) -> Clip:
    """Simulate, caption and render one scene."""
    check_size(width, height)
    trajectory = simulate(scene)
    captions = caption_clip(scene, trajectory)
    frames, gt = render(scene, trajectory, width, height)
    return Clip(scene, trajectory, captions, frames, gt)


def clip_seed(base_seed: int, index: int) -> int:
    """The scene seed of clip ``index`` of a dataset made with ``base_seed``."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def stream_clips(seed: int, options: SceneOptions, sizes: list[tuple[int, int]], start: int = 0
                 ) -> Iterator[tuple[int, Clip]]:
    """Endless clips for training, without touching disk. Clip i uses size sizes[i % len(sizes)]."""
    for size in sizes:
        check_size(*size)
    index = start
    while True:
        scene = sample_scene(clip_seed(seed, index), options)
        width, height = sizes[index % len(sizes)]
        yield index, make_clip(scene, width, height)
        index += 1


def make_dataset(out: str | Path, clips: int, options: SceneOptions, size: tuple[int, int], seed: int,
                 progress=None) -> Path:
    """Write ``clips`` MP4s, their ground truth (.gt.npz) and ``manifest.jsonl`` into ``out``."""
    from kinema.media import write_video

    if clips < 1:
        raise KinemaError(f"clips must be >= 1 (got {clips})")
    if options.seconds > MAX_SECONDS:
        raise KinemaError(f"seconds must be <= {MAX_SECONDS:g} (got {options.seconds:g})")
    options.validate()
    check_size(*size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    tmp = out / "manifest.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(clips):
            scene = sample_scene(clip_seed(seed, i), options)
            clip = make_clip(scene, *size)
            name = f"clip_{i:05d}"
            write_video(out / f"{name}.mp4", clip.frames, scene.fps, sidecar=False,
                        metadata={"caption": clip.captions.caption, "seed": scene.seed, "source": "kinema world"})
            np.savez_compressed(out / f"{name}.gt.npz", **clip.ground_truth_arrays())
            fh.write(json.dumps(clip.record(f"{name}.mp4", f"{name}.gt.npz")) + "\n")
            if progress is not None:
                progress(i + 1)
    os.replace(tmp, manifest)
    return manifest


def read_manifest(folder: str | Path) -> list[dict]:
    """The manifest lines of a folder, with a clear error for a missing or broken manifest."""
    path = Path(folder) / "manifest.jsonl"
    if not path.is_file():
        raise KinemaError(f"no manifest.jsonl in '{folder}'")
    lines = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise KinemaError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or "file" not in record:
            raise KinemaError(f"{path}:{n}: each line must be an object with a 'file' field")
        lines.append(record)
    return lines


def load_ground_truth(folder: str | Path, record: dict) -> dict[str, np.ndarray]:
    path = Path(folder) / record["ground_truth"]
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise KinemaError(f"cannot read ground truth '{path}': {e}") from None
