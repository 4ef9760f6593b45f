"""Colours of the simulated world.

Object colours are saturated and kept far (in RGB) from every background colour, so that the
analyzer can tell objects, marks and scenery apart by nearest colour, even after H.264 and even
in the output of a small generative model. The background colours of a scene are all derived
from its sky and ground by the functions below, which the renderer and the analyzer share.
"""

from __future__ import annotations

import numpy as np

OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 135, 10),
    "yellow": (250, 225, 20),
    "green": (30, 190, 50),
    "blue": (35, 65, 225),
    "purple": (135, 45, 195),
    "pink": (250, 110, 195),
    "white": (246, 246, 246),
    "black": (18, 18, 18),
}

SKY_COLORS: dict[str, tuple[int, int, int]] = {
    "day": (125, 185, 232),
    "dusk": (196, 128, 118),
    "night": (38, 48, 98),
}

GROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "grass": (72, 122, 52),
    "sand": (214, 190, 142),
    "snow": (188, 203, 226),
    "stone": (122, 118, 114),
}

OCCLUDER_COLORS: dict[str, tuple[int, int, int]] = {
    "wall": (168, 158, 148),
    "tree": (102, 68, 40),
}

# The posts at the stage edges share the wall's colour so that they add no colour class.
POST_COLOR = OCCLUDER_COLORS["wall"]

SHADOW_DARKEN = 0.4  # shadow colour = ground colour * (1 - SHADOW_DARKEN * strength)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], weight_b: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1.0 - weight_b) + y * weight_b)) for x, y in zip(a, b))  # type: ignore[return-value]


def hill_color(sky: str, ground: str) -> tuple[int, int, int]:
    """Far hills: a hazy mix of the ground and the sky."""
    return _mix(SKY_COLORS[sky], GROUND_COLORS[ground], 0.45)


def cloud_color(sky: str) -> tuple[int, int, int]:
    """Clouds: the sky lifted toward white by day, toward violet grey at dusk, barely at night."""
    if sky == "dusk":
        return _mix(SKY_COLORS[sky], (120, 90, 120), 0.35)
    return _mix(SKY_COLORS[sky], (255, 255, 255), 0.12 if sky == "night" else 0.28)


def shadow_color(ground: str) -> tuple[int, int, int]:
    g = GROUND_COLORS[ground]
    return tuple(int(round(c * (1.0 - SHADOW_DARKEN))) for c in g)  # type: ignore[return-value]


def background_colors(sky: str, ground: str, occluder: str | None = None) -> dict[str, tuple[int, int, int]]:
    """Every non-object colour a scene with this sky and ground can show (occluder optional)."""
    colors = {
        "sky": SKY_COLORS[sky],
        "ground": GROUND_COLORS[ground],
        "hill": hill_color(sky, ground),
        "cloud": cloud_color(sky),
        "shadow": shadow_color(ground),
        "post": POST_COLOR,
    }
    if occluder is not None:
        colors["occluder"] = OCCLUDER_COLORS[occluder]
    return colors


def as_array(colors: dict[str, tuple[int, int, int]]) -> tuple[list[str], np.ndarray]:
    names = list(colors)
    return names, np.array([colors[n] for n in names], dtype=np.float32)


def min_object_background_distance() -> float:
    """The smallest RGB distance between any object colour and any background colour."""
    best = float("inf")
    for sky in SKY_COLORS:
        for ground in GROUND_COLORS:
            for occluder in OCCLUDER_COLORS:
                _, bg = as_array(background_colors(sky, ground, occluder))
                _, obj = as_array(OBJECT_COLORS)
                d = np.sqrt(((obj[:, None, :] - bg[None, :, :]) ** 2).sum(-1)).min()
                best = min(best, float(d))
    return best
