"""Find, measure and track the objects of the simulated world in any video.

The analyzer knows the world's palette and geometry (``kinema.world.palette``, ``kinema.world.scene``)
but nothing about how a video was made, so it reads simulator clips, H.264 round trips and the
output of a generative model alike. Per frame it:

1. classifies the scene: the (sky, ground) pair whose background colours, together with the object
   colours, explain the frame's pixels best;
2. finds the ground surface (sub-pixel) as the top of the band of ground-coloured rows;
3. explains every pixel as a blend ``alpha * object + (1 - alpha) * partner`` of an object colour and
   a background or other object colour, so that anti-aliased and blurred edges keep their coverage;
4. labels the confident cores (alpha >= 0.5) into components, grows them by one pixel and measures
   colour, shape (fill ratio of the coverage within its extents), size, coverage-weighted centroid,
   box, border contact and occlusion; object-coloured blobs below the ground surface are paint marks;
5. finds the occluder and the stage posts; the post spacing (or the occluder width) gives the scale
   in pixels per metre.

Over the whole video it detects cuts (frames whose content jumps), links objects into tracks within
each shot, re-associates them across cuts by colour and shape, and summarises each shot.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np

from kinema.world.camera import wide_view
from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, OCCLUDER_COLORS, SKY_COLORS, background_colors
from kinema.world.scene import OCCLUDER_SIZE, SIZES, STAGE_WIDTH

OBJECT_NAMES = tuple(OBJECT_COLORS)
OBJECT_RGB = np.array([OBJECT_COLORS[n] for n in OBJECT_NAMES], dtype=np.float32)  # (9, 3)
SHADES = (1.0, 0.85, 0.7)  # ground brightness under soft shadows (the palette's shadow colour is darker still)

CORE_ALPHA = 0.5  # a pixel belongs to an object's core when at least half of it is that object
OBJECT_RESIDUAL = 45.0  # RGB distance a pixel may sit off its blend segment and still count
CANDIDATE_RESIDUAL = 4.0  # pixels this close to a background blend are not examined further
MIN_OBJECT_AREA = 3.0  # coverage-weighted pixels
MIN_MARK_AREA = 1.5
BALL_FILL = float(np.pi / 4.0)
SHAPE_FILL_THRESHOLD = 0.895  # between a disc (pi/4, a little more when small) and a square (1)
# Size classes split at the geometric means of the world's radii.
_SIZE_ORDER = sorted(SIZES, key=SIZES.get)
SIZE_BOUNDS = [float(np.sqrt(SIZES[a] * SIZES[b])) for a, b in zip(_SIZE_ORDER, _SIZE_ORDER[1:])]
POST_WIDTH_FRACTION = 0.08  # posts are narrower than this share of the frame width; walls are wider


# -- results -----------------------------------------------------------------------------------


@dataclass
class ObjectDetection:
    """One object in one frame. Pixel coordinates: column right, row down, pixel i covers [i, i+1)."""

    color: str
    shape: str  # ball | box
    size: str  # small | medium | large, at the frame's scale (see FrameAnalysis.scale_known)
    radius_px: float  # radius or half side
    col: float  # coverage-weighted centroid
    row: float
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 of pixels at least half covered
    area: float  # visible coverage, px
    fill: float  # area / (width x height) of the coverage extents: pi/4 for a disc, 1 for a square
    touches_border: bool
    occluded: bool  # touches the occluder, so part of it may be hidden
    near_occluder: bool
    track: int = -1

    @property
    def clean(self) -> bool:
        """Fully in frame and clear of the occluder: every measurement is trustworthy."""
        return not (self.touches_border or self.occluded)


@dataclass
class MarkDetection:
    """A paint mark: an object-coloured blob in the ground band, below the surface."""

    color: str
    x0: float  # horizontal extent, px
    x1: float
    col: float
    row: float
    area: float


@dataclass
class FrameAnalysis:
    index: int
    sky: str | None
    ground: str | None  # None when no ground band is visible
    ground_row: float | None  # row of the ground surface (sub-pixel)
    occluder: str | None  # wall | tree | None
    occluder_bbox: tuple[float, float, float, float] | None
    scale: float  # pixels per metre
    scale_known: bool  # measured from the image (posts, occluder); else the wide framing is assumed
    objects: list[ObjectDetection] = field(default_factory=list)
    marks: list[MarkDetection] = field(default_factory=list)


@dataclass
class Track:
    """One object followed through the video. ``frames`` and the per-frame lists are aligned."""

    id: int
    color: str
    shape: str  # the majority over clean detections
    size: str
    frames: list[int] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)  # shot index of each frame
    col: list[float] = field(default_factory=list)
    row: list[float] = field(default_factory=list)
    radius_px: list[float] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.color, self.shape


@dataclass
class ShotSummary:
    index: int
    start: int  # first frame
    end: int  # one past the last frame
    sky: str | None
    ground: str | None
    occluder: str | None
    scale: float
    scale_known: bool
    static: bool  # the background does not move: the camera holds still
    objects: list[tuple[str, str]] = field(default_factory=list)  # (colour, shape) seen in the shot
    tracks: list[int] = field(default_factory=list)


@dataclass
class VideoAnalysis:
    fps: float
    width: int
    height: int
    frames: list[FrameAnalysis]
    cuts: list[int]  # frames where a new shot starts (never 0)
    shots: list[ShotSummary]
    tracks: list[Track]

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def shot_of(self, frame: int) -> int:
        """Index of the shot that holds ``frame``."""
        return int(np.searchsorted(np.array(self.cuts, dtype=np.int64), frame, side="right"))

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        out = asdict(self)
        out["num_frames"] = self.num_frames
        return _jsonable(out)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# -- colour geometry ---------------------------------------------------------------------------


def _segment_fit(pixels: np.ndarray, ends: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project pixels on colour segments start -> end.

    pixels (P, 3); starts, ends (..., 3) broadcastable to a segment axis S. Returns alpha (P, S), the
    weight of ``end`` in [0, 1], and the RGB distance (P, S) of each pixel from its projection.
    """
    v = (ends - starts).reshape(-1, 3)  # (S, 3)
    s = np.broadcast_to(starts, ends.shape).reshape(-1, 3)
    w = pixels[:, None, :] - s[None]  # (P, S, 3)
    length2 = (v * v).sum(-1)  # (S,)
    alpha = (w * v[None]).sum(-1) / np.maximum(length2, 1e-6)[None]
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[:, length2 < 1e-6] = 1.0
    residual = np.sqrt(((w - alpha[..., None] * v[None]) ** 2).sum(-1))
    return alpha, residual


@dataclass
class Palette:
    """Background and object colours of one (sky, ground) pair."""

    sky: str
    ground: str
    background: np.ndarray  # (K, 3)
    background_names: list[str]

    @classmethod
    def of(cls, sky: str, ground: str) -> Palette:
        colors = background_colors(sky, ground)
        colors.pop("shadow")
        base = np.array(GROUND_COLORS[ground], np.float32)
        names, rgb = [], []
        for name, value in colors.items():
            if name == "ground":
                for shade in SHADES:
                    names.append("ground")
                    rgb.append(base * shade)
            else:
                names.append(name)
                rgb.append(np.array(value, np.float32))
        names.append("tree")
        rgb.append(np.array(OCCLUDER_COLORS["tree"], np.float32))
        # The palette's shadow colour (post colour == wall colour is already in as "post").
        names.append("ground")
        rgb.append(np.array(background_colors(sky, ground)["shadow"], np.float32))
        return cls(sky, ground, np.stack(rgb), names)

    def index(self, name: str) -> list[int]:
        return [i for i, n in enumerate(self.background_names) if n == name]

    def background_residual(self, pixels: np.ndarray) -> np.ndarray:
        """Distance (P,) of each pixel from the nearest blend of two background colours."""
        pairs = list(combinations(range(len(self.background)), 2))
        a = self.background[[p[0] for p in pairs]]
        b = self.background[[p[1] for p in pairs]]
        _, residual = _segment_fit(pixels, b, a)
        return residual.min(axis=1)

    def object_fit(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best blend of each object colour with any partner (background or another object).

        Returns alpha (P, 9), the object's share, and residual (P, 9).
        """
        partners = np.concatenate([self.background, OBJECT_RGB])  # (E, 3)
        ends = np.broadcast_to(OBJECT_RGB[:, None, :], (9, len(partners), 3))
        starts = np.broadcast_to(partners[None], (9, len(partners), 3))
        alpha, residual = _segment_fit(pixels, ends, starts)
        alpha = alpha.reshape(len(pixels), 9, -1)
        residual = residual.reshape(len(pixels), 9, -1)
        best = residual.argmin(axis=2)[..., None]
        return np.take_along_axis(alpha, best, 2)[..., 0], np.take_along_axis(residual, best, 2)[..., 0]


_PALETTES: dict[tuple[str, str], Palette] = {}


def palette(sky: str, ground: str) -> Palette:
    key = (sky, ground)
    if key not in _PALETTES:
        _PALETTES[key] = Palette.of(sky, ground)
    return _PALETTES[key]


def classify_scene(image: np.ndarray, max_pixels: int = 4096) -> tuple[str, str]:
    """The (sky, ground) pair whose colours, with the object colours, best explain the image.

    Cost per pixel: the squared distance to the nearest colour, capped so that off-palette pixels
    (a generated video's artefacts) cannot outvote the rest.
    """
    pixels = image.reshape(-1, 3)
    step = max(1, len(pixels) // max_pixels)
    pixels = pixels[::step]
    best, best_cost = (next(iter(SKY_COLORS)), next(iter(GROUND_COLORS))), np.inf
    for sky in SKY_COLORS:
        for ground in GROUND_COLORS:
            colors = np.concatenate([palette(sky, ground).background, OBJECT_RGB])
            d2 = ((pixels[:, None, :] - colors[None]) ** 2).sum(-1).min(axis=1)
            cost = float(np.minimum(d2, 40.0 ** 2).sum())
            if cost < best_cost:
                best, best_cost = (sky, ground), cost
    return best


# -- connected components ----------------------------------------------------------------------


def label_components(classes: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of equal non-zero values in an int map (H, W).

    Returns labels (H, W) int32, 0 where ``classes`` is 0, and the number of components. Runs of
    equal values are joined row by row with a union-find, so the cost grows with the number of runs.
    """
    height, width = classes.shape
    labels = np.zeros((height, width), np.int32)
    parent: list[int] = [0]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous: list[tuple[int, int, int, int]] = []  # start, end, class, label
    for r in range(height):
        row = classes[r]
        if not row.any():
            previous = []
            continue
        change = np.flatnonzero(np.diff(row)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [width]))
        runs = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            value = int(row[s])
            if value == 0:
                continue
            label = 0
            for ps, pe, pv, pl in previous:
                if pv == value and ps < e and s < pe:
                    root = find(pl)
                    if label == 0:
                        label = root
                    elif root != label:
                        parent[max(root, label)] = min(root, label)
                        label = min(root, label)
            if label == 0:
                label = len(parent)
                parent.append(label)
            runs.append((s, e, value, label))
        for s, e, _, label in runs:
            labels[r, s:e] = label
        previous = runs
    if len(parent) == 1:
        return labels, 0
    roots = np.array([find(i) for i in range(len(parent))], np.int32)
    _, compact = np.unique(roots, return_inverse=True)
    return compact.astype(np.int32)[labels], int(compact.max())


def _dilate(mask: np.ndarray) -> np.ndarray:
    """8-neighbour dilation by one pixel."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


# -- per-frame analysis ------------------------------------------------------------------------


def wide_scale(width: int, height: int) -> float:
    """Pixels per metre of the wide framing at this frame size."""
    return width / wide_view(width / height)[2]


def size_class(radius_m: float) -> str:
    for name, bound in zip(_SIZE_ORDER, SIZE_BOUNDS):
        if radius_m < bound:
            return name
    return _SIZE_ORDER[-1]


@dataclass
class _PixelMaps:
    """Per-pixel explanation of one frame (flattened arrays of length H * W)."""

    alpha: np.ndarray  # (P, 9) share of each object colour
    residual: np.ndarray  # (P, 9)
    background_residual: np.ndarray  # (P,)
    nearest_background: np.ndarray  # (P,) index into the palette's background colours
    background_distance: np.ndarray  # (P,) distance to that colour


def _pixel_maps(image: np.ndarray, pal: Palette) -> _PixelMaps:
    pixels = image.reshape(-1, 3)
    count = len(pixels)
    d = np.sqrt(((pixels[:, None, :] - pal.background[None]) ** 2).sum(-1))  # (P, K)
    nearest = d.argmin(axis=1)
    nearest_distance = d[np.arange(count), nearest]
    alpha = np.zeros((count, 9), np.float32)
    residual = np.full((count, 9), np.inf, np.float32)
    background_residual = np.zeros(count, np.float32)
    candidates = np.flatnonzero(nearest_distance > CANDIDATE_RESIDUAL)
    if len(candidates):
        background_residual[candidates] = pal.background_residual(pixels[candidates])
        busy = candidates[background_residual[candidates] > CANDIDATE_RESIDUAL]
        if len(busy):
            alpha[busy], residual[busy] = pal.object_fit(pixels[busy])
    return _PixelMaps(alpha, residual, background_residual, nearest, nearest_distance)


def _find_ground_row(image: np.ndarray, pal: Palette, maps: _PixelMaps) -> float | None:
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
    lo, hi = max(0, top - 2), min(height, top + 2)  # window rows [lo, hi)
    above_row, below_rows = lo - 1, range(hi, min(height, hi + 2))
    if above_row < 0 or not len(below_rows):
        return float(top)
    ground_rgb = np.array(GROUND_COLORS[pal.ground], np.float32)
    above = image[above_row]  # (W, 3)
    window = image[lo:hi]  # (k, W, 3)
    v = ground_rgb[None] - above  # (W, 3)
    length2 = (v * v).sum(-1)
    alpha = ((window - above[None]) * v[None]).sum(-1) / np.maximum(length2, 1e-6)[None]
    alpha = np.clip(alpha, 0.0, 1.0)
    fit = np.sqrt(((window - above[None] - alpha[..., None] * v[None]) ** 2).sum(-1)).max(axis=0)
    below = image[list(below_rows)]
    below_clean = np.sqrt(((below - ground_rgb) ** 2).sum(-1)).max(axis=0) < 14.0
    above_clean = np.isin(nearest[above_row], pal.index("sky") + pal.index("hill") + pal.index("cloud"))
    window_clean = ~(is_object[lo:hi].any(axis=0) | neutral[max(0, lo - 1):hi + 1].any(axis=0))
    good = below_clean & above_clean & window_clean & (length2 > 15.0 ** 2) & (fit < 20.0)
    if good.sum() < 2:
        return float(top)
    rows = hi - alpha[:, good].sum(axis=0)
    return float(np.median(rows))


def _coverage(pixels: np.ndarray, target: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """Share (P,) of ``target`` in each pixel, blended with the best fitting partner colour."""
    alpha, residual = _segment_fit(pixels, np.broadcast_to(target, partners.shape), partners)
    best = residual.argmin(axis=1)
    return alpha[np.arange(len(pixels)), best]


def _strips(image: np.ndarray, pal: Palette, maps: _PixelMaps, name: str, ground_row: float | None):
    """Components whose nearest colour is the named background colour (post/wall or tree).

    Returns a list of (x0, y0, x1, y1, centre column, width): pixel bounds, the coverage-weighted
    centre and the median coverage per row, both sub-pixel.
    """
    height, width, _ = image.shape
    ids = pal.index(name)
    mask = np.isin(maps.nearest_background, ids) & (maps.background_distance < 30.0)
    mask = mask.reshape(height, width)
    labels, count = label_components(mask.astype(np.int8))
    out = []
    others = np.array([c for i, c in enumerate(pal.background) if i not in ids])
    target = pal.background[ids[0]]
    for k in range(1, count + 1):
        rows, cols = np.nonzero(labels == k)
        if len(rows) < 3:
            continue
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        if y1 - y0 < 2:
            continue
        # Coverage over the component's rows, one column either side, above the ground.
        r_end = y1 if ground_row is None else max(y0 + 1, min(y1, int(ground_row)))
        c0, c1 = max(0, x0 - 1), min(width, x1 + 1)
        patch = image[y0:r_end, c0:c1].reshape(-1, 3)
        cov = _coverage(patch, target, others).reshape(r_end - y0, c1 - c0)
        per_row = cov.sum(axis=1)
        strip_width = float(np.median(per_row))
        col_weights = cov.sum(axis=0)
        centre = float((col_weights * (np.arange(c0, c1) + 0.5)).sum() / max(col_weights.sum(), 1e-6))
        out.append((float(x0), float(y0), float(x1), float(y1), centre, strip_width))
    return out


def _find_occluder_and_scale(image: np.ndarray, pal: Palette, maps: _PixelMaps, ground_row: float | None):
    """(occluder name, bbox, scale px/m or None). Posts are the stage's edge strips; walls and trees stand in front."""
    height, width, _ = image.shape
    min_area = max(4.0, 0.002 * height * width)
    occluder, bbox, occluder_width = None, None, None
    posts = []
    for x0, y0, x1, y1, centre, strip_width in _strips(image, pal, maps, "post", ground_row):
        if y0 == 0 and strip_width < POST_WIDTH_FRACTION * width:
            posts.append(centre)
        elif (x1 - x0) * (y1 - y0) >= min_area and (bbox is None or (x1 - x0) * (y1 - y0) > _area(bbox)):
            occluder, bbox = "wall", (x0, y0, x1, y1)
            occluder_width = strip_width if x0 > 0 and x1 < width else None
    for x0, y0, x1, y1, _, strip_width in _strips(image, pal, maps, "tree", ground_row):
        if (x1 - x0) * (y1 - y0) >= min_area and (y1 - y0) > (x1 - x0) and (
                bbox is None or (x1 - x0) * (y1 - y0) > _area(bbox)):
            occluder, bbox = "tree", (x0, y0, x1, y1)
            occluder_width = strip_width if x0 > 0 and x1 < width else None
    scale = None
    if len(posts) >= 2 and max(posts) - min(posts) > 0.5 * width:
        scale = (max(posts) - min(posts)) / STAGE_WIDTH
    elif occluder is not None and occluder_width is not None and occluder_width > 2.0:
        scale = occluder_width / OCCLUDER_SIZE[occluder][0]
    return occluder, bbox, scale


def _area(bbox: tuple[float, float, float, float]) -> float:
    return (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])


def _measure(alpha: np.ndarray, rows: np.ndarray, cols: np.ndarray, core: np.ndarray):
    """Area, centroid, extents and box from coverage ``alpha`` at pixel (rows, cols)."""
    area = float(alpha.sum())
    col = float((alpha * (cols + 0.5)).sum() / area)
    row = float((alpha * (rows + 0.5)).sum() / area)
    r0, c0 = rows.min(), cols.min()
    grid = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), np.float32)
    np.add.at(grid, (rows - r0, cols - c0), alpha)
    extent_w = float(grid.sum(axis=1).max())
    extent_h = float(grid.sum(axis=0).max())
    cr, cc = rows[core], cols[core]
    bbox = (float(cc.min()), float(cr.min()), float(cc.max() + 1), float(cr.max() + 1))
    return area, col, row, extent_w, extent_h, bbox


def _find_blobs(maps: _PixelMaps, height: int, width: int, allowed: np.ndarray, min_area: float,
                core_alpha: float, occluder_mask: np.ndarray | None):
    """Object-coloured components inside the ``allowed`` rows. Yields measured blobs as dicts."""
    strength = np.where(maps.residual < np.minimum(OBJECT_RESIDUAL, maps.background_residual[:, None] + 1e-3),
                        maps.alpha, 0.0)  # (P, 9)
    best = strength.argmax(axis=1)
    best_alpha = strength.max(axis=1)
    classes = np.where(best_alpha >= core_alpha, best + 1, 0).reshape(height, width)
    classes[~allowed] = 0
    labels, count = label_components(classes.astype(np.int16))
    blobs = []
    taken = labels > 0
    for k in range(1, count + 1):
        core = labels == k
        color = int(classes[core][0]) - 1
        ring = _dilate(core) & ~taken & allowed
        region = core | ring
        rows, cols = np.nonzero(region)
        flat = rows * width + cols
        alpha = np.where(maps.residual[flat, color] < 2 * OBJECT_RESIDUAL, maps.alpha[flat, color], 0.0)
        alpha[core[rows, cols]] = np.maximum(alpha[core[rows, cols]], core_alpha)
        if alpha.sum() < min_area:
            continue
        blobs.append({"color": color, "rows": rows, "cols": cols, "alpha": alpha,
                      "core": core[rows, cols], "mask": core})
    return blobs


def _merge_split_by_occluder(blobs: list[dict], occluder_mask: np.ndarray | None) -> list[dict]:
    """Join same-coloured blobs that touch the occluder from both sides with overlapping rows."""
    if occluder_mask is None or len(blobs) < 2:
        return blobs
    grown = _dilate(_dilate(occluder_mask))
    merged = True
    while merged:
        merged = False
        for i, j in combinations(range(len(blobs)), 2):
            a, b = blobs[i], blobs[j]
            if a["color"] != b["color"]:
                continue
            if not (grown[a["rows"], a["cols"]].any() and grown[b["rows"], b["cols"]].any()):
                continue
            if a["rows"].max() < b["rows"].min() or b["rows"].max() < a["rows"].min():
                continue
            keep = {}
            for key in ("rows", "cols", "alpha", "core"):
                keep[key] = np.concatenate([a[key], b[key]])
            keep["color"], keep["mask"] = a["color"], a["mask"] | b["mask"]
            blobs = [x for n, x in enumerate(blobs) if n not in (i, j)] + [keep]
            merged = True
            break
    return blobs


def analyze_frame(image: np.ndarray, index: int = 0) -> FrameAnalysis:
    """Scene, ground, occluder, scale, objects and marks of one (H, W, 3) float RGB frame."""
    height, width, _ = image.shape
    sky, ground = classify_scene(image)
    pal = palette(sky, ground)
    maps = _pixel_maps(image, pal)
    ground_row = _find_ground_row(image, pal, maps)
    occluder, occluder_bbox, scale = _find_occluder_and_scale(image, pal, maps, ground_row)
    scale_known = scale is not None
    if scale is None:
        scale = wide_scale(width, height)
    occluder_mask = None
    if occluder is not None:
        ids = pal.index("post" if occluder == "wall" else "tree")
        occluder_mask = (np.isin(maps.nearest_background, ids) & (maps.background_distance < 30.0)).reshape(
            height, width)
    row_index = np.arange(height)[:, None]
    above = np.ones((height, width), bool) if ground_row is None else np.broadcast_to(
        row_index < ground_row, (height, width))
    objects = []
    blobs = _find_blobs(maps, height, width, above, MIN_OBJECT_AREA, CORE_ALPHA, occluder_mask)
    for blob in _merge_split_by_occluder(blobs, occluder_mask):
        objects.append(_object_from_blob(blob, width, height, scale, occluder_mask, occluder_bbox))
    marks = []
    if ground_row is not None:
        below = np.broadcast_to(row_index >= np.ceil(ground_row), (height, width))
        for blob in _find_blobs(maps, height, width, below, MIN_MARK_AREA, 0.4, None):
            area, col, row, _, _, bbox = _measure(blob["alpha"], blob["rows"], blob["cols"], blob["core"])
            marks.append(MarkDetection(OBJECT_NAMES[blob["color"]], bbox[0], bbox[2], col, row, area))
    return FrameAnalysis(index, sky, ground if ground_row is not None else None, ground_row, occluder,
                         occluder_bbox, float(scale), scale_known, objects, marks)


def _object_from_blob(blob: dict, width: int, height: int, scale: float, occluder_mask: np.ndarray | None,
                      occluder_bbox) -> ObjectDetection:
    rows, cols, alpha, core = blob["rows"], blob["cols"], blob["alpha"], blob["core"]
    area, col, row, extent_w, extent_h, bbox = _measure(alpha, rows, cols, core)
    fill = area / max(extent_w * extent_h, 1e-6)
    shape = "box" if fill >= SHAPE_FILL_THRESHOLD else "ball"
    touches = bool(rows.min() <= 0 or cols.min() <= 0 or rows.max() >= height - 1 or cols.max() >= width - 1)
    occluded = near = False
    if occluder_mask is not None:
        occluded = bool(_dilate(_dilate(blob["mask"]))[occluder_mask].any())
        if occluder_bbox is not None:
            gap = max(occluder_bbox[0] - bbox[2], bbox[0] - occluder_bbox[2])
            near = occluded or gap < max(2.0, 0.5 * max(extent_w, extent_h))
    if touches or occluded:
        radius = 0.5 * max(extent_w, extent_h)
    else:
        radius = float(np.sqrt(area / np.pi)) if shape == "ball" else 0.5 * float(np.sqrt(area))
    return ObjectDetection(OBJECT_NAMES[blob["color"]], shape, size_class(radius / scale), radius, col, row, bbox,
                           area, float(fill), touches, occluded, near)


# -- video -------------------------------------------------------------------------------------


def _as_frames(frames) -> np.ndarray:
    """Any array-like video to float32 (F, H, W, 3) in [0, 255]."""
    array = np.asarray(frames)
    if array.ndim == 2:
        array = array[None, ..., None]
    elif array.ndim == 3:
        array = array[None] if array.shape[-1] in (1, 3, 4) else array[..., None]
    if array.ndim != 4:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if array.dtype.kind == "f":
        array = np.nan_to_num(array.astype(np.float32))
        if array.size and array.max() <= 1.0:
            array = array * 255.0
    return np.clip(array.astype(np.float32), 0.0, 255.0)


def _thumbnail(image: np.ndarray, cells: int = 16) -> np.ndarray:
    """Block means on a cells x cells grid (fewer on tiny frames)."""
    height, width, _ = image.shape
    r = np.linspace(0, height, min(cells, height) + 1).astype(int)
    c = np.linspace(0, width, min(cells, width) + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(image, r[:-1], axis=0), c[:-1], axis=1)
    counts = np.diff(r)[:, None, None] * np.diff(c)[None, :, None]
    return sums / counts


def detect_cuts(images: np.ndarray, analyses: list[FrameAnalysis]) -> list[int]:
    """Frames where a new shot starts: the content jumps by much more than it moves around them.

    The jump between two frames is the mean absolute difference of their thumbnails; a frame is a
    cut when its jump is large in absolute terms and several times the typical jump nearby, or when
    the measured scale changes.
    """
    count = len(images)
    if count < 2:
        return []
    thumbs = np.stack([_thumbnail(im) for im in images])
    jump = np.zeros(count)
    jump[1:] = np.abs(thumbs[1:] - thumbs[:-1]).mean(axis=(1, 2, 3))
    cuts = []
    for f in range(1, count):
        nearby = [jump[g] for g in range(max(1, f - 4), min(count, f + 5)) if g != f]
        baseline = float(np.median(nearby)) if nearby else 0.0
        a, b = analyses[f - 1], analyses[f]
        scale_jump = a.scale_known and b.scale_known and abs(np.log(a.scale / b.scale)) > np.log(1.25)
        if (jump[f] > 4.0 and jump[f] > 3.0 * baseline + 1.0) or scale_jump:
            cuts.append(f)
    return cuts


def _static(images: np.ndarray, start: int, end: int) -> bool:
    """Whether the background holds still over frames [start, end)."""
    if end - start < 2:
        return True
    thumbs = np.stack([_thumbnail(im, 32) for im in images[start:end]])
    changed = (np.abs(np.diff(thumbs, axis=0)).max(axis=-1) > 12.0).mean(axis=(1, 2))  # (n-1,)
    return float(np.median(changed)) < 0.06


def _link_shot(analyses: list[FrameAnalysis], start: int, end: int, fps: float) -> list[list[tuple[int, int]]]:
    """Tracklets within one shot: lists of (frame, detection index), linked greedily by colour,
    shape and distance to a constant-velocity prediction. A tracklet may skip frames (occlusion)."""
    tracklets: list[list[tuple[int, int]]] = []
    max_gap = max(2, int(round(2.0 * fps)))
    for f in range(start, end):
        detections = analyses[f].objects
        if not detections:
            continue
        pairs = []
        for t, tracklet in enumerate(tracklets):
            last_f, last_i = tracklet[-1]
            if f - last_f > max_gap:
                continue
            last = analyses[last_f].objects[last_i]
            pc, pr = last.col, last.row
            if len(tracklet) >= 2:
                prev_f, prev_i = tracklet[-2]
                prev = analyses[prev_f].objects[prev_i]
                steps = (f - last_f) / max(last_f - prev_f, 1)
                pc += (last.col - prev.col) * steps
                pr += (last.row - prev.row) * steps
            for i, det in enumerate(detections):
                if det.color != last.color:
                    continue
                distance = float(np.hypot(det.col - pc, det.row - pr))
                size = max(det.radius_px, last.radius_px, 1.0)
                if distance > 4.0 * size + 0.15 * max(len(analyses[f].objects), 1) * 0 + 6.0 * (f - last_f):
                    continue
                cost = distance / size + (0.5 if det.shape != last.shape else 0.0)
                pairs.append((cost, t, i))
        used_t, used_i = set(), set()
        for _, t, i in sorted(pairs):
            if t in used_t or i in used_i:
                continue
            used_t.add(t)
            used_i.add(i)
            tracklets[t].append((f, i))
        for i in range(len(detections)):
            if i not in used_i:
                tracklets.append([(f, i)])
    return tracklets


def _majority(values: list, weights: list[float] | None = None):
    if not values:
        return None
    tally: dict = {}
    for n, v in enumerate(values):
        tally[v] = tally.get(v, 0.0) + (1.0 if weights is None else weights[n])
    return max(tally.items(), key=lambda kv: kv[1])[0]


def _build_tracks(analyses: list[FrameAnalysis], shots: list[tuple[int, int]], fps: float) -> list[Track]:
    tracks: list[Track] = []
    for shot_index, (start, end) in enumerate(shots):
        used_in_shot: set[int] = set()
        tracklets = sorted(_link_shot(analyses, start, end, fps), key=len, reverse=True)
        for tracklet in tracklets:
            dets = [analyses[f].objects[i] for f, i in tracklet]
            clean = [d for d in dets if d.clean] or dets
            shape = _majority([d.shape for d in clean], [d.area for d in clean])
            color = dets[0].color
            # Re-associate across cuts by colour and shape; one track per look within a shot.
            match = next((t for t in tracks if t.key == (color, shape) and t.id not in used_in_shot), None)
            if match is None:
                match = Track(len(tracks), color, shape, _majority([d.size for d in clean]))
                tracks.append(match)
            used_in_shot.add(match.id)
            for (f, i), det in zip(tracklet, dets):
                det.track = match.id
                match.frames.append(f)
                match.shots.append(shot_index)
                match.col.append(det.col)
                match.row.append(det.row)
                match.radius_px.append(det.radius_px)
                match.clean.append(det.clean)
    for track in tracks:
        order = np.argsort(track.frames, kind="stable")
        for name in ("frames", "shots", "col", "row", "radius_px", "clean"):
            values = getattr(track, name)
            setattr(track, name, [values[k] for k in order])
    return tracks


def analyze_video(frames, fps: float) -> VideoAnalysis:
    """Analyse a video given as (F, H, W, 3) frames (uint8, or float in [0, 1] or [0, 255])."""
    images = _as_frames(frames)
    fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 8.0
    count = len(images)
    height, width = (images.shape[1], images.shape[2]) if count else (0, 0)
    if count == 0 or height == 0 or width == 0:
        return VideoAnalysis(fps, width, height, [], [], [], [])
    analyses = [analyze_frame(images[f], f) for f in range(count)]
    cuts = detect_cuts(images, analyses)
    bounds = list(zip([0] + cuts, cuts + [count]))
    # One scale per shot: the median of the measured ones, else the wide framing's.
    for start, end in bounds:
        known = [a.scale for a in analyses[start:end] if a.scale_known]
        scale = float(np.median(known)) if known else wide_scale(width, height)
        for a in analyses[start:end]:
            a.scale, a.scale_known = scale, bool(known)
            for obj in a.objects:
                obj.size = size_class(obj.radius_px / scale)
    tracks = _build_tracks(analyses, bounds, fps)
    shots = []
    for n, (start, end) in enumerate(bounds):
        part = analyses[start:end]
        ids = sorted({o.track for a in part for o in a.objects})
        shots.append(ShotSummary(
            n, start, end,
            _majority([a.sky for a in part]),
            _majority([a.ground for a in part]),
            _majority([a.occluder for a in part if a.occluder]) if any(a.occluder for a in part) else None,
            part[0].scale, part[0].scale_known, _static(images, start, end),
            sorted({tracks[i].key for i in ids}), ids,
        ))
    return VideoAnalysis(fps, width, height, analyses, cuts, shots, tracks)


def analyze_file(path: str | os.PathLike) -> VideoAnalysis:
    """Read a video with ``kinema.media.read_video`` and analyse it."""
    from kinema.media import read_video

    frames, fps = read_video(path)
    return analyze_video(frames, fps)
