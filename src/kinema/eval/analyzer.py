"""Find, measure and track the objects of the simulated world in any video.

The analyzer knows the world's palette and geometry (``kinema.world.palette``, ``kinema.world.scene``)
but nothing about how a video was made, so it reads simulator clips, H.264 round trips and the
output of a generative model alike. Per frame it:

1. classifies the scene: the (sky, ground) pair whose background colours, together with the object
   colours, explain the frame's pixels best;
2. finds the ground surface, to a fraction of a pixel, as the top of the band of ground rows;
3. finds the stage posts and the occluder; the post spacing (else the occluder's or a post's
   width) gives the scale in pixels per metre, else the wide framing's scale is assumed;
4. explains every pixel as a blend ``alpha * object + (1 - alpha) * partner`` of an object colour
   and a background (or other object) colour, labels the confident cores (alpha >= 0.5) into
   components and drops compression halos;
5. measures each component's coverage in luma-weighted YCbCr (H.264 halves chroma resolution and
   smears it across edges; luma stays sharp), against the palette and the background seen right
   beside the object, and from that coverage: the centroid, the size, and the shape, read from
   E[dx² dy²] / (E[dx²] E[dy²]), which is exactly 1 for an axis-aligned square under any
   separable blur and well below 1 for a disc;
6. reads paint marks from the ground band just below the surface.

Over the whole video it detects cuts (the background jumps once camera motion is undone), links
objects into tracks within each shot, joins them across cuts by colour and shape, and summarises
each shot (scene classes, scale, whether the camera holds still, objects seen).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from itertools import combinations, pairwise

import numpy as np

from kinema.world.camera import wide_view
from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, OCCLUDER_COLORS, SKY_COLORS, background_colors
from kinema.world.physics import POST_HALF_WIDTH
from kinema.world.scene import OCCLUDER_SIZE, SIZES, STAGE_WIDTH

OBJECT_NAMES = tuple(OBJECT_COLORS)
OBJECT_RGB = np.array([OBJECT_COLORS[n] for n in OBJECT_NAMES], dtype=np.float32)  # (9, 3)
SHADES = (1.0, 0.85, 0.7)  # ground brightness under soft shadows (the palette's shadow colour is darker still)

CORE_ALPHA = 0.5  # a pixel belongs to an object's core when at least half of it is that object
OBJECT_RESIDUAL = 45.0  # RGB distance a pixel may sit off its blend segment and still count
CANDIDATE_RESIDUAL = 4.0  # pixels this close to a background blend are not examined further
BARE_GROUND_DISTANCE = 12.0  # RGB distance within which a column of the mark band is bare ground
MIN_OBJECT_AREA = 3.0  # coverage-weighted pixels
MAX_OBJECT_FRACTION = 0.5  # of the frame: the largest close-up object fills about a third
MIN_MARK_AREA = 1.5
DEEP_ALPHA = 0.8  # a nearly pure pixel; an object's core holds several, compression halos do not
MIN_DEEP_OBJECT = 2
MARK_BAND_DEPTH = 0.8  # metres below the surface searched for marks (they reach down to 0.47 m)
MARK_MIN_WIDTH = 0.4  # metres; the narrowest mark is about 1 m wide
MARK_MIN_DEPTH = 0.4  # px of mark colour a column needs
MARK_PEAK, MARK_PEAK_BLACK = 0.5, 0.6  # luma share at the mark's centre row (shadows darken by 0.3 at most)
MARK_LUMA_AGREEMENT = 0.5  # the luma share must be at least this part of the colour share
SHAPE_ALPHA_FLOOR = 0.15  # fainter coverage is left out of the shape statistics (it is mostly noise)
SHAPE_INDEPENDENCE_THRESHOLD = 0.86  # see _measure: 1 for a box, 2/3 to about 0.85 for a ball
# Size classes split at the geometric means of the world's radii.
_SIZE_ORDER = sorted(SIZES, key=SIZES.get)
SIZE_BOUNDS = [float(np.sqrt(SIZES[a] * SIZES[b])) for a, b in pairwise(_SIZE_ORDER)]
# Edge coverage is measured in YCbCr with chroma down-weighted (see _edge_alpha).
EDGE_CHROMA_WEIGHT = 0.15
LOCAL_PARTNER_PREFERENCE = 16.0  # palette partners' squared residuals count this much more (see _measure_component)
EDGE_SPACE = np.diag([1.0, EDGE_CHROMA_WEIGHT, EDGE_CHROMA_WEIGHT]).astype(np.float32) @ np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)
POST_WIDTH_FRACTION = 0.08
# A cut: the background jump (camera motion undone) stands out from the jumps around it. With other
# evidence (an object's size jumps, the posts come into or out of view, the sky or ground changes)
# a smaller jump will do.
CUT_NOISE = 0.5  # grey levels added to the typical nearby jump
CUT_RATIO, CUT_MIN_JUMP = 3.0, 2.5
CUT_RATIO_WITH_EVIDENCE, CUT_MIN_JUMP_WITH_EVIDENCE = 1.5, 0.75
CUT_SHIFT = 0.1  # of the frame width: a jump of the view this big, with a still camera around it, is a cut
CUT_SIZE_RATIO = 1.35  # an object this much bigger or smaller from one frame to the next: the zoom changed


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
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mean colour of its nearly pure pixels
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
    sky_rgb: tuple[float, float, float] | None = None  # median colour of the sky pixels
    ground_rgb: tuple[float, float, float] | None = None  # median colour of the ground band
    posts: list[float] = field(default_factory=list)  # centre columns of the stage posts in view
    camera_shift: tuple[float, float] = (0.0, 0.0)  # background motion from the previous frame, px
    background_jump: float = 0.0  # grey-level change of the background once that motion is undone


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


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T for (P, 3) and (S, 3), without BLAS: with three-wide rows, thread start-up costs more
    than the arithmetic, and contended BLAS threads can be a hundred times slower."""
    return a[:, 0:1] * b[:, 0] + a[:, 1:2] * b[:, 1] + a[:, 2:3] * b[:, 2]


def _segment_fit(pixels: np.ndarray, ends: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project pixels on colour segments start -> end.

    pixels (P, 3); starts, ends (..., 3) broadcastable to a segment axis S. Returns alpha (P, S), the
    weight of ``end`` in [0, 1], and the RGB distance (P, S) of each pixel from its projection.
    Everything is a (P, 3) x (3, S) product, so no (P, S, 3) array is built.
    """
    v = (ends - starts).reshape(-1, 3)  # (S, 3)
    s = np.broadcast_to(starts, ends.shape).reshape(-1, 3)
    length2 = (v * v).sum(-1)  # (S,)
    wv = _dot3(pixels, v) - (s * v).sum(-1)[None]  # (P, S): (p - s) . v
    ww = (pixels * pixels).sum(-1)[:, None] - 2.0 * _dot3(pixels, s) + (s * s).sum(-1)[None]  # |p - s|^2
    degenerate = length2 < 1e-6
    alpha = np.clip(wv / np.where(degenerate, 1.0, length2)[None], 0.0, 1.0)
    alpha[:, degenerate] = 1.0
    residual2 = ww - 2.0 * alpha * wv + alpha * alpha * length2[None]
    return alpha, np.sqrt(np.maximum(residual2, 0.0))


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

        Returns alpha (P, 9), the object's share, and residual (P, 9), the distance from the blend.
        """
        partners = self.partners
        ends = np.broadcast_to(OBJECT_RGB[:, None, :], (9, len(partners), 3))
        starts = np.broadcast_to(partners[None], (9, len(partners), 3))
        alpha, residual = _segment_fit(pixels, ends, starts)
        alpha = alpha.reshape(len(pixels), 9, -1)
        residual = residual.reshape(len(pixels), 9, -1)
        pick = residual.argmin(axis=2)[..., None]
        return np.take_along_axis(alpha, pick, 2)[..., 0], np.take_along_axis(residual, pick, 2)[..., 0]

    @property
    def partners(self) -> np.ndarray:
        return np.concatenate([self.background, OBJECT_RGB])


_PALETTES: dict[tuple[str, str], Palette] = {}


def palette(sky: str, ground: str) -> Palette:
    key = (sky, ground)
    if key not in _PALETTES:
        _PALETTES[key] = Palette.of(sky, ground)
    return _PALETTES[key]


@functools.lru_cache(maxsize=1)
def _scene_table() -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """All (sky, ground) pairs, the stacked colours of every pair's palette, and each colour's pair."""
    pairs, colors, owner = [], [], []
    for sky in SKY_COLORS:
        for ground in GROUND_COLORS:
            pairs.append((sky, ground))
            background = palette(sky, ground).background
            colors.append(background)
            owner += [len(pairs) - 1] * len(background)
    return pairs, np.concatenate(colors), np.array(owner)


def classify_scene(image: np.ndarray, max_pixels: int = 2048) -> tuple[str, str]:
    """The (sky, ground) pair whose colours, with the object colours, best explain the image.

    Cost per pixel: the squared distance to the nearest colour, capped so that off-palette pixels
    (a generated video's artefacts) cannot outvote the rest.
    """
    pairs, colors, owner = _scene_table()
    pixels = image.reshape(-1, 3)
    pixels = pixels[:: max(1, len(pixels) // max_pixels)]
    d2 = _squared_distances(pixels, np.concatenate([colors, OBJECT_RGB]))  # (P, C)
    object_d2 = d2[:, len(colors):].min(axis=1)
    costs = []
    for n in range(len(pairs)):
        nearest = np.minimum(d2[:, : len(colors)][:, owner == n].min(axis=1), object_d2)
        costs.append(float(np.minimum(nearest, 40.0 ** 2).sum()))
    return pairs[int(np.argmin(costs))]


def _squared_distances(pixels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(P, C) squared RGB distances, via |p|^2 - 2 p.c + |c|^2."""
    d2 = (pixels * pixels).sum(1)[:, None] - 2.0 * _dot3(pixels, colors) + (colors * colors).sum(1)[None]
    return np.maximum(d2, 0.0)


# -- connected components ----------------------------------------------------------------------


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
    """Per-pixel explanation of one frame (flattened arrays of length P = H * W)."""

    alpha: np.ndarray  # (P, 9) share of each object colour in its best blend
    residual: np.ndarray  # (P, 9) distance from that blend
    background_residual: np.ndarray  # (P,) distance from the nearest blend of two background colours
    nearest_background: np.ndarray  # (P,) index of the nearest background colour
    background_distance: np.ndarray  # (P,) distance to it


def _pixel_maps(image: np.ndarray, pal: Palette) -> _PixelMaps:
    pixels = image.reshape(-1, 3)
    count = len(pixels)
    d2 = _squared_distances(pixels, pal.background)  # (P, K)
    nearest = d2.argmin(axis=1)
    nearest_distance = np.sqrt(d2[np.arange(count), nearest])
    alpha = np.zeros((count, 9), np.float32)
    residual = np.full((count, 9), np.inf, np.float32)
    background_residual = nearest_distance.astype(np.float32)
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


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _strip_measure(alpha: np.ndarray, start: int, end: int) -> tuple[float, float]:
    """Width and centre column of a strip from its column coverage, one column of margin each side."""
    lo, hi = max(0, start - 1), min(len(alpha), end + 1)
    weights = np.clip(alpha[lo:hi], 0.0, None)
    total = float(weights.sum())
    centre = float((weights * (np.arange(lo, hi) + 0.5)).sum() / max(total, 1e-6))
    return total, centre


def _find_posts(image: np.ndarray, pal: Palette, ground_row: float | None) -> list[tuple[float, float]]:
    """(centre column, width) of the stage posts: thin post-coloured strips that run down from the top."""
    height, width, _ = image.shape
    top_rows = max(3, int(0.35 * (ground_row if ground_row is not None else height)))
    sky_like = pal.background[pal.index("sky") + pal.index("cloud")]
    post = pal.background[pal.index("post")[0]]
    # A post runs through every one of the top rows (clouds pass behind it); a passing object does not.
    alpha, residual = _column_profile(image, slice(0, min(top_rows, height)), post, sky_like, quantile=0.2)
    centres = []
    for start, end in _runs((alpha > 0.2) & (residual < 25.0)):
        strip_width, centre = _strip_measure(alpha, start, end)
        if 0.3 < strip_width < POST_WIDTH_FRACTION * width:
            centres.append((centre, strip_width))
    return centres


def _find_occluder(image: np.ndarray, pal: Palette, maps: _PixelMaps, ground_row: float | None,
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


def _strip_width(image: np.ndarray, pal: Palette, maps: _PixelMaps, rows: range, x0: int, x1: int,
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


def _measure_scale(posts: list[tuple[float, float]], occluder: str | None, occluder_width: float | None,
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


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion by one pixel (outside the frame counts as set)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _split_touching(core: np.ndarray, max_erosions: int = 8) -> list[np.ndarray]:
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


def _edge_alpha(pixels: np.ndarray, target: np.ndarray, partners: np.ndarray,
                valid: np.ndarray | None = None, penalty: np.ndarray | None = None) -> np.ndarray:
    """Coverage (P,) of ``target`` in pixels that blend it with one of ``partners``: (S, 3) shared
    by all pixels, or (P, S, 3) per pixel with ``valid`` (P, S) saying which exist.

    Measured in YCbCr with chroma down-weighted: H.264 keeps chroma at half resolution and smears
    it a pixel or two across edges, while luma stays sharp. The partner with the smallest residual
    (times its ``penalty``, (P, S), when given) is used.
    """
    if partners.ndim == 2:
        partners = partners[None]
    p, t = _dot3(pixels, EDGE_SPACE), _dot3(target[None], EDGE_SPACE)[0]
    e = _dot3(partners.reshape(-1, 3), EDGE_SPACE).reshape(partners.shape)  # (P or 1, S, 3)
    v = t - e
    w = p[:, None, :] - e
    length2 = (v * v).sum(-1)
    alpha = np.clip((w * v).sum(-1) / np.maximum(length2, 1e-6), 0.0, 1.0)
    alpha = np.where(length2 < 1e-6, 1.0, alpha)
    residual = ((w - alpha[..., None] * v) ** 2).sum(-1)
    if penalty is not None:
        residual = residual * penalty
    if valid is not None:
        residual = np.where(valid, residual, np.inf)
    alpha = np.broadcast_to(alpha, residual.shape)
    return alpha[np.arange(len(pixels)), residual.argmin(axis=1)]


def _local_background(image: np.ndarray, region: np.ndarray, core: np.ndarray, rows: np.ndarray,
                      cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the pixels (rows, cols) of ``region`` would show without the object: the first pixel
    beyond the region on the far side, along the row and along the column. (P, 2, 3) colours,
    (P, 2) validity and (P, 2, 2) the (row, col) they come from. This finds thin backgrounds that
    no palette colour matches, such as a distant post, which is only ever a blend of wall and sky."""
    height, width = region.shape
    outside = ~_dilate(region)
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


def _local_partners(core: np.ndarray, pal: Palette, maps: _PixelMaps, allowed: np.ndarray,
                    others: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Colours an object's rim can blend with: the pure background colours found up to 4 pixels
    out, and the colours of other objects close by."""
    far = _dilate(_dilate(_dilate(_dilate(core))))
    band = np.flatnonzero((far & ~core & allowed).ravel())
    pure = band[maps.background_distance[band] < 20.0]
    ids = set(np.unique(maps.nearest_background[pure]).tolist())
    # Thin strips (posts seen from afar) have no pure pixels: take any strip colour that is nearest.
    strips = set(pal.index("post") + pal.index("tree"))
    ids |= strips & set(np.unique(maps.nearest_background[band]).tolist())
    colors = [pal.background[i] for i in sorted(ids)]
    colors += [OBJECT_RGB[color] for color, mask in others if (mask & far).any()]
    return np.stack(colors) if colors else pal.background


def _object_strength(maps: _PixelMaps) -> np.ndarray:
    """(P, 9) share of each object colour where a blend with it explains the pixel better than
    any blend of background colours, else 0."""
    better = maps.residual < np.minimum(OBJECT_RESIDUAL, maps.background_residual[:, None] + 1e-3)
    return np.where(better, maps.alpha, 0.0)


def _find_blobs(image: np.ndarray, pal: Palette, maps: _PixelMaps, allowed: np.ndarray, min_area: float,
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
                hugged |= _dilate(_dilate(other))
        if int((deep & mask & ~hugged).sum()) < min_deep:
            continue
        # Same-coloured pieces a pixel or two apart are one object (or touching ones, which the
        # luma-sharp cores below separate again).
        near = _dilate(_dilate(mask))
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
        window = _window(component, 4)
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


def _window(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return (slice(max(0, rows.min() - margin), min(height, rows.max() + 1 + margin)),
            slice(max(0, cols.min() - margin), min(width, cols.max() + 1 + margin)))


def _crop_maps(maps: _PixelMaps, window: tuple[slice, slice], width: int) -> _PixelMaps:
    height = len(maps.background_residual) // width

    def crop(a: np.ndarray) -> np.ndarray:
        return a.reshape(height, width, *a.shape[1:])[window].reshape(-1, *a.shape[1:])

    return _PixelMaps(*(crop(getattr(maps, name)) for name in (
        "alpha", "residual", "background_residual", "nearest_background", "background_distance")))


def _measure_component(color: int, image: np.ndarray, maps: _PixelMaps, allowed: np.ndarray, component: np.ndarray,
                       taken: np.ndarray, pure: np.ndarray, pal: Palette, others: list[tuple[int, np.ndarray]],
                       min_area: float) -> list[dict]:
    """Coverage over a component and its rim, then the luma-sharp cores it holds (one per object).

    ``pure`` marks pixels whose RGB is nearly the object colour; each core needs a few pixels that
    are nearly pure in both RGB and luma.
    """
    height, width, _ = image.shape
    region = component | (_dilate(_dilate(component)) & ~taken & allowed)
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
    coverage[rows, cols] = _edge_alpha(image.reshape(-1, 3)[flat], OBJECT_RGB[color], every, valid, penalty)
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
        for core in _split_touching(part):
            rim = core | (_dilate(core) & region & ~solid)
            rr, cc = np.nonzero(rim)
            alpha = coverage[rr, cc]
            if alpha.sum() >= min_area:
                inner = alpha >= DEEP_ALPHA
                rgb = image[rr[inner], cc[inner]].mean(axis=0) if inner.any() else image[rr, cc].mean(axis=0)
                blobs.append({"color": color, "rows": rr, "cols": cc, "alpha": alpha, "core": core[rr, cc],
                              "mask": core, "rgb": tuple(float(v) for v in rgb), "contrast": contrast})
    return blobs


def _merge_split_by_occluder(blobs: list[dict], occluder_bbox) -> list[dict]:
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


def _find_marks(image: np.ndarray, pal: Palette, ground_row: float, scale: float) -> list[MarkDetection]:
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
    d2 = _squared_distances(band, shades)  # (W, k)
    close = d2.min(axis=1) < BARE_GROUND_DISTANCE ** 2
    if close.any():
        base = shades[np.bincount(d2[close].argmin(axis=1), minlength=len(shades)).argmax()]
    else:
        base = shades[np.argmin(_squared_distances(np.median(band, axis=0, keepdims=True), shades)[0])]
    alpha, residual = _segment_fit(band, OBJECT_RGB, np.broadcast_to(base, OBJECT_RGB.shape))  # (W, 9)
    residual = np.where(alpha > 0.05, residual, np.inf)
    color = residual.argmin(axis=1)
    # Posts and the occluder stand a little into the band; their colour must not pass for paint.
    standing = pal.background[pal.index("post") + pal.index("tree")]
    _, standing_residual = _segment_fit(band, standing, np.broadcast_to(base, standing.shape))
    share = alpha[np.arange(width), color]
    luma_share = _edge_alpha_to(band, OBJECT_RGB[color], base)
    depth = (last - first) * np.minimum(share, luma_share / MARK_LUMA_AGREEMENT)  # px of mark per column
    # Paint is solid somewhere in the column; ringing and soft shadows never are.
    rows = image[first:last]  # (k, W, 3)
    peak = _edge_alpha_to(rows.reshape(-1, 3), np.tile(OBJECT_RGB[color], (last - first, 1)), base)
    peak = peak.reshape(last - first, width).max(axis=0)
    best_residual = residual[np.arange(width), color]
    is_mark = (depth >= MARK_MIN_DEPTH) & (best_residual < OBJECT_RESIDUAL) & (
        best_residual < standing_residual.min(axis=1)) & (
        peak >= np.where(color == OBJECT_NAMES.index("black"), MARK_PEAK_BLACK, MARK_PEAK))
    marks = []
    for start, end in _runs(is_mark):
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


def _edge_alpha_to(pixels: np.ndarray, targets: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per pixel share (P,) of its own target colour (P, 3) against one partner, in the luma-weighted space."""
    p, t, e = _dot3(pixels, EDGE_SPACE), _dot3(targets, EDGE_SPACE), _dot3(partner[None], EDGE_SPACE)[0]
    v = t - e[None]
    return ((p - e[None]) * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-6)


def analyze_frame(image: np.ndarray, index: int = 0) -> FrameAnalysis:
    """Scene, ground, occluder, scale, objects and marks of one (H, W, 3) float RGB frame."""
    return _analyze_frame(np.asarray(image, np.float32), index)


def _analyze_frame(image: np.ndarray, index: int) -> FrameAnalysis:
    height, width, _ = image.shape
    sky, ground = classify_scene(image)
    pal = palette(sky, ground)
    maps = _pixel_maps(image, pal)
    ground_row = _find_ground_row(image, pal, maps)
    posts = _find_posts(image, pal, ground_row)
    occluder, occluder_bbox, occluder_width = _find_occluder(image, pal, maps, ground_row, posts)
    scale = _measure_scale(posts, occluder, occluder_width, width)
    scale_known = scale is not None
    if scale is None:
        scale = wide_scale(width, height)
    occluder_mask = None
    if occluder is not None:
        ids = pal.index("post" if occluder == "wall" else "tree")
        occluder_mask = (np.isin(maps.nearest_background, ids) & (maps.background_distance < 30.0)).reshape(
            height, width)
        # Only the occluder itself: the posts share the wall's colour.
        x0, y0, x1, y1 = (int(v) for v in occluder_bbox)
        inside = np.zeros((height, width), bool)
        inside[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = True
        occluder_mask &= inside
    row_index = np.arange(height)[:, None]
    above = np.ones((height, width), bool) if ground_row is None else np.broadcast_to(
        row_index < ground_row, (height, width))
    objects = []
    blobs = _find_blobs(image, pal, maps, above, MIN_OBJECT_AREA, CORE_ALPHA, MIN_DEEP_OBJECT)
    for blob in _merge_split_by_occluder(blobs, occluder_bbox):
        det = _object_from_blob(blob, width, height, scale, occluder_mask, occluder_bbox)
        x0, y0, x1, y1 = det.bbox
        # A line one pixel thick is an edge, not an object: at night the blend of a dark sky with a tree
        # trunk or with an object's rim comes out near black. An object the frame edge cuts to a sliver
        # (thin across that edge) is kept.
        if (x1 - x0 <= 1 and x0 > 0 and x1 < width) or (y1 - y0 <= 1 and y0 > 0 and y1 < height):
            continue
        objects.append(det)
    marks = [] if ground_row is None else _find_marks(image, pal, ground_row, scale)
    sky_rgb, ground_rgb = _scene_colors(image, pal, maps, ground_row)
    return FrameAnalysis(index, sky, ground if ground_row is not None else None, ground_row, occluder,
                         occluder_bbox, float(scale), scale_known, objects, marks, sky_rgb, ground_rgb,
                         [c for c, _ in posts])


def _scene_colors(image: np.ndarray, pal: Palette, maps: _PixelMaps, ground_row: float | None):
    """Median colours of the pixels nearest the sky colour and of the ground band below the surface."""
    pixels = image.reshape(-1, 3)
    sky = pixels[np.isin(maps.nearest_background, pal.index("sky")) & (maps.background_distance < 30.0)]
    sky_rgb = tuple(float(v) for v in np.median(sky, axis=0)) if len(sky) else None
    ground_rgb = None
    if ground_row is not None and int(np.ceil(ground_row)) + 1 < image.shape[0]:
        band = image[int(np.ceil(ground_row)) + 1:].reshape(-1, 3)
        ground_rgb = tuple(float(v) for v in np.median(band, axis=0))
    return sky_rgb, ground_rgb


def _object_from_blob(blob: dict, width: int, height: int, scale: float, occluder_mask: np.ndarray | None,
                      occluder_bbox) -> ObjectDetection:
    rows, cols, alpha, core = blob["rows"], blob["cols"], blob["alpha"], blob["core"]
    m = _measure(alpha, rows, cols, core)
    fill = m["area"] / max(m["extent_w"] * m["extent_h"], 1e-6)
    shape = "box" if m["independence"] >= SHAPE_INDEPENDENCE_THRESHOLD else "ball"
    touches = bool(rows.min() <= 0 or cols.min() <= 0 or rows.max() >= height - 1 or cols.max() >= width - 1)
    occluded = near = False
    if occluder_mask is not None:
        occluded = bool(_dilate(_dilate(blob["mask"]))[occluder_mask].any())
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


def _moving_mask(analysis: FrameAnalysis, height: int, width: int, margin: int = 2) -> np.ndarray:
    """Pixels that change without the camera moving: objects (with a margin), the ground under them
    (shadows) and paint marks (they appear when an object lands)."""
    mask = np.zeros((height, width), bool)
    ground = analysis.ground_row
    shadow_depth = int(np.ceil(0.3 * analysis.scale)) + margin
    for det in analysis.objects:
        x0, y0, x1, y1 = det.bbox
        c0, c1 = max(0, int(x0) - margin), int(x1) + margin
        mask[max(0, int(y0) - margin):int(y1) + margin, c0:c1] = True
        if ground is not None:
            mask[max(0, int(ground) - margin):int(ground) + shadow_depth, c0:c1] = True
    for mark in analysis.marks:
        if ground is not None:
            mask[max(0, int(ground)):, max(0, int(mark.x0) - margin):int(mark.x1) + margin] = True
    return mask


def _profile_shift(a: np.ndarray, b: np.ndarray, reach: int) -> float:
    """The shift d in [-reach, reach] that best lines up profile b(x + d) with a(x), refined to a
    fraction of a pixel by a parabola through the costs around the best integer shift."""
    n = len(a)
    costs = np.full(2 * reach + 1, np.inf)
    for d in range(-reach, reach + 1):
        lo, hi = max(0, -d), min(n, n - d)
        if hi - lo >= 0.6 * n:
            costs[d + reach] = float(np.abs(a[lo:hi] - b[lo + d:hi + d]).mean()) + 1e-3 * abs(d)
    k = int(np.argmin(costs))
    if not np.isfinite(costs[k]):
        return 0.0
    if 0 < k < len(costs) - 1 and np.isfinite(costs[k - 1]) and np.isfinite(costs[k + 1]):
        curvature = costs[k - 1] - 2 * costs[k] + costs[k + 1]
        if curvature > 1e-9:
            return k - reach + float(np.clip(0.5 * (costs[k - 1] - costs[k + 1]) / curvature, -0.5, 0.5))
    return float(k - reach)


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """out(x, y) = image(x + dx, y + dy), bilinear, NaN where that falls outside the frame."""
    height, width = image.shape[:2]
    x = np.arange(width) + dx
    y = np.arange(height) + dy
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    inside_x = (x0 >= 0) & (x0 + 1 <= width - 1) | ((x0 == width - 1) & (fx == 0))
    inside_y = (y0 >= 0) & (y0 + 1 <= height - 1) | ((y0 == height - 1) & (fy == 0))
    x0c, x1c = np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1)
    y0c, y1c = np.clip(y0, 0, height - 1), np.clip(y0 + 1, 0, height - 1)
    wx = fx.reshape((1, -1) + (1,) * (image.ndim - 2))
    wy = fy.reshape((-1,) + (1,) * (image.ndim - 1))
    top = image[y0c][:, x0c] * (1 - wx) + image[y0c][:, x1c] * wx
    bottom = image[y1c][:, x0c] * (1 - wx) + image[y1c][:, x1c] * wx
    out = (top * (1 - wy) + bottom * wy).astype(np.float32)
    valid = inside_y[:, None] & inside_x[None, :]
    out[~valid] = np.nan
    return out


def background_motion(previous: np.ndarray, current: np.ndarray, moving: np.ndarray,
                      prior: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float, float]:
    """How much the background changed between two frames once camera motion is undone.

    Returns (difference, dx, dy): (dx, dy) is the shift, to a fraction of a pixel, that best aligns
    ``previous`` onto ``current`` (current(x, y) ~ previous(x + dx, y + dy)): the better of the one
    that aligns the row and column profiles, the ``prior`` (the camera's last motion; cameras move
    smoothly) and none. ``difference`` is the mean absolute RGB difference over pixels not in
    ``moving``, each pixel taking the best of that shift, no shift and fractions of it (far layers
    move less: parallax). A cut changes zoom or place, which no shift undoes.
    """
    height, width = current.shape[:2]
    still = ~moving
    grey_a, grey_b = current.mean(axis=-1), previous.mean(axis=-1)
    fa, fb = np.where(still, grey_a, np.median(grey_a)), np.where(still, grey_b, np.median(grey_b))
    profile = (_profile_shift(fa.mean(axis=0), fb.mean(axis=0), max(1, width // 4)),
               _profile_shift(fa.mean(axis=1), fb.mean(axis=1), max(1, height // 4)))
    mask = np.where(still, 1.0, np.nan).astype(np.float32)

    def mismatch(shift: tuple[float, float]) -> float:
        diff = np.abs(current - _shifted(previous, *shift)).mean(axis=-1) * mask * _shifted(mask, *shift)
        return float(np.nanmean(diff)) if np.isfinite(diff).sum() >= 0.25 * height * width else np.inf

    dx, dy = min((profile, tuple(prior), (0.0, 0.0)), key=mismatch)
    layers = []
    for k in (1.0, 0.5, 0.25, 0.0):
        sx, sy = k * dx, k * dy
        layers.append(np.abs(current - _shifted(previous, sx, sy)).mean(axis=-1) * mask * _shifted(mask, sx, sy))
    per_pixel = np.fmin.reduce(np.stack(layers), axis=0)
    if np.isfinite(per_pixel).sum() < 0.25 * height * width:
        return float(np.abs(current - previous).mean()), 0.0, 0.0
    return float(np.nanmean(per_pixel)), float(dx), float(dy)


def _size_jump(previous: FrameAnalysis, current: FrameAnalysis) -> bool:
    """An object of the same colour and shape changed size abruptly: the zoom changed."""
    for det in current.objects:
        for old in previous.objects:
            if not (det.touches_border or old.touches_border) and det.color == old.color and det.shape == old.shape:
                ratio = max(det.radius_px, old.radius_px) / max(min(det.radius_px, old.radius_px), 1e-6)
                if ratio > CUT_SIZE_RATIO:
                    return True
    return False


def _camera_jump(analyses: list[FrameAnalysis], f: int, width: int) -> bool:
    """The view jumps at frame f far more than the camera moves just before and after it."""
    dx, dy = analyses[f].camera_shift
    step = float(np.hypot(dx, dy))
    around = [float(np.hypot(*analyses[g].camera_shift)) for g in (f - 1, f + 1) if 0 < g < len(analyses)]
    # A shift at the end of the search range is no measurement at all.
    measured = abs(dx) < width // 4 - 1
    return measured and step >= CUT_SHIFT * width and step >= 3.0 * max(around, default=0.0) + 2.0


def detect_cuts(images: np.ndarray, analyses: list[FrameAnalysis]) -> list[int]:
    """Frames where a new shot starts.

    Each frame's background jump (``background_motion``, camera motion undone, objects masked) is
    compared with the typical jump around it: a cut stands out several times over. An object whose
    size jumps, or a change of sky or ground class, lowers the bar. Nothing assumes where cuts fall.
    """
    count = len(images)
    if count < 2:
        return []
    height, width = images.shape[1:3]
    masks = [_moving_mask(a, height, width) for a in analyses]
    jump = np.zeros(count)
    for f in range(1, count):
        prior = analyses[f - 1].camera_shift if f > 1 else (0.0, 0.0)
        jump[f], dx, dy = background_motion(images[f - 1], images[f], masks[f - 1] | masks[f], prior)
        analyses[f].background_jump, analyses[f].camera_shift = float(jump[f]), (float(dx), float(dy))
    cuts = []
    for f in range(1, count):
        nearby = [jump[g] for g in range(max(1, f - 4), min(count, f + 5)) if g != f]
        ratio = jump[f] / ((float(np.median(nearby)) if nearby else 0.0) + CUT_NOISE)
        a, b = analyses[f - 1], analyses[f]
        evidence = (_size_jump(a, b) or _camera_jump(analyses, f, width) or a.sky != b.sky
                    or (len(a.posts) >= 2) != (len(b.posts) >= 2)
                    or (a.ground != b.ground and None not in (a.ground, b.ground)))
        clear = jump[f] >= CUT_MIN_JUMP and ratio >= CUT_RATIO
        backed = evidence and jump[f] >= CUT_MIN_JUMP_WITH_EVIDENCE and ratio >= CUT_RATIO_WITH_EVIDENCE
        if clear or backed:
            cuts.append(f)
    return cuts


def _static(analyses: list[FrameAnalysis], start: int, end: int) -> bool:
    """Whether the camera holds still over frames [start, end): the background does not shift."""
    shifts = [analyses[f].camera_shift for f in range(start + 1, end)]
    return sum(1 for dx, dy in shifts if max(abs(dx), abs(dy)) > 0.5) <= 0.2 * len(shifts)


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


def _look(dets: list[ObjectDetection]) -> tuple[str, str]:
    """Colour and shape of a set of detections of one object: the shape is the vote of the clean
    ones weighted by area, since big views show shape best."""
    clean = [d for d in dets if d.clean] or dets
    return dets[0].color, _majority([d.shape for d in clean], [d.area for d in clean])


def _build_tracks(analyses: list[FrameAnalysis], shots: list[tuple[int, int]], fps: float) -> list[Track]:
    """Tracklets per shot, joined into one track per object across cuts by colour and shape.

    A tracklet whose shape matches no free track still joins the one free track of its colour when
    it is the only tracklet of that colour in its shot: small objects' shapes can read wrong for a
    whole shot, while the same colour in two shapes at once is rare.
    """
    members: list[list[tuple[int, int, ObjectDetection]]] = []  # per track: (shot, frame, detection)
    looks: list[tuple[str, str]] = []
    for shot_index, (start, end) in enumerate(shots):
        linked = _link_shot(analyses, start, end, fps)
        tracklets = [[(shot_index, f, analyses[f].objects[i]) for f, i in t] for t in linked]
        tracklets.sort(key=len, reverse=True)
        used: set[int] = set()
        pending = []
        for tracklet in tracklets:
            look = _look([d for _, _, d in tracklet])
            match = next((n for n, other in enumerate(looks) if other == look and n not in used), None)
            if match is None:
                pending.append(tracklet)
            else:
                members[match] += tracklet
                used.add(match)
        for tracklet in pending:
            color = tracklet[0][2].color
            rivals = [t for t in tracklets if t[0][2].color == color]
            free = [n for n, other in enumerate(looks) if other[0] == color and n not in used]
            if len(free) == 1 and len(rivals) == 1:
                members[free[0]] += tracklet
                used.add(free[0])
            else:
                members.append(list(tracklet))
                looks.append(_look([d for _, _, d in tracklet]))
                used.add(len(looks) - 1)
        looks = [_look([d for _, _, d in m]) for m in members]
    tracks = []
    for n, track_members in enumerate(members):
        track_members.sort(key=lambda m: m[1])
        dets = [d for _, _, d in track_members]
        color, shape = _look(dets)
        measured = [d for _, f, d in track_members if analyses[f].scale_known and d.clean]
        track = Track(n, color, shape, _majority([d.size for d in (measured or dets)]))
        for shot_index, f, det in track_members:
            det.track = n
            track.frames.append(f)
            track.shots.append(shot_index)
            track.col.append(det.col)
            track.row.append(det.row)
            track.radius_px.append(det.radius_px)
            track.clean.append(det.clean)
        tracks.append(track)
    return tracks


def analyze_video(frames, fps: float) -> VideoAnalysis:
    """Analyse a video given as (F, H, W, 3) frames (uint8, or float in [0, 1] or [0, 255])."""
    images = _as_frames(frames)
    fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 8.0
    count = len(images)
    height, width = (images.shape[1], images.shape[2]) if count else (0, 0)
    if count == 0 or height == 0 or width == 0:
        return VideoAnalysis(fps, width, height, [], [], [], [])
    analyses = [_analyze_frame(images[f], f) for f in range(count)]
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
            part[0].scale, part[0].scale_known, _static(analyses, start, end),
            sorted({tracks[i].key for i in ids}), ids,
        ))
    return VideoAnalysis(fps, width, height, analyses, cuts, shots, tracks)


def analyze_file(path: str | os.PathLike) -> VideoAnalysis:
    """Read a video with ``kinema.media.read_video`` and analyse it."""
    from kinema.media import read_video

    frames, fps = read_video(path)
    return analyze_video(frames, fps)
