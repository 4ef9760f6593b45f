"""Cuts: the background jumps from one frame to the next once camera motion is undone."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer.results import FrameAnalysis

# A cut: the background jump (camera motion undone) stands out from the jumps around it. With other
# evidence (an object's size jumps, the posts come into or out of view, the sky or ground changes)
# a smaller jump will do.
CUT_NOISE = 0.5  # grey levels added to the typical nearby jump
CUT_RATIO, CUT_MIN_JUMP = 3.0, 2.5
CUT_RATIO_WITH_EVIDENCE, CUT_MIN_JUMP_WITH_EVIDENCE = 1.5, 0.75
CUT_SHIFT = 0.1  # of the frame width: a jump of the view this big, with a still camera around it, is a cut
CUT_SIZE_RATIO = 1.35  # an object this much bigger or smaller from one frame to the next: the zoom changed


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
