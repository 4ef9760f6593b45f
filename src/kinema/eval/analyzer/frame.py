"""One frame: scene, ground, occluder, scale, objects and marks."""

from __future__ import annotations

import numpy as np

from kinema.eval.analyzer.marks import find_marks
from kinema.eval.analyzer.objects import (
    MIN_DEEP_OBJECT,
    MIN_OBJECT_AREA,
    find_blobs,
    merge_split_by_occluder,
    object_from_blob,
    wide_scale,
)
from kinema.eval.analyzer.palette import CORE_ALPHA, Palette, PixelMaps, classify_scene, palette, pixel_maps
from kinema.eval.analyzer.results import FrameAnalysis
from kinema.eval.analyzer.stage import find_ground_row, find_occluder, find_posts, measure_scale


def analyze_frame(image: np.ndarray, index: int = 0) -> FrameAnalysis:
    """Scene, ground, occluder, scale, objects and marks of one (H, W, 3) float RGB frame."""
    return _analyze_frame(np.asarray(image, np.float32), index)


def _analyze_frame(image: np.ndarray, index: int) -> FrameAnalysis:
    height, width, _ = image.shape
    sky, ground = classify_scene(image)
    pal = palette(sky, ground)
    maps = pixel_maps(image, pal)
    ground_row = find_ground_row(image, pal, maps)
    posts = find_posts(image, pal, ground_row)
    occluder, occluder_bbox, occluder_width = find_occluder(image, pal, maps, ground_row, posts)
    scale = measure_scale(posts, occluder, occluder_width, width)
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
    blobs = find_blobs(image, pal, maps, above, MIN_OBJECT_AREA, CORE_ALPHA, MIN_DEEP_OBJECT)
    for blob in merge_split_by_occluder(blobs, occluder_bbox):
        det = object_from_blob(blob, width, height, scale, occluder_mask, occluder_bbox)
        x0, y0, x1, y1 = det.bbox
        # A line one pixel thick is an edge, not an object: at night the blend of a dark sky with a tree
        # trunk or with an object's rim comes out near black. An object the frame edge cuts to a sliver
        # (thin across that edge) is kept.
        if (x1 - x0 <= 1 and x0 > 0 and x1 < width) or (y1 - y0 <= 1 and y0 > 0 and y1 < height):
            continue
        objects.append(det)
    marks = [] if ground_row is None else find_marks(image, pal, ground_row, scale)
    sky_rgb, ground_rgb = _scene_colors(image, pal, maps, ground_row)
    return FrameAnalysis(index, sky, ground if ground_row is not None else None, ground_row, occluder,
                         occluder_bbox, float(scale), scale_known, objects, marks, sky_rgb, ground_rgb,
                         [c for c, _ in posts])


def _scene_colors(image: np.ndarray, pal: Palette, maps: PixelMaps, ground_row: float | None):
    """Median colours of the pixels nearest the sky colour and of the ground band below the surface."""
    pixels = image.reshape(-1, 3)
    sky = pixels[np.isin(maps.nearest_background, pal.index("sky")) & (maps.background_distance < 30.0)]
    sky_rgb = tuple(float(v) for v in np.median(sky, axis=0)) if len(sky) else None
    ground_rgb = None
    if ground_row is not None and int(np.ceil(ground_row)) + 1 < image.shape[0]:
        band = image[int(np.ceil(ground_row)) + 1:].reshape(-1, 3)
        ground_rgb = tuple(float(v) for v in np.median(band, axis=0))
    return sky_rgb, ground_rgb
