"""What a training run reads: clips of the simulated world, or a folder of your own videos with captions.

A data section (``VAEDataConfig``, ``DiTDataConfig``) names a ``folder`` to train on your videos
(``kinema.data.folder.VideoFolderSource``: captions from a JSONL or CSV manifest, or from a ``.txt`` beside each
video); its ``buckets`` are (frames, height, width), and without any the run makes one bucket per entry of ``sizes``
at ``frames`` frames. Every video goes to the bucket nearest its aspect ratio that its length fills, so a batch
never mixes shapes.
"""

from __future__ import annotations

from typing import Any

from kinema.config import parse_size
from kinema.frames import MAX_SIDE


def folder_buckets(data: Any) -> list[tuple[int, int, int]]:
    """A data section's buckets: its own, else ``frames`` at each of its ``sizes``."""
    if data.buckets:
        return [tuple(bucket) for bucket in data.buckets]
    sizes = [parse_size(text, max_side=MAX_SIDE) for text in data.sizes]
    return [(data.frames, height, width) for width, height in sizes]


def folder_source(data: Any, batch_size: int, random_window: bool = True):
    """The ``VideoFolderSource`` of a data section that names a ``folder``."""
    from kinema.data.folder import VideoFolderSource

    return VideoFolderSource(data.folder, fps=data.fps, buckets=folder_buckets(data), batch_size=batch_size,
                             seed=data.seed, random_window=random_window, manifest=data.manifest)


def check_folder_settings(data: Any) -> None:
    """The folder fields of a data section, checked when the config loads (ValueError, as __post_init__ raises)."""
    if data.manifest is not None and data.folder is None:
        raise ValueError("manifest: needs folder (the videos it names are relative to it)")
    for bucket in data.buckets:
        frames, height, width = bucket
        if frames < 1 or (frames - 1) % 4 or height <= 0 or width <= 0 or height % 8 or width % 8:
            raise ValueError(f"buckets: {list(bucket)} must be [frames 1 + 4k, height, width multiples of 8]")
