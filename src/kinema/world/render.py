"""Anti-aliased numpy renderer of the stage, and the pixel-space ground truth that goes with it.

Layers, back to front: sky, clouds and hills (a far layer with parallax), ground, shadows,
paint marks, stage posts, objects, and the occluder, which stands in front of the objects.
Every edge is anti-aliased by its exact (boxes) or approximate (discs, ellipses) pixel coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kinema.world.camera import camera_track, world_to_pixel
from kinema.world.palette import (
    GROUND_COLORS,
    OBJECT_COLORS,
    OCCLUDER_COLORS,
    POST_COLOR,
    SHADOW_DARKEN,
    SKY_COLORS,
    cloud_color,
    hill_color,
)
from kinema.world.physics import POST_HALF_WIDTH, Trajectory
from kinema.world.scene import OCCLUDER_SIZE, STAGE_WIDTH, SceneSpec

PARALLAX = 0.3  # the far layer moves this much of the camera's motion
OCCLUDER_BASE = -0.45  # occluders and posts stand slightly into the ground band
MARK_Y, MARK_HALF_HEIGHT = -0.32, 0.15
SHADOW_Y, SHADOW_HALF_HEIGHT = -0.1, 0.1


@dataclass
class FarLayer:
    hill_base: float
    hill_waves: np.ndarray  # (k, 3): amplitude, angular frequency, phase
    clouds: np.ndarray  # (n, 4): x, y, half width, half height (far-layer metres)

    @classmethod
    def from_seed(cls, seed: int) -> FarLayer:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x666172]))
        waves = np.stack([rng.uniform(0.15, 0.45, 3), rng.uniform(0.25, 0.9, 3), rng.uniform(0, 6.3, 3)], axis=1)
        n = int(rng.integers(3, 6))
        clouds = np.stack([rng.uniform(-8, 20, n), rng.uniform(6.2, 8.8, n),
                           rng.uniform(0.9, 2.0, n), rng.uniform(0.3, 0.55, n)], axis=1)
        return cls(float(rng.uniform(0.7, 1.3)), waves, clouds)

    def hill_height(self, x: np.ndarray) -> np.ndarray:
        a, w, p = self.hill_waves[:, 0], self.hill_waves[:, 1], self.hill_waves[:, 2]
        return self.hill_base + (a[None] * np.sin(x[:, None] * w[None] + p[None])).sum(axis=1)


def _span_coverage(lo: float, hi: float, n: int) -> np.ndarray:
    """Coverage of pixels [i, i+1) by the interval [lo, hi] (exact box-filter anti-aliasing)."""
    edges = np.arange(n, dtype=np.float32)
    return np.clip(np.minimum(edges + 1.0, hi) - np.maximum(edges, lo), 0.0, 1.0)


def _ellipse_coverage(cols: np.ndarray, rows: np.ndarray, c: float, r: float, ax: float, ay: float) -> np.ndarray:
    """Approximate coverage of an ellipse with semi-axes (ax, ay) px centred at (c, r)."""
    q = np.sqrt(((cols[None, :] - c) / max(ax, 1e-3)) ** 2 + ((rows[:, None] - r) / max(ay, 1e-3)) ** 2)
    return np.clip((1.0 - q) * min(ax, ay) + 0.5, 0.0, 1.0)


def _blend(img: np.ndarray, cov: np.ndarray, color: np.ndarray, r0: int, c0: int) -> None:
    h, w = cov.shape
    region = img[r0:r0 + h, c0:c0 + w]
    region += cov[..., None] * (color - region)


def _box_patch(c0f: float, c1f: float, r0f: float, r1f: float, width: int, height: int):
    """Integer patch bounds and coverage of an axis-aligned box given in pixel coordinates."""
    c0, c1 = max(0, int(np.floor(c0f))), min(width, int(np.ceil(c1f)))
    r0, r1 = max(0, int(np.floor(r0f))), min(height, int(np.ceil(r1f)))
    if c1 <= c0 or r1 <= r0:
        return None
    cx = _span_coverage(c0f - c0, c1f - c0, c1 - c0)
    cy = _span_coverage(r0f - r0, r1f - r0, r1 - r0)
    return r0, c0, cy[:, None] * cx[None, :]


def _object_patch(shape: str, col: float, row: float, radius: float, width: int, height: int):
    """(r0, c0, coverage) of an object in the frame, or None when it is off screen."""
    if shape == "box":
        return _box_patch(col - radius, col + radius, row - radius, row + radius, width, height)
    grid = _pixel_grid(col, row, radius, radius, width, height)
    if grid is None:
        return None
    r0, c0, cols, rows = grid
    dist = np.sqrt((cols[None, :] - col) ** 2 + (rows[:, None] - row) ** 2)
    return r0, c0, np.clip(radius + 0.5 - dist, 0.0, 1.0)


def _pixel_grid(c: float, r: float, ax: float, ay: float, width: int, height: int):
    """(r0, c0, pixel-centre columns, rows) of the frame pixels within (ax + 1, ay + 1) of (c, r), or None."""
    c0, c1 = max(0, int(np.floor(c - ax - 1))), min(width, int(np.ceil(c + ax + 1)))
    r0, r1 = max(0, int(np.floor(r - ay - 1))), min(height, int(np.ceil(r + ay + 1)))
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, c0, np.arange(c0, c1, dtype=np.float32) + 0.5, np.arange(r0, r1, dtype=np.float32) + 0.5


def render(scene: SceneSpec, traj: Trajectory, width: int, height: int) -> tuple[np.ndarray, dict]:
    """Render every frame. Returns uint8 frames (F, H, W, 3) and the pixel ground truth:

    ``camera`` (F, 4) view boxes, and per object (F, N) arrays ``col``, ``row`` (centroid, px),
    ``radius_px``, ``bbox`` (F, N, 4: x0, y0, x1, y1, clipped to the frame), ``area``
    (visible pixels, fractional), ``in_frame`` (fraction of the body inside the frame),
    ``occluded`` (fraction of the in-frame body hidden by the occluder), ``visible`` (bool),
    and ``ground_row`` (F,) the row of the ground surface.
    """
    frames, n = scene.frames, len(scene.objects)
    camera = camera_track(scene, traj, width / height)
    col, row, scale = world_to_pixel(traj.x, traj.y, camera[:, None, :], width, height)
    radii = np.array([o.radius for o in scene.objects])
    radius_px = radii[None, :] * scale
    gt = {
        "camera": camera,
        "col": col, "row": row, "radius_px": radius_px,
        "bbox": np.zeros((frames, n, 4)), "area": np.zeros((frames, n)),
        "in_frame": np.zeros((frames, n)), "occluded": np.zeros((frames, n)),
        "visible": np.zeros((frames, n), dtype=bool),
        "ground_row": camera[:, 1] * scale[:, 0] + 0.5 * height,
    }
    far = FarLayer.from_seed(scene.far_seed)
    colors = _SceneColors(scene)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    backgrounds: dict[tuple, np.ndarray] = {}
    for f in range(frames):
        cx, cy, vw, _ = camera[f]
        s = width / vw
        marks = [m for m in traj.marks if m.frame <= f]
        # Static cameras reuse the background (sky, far layer, ground, marks, posts).
        key = (float(cx), float(cy), float(vw), len(marks))
        background = backgrounds.get(key)
        if background is None:
            if len(backgrounds) > 64:
                backgrounds.clear()
            background = _background(far, colors, marks, cx, cy, s, width, height)
            backgrounds[key] = background
        img = background.copy()
        for i in range(n):
            if not traj.present[f, i]:
                continue
            lift = max(0.0, traj.y[f, i] - radii[i])
            strength = 0.75 * np.exp(-lift / 3.0)
            ax = radii[i] * (1.0 - 0.25 * min(lift / 4.0, 1.0)) * s
            sc = (traj.x[f, i] - cx) * s + 0.5 * width
            sr = 0.5 * height - (SHADOW_Y - cy) * s
            patch = _ellipse_patch(sc, sr, ax, SHADOW_HALF_HEIGHT * s, width, height)
            if patch is not None:
                r0, c0, cov = patch
                h, w = cov.shape
                img[r0:r0 + h, c0:c0 + w] *= (1.0 - SHADOW_DARKEN * strength * cov)[..., None]
        # Objects, then the occluder in front of them.
        occ_patch = None
        if scene.occluder:
            ow, oh = OCCLUDER_SIZE[scene.occluder]
            occ_patch = _box_patch((scene.occluder_x - 0.5 * ow - cx) * s + 0.5 * width,
                                   (scene.occluder_x + 0.5 * ow - cx) * s + 0.5 * width,
                                   0.5 * height - (oh - cy) * s, 0.5 * height - (OCCLUDER_BASE - cy) * s,
                                   width, height)
        for i in range(n):
            if not traj.present[f, i]:
                continue
            patch = _object_patch(scene.objects[i].shape, col[f, i], row[f, i], radius_px[f, i], width, height)
            if patch is None:
                continue
            full_area = (np.pi if scene.objects[i].shape == "ball" else 4.0) * radius_px[f, i] ** 2
            r0, c0, cov = patch
            _blend(img, cov, colors.objects[i], r0, c0)
            in_frame = float(cov.sum())
            hidden = _overlap(occ_patch, r0, c0, cov) if occ_patch is not None else 0.0
            ys, xs = np.nonzero(cov > 0.5)
            if len(ys):
                gt["bbox"][f, i] = (c0 + xs.min(), r0 + ys.min(), c0 + xs.max() + 1, r0 + ys.max() + 1)
            gt["in_frame"][f, i] = min(1.0, in_frame / full_area)
            gt["occluded"][f, i] = hidden / in_frame if in_frame > 0 else 0.0
            gt["area"][f, i] = in_frame - hidden
            gt["visible"][f, i] = (in_frame - hidden) >= 2.0
        if occ_patch is not None:
            _blend(img, occ_patch[2], colors.occluder, occ_patch[0], occ_patch[1])
        np.clip(img, 0.0, 255.0, out=img)
        img += 0.5
        out[f] = img
    return out, gt


class _SceneColors:
    def __init__(self, scene: SceneSpec) -> None:
        self.sky = np.array(SKY_COLORS[scene.sky], np.float32)
        self.ground = np.array(GROUND_COLORS[scene.ground], np.float32)
        self.hill = np.array(hill_color(scene.sky, scene.ground), np.float32)
        self.cloud = np.array(cloud_color(scene.sky), np.float32)
        self.post = np.array(POST_COLOR, np.float32)
        self.objects = [np.array(OBJECT_COLORS[o.color], np.float32) for o in scene.objects]
        self.occluder = np.array(OCCLUDER_COLORS[scene.occluder], np.float32) if scene.occluder else None
        self.marks = {c: np.array(v, np.float32) for c, v in OBJECT_COLORS.items()}


def _background(far: FarLayer, colors: _SceneColors, marks: list, cx: float, cy: float, s: float,
                width: int, height: int) -> np.ndarray:
    """Sky, far layer (clouds, hills), ground, paint marks and posts for one camera."""
    cols = np.arange(width, dtype=np.float32) + 0.5
    rows = np.arange(height, dtype=np.float32) + 0.5
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = colors.sky
    # Far layer: it moves PARALLAX times as far as the camera pans; the hills stay on the horizon.
    for fx, fy, hw, hh in far.clouds:
        cc = (fx - PARALLAX * cx) * s + 0.5 * width
        rr = 0.5 * height - (fy - PARALLAX * cy) * s
        patch = _ellipse_patch(cc, rr, hw * s, hh * s, width, height)
        if patch is not None:
            _blend(img, patch[2], colors.cloud, patch[0], patch[1])
    far_x = (cols - 0.5 * width) / s + PARALLAX * cx
    hill_top = 0.5 * height - (far.hill_height(far_x) - cy) * s  # (W,)
    cov = np.clip(rows[:, None] - hill_top[None, :] + 0.5, 0.0, 1.0)
    img += cov[..., None] * (colors.hill - img)
    ground_row = 0.5 * height + cy * s
    cov = np.clip(rows - ground_row + 0.5, 0.0, 1.0)
    img += cov[:, None, None] * (colors.ground - img)
    for mark in marks:
        mc = (mark.x - cx) * s + 0.5 * width
        mr = 0.5 * height - (MARK_Y - cy) * s
        patch = _ellipse_patch(mc, mr, mark.half_width * s, MARK_HALF_HEIGHT * s, width, height)
        if patch is not None:
            _blend(img, patch[2], colors.marks[mark.color], patch[0], patch[1])
    for px in (0.0, STAGE_WIDTH):
        patch = _box_patch((px - POST_HALF_WIDTH - cx) * s + 0.5 * width, (px + POST_HALF_WIDTH - cx) * s + 0.5 * width,
                           0.5 * height - (60.0 - cy) * s, 0.5 * height - (OCCLUDER_BASE - cy) * s, width, height)
        if patch is not None:
            _blend(img, patch[2], colors.post, patch[0], patch[1])
    return img


def _ellipse_patch(c: float, r: float, ax: float, ay: float, width: int, height: int):
    """(r0, c0, coverage) of an ellipse with semi-axes (ax, ay) px centred at (c, r), or None."""
    grid = _pixel_grid(c, r, ax, ay, width, height)
    if grid is None:
        return None
    r0, c0, cols, rows = grid
    return r0, c0, _ellipse_coverage(cols, rows, c, r, ax, ay)


def _overlap(occ_patch, r0: int, c0: int, cov: np.ndarray) -> float:
    """Sum of object coverage hidden under the occluder's coverage."""
    orow, ocol, ocov = occ_patch
    h, w = cov.shape
    rr0, rr1 = max(r0, orow), min(r0 + h, orow + ocov.shape[0])
    cc0, cc1 = max(c0, ocol), min(c0 + w, ocol + ocov.shape[1])
    if rr1 <= rr0 or cc1 <= cc0:
        return 0.0
    a = cov[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0]
    b = ocov[rr0 - orow:rr1 - orow, cc0 - ocol:cc1 - ocol]
    return float((a * b).sum())
