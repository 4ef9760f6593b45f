"""What a simulated clip contains: the stage, its objects, the actions that start them moving and
the shots that film them. ``sample_scene`` draws one at random from a seed.

World units are metres, with x to the right and y up. The ground surface is y = 0 and the stage
runs from x = 0 to x = STAGE_WIDTH, between two posts that objects bounce off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kinema.errors import KinemaError
from kinema.frames import LATENT_STRIDE, frames_for_seconds  # cuts fall on frames 1 + 4k
from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, OCCLUDER_COLORS, SKY_COLORS

STAGE_WIDTH = 12.0
GRAVITY = 9.81  # m/s²

SHAPES = ("ball", "box")
SIZES: dict[str, float] = {"small": 0.55, "medium": 0.8, "large": 1.1}  # radius or half side, m
MATERIALS: dict[str, float] = {"bouncy": 0.8, "heavy": 0.35}  # coefficient of restitution
DENSITIES: dict[str, float] = {"bouncy": 1.0, "heavy": 3.0}
# Deceleration while in contact with the ground, as a fraction of g: balls roll, boxes slide.
GROUND_FRICTION: dict[str, float] = {"ball": 0.06, "box": 0.45}

ACTIONS = ("dropped", "thrown_left", "thrown_right", "rolls_left", "rolls_right", "tossed", "rests")
# Events that can happen to an object during a clip (it was resting) or to the whole scene.
EVENT_KINDS = ("tossed", "thrown_left", "thrown_right", "rolls_left", "rolls_right", "thrown_in")
FRAMINGS = ("wide", "medium", "closeup", "pan")
SKIES = tuple(SKY_COLORS)
GROUNDS = tuple(GROUND_COLORS)
OCCLUDERS = tuple(OCCLUDER_COLORS)
COLORS = tuple(OBJECT_COLORS)

OCCLUDER_SIZE: dict[str, tuple[float, float]] = {"wall": (1.6, 3.0), "tree": (0.8, 60.0)}  # width, height
MAX_OBJECTS = 3


@dataclass
class ObjectSpec:
    id: int
    color: str
    shape: str
    size: str
    material: str
    paint: bool
    action: str  # one of ACTIONS, or "thrown_in" for objects that enter through an event
    x: float  # initial position (for thrown-in objects: the spawn point)
    y: float
    vx: float
    vy: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def restitution(self) -> float:
        return MATERIALS[self.material]

    @property
    def mass(self) -> float:
        r = self.radius
        area = math.pi * r * r if self.shape == "ball" else 4.0 * r * r
        return area * DENSITIES[self.material]

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "color", "shape", "size", "material", "paint")}


@dataclass
class EventSpec:
    """A scheduled event. ``object_id`` is resolved during simulation for kick-type events."""

    frame: int
    kind: str
    object_id: int | None = None


@dataclass
class ShotSpec:
    start: int  # first frame (a cut falls on it, except for the first shot)
    end: int  # one past the last frame
    framing: str
    subject: int  # object id the camera is about


@dataclass
class SceneSpec:
    seed: int
    fps: float
    frames: int
    sky: str
    ground: str
    occluder: str | None
    occluder_x: float
    objects: list[ObjectSpec]
    events: list[EventSpec] = field(default_factory=list)
    shots: list[ShotSpec] = field(default_factory=list)
    gravity: float = GRAVITY
    far_seed: int = 0

    @property
    def seconds(self) -> float:
        return (self.frames - 1) / self.fps


@dataclass
class SceneOptions:
    """Knobs for random scenes."""

    seconds: float = 4.0
    fps: float = 8.0
    shots: int | tuple[int, int] = 1  # a count, or an inclusive range
    framings: tuple[str, ...] = FRAMINGS  # framings allowed for shots; a single shot is always wide
    objects: tuple[int, int] = (1, MAX_OBJECTS)
    occluder_probability: float = 0.5
    paint_probability: float = 0.3
    event_every: tuple[float, float] = (2.5, 5.0)  # seconds between events in long clips
    first_framing_wide: bool = True

    def validate(self) -> None:
        if not (self.seconds > 0):
            raise KinemaError(f"seconds must be > 0 (got {self.seconds})")
        if not (self.fps > 0):
            raise KinemaError(f"fps must be > 0 (got {self.fps})")
        bad = [f for f in self.framings if f not in FRAMINGS]
        if bad or not self.framings:
            raise KinemaError(f"framings must be among {', '.join(FRAMINGS)} (got {', '.join(bad) or 'none'})")
        lo, hi = self.shot_range()
        if lo < 1 or hi < lo:
            raise KinemaError(f"shots must be >= 1 (got {self.shots})")
        if not (1 <= self.objects[0] <= self.objects[1] <= MAX_OBJECTS):
            raise KinemaError(f"objects must be a range within 1..{MAX_OBJECTS} (got {self.objects})")

    def shot_range(self) -> tuple[int, int]:
        if isinstance(self.shots, int):
            return self.shots, self.shots
        return int(self.shots[0]), int(self.shots[1])


def initial_motion(rng: np.random.Generator, action: str, radius: float) -> tuple[float, float, float]:
    """(y, vx, vy) for an action, given the object's radius."""
    if action == "dropped":
        return float(rng.uniform(5.5, 7.5)), 0.0, 0.0
    if action in ("thrown_left", "thrown_right"):
        sign = 1.0 if action == "thrown_right" else -1.0
        return float(rng.uniform(1.5, 3.5)), sign * float(rng.uniform(2.5, 4.5)), float(rng.uniform(2.0, 5.0))
    if action in ("rolls_left", "rolls_right"):
        sign = 1.0 if action == "rolls_right" else -1.0
        return radius, sign * float(rng.uniform(2.0, 4.0)), 0.0
    if action == "tossed":
        return radius, float(rng.uniform(-0.6, 0.6)), float(rng.uniform(7.0, 9.5))
    if action == "rests":
        return radius, 0.0, 0.0
    raise ValueError(f"unknown action {action!r}")


def start_x(rng: np.random.Generator, action: str, radius: float, taken: list[tuple[float, float]]) -> float:
    """A start x that leaves room for the motion and does not overlap objects already placed."""
    lo, hi = radius + 0.4, STAGE_WIDTH - radius - 0.4
    if action in ("thrown_right", "rolls_right"):
        hi = STAGE_WIDTH * 0.45
    elif action in ("thrown_left", "rolls_left"):
        lo = STAGE_WIDTH * 0.55
    candidates = rng.uniform(lo, hi, 64)
    for x in candidates:
        if all(abs(x - tx) > radius + tr + 0.3 for tx, tr in taken):
            return float(x)
    # No free spot in the preferred range: take the whole stage and the roomiest spot.
    candidates = rng.uniform(radius + 0.4, STAGE_WIDTH - radius - 0.4, 64)
    clearance = [min((abs(x - tx) - radius - tr for tx, tr in taken), default=0.0) for x in candidates]
    return float(candidates[int(np.argmax(clearance))])


def make_object(rng: np.random.Generator, object_id: int, action: str, taken: list[tuple[float, float]],
                paint_probability: float, used_looks: set[tuple[str, str]]) -> ObjectSpec:
    """A random object. Objects in one scene never share both colour and shape."""
    while True:
        color = COLORS[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if (color, shape) not in used_looks:
            break
    used_looks.add((color, shape))
    size = tuple(SIZES)[int(rng.integers(len(SIZES)))]
    material = tuple(MATERIALS)[int(rng.integers(len(MATERIALS)))]
    paint = bool(rng.random() < paint_probability)
    radius = SIZES[size]
    if action == "thrown_in":
        from_left = bool(rng.random() < 0.5)
        x = radius + 0.3 if from_left else STAGE_WIDTH - radius - 0.3
        y, vx, vy = 12.5, (1.0 if from_left else -1.0) * float(rng.uniform(2.0, 3.5)), float(rng.uniform(-1.0, 1.0))
    else:
        y, vx, vy = initial_motion(rng, action, radius)
        x = start_x(rng, action, radius, taken)
    taken.append((x, radius))
    return ObjectSpec(object_id, color, shape, size, material, paint, action, x, y, vx, vy)


def _sample_shots(rng: np.random.Generator, frames: int, options: SceneOptions, objects: list[ObjectSpec],
                  events: list[EventSpec]) -> list[ShotSpec]:
    lo, hi = options.shot_range()
    # A shot lasts at least one latent frame (4 frames); cuts fall on frames 1 + 4k.
    latent_frames = (frames - 1) // LATENT_STRIDE
    count = int(rng.integers(lo, hi + 1))
    count = max(1, min(count, latent_frames))
    if count == 1:
        cut_latents: list[int] = []
    else:
        # Shots of similar length with some jitter, at least 1 latent frame each.
        cuts = np.sort(rng.choice(np.arange(1, latent_frames), size=count - 1, replace=False))
        cut_latents = [int(c) for c in cuts]
    starts = [0] + [1 + LATENT_STRIDE * c for c in cut_latents]
    ends = starts[1:] + [frames]
    thrown_in_frame = {e.object_id: e.frame for e in events if e.kind == "thrown_in"}
    shots: list[ShotSpec] = []
    previous = None
    for i, (start, end) in enumerate(zip(starts, ends)):
        if count == 1 or (i == 0 and options.first_framing_wide and "wide" in options.framings):
            framing = "wide" if "wide" in options.framings or count == 1 else options.framings[0]
        else:
            choices = [f for f in options.framings if f != previous] or list(options.framings)
            framing = choices[int(rng.integers(len(choices)))]
        present = [o.id for o in objects if thrown_in_frame.get(o.id, 0) <= start]
        subject = present[int(rng.integers(len(present)))] if present else objects[0].id
        shots.append(ShotSpec(start, end, framing, subject))
        previous = framing
    return shots


def sample_scene(seed: int, options: SceneOptions | None = None) -> SceneSpec:
    """A random scene. The same seed and options always give the same scene."""
    options = options or SceneOptions()
    options.validate()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6B696E]))
    frames = frames_for_seconds(options.seconds, options.fps)
    sky = SKIES[int(rng.integers(len(SKIES)))]
    ground = GROUNDS[int(rng.integers(len(GROUNDS)))]
    occluder = OCCLUDERS[int(rng.integers(len(OCCLUDERS)))] if rng.random() < options.occluder_probability else None
    occluder_x = float(rng.uniform(3.0, STAGE_WIDTH - 3.0))
    n_objects = int(rng.integers(options.objects[0], options.objects[1] + 1))
    taken: list[tuple[float, float]] = []
    used_looks: set[tuple[str, str]] = set()
    objects: list[ObjectSpec] = []
    # The first object always does something visible; others may rest.
    for i in range(n_objects):
        moving = [a for a in ACTIONS if a != "rests"]
        action = moving[int(rng.integers(len(moving)))] if i == 0 else ACTIONS[int(rng.integers(len(ACTIONS)))]
        objects.append(make_object(rng, i, action, taken, options.paint_probability, used_looks))
    # Long clips keep something happening: an event every few seconds after the opening action.
    events: list[EventSpec] = []
    t = float(rng.uniform(*options.event_every))
    seconds = (frames - 1) / options.fps
    while t < seconds - 1.0:
        frame = int(round(t * options.fps))
        if len(objects) < MAX_OBJECTS and rng.random() < 0.3:
            obj = make_object(rng, len(objects), "thrown_in", taken, options.paint_probability, used_looks)
            objects.append(obj)
            events.append(EventSpec(frame, "thrown_in", obj.id))
        else:
            kicks = [k for k in EVENT_KINDS if k != "thrown_in"]
            events.append(EventSpec(frame, kicks[int(rng.integers(len(kicks)))]))
        t += float(rng.uniform(*options.event_every))
    shots = _sample_shots(rng, frames, options, objects, events)
    return SceneSpec(
        seed=int(seed), fps=float(options.fps), frames=frames, sky=sky, ground=ground, occluder=occluder,
        occluder_x=occluder_x, objects=objects, events=events, shots=shots, far_seed=int(rng.integers(1 << 30)),
    )
