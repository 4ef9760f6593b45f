"""Camera framings. A camera is a view box in world units: centre (cx, cy) and width; its height
follows from the output's aspect ratio, so any width × height can be rendered.

- wide: the whole stage, static;
- medium: about half the stage around the shot's subject, static;
- pan: the medium zoom, tracking the subject horizontally;
- closeup: a tight view that follows the subject in x and y.
"""

from __future__ import annotations

import numpy as np

from kinema.world.physics import Trajectory
from kinema.world.scene import STAGE_WIDTH, SceneSpec

WIDE_X = (-0.35, STAGE_WIDTH + 0.35)  # the posts are just inside a square wide view
WIDE_Y = (-2.6, 9.4)
ZOOM = {"wide": 1.0, "medium": 0.55, "pan": 0.42, "closeup": 0.32}  # distinct, so every cut shows
GROUND_FRACTION = {"wide": 0.22, "medium": 0.22, "pan": 0.22, "closeup": 0.25}  # of the view, when low
FOLLOW = 0.45  # per-frame smoothing of tracking cameras


def wide_view(aspect: float) -> tuple[float, float, float, float]:
    """(cx, cy, view_width, view_height) of the wide shot for width/height = aspect."""
    box_w, box_h = WIDE_X[1] - WIDE_X[0], WIDE_Y[1] - WIDE_Y[0]
    view_w = max(box_w, box_h * aspect)
    view_h = view_w / aspect
    cx = 0.5 * (WIDE_X[0] + WIDE_X[1])
    # Extra height (portrait) goes mostly to the sky, keeping the ground band similar.
    bottom = WIDE_Y[0] - 0.25 * (view_h - box_h)
    return cx, bottom + 0.5 * view_h, view_w, view_h


def camera_track(scene: SceneSpec, traj: Trajectory, aspect: float) -> np.ndarray:
    """Per-frame camera (frames, 4): cx, cy, view_width, view_height."""
    wcx, wcy, wvw, wvh = wide_view(aspect)
    out = np.zeros((scene.frames, 4), dtype=np.float64)
    radius = [o.radius for o in scene.objects]
    for shot in scene.shots:
        zoom = ZOOM[shot.framing]
        vw, vh = wvw * zoom, wvh * zoom
        lo_x, hi_x = wcx - 0.5 * wvw + 0.5 * vw, wcx + 0.5 * wvw - 0.5 * vw
        low_cy = -GROUND_FRACTION[shot.framing] * vh + 0.5 * vh
        cx = cy = 0.0
        for f in range(shot.start, shot.end):
            if shot.framing == "wide":
                cx, cy = wcx, wcy
            else:
                s = shot.subject
                sx = traj.x[f, s] if traj.present[f, s] else wcx
                sy = traj.y[f, s] if traj.present[f, s] else 0.0
                tx = min(max(sx, lo_x), hi_x)
                if shot.framing == "closeup":
                    ty = max(low_cy, sy + 0.1 * vh)
                else:  # pan: tilt only as far as needed to keep the subject in view
                    ty = max(low_cy, sy + radius[s] + 0.3 - 0.5 * vh)
                if f == shot.start or shot.framing == "medium":
                    if f == shot.start:
                        cx, cy = tx, ty
                elif shot.framing == "pan":
                    cx, cy = cx + FOLLOW * (tx - cx), cy + FOLLOW * (ty - cy)
                else:
                    cx, cy = cx + FOLLOW * (tx - cx), cy + FOLLOW * (ty - cy)
            out[f] = (cx, cy, vw, vh)
    return out


def world_to_pixel(x: np.ndarray, y: np.ndarray, camera: np.ndarray, width: int, height: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (column, row, pixels per metre); pixel centres are at i + 0.5."""
    cx, cy, vw = camera[..., 0], camera[..., 1], camera[..., 2]
    scale = width / vw
    col = (x - cx) * scale + 0.5 * width
    row = (cy - y) * scale + 0.5 * height
    return col, row, scale
