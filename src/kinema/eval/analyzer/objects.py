"""Objects in a frame: object-coloured blobs, their coverage against the background beside them, and from that
coverage the centroid, size and shape."""

from __future__ import annotations

from itertools import combinations, pairwise

import numpy as np

from kinema.eval.analyzer.palette import (
    CORE_ALPHA,
    OBJECT_NAMES,
    OBJECT_RESIDUAL,
    OBJECT_RGB,
    Palette,
    PixelMaps,
    edge_alpha,
)
from kinema.eval.analyzer.results import ObjectDetection
from kinema.eval.analyzer.segmentation import dilate, label_components, mask_window, split_touching
from kinema.world.camera import wide_view
from kinema.world.scene import SIZES

MIN_OBJECT_AREA = 3.0  # coverage-weighted pixels
MAX_OBJECT_FRACTION = 0.5  # of the frame: the largest close-up object fills about a third
DEEP_ALPHA = 0.8  # a nearly pure pixel; an object's core holds several, compression halos do not
MIN_DEEP_OBJECT = 2
SHAPE_ALPHA_FLOOR = 0.15  # fainter coverage is left out of the shape statistics (it is mostly noise)
SHAPE_INDEPENDENCE_THRESHOLD = 0.86  # see _measure: 1 for a box, 2/3 to about 0.85 for a ball
# Size classes split at the geometric means of the world's radii.
_SIZE_ORDER = sorted(SIZES, key=SIZES.get)
SIZE_BOUNDS = [float(np.sqrt(SIZES[a] * SIZES[b])) for a, b in pairwise(_SIZE_ORDER)]
LOCAL_PARTNER_PREFERENCE = 16.0  # palette partners' squared residuals count this much more (see _measure_component)


def wide_scale(width: int, height: int) -> float:
    """Pixels per metre of the wide framing at this frame size."""
    return width / wide_view(width / height)[2]


def size_class(radius_m: float) -> str:
    for name, bound in zip(_SIZE_ORDER, SIZE_BOUNDS):
        if radius_m < bound:
            return name
    return _SIZE_ORDER[-1]


def _measure(alpha: np.ndarray, rows: np.ndarray, cols: np.ndarray, core: np.ndarray) -> dict:
    """Area, centroid, extents, box and shape statistics from coverage ``alpha`` at pixels (rows, cols).

    ``independence`` is E[dx² dy²] / (E[dx²] E[dy²]) about the centroid: exactly 1 for an axis-aligned
    rectangle, also after any separable blur (pixel anti-aliasing, codec smoothing), and below 1 for a
    disc (2/3 when sharp).
    """
    area = float(alpha.sum())
    x, y = cols + 0.5, rows + 0.5
    col = float((alpha * x).sum() / area)
    row = float((alpha * y).sum() / area)
    # Shape statistics weigh far pixels heavily, so faint (noise) coverage is left out of them.
    solid = np.where(alpha >= SHAPE_ALPHA_FLOOR, alpha, 0.0)
    solid_area = max(float(solid.sum()), 1e-6)
    sc, sr = float((solid * x).sum() / solid_area), float((solid * y).sum() / solid_area)
    dx2, dy2 = (x - sc) ** 2, (y - sr) ** 2
    var_x, var_y = float((solid * dx2).sum() / solid_area), float((solid * dy2).sum() / solid_area)
    independence = float((solid * dx2 * dy2).sum() / solid_area / max(var_x * var_y, 1e-9))
    r0, c0 = rows.min(), cols.min()
    grid = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), np.float32)
    np.add.at(grid, (rows - r0, cols - c0), alpha)
    cr, cc = rows[core], cols[core]
    return {"area": area, "col": col, "row": row, "extent_w": float(grid.sum(axis=1).max()),
            "extent_h": float(grid.sum(axis=0).max()), "independence": independence,
            "bbox": (float(cc.min()), float(cr.min()), float(cc.max() + 1), float(cr.max() + 1))}


def _local_background(image: np.ndarray, region: np.ndarray, core: np.ndarray, rows: np.ndarray,
                      cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the pixels (rows, cols) of ``region`` would show without the object: the first pixel
    beyond the region on the far side, along the row and along the column. (P, 2, 3) colours,
    (P, 2) validity and (P, 2, 2) the (row, col) they come from. This finds thin backgrounds that
    no palette colour matches, such as a distant post, which is only ever a blend of wall and sky."""
    height, width = region.shape
    outside = ~dilate(region)
    col_index = np.broadcast_to(np.arange(width)[None], (height, width))
    row_index = np.broadcast_to(np.arange(height)[:, None], (height, width))
    left = np.maximum.accumulate(np.where(outside, col_index, -1), axis=1)
    right = np.minimum.accumulate(np.where(outside, col_index, width)[:, ::-1], axis=1)[:, ::-1]
    up = np.maximum.accumulate(np.where(outside, row_index, -1), axis=0)
    down = np.minimum.accumulate(np.where(outside, row_index, height)[::-1], axis=0)[::-1]
    core_rows, core_cols = np.nonzero(core)
    centre_r, centre_c = core_rows.mean(), core_cols.mean()
    across = np.where(cols < centre_c, left[rows, cols], right[rows, cols])
    along = np.where(rows < centre_r, up[rows, cols], down[rows, cols])
    valid = np.stack([(across >= 0) & (across < width), (along >= 0) & (along < height)], axis=1)
    where = np.stack([np.stack([rows, np.clip(across, 0, width - 1)], axis=1),
                      np.stack([np.clip(along, 0, height - 1), cols], axis=1)], axis=1)  # (P, 2, 2) row, col
    return image[where[..., 0], where[..., 1]], valid, where


def _local_partners(core: np.ndarray, pal: Palette, maps: PixelMaps, allowed: np.ndarray,
                    others: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Colours an object's rim can blend with: the pure background colours found up to 4 pixels
    out, and the colours of other objects close by."""
    far = dilate(dilate(dilate(dilate(core))))
    band = np.flatnonzero((far & ~core & allowed).ravel())
    pure = band[maps.background_distance[band] < 20.0]
    ids = set(np.unique(maps.nearest_background[pure]).tolist())
    # Thin strips (posts seen from afar) have no pure pixels: take any strip colour that is nearest.
    strips = set(pal.index("post") + pal.index("tree"))
    ids |= strips & set(np.unique(maps.nearest_background[band]).tolist())
    colors = [pal.background[i] for i in sorted(ids)]
    colors += [OBJECT_RGB[color] for color, mask in others if (mask & far).any()]
    return np.stack(colors) if colors else pal.background


def _object_strength(maps: PixelMaps) -> np.ndarray:
    """(P, 9) share of each object colour where a blend with it explains the pixel better than
    any blend of background colours, else 0."""
    better = maps.residual < np.minimum(OBJECT_RESIDUAL, maps.background_residual[:, None] + 1e-3)
    return np.where(better, maps.alpha, 0.0)


def find_blobs(image: np.ndarray, pal: Palette, maps: PixelMaps, allowed: np.ndarray, min_area: float,
                core_alpha: float, min_deep: int) -> list[dict]:
    """Object-coloured components inside ``allowed``, each with its coverage over core and rim.

    A component needs ``min_deep`` nearly pure pixels. A smaller component of another colour that
    hugs a bigger one is a compression halo (H.264 keeps chroma at half resolution, so colours bleed
    a pixel or two across strong edges) and is dropped.
    """
    height, width, _ = image.shape
    strength = _object_strength(maps)
    best = strength.argmax(axis=1).reshape(height, width)
    best_alpha = strength.max(axis=1).reshape(height, width)
    classes = np.where((best_alpha >= core_alpha) & allowed, best + 1, 0)
    labels, count = label_components(classes.astype(np.int16))
    deep = best_alpha >= DEEP_ALPHA
    components = []
    for k in range(1, count + 1):
        mask = labels == k
        size = int(mask.sum())
        if int(deep[mask].sum()) >= min_deep and size <= MAX_OBJECT_FRACTION * height * width:
            components.append((size, int(classes[mask][0]) - 1, mask))
    components.sort(key=lambda c: -c[0])
    kept: list[tuple[int, np.ndarray]] = []
    for _, color, mask in components:
        # A halo's nearly pure pixels all sit right on the edge of a bigger object of another colour.
        hugged = np.zeros_like(mask)
        for other_color, other in kept:
            if other_color != color:
                hugged |= dilate(dilate(other))
        if int((deep & mask & ~hugged).sum()) < min_deep:
            continue
        # Same-coloured pieces a pixel or two apart are one object (or touching ones, which the
        # luma-sharp cores below separate again).
        near = dilate(dilate(mask))
        for n, (other_color, other) in enumerate(kept):
            if other_color == color and (near & other).any():
                kept[n] = (color, other | mask)
                break
        else:
            kept.append((color, mask))
    taken = np.zeros((height, width), bool)
    for _, mask in kept:
        taken |= mask
    blobs = []
    for n, (color, component) in enumerate(kept):
        # Work in a window around the component: four pixels out holds the rim and the partners.
        window = mask_window(component, 4)
        sub = (image[window], _crop_maps(maps, window, width), allowed[window], component[window])
        others = [(c, m[window]) for c, m in kept[:n] + kept[n + 1:]]
        pure = deep[window] & (best[window] == color)
        for blob in _measure_component(color, *sub, taken[window], pure, pal, others, min_area):
            blob["rows"] += window[0].start
            blob["cols"] += window[1].start
            mask = np.zeros((height, width), bool)
            mask[window] = blob["mask"]
            blob["mask"] = mask
            blobs.append(blob)
    return blobs


def _crop_maps(maps: PixelMaps, window: tuple[slice, slice], width: int) -> PixelMaps:
    height = len(maps.background_residual) // width

    def crop(a: np.ndarray) -> np.ndarray:
        return a.reshape(height, width, *a.shape[1:])[window].reshape(-1, *a.shape[1:])

    return PixelMaps(*(crop(getattr(maps, name)) for name in (
        "alpha", "residual", "background_residual", "nearest_background", "background_distance")))


def _measure_component(color: int, image: np.ndarray, maps: PixelMaps, allowed: np.ndarray, component: np.ndarray,
                       taken: np.ndarray, pure: np.ndarray, pal: Palette, others: list[tuple[int, np.ndarray]],
                       min_area: float) -> list[dict]:
    """Coverage over a component and its rim, then the luma-sharp cores it holds (one per object).

    ``pure`` marks pixels whose RGB is nearly the object colour; each core needs a few pixels that
    are nearly pure in both RGB and luma.
    """
    height, width, _ = image.shape
    region = component | (dilate(dilate(component)) & ~taken & allowed)
    coverage = np.zeros((height, width), np.float32)
    rows, cols = np.nonzero(region)
    flat = rows * width + cols
    partners = _local_partners(component, pal, maps, allowed, others)
    local, local_valid, where = _local_background(image, region, component, rows, cols)
    # Only plain background beside the object counts, not another object or bled colour.
    objectness = _object_strength(maps).max(axis=1).reshape(height, width)
    local_valid &= objectness[where[..., 0], where[..., 1]] < 0.3
    every = np.concatenate([np.broadcast_to(partners[None], (len(rows),) + partners.shape), local], axis=1)
    valid = np.concatenate([np.ones((len(rows), len(partners)), bool), local_valid], axis=1)
    # The background seen right beside the object is the likelier partner; palette colours must
    # fit clearly better to win where it is known.
    penalty = np.ones(valid.shape, np.float32)
    penalty[:, :len(partners)] = np.where(local_valid.any(axis=1), LOCAL_PARTNER_PREFERENCE, 1.0)[:, None]
    coverage[rows, cols] = edge_alpha(image.reshape(-1, 3)[flat], OBJECT_RGB[color], every, valid, penalty)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    contrast = float(np.min(np.abs(partners @ luma - OBJECT_RGB[color] @ luma)))
    # Rim pixels that a blend of background colours explains at least as well hold none of it.
    object_residual = maps.residual[flat, color]
    empty = (object_residual > 2 * OBJECT_RESIDUAL) | (
        ~component[rows, cols] & (maps.background_residual[flat] <= object_residual))
    coverage[rows[empty], cols[empty]] = 0.0
    # Nearly pure pixels in RGB are the object whatever partner fits their luma best.
    coverage = np.where(pure, np.maximum(coverage, _object_strength(maps)[:, color].reshape(height, width)), coverage)
    # Luma-sharp cores: objects that chroma smear had joined fall apart here.
    solid = region & (coverage >= CORE_ALPHA)
    parts, count = label_components(solid.astype(np.int8))
    blobs = []
    for k in range(1, count + 1):
        part = parts == k
        if int(((coverage >= DEEP_ALPHA) & pure & part).sum()) < MIN_DEEP_OBJECT:
            continue  # colour without a solid interior: chroma bled onto something else
        for core in split_touching(part):
            rim = core | (dilate(core) & region & ~solid)
            rr, cc = np.nonzero(rim)
            alpha = coverage[rr, cc]
            if alpha.sum() >= min_area:
                inner = alpha >= DEEP_ALPHA
                rgb = image[rr[inner], cc[inner]].mean(axis=0) if inner.any() else image[rr, cc].mean(axis=0)
                blobs.append({"color": color, "rows": rr, "cols": cc, "alpha": alpha, "core": core[rr, cc],
                              "mask": core, "rgb": tuple(float(v) for v in rgb), "contrast": contrast})
    return blobs


def merge_split_by_occluder(blobs: list[dict], occluder_bbox) -> list[dict]:
    """Join same-coloured blobs on either side of the occluder, touching it, with overlapping rows:
    one object partly hidden behind it."""
    if occluder_bbox is None or len(blobs) < 2:
        return blobs
    left_edge, right_edge = occluder_bbox[0], occluder_bbox[2]
    merged = True
    while merged:
        merged = False
        for i, j in combinations(range(len(blobs)), 2):
            a, b = sorted((blobs[i], blobs[j]), key=lambda blob: blob["cols"].mean())
            if a["color"] != b["color"]:
                continue
            if abs(a["cols"].max() + 1 - left_edge) > 2 or abs(b["cols"].min() - right_edge) > 2:
                continue
            if a["rows"].max() < b["rows"].min() or b["rows"].max() < a["rows"].min():
                continue
            keep = {}
            for key in ("rows", "cols", "alpha", "core"):
                keep[key] = np.concatenate([a[key], b[key]])
            keep["color"], keep["mask"], keep["rgb"] = a["color"], a["mask"] | b["mask"], a["rgb"]
            blobs = [x for n, x in enumerate(blobs) if n not in (i, j)] + [keep]
            merged = True
            break
    return blobs


def object_from_blob(blob: dict, width: int, height: int, scale: float, occluder_mask: np.ndarray | None,
                      occluder_bbox) -> ObjectDetection:
    rows, cols, alpha, core = blob["rows"], blob["cols"], blob["alpha"], blob["core"]
    m = _measure(alpha, rows, cols, core)
    fill = m["area"] / max(m["extent_w"] * m["extent_h"], 1e-6)
    shape = "box" if m["independence"] >= SHAPE_INDEPENDENCE_THRESHOLD else "ball"
    touches = bool(rows.min() <= 0 or cols.min() <= 0 or rows.max() >= height - 1 or cols.max() >= width - 1)
    occluded = near = False
    if occluder_mask is not None:
        occluded = bool(dilate(dilate(blob["mask"]))[occluder_mask].any())
        if occluder_bbox is not None:
            gap = max(occluder_bbox[0] - m["bbox"][2], m["bbox"][0] - occluder_bbox[2])
            near = occluded or gap < max(2.0, 0.5 * max(m["extent_w"], m["extent_h"]))
    if touches or occluded:
        radius = 0.5 * max(m["extent_w"], m["extent_h"])
    else:
        radius = float(np.sqrt(m["area"] / np.pi)) if shape == "ball" else 0.5 * float(np.sqrt(m["area"]))
    det = ObjectDetection(OBJECT_NAMES[blob["color"]], shape, size_class(radius / scale), radius, m["col"], m["row"],
                          m["bbox"], m["area"], float(fill), touches, occluded, near, blob["rgb"])
    det.independence = m["independence"]
    det.contrast = blob.get("contrast", 0.0)
    return det
