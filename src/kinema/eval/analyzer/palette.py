"""Colour geometry: the world's palette, the scene classes, and every pixel as a blend of an object colour and
a background colour."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, OCCLUDER_COLORS, SKY_COLORS, background_colors

OBJECT_NAMES = tuple(OBJECT_COLORS)
OBJECT_RGB = np.array([OBJECT_COLORS[n] for n in OBJECT_NAMES], dtype=np.float32)  # (9, 3)
SHADES = (1.0, 0.85, 0.7)  # ground brightness under soft shadows (the palette's shadow colour is darker still)
CORE_ALPHA = 0.5  # a pixel belongs to an object's core when at least half of it is that object
OBJECT_RESIDUAL = 45.0  # RGB distance a pixel may sit off its blend segment and still count
CANDIDATE_RESIDUAL = 4.0  # pixels this close to a background blend are not examined further
# Edge coverage is measured in YCbCr with chroma down-weighted (see edge_alpha).
EDGE_CHROMA_WEIGHT = 0.15
EDGE_SPACE = np.diag([1.0, EDGE_CHROMA_WEIGHT, EDGE_CHROMA_WEIGHT]).astype(np.float32) @ np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T for (P, 3) and (S, 3), without BLAS: with three-wide rows, thread start-up costs more
    than the arithmetic, and contended BLAS threads can be a hundred times slower."""
    return a[:, 0:1] * b[:, 0] + a[:, 1:2] * b[:, 1] + a[:, 2:3] * b[:, 2]


def segment_fit(pixels: np.ndarray, ends: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        _, residual = segment_fit(pixels, b, a)
        return residual.min(axis=1)

    def object_fit(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best blend of each object colour with any partner (background or another object).

        Returns alpha (P, 9), the object's share, and residual (P, 9), the distance from the blend.
        """
        partners = self.partners
        ends = np.broadcast_to(OBJECT_RGB[:, None, :], (9, len(partners), 3))
        starts = np.broadcast_to(partners[None], (9, len(partners), 3))
        alpha, residual = segment_fit(pixels, ends, starts)
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
    d2 = squared_distances(pixels, np.concatenate([colors, OBJECT_RGB]))  # (P, C)
    object_d2 = d2[:, len(colors):].min(axis=1)
    costs = []
    for n in range(len(pairs)):
        nearest = np.minimum(d2[:, : len(colors)][:, owner == n].min(axis=1), object_d2)
        costs.append(float(np.minimum(nearest, 40.0 ** 2).sum()))
    return pairs[int(np.argmin(costs))]


def squared_distances(pixels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(P, C) squared RGB distances, via |p|^2 - 2 p.c + |c|^2."""
    d2 = (pixels * pixels).sum(1)[:, None] - 2.0 * _dot3(pixels, colors) + (colors * colors).sum(1)[None]
    return np.maximum(d2, 0.0)


@dataclass
class PixelMaps:
    """Per-pixel explanation of one frame (flattened arrays of length P = H * W)."""

    alpha: np.ndarray  # (P, 9) share of each object colour in its best blend
    residual: np.ndarray  # (P, 9) distance from that blend
    background_residual: np.ndarray  # (P,) distance from the nearest blend of two background colours
    nearest_background: np.ndarray  # (P,) index of the nearest background colour
    background_distance: np.ndarray  # (P,) distance to it


def pixel_maps(image: np.ndarray, pal: Palette) -> PixelMaps:
    pixels = image.reshape(-1, 3)
    count = len(pixels)
    d2 = squared_distances(pixels, pal.background)  # (P, K)
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
    return PixelMaps(alpha, residual, background_residual, nearest, nearest_distance)


def edge_alpha(pixels: np.ndarray, target: np.ndarray, partners: np.ndarray,
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


def edge_alpha_to(pixels: np.ndarray, targets: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per pixel share (P,) of its own target colour (P, 3) against one partner, in the luma-weighted space."""
    p, t, e = _dot3(pixels, EDGE_SPACE), _dot3(targets, EDGE_SPACE), _dot3(partner[None], EDGE_SPACE)[0]
    v = t - e[None]
    return ((p - e[None]) * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-6)
