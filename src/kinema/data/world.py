"""Batches of simulated-world clips, rendered on demand and never touching disk.

Clip ``i`` of batch ``index`` is the scene ``clip_seed(seed, index * batch_size + i)`` rendered at
``sizes[index % len(sizes)]``, so a batch is a pure function of (seed, index) and every clip of a
batch has the same shape. ``workers > 0`` renders a batch's clips in a process pool; the result is
the same array, bit for bit, because each clip depends only on its own seed.
"""

from __future__ import annotations

import multiprocessing
import numbers
import weakref
from dataclasses import asdict

import numpy as np

from kinema.data.batching import check_index, frames_to_video_tensor, rank_rows
from kinema.errors import KinemaError
from kinema.world.dataset import check_size, clip_seed, make_clip
from kinema.world.scene import FRAMINGS, LATENT_STRIDE, SceneOptions, sample_scene

START_METHODS = ("spawn", "forkserver", "fork")


def check_frames(frames: int) -> None:
    """A clip has 1 + 4k frames (the VAE encodes frame 0 alone, then groups of 4)."""
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1 \
            or (frames - 1) % LATENT_STRIDE:
        raise KinemaError(f"frames must be 1 + {LATENT_STRIDE}k (1, 5, 9, 13, 17, ...), got {frames!r}")


def render_clip(seed: int, width: int, height: int, options: SceneOptions) -> dict:
    """One clip as plain data (uint8 frames, captions, shot starts). Module-level so a pool can run it."""
    scene = sample_scene(seed, options)
    clip = make_clip(scene, width, height)
    return {
        "frames": clip.frames,  # (F, H, W, 3) uint8
        "caption": clip.captions.caption,
        "scene_caption": clip.captions.scene,
        "shot_captions": list(clip.captions.shots),
        "shot_starts": [int(s.start) for s in scene.shots],
        "seed": int(seed),
    }


class WorldVideoSource:
    """Deterministic, index-addressable batches of simulated clips.

    ``batch(index, batch_size)`` returns ``{"video": float32 (B, 3, F, H, W) in [-1, 1], "captions",
    "scene_captions", "shot_captions", "shot_starts" (frame where each shot starts), "seeds"}``.
    """

    def __init__(self, seed: int, sizes: list[tuple[int, int]], frames: int, fps: float = 8.0,
                 shots: int | tuple[int, int] = 1, framings: tuple[str, ...] = FRAMINGS,
                 objects: tuple[int, int] = (1, 3), occluder_probability: float = 0.5,
                 paint_probability: float = 0.3, workers: int = 0, start_method: str = "spawn") -> None:
        check_frames(frames)
        if not sizes:
            raise KinemaError("sizes must list at least one (width, height)")
        self.sizes = [(int(w), int(h)) for w, h in sizes]
        for width, height in self.sizes:
            check_size(width, height)
        if not (isinstance(fps, numbers.Real) and fps > 0):
            raise KinemaError(f"fps must be > 0 (got {fps!r})")
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
            raise KinemaError(f"workers must be an integer >= 0 (got {workers!r})")
        if start_method not in START_METHODS:
            raise KinemaError(f"start_method must be one of {', '.join(START_METHODS)} (got {start_method!r})")
        self.seed = int(seed)
        self.frames = int(frames)
        self.fps = float(fps)
        # (frames - 1) / fps seconds gives exactly `frames` frames; a single frame needs any seconds > 0
        # that rounds to zero latent steps.
        seconds = (frames - 1) / fps if frames > 1 else 0.5 / fps
        self.options = SceneOptions(
            seconds=seconds, fps=self.fps, shots=shots, framings=tuple(framings), objects=tuple(objects),
            occluder_probability=float(occluder_probability), paint_probability=float(paint_probability),
        )
        self.options.validate()
        made = sample_scene(0, self.options).frames
        if made != self.frames:  # guards the seconds <-> frames round trip for odd fps values
            raise KinemaError(f"frames {frames} at fps {fps:g} gives {made} simulated frames; pick another fps")
        self.workers = int(workers)
        self.start_method = start_method
        self._pool = None

    # ------------------------------------------------------------------ addressing

    def size_for(self, index: int) -> tuple[int, int]:
        """(width, height) of batch ``index``."""
        return self.sizes[index % len(self.sizes)]

    def describe(self) -> dict:
        """The settings that decide every batch (stored with latent caches to catch mixed settings)."""
        return {"source": "world", "seed": self.seed, "sizes": [list(s) for s in self.sizes], "frames": self.frames,
                "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.options).items()}}

    def item(self, index: int, size: tuple[int, int] | None = None) -> dict:
        """Clip number ``index`` on its own: ``video`` (3, F, H, W) plus its captions and seed.

        The size defaults to ``sizes[index % len(sizes)]``; row i of ``batch(b, n)`` equals
        ``item(b * n + i, size=size_for(b))``.
        """
        check_index(index, 1)
        width, height = size if size is not None else self.sizes[index % len(self.sizes)]
        check_size(width, height)
        clip = render_clip(clip_seed(self.seed, index), width, height, self.options)
        return {
            "video": frames_to_video_tensor([clip["frames"]])[0],
            "caption": clip["caption"],
            "scene_caption": clip["scene_caption"],
            "shot_captions": clip["shot_captions"],
            "shot_starts": clip["shot_starts"],
            "seed": clip["seed"],
        }

    def batch(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> dict:
        """Batch ``index``; with ``world_size > 1`` only this rank's contiguous slice of its rows."""
        check_index(index, batch_size)
        width, height = self.size_for(index)
        rows = rank_rows(batch_size, rank, world_size)
        jobs = [(clip_seed(self.seed, index * batch_size + i), width, height, self.options) for i in rows]
        clips = self._render_all(jobs)
        return {
            "video": frames_to_video_tensor([c["frames"] for c in clips]),  # (B, 3, F, H, W)
            "captions": [c["caption"] for c in clips],
            "scene_captions": [c["scene_caption"] for c in clips],
            "shot_captions": [c["shot_captions"] for c in clips],
            "shot_starts": [c["shot_starts"] for c in clips],
            "seeds": [c["seed"] for c in clips],
        }

    # ------------------------------------------------------------------ process pool

    def _render_all(self, jobs: list[tuple]) -> list[dict]:
        if self.workers == 0 or len(jobs) < 2:
            return [render_clip(*job) for job in jobs]
        if self._pool is None:
            context = multiprocessing.get_context(self.start_method)
            self._pool = context.Pool(self.workers)
            # Terminate the pool when the source is garbage-collected or at exit, without __del__.
            self._finalizer = weakref.finalize(self, self._pool.terminate)
        chunk = -(-len(jobs) // self.workers)  # one contiguous chunk per worker: fewer round trips
        return self._pool.starmap(render_clip, jobs, chunksize=chunk)

    def close(self) -> None:
        """Stop the worker processes (a later batch starts them again)."""
        if self._pool is not None:
            self._finalizer()
            self._pool = None

    def __enter__(self) -> WorldVideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # A pool cannot cross processes; a copy of the source starts its own when it needs one.
        state = self.__dict__.copy()
        state["_pool"] = None
        state.pop("_finalizer", None)
        return state


def clip_arrays(batch: dict) -> np.ndarray:
    """uint8 frames (B, F, H, W, 3) back from a batch's video tensor (for looking at or writing out)."""
    video = batch["video"]  # (B, 3, F, H, W) in [-1, 1]
    return ((video.permute(0, 2, 3, 4, 1) + 1.0) * 127.5).round().clamp(0, 255).byte().numpy()
