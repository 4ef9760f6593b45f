"""Prompt expansion: a short prompt becomes a caption in the style the model was trained on.

The embedded model learned from the world's own captions ("A wide shot of a stage of sand during the
day. A medium bouncy red ball is thrown to the right. The red ball bounces twice on the sand."). A
user's prompt ("a red ball bouncing on sand") names some of those facts in other words. Expansion
reads what the prompt names with ``parse_prompt`` (sky, ground, occluder, objects with colour, shape,
size, material, paint and action), fills what it leaves open with values drawn from the request's
seed, simulates that scene for the requested length, and lets the world's captioner describe it. The
expansion therefore only says things that happen in a world consistent with the prompt, in the exact
words of the training captions.

A prompt that names nothing the world knows is left as it is.
"""

from __future__ import annotations

import re

import numpy as np

from kinema.world.caption import caption_clip, find_phrases, parse_prompt
from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, SKY_COLORS
from kinema.world.physics import simulate
from kinema.world.scene import (
    ACTIONS,
    COLORS,
    GROUNDS,
    MATERIALS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    SKIES,
    STAGE_WIDTH,
    ObjectSpec,
    SceneSpec,
    ShotSpec,
    frames_for_seconds,
    initial_motion,
    start_x,
)

MOVING = tuple(a for a in ACTIONS if a != "rests")
# An object whose size the prompt leaves open is drawn medium or large: a small one is a few pixels
# across at 64x64, which is what the default model renders least reliably.
FILL_SIZES = ("medium", "large")
MIN_CONTRAST = 150.0  # RGB distance between a filled-in sky or ground and a named object's colour
_BOUNCE = re.compile(r"\bbounc")


def _contrasting(rng: np.random.Generator, names: tuple[str, ...], palette: dict, colors: list[str]) -> str:
    """A random sky or ground, among those far in colour from every named object colour (a red ball is
    not put against the dusk sky), when there are such."""
    def distance(name: str) -> float:
        return min((float(np.linalg.norm(np.subtract(palette[name], OBJECT_COLORS[c]))) for c in colors),
                   default=np.inf)

    far = [n for n in names if distance(n) >= MIN_CONTRAST] or list(names)
    return far[int(rng.integers(len(far)))]


def _objects_named(prompt: str) -> list[dict]:
    """parse_prompt's objects, plus shapes named without a colour ('a ball bouncing')."""
    parsed = parse_prompt(prompt)["objects"]
    if parsed:
        return parsed
    shapes = find_phrases("shape", " " + prompt.lower() + " ")
    return [{"color": None, "shape": shape, "size": None, "material": None, "paint": None, "action": None}
            for _, shape in shapes[:1]]


def expand_prompt(prompt: str, seed: int = 0, seconds: float = 4.0, fps: float = 8.0) -> str | None:
    """The training-style caption of a simulated scene that matches ``prompt``; None if the prompt names
    no object, sky, ground or occluder of the world. The same prompt and seed give the same expansion."""
    parsed = parse_prompt(prompt)
    named = _objects_named(prompt)
    if not named and parsed["sky"] is None and parsed["ground"] is None and parsed["occluder"] is None:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x657870]))
    colors = [o["color"] for o in named if o["color"]]
    sky = parsed["sky"] or _contrasting(rng, SKIES, SKY_COLORS, colors)
    ground = parsed["ground"] or _contrasting(rng, GROUNDS, GROUND_COLORS, colors)
    if not named:
        named = [{"color": None, "shape": None, "size": None, "material": None, "paint": None, "action": None}]
    bouncing = bool(_BOUNCE.search(prompt.lower()))
    objects: list[ObjectSpec] = []
    taken: list[tuple[float, float]] = []
    looks = {(o["color"], o["shape"]) for o in named if o["color"] and o["shape"]}
    for i, want in enumerate(named[:MAX_OBJECTS]):
        shape = want["shape"] or SHAPES[int(rng.integers(len(SHAPES)))]
        color = want["color"]
        while color is None or (color, shape) in looks - {(want["color"], want["shape"])}:
            color = COLORS[int(rng.integers(len(COLORS)))]
        looks.add((color, shape))
        size = want["size"] or FILL_SIZES[int(rng.integers(len(FILL_SIZES)))]
        material = want["material"] or ("bouncy" if bouncing else tuple(MATERIALS)[int(rng.integers(len(MATERIALS)))])
        action = want["action"]
        if action is None or action == "thrown_in":
            choices = ("dropped", "tossed", "thrown_left", "thrown_right") if bouncing else MOVING
            action = choices[int(rng.integers(len(choices)))] if i == 0 else "rests"
        radius = SIZES[size]
        y, vx, vy = initial_motion(rng, action, radius)
        x = start_x(rng, action, radius, taken)
        taken.append((x, radius))
        objects.append(ObjectSpec(i, color, shape, size, material, bool(want["paint"]), action, x, y, vx, vy))
    frames = frames_for_seconds(seconds, fps)
    scene = SceneSpec(seed=int(seed), fps=float(fps), frames=frames, sky=sky, ground=ground,
                      occluder=parsed["occluder"], occluder_x=float(rng.uniform(3.0, STAGE_WIDTH - 3.0)),
                      objects=objects, shots=[ShotSpec(0, frames, "wide", 0)],
                      far_seed=int(rng.integers(1 << 30)))
    return caption_clip(scene, simulate(scene)).caption
