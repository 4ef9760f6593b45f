"""The stage in a frame: the ground surface, the posts, the occluder and the scale in pixels per metre."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer.palette import CORE_ALPHA, Palette, PixelMaps
from kinema.eval.analyzer.segmentation import label_components, mask_runs
from kinema.world.palette import GROUND_COLORS
from kinema.world.physics import POST_HALF_WIDTH
from kinema.world.scene import OCCLUDER_SIZE, STAGE_WIDTH

POST_WIDTH_FRACTION = 0.08


def find_ground_row(image: np.ndarray, pal: Palette, maps: PixelMaps) -> float | None:
    """Sub-pixel row of the ground surface, or None when no ground band reaches the bottom."""
    height, width, _ = image.shape
    ground_ids = pal.index("ground")
    neutral_ids = pal.index("post") + pal.index("tree")
    nearest = maps.nearest_background.reshape(height, width)
    is_object = (maps.alpha.max(axis=1) >= CORE_ALPHA).reshape(height, width) & (
        maps.residual.min(axis=1) < maps.background_residual).reshape(height, width)
    is_ground = np.isin(nearest, ground_ids) & ~is_object
    neutral = np.isin(nearest, neutral_ids) | is_object
    counted = np.maximum((~neutral).sum(axis=1), 1)
    fraction = is_ground.sum(axis=1) / counted
    if fraction[-1] < 0.5:
        return None
    top = height - 1
    while top > 0 and fraction[top - 1] >= 0.5:
        top -= 1
    if top == 0:
        return 0.0
    # Sum the ground coverage of a window around the edge, per clean column: blur keeps the sum.
    # The colour above the window must be the same two rows running: hills are a blend of sky and
    # ground, so a sky pixel over a hill would read as partial ground.
    lo, hi = max(0, top - 1), min(height, top + 2)  # window rows [lo, hi)
    above_row, below_rows = lo - 1, list(range(hi, min(height, hi + 2)))
    if above_row < 0 or not below_rows:
        return float(top)
    ground_rgb = np.array(GROUND_COLORS[pal.ground], np.float32)
    above = image[above_row]  # (W, 3)
    window = image[lo:hi]  # (k, W, 3)
    v = ground_rgb[None] - above  # (W, 3)
    length2 = (v * v).sum(-1)
    alpha = ((window - above[None]) * v[None]).sum(-1) / np.maximum(length2, 1e-6)[None]
    alpha = np.clip(alpha, -0.25, 1.25)  # unclipped enough that ringing averages out
    fit = np.sqrt(((window - above[None] - alpha[..., None] * v[None]) ** 2).sum(-1)).max(axis=0)
    below_clean = np.sqrt(((image[below_rows] - ground_rgb) ** 2).sum(-1)).max(axis=0) < 14.0
    sky_like = pal.index("sky") + pal.index("hill") + pal.index("cloud")
    above_clean = np.isin(nearest[above_row], sky_like)
    if above_row >= 1:
        above_clean &= (nearest[above_row - 1] == nearest[above_row]) & (
            np.abs(image[above_row - 1] - above).max(axis=-1) < 12.0)
    window_clean = ~(is_object[lo:hi].any(axis=0) | neutral[max(0, lo - 1):hi + 1].any(axis=0))
    good = below_clean & above_clean & window_clean & (length2 > 15.0 ** 2) & (fit < 20.0)
    if good.sum() < 2:
        return float(top)
    rows = hi - np.clip(alpha[:, good], 0.0, 1.0).sum(axis=0) if False else hi - alpha[:, good].sum(axis=0)
    return float(np.median(rows))


def _coverage(pixels: np.ndarray, target: np.ndarray, partners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share (P,) of ``target`` in each pixel, blended with the best fitting partner colour, and the
    fit's residual (P,). The share is left a little outside [0, 1] so that ringing averages out."""
    ends = np.broadcast_to(target, partners.shape)
    v = ends - partners  # (S, 3)
    w = pixels[:, None, :] - partners[None]
    alpha = (w * v[None]).sum(-1) / np.maximum((v * v).sum(-1), 1e-6)[None]
    alpha = np.clip(alpha, -0.25, 1.25)
    residual = np.sqrt(((w - alpha[..., None] * v[None]) ** 2).sum(-1))
    best = residual.argmin(axis=1)
    index = np.arange(len(pixels))
    return alpha[index, best], residual[index, best]


def _column_profile(image: np.ndarray, rows: slice, target: np.ndarray, partners: np.ndarray,
                    quantile: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per column, a quantile over ``rows`` of the coverage of ``target``, and the median fit residual."""
    patch = image[rows]
    k, width, _ = patch.shape
    alpha, residual = _coverage(patch.reshape(-1, 3), target, partners)
    return (np.quantile(alpha.reshape(k, width), quantile, axis=0),
            np.median(residual.reshape(k, width), axis=0))


def _strip_measure(alpha: np.ndarray, start: int, end: int) -> tuple[float, float]:
    """Width and centre column of a strip from its column coverage, one column of margin each side."""
    lo, hi = max(0, start - 1), min(len(alpha), end + 1)
    weights = np.clip(alpha[lo:hi], 0.0, None)
    total = float(weights.sum())
    centre = float((weights * (np.arange(lo, hi) + 0.5)).sum() / max(total, 1e-6))
    return total, centre


def find_posts(image: np.ndarray, pal: Palette, ground_row: float | None) -> list[tuple[float, float]]:
    """(centre column, width) of the stage posts: thin post-coloured strips that run down from the top."""
    height, width, _ = image.shape
    top_rows = max(3, int(0.35 * (ground_row if ground_row is not None else height)))
    sky_like = pal.background[pal.index("sky") + pal.index("cloud")]
    post = pal.background[pal.index("post")[0]]
    # A post runs through every one of the top rows (clouds pass behind it); a passing object does not.
    alpha, residual = _column_profile(image, slice(0, min(top_rows, height)), post, sky_like, quantile=0.2)
    centres = []
    for start, end in mask_runs((alpha > 0.2) & (residual < 25.0)):
        strip_width, centre = _strip_measure(alpha, start, end)
        if 0.3 < strip_width < POST_WIDTH_FRACTION * width:
            centres.append((centre, strip_width))
    return centres


def find_occluder(image: np.ndarray, pal: Palette, maps: PixelMaps, ground_row: float | None,
                   posts: list[tuple[float, float]]):
    """(name, bbox, width in px or None) of the wall or tree standing in front, or (None, None, None).

    It is the biggest wall- or tree-coloured component that is not a post (posts are thin and run
    down from the top edge). The width is measured only when the occluder is wholly in frame.
    """
    height, width, _ = image.shape
    min_area = max(6.0, 0.002 * height * width)
    best = (None, None, None, 0.0)
    for name, color_name in (("wall", "post"), ("tree", "tree")):
        ids = pal.index(color_name)
        mask = (np.isin(maps.nearest_background, ids) & (maps.background_distance < 30.0)).reshape(height, width)
        labels, count = label_components(mask.astype(np.int8))
        for k in range(1, count + 1):
            rows, cols = np.nonzero(labels == k)
            y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
            area = float(len(rows))
            if area < min_area or y1 - y0 < 3 or area <= best[3]:
                continue
            if name == "wall" and any(x0 - 1 <= c <= x1 + 1 for c, _ in posts):
                continue  # a piece of a post
            if name == "tree" and (y0 > 0 or y1 - y0 < x1 - x0):
                continue  # a trunk runs up out of the frame
            r_end = y1 if ground_row is None else max(y0 + 1, min(y1, int(ground_row)))
            strip_width = _strip_width(image, pal, maps, range(y0 + 1, r_end), x0, x1, pal.background[ids[0]])
            best = (name, (float(x0), float(y0), float(x1), float(y1)), strip_width, area)
    return best[:3]


def _strip_width(image: np.ndarray, pal: Palette, maps: PixelMaps, rows: range, x0: int, x1: int,
                 target: np.ndarray) -> float | None:
    """Width in px of a vertical strip of colour ``target`` spanning columns [x0, x1).

    Measured on rows where the pixels two columns out on both sides are plain sky, cloud or hill:
    each edge pixel's coverage is its share of ``target`` against that side's colour. None when the
    strip is not wholly in frame or no row is clear.
    """
    height, width, _ = image.shape
    if x0 < 2 or x1 > width - 2:
        return None
    nearest = maps.nearest_background.reshape(height, width)
    distance = maps.background_distance.reshape(height, width)
    open_sky = pal.index("sky") + pal.index("cloud") + pal.index("hill")
    widths = []
    for r in rows:
        left, right = image[r, x0 - 2], image[r, x1 + 1]
        if not all(nearest[r, c] in open_sky and distance[r, c] < 20.0 for c in (x0 - 2, x1 + 1)):
            continue
        middle = (x0 + x1) // 2
        cols = np.arange(x0 - 1, x1 + 1)
        partners = np.where((cols < middle)[:, None], left[None], right[None])
        v = target[None] - partners
        alpha = ((image[r, cols] - partners) * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-6)
        widths.append(float(np.clip(alpha, 0.0, 1.0).sum()))
    return float(np.median(widths)) if len(widths) >= 2 else None


def measure_scale(posts: list[tuple[float, float]], occluder: str | None, occluder_width: float | None,
                   width: int) -> float | None:
    """Pixels per metre from the post spacing (the stage width), else from the occluder's width, else
    from a post's width when it is wide enough to measure."""
    centres = [c for c, _ in posts]
    if len(centres) >= 2 and max(centres) - min(centres) > 0.5 * width:
        return (max(centres) - min(centres)) / STAGE_WIDTH
    if occluder is not None and occluder_width is not None and occluder_width > 3.0:
        return occluder_width / OCCLUDER_SIZE[occluder][0]
    wide_posts = [w for c, w in posts if w >= 2.5 and c - 0.5 * w >= 1 and c + 0.5 * w <= width - 1]
    if wide_posts:
        return max(wide_posts) / (2.0 * POST_HALF_WIDTH)
    return None
