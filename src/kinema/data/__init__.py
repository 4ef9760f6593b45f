"""Training data as index-addressable, deterministic sources.

Every source has ``batch(index, batch_size) -> dict``, a pure function of its seed and ``index``:
a trainer resumes exactly by asking for the next index, and ranks take row slices of one global
batch (``rank``/``world_size``). All videos of a batch share one shape.

- ``WorldVideoSource``: simulated clips rendered on demand, and ``WorldMixSource``: batches drawn from
  several of them by weight (``data/world.py``);
- ``VideoFolderSource``: a folder of real videos with captions, bucketed by aspect ratio and
  duration (``data/folder.py``);
- ``cache_latents`` / ``LatentSource``: a VAE-encoded cache of any source (``data/latents.py``).

The names are imported on first use, so that the world source's worker processes, which import
``kinema.data.world``, start without loading torch (about 3 s of CPU each on a small machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kinema.data.batching import epoch_batches, rank_rows
    from kinema.data.folder import VideoFolderSource, assign_bucket, available_frames, resample_indices, resize_crop
    from kinema.data.latents import LatentSource, cache_latents
    from kinema.data.world import WorldMixSource, WorldVideoSource, check_frames

_EXPORTS = {
    "epoch_batches": "batching", "rank_rows": "batching",
    "VideoFolderSource": "folder", "assign_bucket": "folder", "available_frames": "folder",
    "resample_indices": "folder", "resize_crop": "folder",
    "LatentSource": "latents", "cache_latents": "latents",
    "WorldMixSource": "world", "WorldVideoSource": "world", "check_frames": "world",
}
__all__ = [
    "LatentSource", "VideoFolderSource", "WorldMixSource", "WorldVideoSource", "assign_bucket", "available_frames",
    "cache_latents",
    "check_frames", "epoch_batches", "rank_rows", "resample_indices", "resize_crop",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kinema.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kinema.data.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
