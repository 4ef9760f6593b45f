"""Index-addressable batching shared by every data source.

A source's ``batch(index, batch_size)`` is a pure function of its seed and ``index``, so a trainer
resumes exactly by asking for the next index, and ranks split one global batch by rows
(``rank_rows``). Sources whose items have different shapes (real-video buckets, cached latents)
lay out each epoch with ``epoch_batches``: a permutation seeded by (seed, epoch) inside each
shape group, cut into batches that never mix groups, in a seeded order across groups.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from kinema.errors import KinemaError


def check_index(index: int, batch_size: int) -> None:
    """Clear errors for a bad batch index or batch size."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
        raise KinemaError(f"batch index must be an integer >= 0 (got {index!r})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise KinemaError(f"batch_size must be an integer >= 1 (got {batch_size!r})")


def rank_rows(batch_size: int, rank: int, world_size: int) -> range:
    """The rows of a global batch that ``rank`` of ``world_size`` takes: one contiguous, equal slice."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise KinemaError(f"rank must be in [0, world_size) and world_size >= 1 (got rank {rank}, "
                          f"world_size {world_size})")
    if batch_size % world_size:
        raise KinemaError(f"batch_size {batch_size} must be divisible by world_size {world_size}")
    per_rank = batch_size // world_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(stream)]))


def epoch_batches(groups: Sequence[Sequence[int]], batch_size: int, seed: int, epoch: int,
                  shuffle: bool = True) -> list[list[int]]:
    """One epoch as batches of item ids, each batch from one group.

    Every item appears once per epoch. A group whose size is not a multiple of ``batch_size`` fills
    its last batch by wrapping around to the start of its own (permuted) order, so small groups are
    still seen and every batch is full. With ``shuffle`` the items inside a group and the order of
    the batches are permuted by (seed, epoch); without it both keep the given order.
    """
    rng = epoch_rng(seed, epoch)
    batches: list[list[int]] = []
    for group in groups:
        items = list(group)
        if not items:
            continue
        if shuffle:
            items = [items[i] for i in rng.permutation(len(items))]
        count = -(-len(items) // batch_size)
        for b in range(count):
            batches.append([items[(b * batch_size + i) % len(items)] for i in range(batch_size)])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def epoch_length(groups: Sequence[Sequence[int]], batch_size: int) -> int:
    """Batches per epoch, as ``epoch_batches`` lays them out."""
    return sum(-(-len(g) // batch_size) for g in groups if len(g))


def frames_to_video_tensor(frames: Sequence[np.ndarray]):
    """uint8 clips [(F, H, W, 3)] of one shape -> float32 tensor (B, 3, F, H, W) in [-1, 1]."""
    import torch

    stacked = torch.from_numpy(np.stack(frames))  # (B, F, H, W, 3) uint8
    return stacked.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)  # (B, 3, F, H, W)
