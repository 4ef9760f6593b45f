"""Batches of simulated-world clips, rendered on demand and never touching disk.

Clip ``i`` of batch ``index`` is the scene ``clip_seed(seed, index * batch_size + i)`` rendered at
``sizes[index % len(sizes)]``, so a batch is a pure function of (seed, index) and every clip of a
batch has the same shape. ``workers > 0`` renders a batch's clips in a process pool; the result is
the same array, bit for bit, because each clip depends only on its own seed. ``prefetch > 0`` (with
workers) starts rendering the next batches while the caller trains on this one.

``WorldMixSource`` draws each batch from one of several sources (clip lengths, shot counts) by weight,
sharing one pool: what streaming training on long and multi-shot clips needs.
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


class _Renderer:
    """A process pool that renders lists of ``render_clip`` jobs, optionally ahead of time.

    ``render(key, jobs, upcoming)`` returns the clips of ``jobs`` (taken from an earlier prefetch of ``key``
    when there is one) and starts rendering each ``(key, jobs)`` of ``upcoming`` that is not started yet.
    Renders for keys not in ``upcoming`` are dropped, so a jump (a resumed run) wastes at most one round.
    """

    def __init__(self, workers: int, start_method: str) -> None:
        self.workers = workers
        self.start_method = start_method
        self._pool = None
        self._pending: dict = {}

    def _ensure_pool(self):
        if self._pool is None:
            context = multiprocessing.get_context(self.start_method)
            self._pool = context.Pool(self.workers)
            # Terminate the pool when the renderer is garbage-collected or at exit, without __del__.
            self._finalizer = weakref.finalize(self, self._pool.terminate)
        return self._pool

    def _chunk(self, jobs: list) -> int:
        return -(-len(jobs) // self.workers)  # one contiguous chunk per worker: fewer round trips

    def render(self, key, jobs: list[tuple], upcoming: list[tuple] = ()) -> list[dict]:
        if self.workers == 0:
            return [render_clip(*job) for job in jobs]
        pending = self._pending.pop(key, None)
        wanted = {k for k, _ in upcoming}
        self._pending = {k: v for k, v in self._pending.items() if k in wanted}
        pool = self._ensure_pool() if (upcoming or len(jobs) > 1) else None
        for next_key, next_jobs in upcoming:
            if next_key not in self._pending and next_key != key:
                self._pending[next_key] = pool.starmap_async(render_clip, next_jobs, chunksize=self._chunk(next_jobs))
        if pending is not None:
            return pending.get()
        if pool is None:
            return [render_clip(*job) for job in jobs]
        return pool.starmap(render_clip, jobs, chunksize=self._chunk(jobs))

    def close(self) -> None:
        self._pending = {}
        if self._pool is not None:
            self._finalizer()
            self._pool = None

    def __getstate__(self) -> dict:
        # A pool cannot cross processes; a copy starts its own when it needs one.
        return {"workers": self.workers, "start_method": self.start_method, "_pool": None, "_pending": {}}


def _check_workers(workers, prefetch, start_method) -> None:
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        raise KinemaError(f"workers must be an integer >= 0 (got {workers!r})")
    if isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral) or prefetch < 0:
        raise KinemaError(f"prefetch must be an integer >= 0 (got {prefetch!r})")
    if start_method not in START_METHODS:
        raise KinemaError(f"start_method must be one of {', '.join(START_METHODS)} (got {start_method!r})")


def _assemble(clips: list[dict]) -> dict:
    return {
        "video": frames_to_video_tensor([c["frames"] for c in clips]),  # (B, 3, F, H, W)
        "captions": [c["caption"] for c in clips],
        "scene_captions": [c["scene_caption"] for c in clips],
        "shot_captions": [c["shot_captions"] for c in clips],
        "shot_starts": [c["shot_starts"] for c in clips],
        "seeds": [c["seed"] for c in clips],
    }


class _PooledSource:
    """What the world sources share: batches of ``self.jobs(...)`` rendered by one ``_Renderer``, with
    ``prefetch`` batches started ahead. A subclass sets up the pool with ``_start_pool`` and defines ``jobs``."""

    def _start_pool(self, workers: int, prefetch: int, start_method: str) -> None:
        _check_workers(workers, prefetch, start_method)
        self.workers = int(workers)
        self.start_method = start_method
        self.prefetch = int(prefetch) if workers else 0
        self._renderer = _Renderer(self.workers, start_method)

    def jobs(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple]:
        raise NotImplementedError

    def batch(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> dict:
        """Batch ``index``; with ``world_size > 1`` only this rank's contiguous slice of its rows."""
        check_index(index, batch_size)
        key = (index, batch_size, rank, world_size)
        upcoming = [((index + k, batch_size, rank, world_size), self.jobs(index + k, batch_size, rank, world_size))
                    for k in range(1, self.prefetch + 1)]
        return _assemble(self._renderer.render(key, self.jobs(index, batch_size, rank, world_size), upcoming))

    def close(self) -> None:
        """Stop the worker processes (a later batch starts them again)."""
        self._renderer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WorldVideoSource(_PooledSource):
    """Deterministic, index-addressable batches of simulated clips.

    ``batch(index, batch_size)`` returns ``{"video": float32 (B, 3, F, H, W) in [-1, 1], "captions",
    "scene_captions", "shot_captions", "shot_starts" (frame where each shot starts), "seeds"}``.
    """

    def __init__(self, seed: int, sizes: list[tuple[int, int]], frames: int, fps: float = 8.0,
                 shots: int | tuple[int, int] = 1, framings: tuple[str, ...] = FRAMINGS,
                 objects: tuple[int, int] = (1, 3), occluder_probability: float = 0.5,
                 paint_probability: float = 0.3, workers: int = 0, start_method: str = "spawn",
                 prefetch: int = 0) -> None:
        check_frames(frames)
        if not sizes:
            raise KinemaError("sizes must list at least one (width, height)")
        self.sizes = [(int(w), int(h)) for w, h in sizes]
        for width, height in self.sizes:
            check_size(width, height)
        if not (isinstance(fps, numbers.Real) and fps > 0):
            raise KinemaError(f"fps must be > 0 (got {fps!r})")
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
        self._start_pool(workers, prefetch, start_method)

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

    def jobs(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple]:
        """The ``render_clip`` arguments of this rank's rows of batch ``index``."""
        width, height = self.size_for(index)
        return [(clip_seed(self.seed, index * batch_size + i), width, height, self.options)
                for i in rank_rows(batch_size, rank, world_size)]


class WorldMixSource(_PooledSource):
    """Batches drawn from several ``WorldVideoSource``s, one source per batch, chosen by weight.

    The choice for batch ``index`` is a pure function of (seed, index); a source's batches are numbered
    by the global index, so two sources never share a clip when their seeds differ. One process pool
    (``workers``, ``prefetch``) renders for all of them.
    """

    def __init__(self, sources: list[WorldVideoSource], weights: list[float], seed: int = 0, workers: int = 0,
                 prefetch: int = 0, start_method: str = "spawn") -> None:
        if not sources or len(sources) != len(weights):
            raise KinemaError("a mix needs one weight per source and at least one source")
        if any(not (isinstance(w, numbers.Real) and w >= 0) for w in weights) or sum(weights) <= 0:
            raise KinemaError(f"mix weights must be >= 0 with a positive sum (got {list(weights)})")
        self._start_pool(workers, prefetch, start_method)
        self.sources = list(sources)
        total = float(sum(weights))
        self.cumulative = np.cumsum([w / total for w in weights])
        self.seed = int(seed)

    def source_for(self, index: int) -> int:
        """Which source batch ``index`` comes from."""
        draw = np.random.default_rng([self.seed, 0x6D6978, int(index)]).random()
        return int(min(np.searchsorted(self.cumulative, draw, side="right"), len(self.sources) - 1))

    def jobs(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple]:
        return self.sources[self.source_for(index)].jobs(index, batch_size, rank, world_size)

    def describe(self) -> dict:
        return {"source": "world-mix", "seed": self.seed, "weights": np.diff(self.cumulative, prepend=0).tolist(),
                "sources": [s.describe() for s in self.sources]}


def clip_arrays(batch: dict) -> np.ndarray:
    """uint8 frames (B, F, H, W, 3) back from a batch's video tensor (for looking at or writing out)."""
    video = batch["video"]  # (B, 3, F, H, W) in [-1, 1]
    return ((video.permute(0, 2, 3, 4, 1) + 1.0) * 127.5).round().clamp(0, 255).byte().numpy()
