"""Connected components and the mask operations around them (dilation, erosion, runs, windows)."""

from __future__ import annotations

import numpy as np


def label_components(classes: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of equal non-zero values in an int map (H, W).

    Returns labels (H, W) int32, 0 where ``classes`` is 0, and the number of components. Runs of
    equal values are found with numpy and joined row to row with a union-find, so the Python work
    grows with the number of runs, not pixels.
    """
    height, width = classes.shape
    labels = np.zeros((height, width), np.int32)
    padded = np.zeros((height, width + 2), classes.dtype)
    padded[:, 1:-1] = classes
    run_rows, edges = np.nonzero(padded[:, 1:] != padded[:, :-1])  # run boundaries, row-major
    if len(edges) == 0:
        return labels, 0
    values = padded[run_rows, edges + 1]
    is_start = values != 0
    index = np.flatnonzero(is_start)
    runs = list(zip(run_rows[index].tolist(), edges[index].tolist(), edges[index + 1].tolist(),
                    values[index].tolist()))
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous_start, row_start, current_row = 0, 0, -1
    for n, (row, start, end, value) in enumerate(runs):
        if row != current_row:
            # Runs of the row just above are runs[previous_start:row_start] if that row is row - 1.
            previous_start, row_start = (row_start, n) if row == current_row + 1 else (n, n)
            current_row = row
        for m in range(previous_start, row_start):
            _, ps, pe, pv = runs[m]
            if pv == value and ps < end and start < pe:
                a, b = find(m), find(n)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = [find(i) for i in range(len(runs))]
    _, compact = np.unique(np.array(roots), return_inverse=True)
    for (row, start, end, _), label in zip(runs, compact.tolist()):
        labels[row, start:end] = label + 1
    return labels, int(compact.max()) + 1


def dilate(mask: np.ndarray) -> np.ndarray:
    """8-neighbour dilation by one pixel."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def mask_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion by one pixel (outside the frame counts as set)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def split_touching(core: np.ndarray, max_erosions: int = 8) -> list[np.ndarray]:
    """Split a core that erosion separates into several sizeable parts (touching same-coloured objects).

    The world's bodies are convex, so one body never falls apart under erosion. Each core pixel goes
    to the nearest surviving part.
    """
    eroded = core
    for _ in range(max_erosions):
        eroded = _erode(eroded)
        labels, count = label_components(eroded.astype(np.int8))
        if count == 0:
            return [core]
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        parts = [k + 1 for k in range(count) if sizes[k] >= 2]
        if len(parts) >= 2:
            rows, cols = np.nonzero(core)
            distances = []
            for k in parts:
                pr, pc = np.nonzero(labels == k)
                d = (rows[:, None] - pr[None]) ** 2 + (cols[:, None] - pc[None]) ** 2
                distances.append(d.min(axis=1))
            owner = np.argmin(np.stack(distances), axis=0)
            out = []
            for n in range(len(parts)):
                mask = np.zeros_like(core)
                mask[rows[owner == n], cols[owner == n]] = True
                out.append(mask)
            return out
    return [core]


def mask_window(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return (slice(max(0, rows.min() - margin), min(height, rows.max() + 1 + margin)),
            slice(max(0, cols.min() - margin), min(width, cols.max() + 1 + margin)))
