"""Paint marks: object-coloured blobs in the ground band just below the surface."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer.palette import (
    OBJECT_NAMES,
    OBJECT_RESIDUAL,
    OBJECT_RGB,
    Palette,
    edge_alpha_to,
    segment_fit,
    squared_distances,
)
from kinema.eval.analyzer.results import MarkDetection
from kinema.eval.analyzer.segmentation import mask_runs

BARE_GROUND_DISTANCE = 12.0  # RGB distance within which a column of the mark band is bare ground
MIN_MARK_AREA = 1.5
MARK_BAND_DEPTH = 0.8  # metres below the surface searched for marks (they reach down to 0.47 m)
MARK_MIN_WIDTH = 0.4  # metres; the narrowest mark is about 1 m wide
MARK_MIN_DEPTH = 0.4  # px of mark colour a column needs
MARK_PEAK, MARK_PEAK_BLACK = 0.5, 0.6  # luma share at the mark's centre row (shadows darken by 0.3 at most)
MARK_LUMA_AGREEMENT = 0.5  # the luma share must be at least this part of the colour share


def find_marks(image: np.ndarray, pal: Palette, ground_row: float, scale: float) -> list[MarkDetection]:
    """Paint marks: object colour in the ground band just below the surface.

    Marks are thin (0.3 m), so H.264 smears their colour over the rows around them, and the colour
    of an object standing on the ground bleeds into the band too. Averaging each column over the
    band keeps a mark's share (blur moves colour, it does not remove it); the colour is read from
    RGB, and the share must also show in luma, which the codec keeps sharp, so bled chroma alone
    does not make a mark.
    """
    height, width, _ = image.shape
    first = int(np.ceil(ground_row + 0.5))
    last = min(height, int(np.ceil(ground_row + MARK_BAND_DEPTH * scale)))
    if last - first < 2:
        return []
    band = image[first:last].mean(axis=0)  # (W, 3)
    shades = pal.background[pal.index("ground")]  # (k, 3)
    # The bare ground's shade: the one most columns of the band match closely. (The band's median colour
    # would do while paint covers little of it; a long trail of marks drags the median to a darker shade.)
    d2 = squared_distances(band, shades)  # (W, k)
    close = d2.min(axis=1) < BARE_GROUND_DISTANCE ** 2
    if close.any():
        base = shades[np.bincount(d2[close].argmin(axis=1), minlength=len(shades)).argmax()]
    else:
        base = shades[np.argmin(squared_distances(np.median(band, axis=0, keepdims=True), shades)[0])]
    alpha, residual = segment_fit(band, OBJECT_RGB, np.broadcast_to(base, OBJECT_RGB.shape))  # (W, 9)
    residual = np.where(alpha > 0.05, residual, np.inf)
    color = residual.argmin(axis=1)
    # Posts and the occluder stand a little into the band; their colour must not pass for paint.
    standing = pal.background[pal.index("post") + pal.index("tree")]
    _, standing_residual = segment_fit(band, standing, np.broadcast_to(base, standing.shape))
    share = alpha[np.arange(width), color]
    luma_share = edge_alpha_to(band, OBJECT_RGB[color], base)
    depth = (last - first) * np.minimum(share, luma_share / MARK_LUMA_AGREEMENT)  # px of mark per column
    # Paint is solid somewhere in the column; ringing and soft shadows never are.
    rows = image[first:last]  # (k, W, 3)
    peak = edge_alpha_to(rows.reshape(-1, 3), np.tile(OBJECT_RGB[color], (last - first, 1)), base)
    peak = peak.reshape(last - first, width).max(axis=0)
    best_residual = residual[np.arange(width), color]
    is_mark = (depth >= MARK_MIN_DEPTH) & (best_residual < OBJECT_RESIDUAL) & (
        best_residual < standing_residual.min(axis=1)) & (
        peak >= np.where(color == OBJECT_NAMES.index("black"), MARK_PEAK_BLACK, MARK_PEAK))
    marks = []
    for start, end in mask_runs(is_mark):
        for c in np.unique(color[start:end]):
            cols = np.arange(start, end)[color[start:end] == c]
            weights = depth[cols]
            if weights.sum() < MIN_MARK_AREA or len(cols) < max(2.0, MARK_MIN_WIDTH * scale):
                continue
            col = float((weights * (cols + 0.5)).sum() / weights.sum())
            marks.append(MarkDetection(OBJECT_NAMES[int(c)], float(cols.min()), float(cols.max() + 1), col,
                                       0.5 * (first + last), float(weights.sum())))
    # Where a mark meets another mark or a post, the mixed colours read as a sliver of a third colour.
    kept: list[MarkDetection] = []
    for mark in sorted(marks, key=lambda m: -m.area):
        if not any(m.area >= 2.0 * mark.area and mark.x0 < m.x1 + 2 and m.x0 - 2 < mark.x1 for m in kept):
            kept.append(mark)
    return sorted(kept, key=lambda m: m.x0)
