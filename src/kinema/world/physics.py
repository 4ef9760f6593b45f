"""Rigid-body physics of the stage: gravity, bounces, friction and collisions.

Free flight under constant gravity is integrated exactly, and contacts with the ground and the
posts are found by solving for the time of impact inside each sub-step. That makes trajectories
exact parabolas and the bounce height ratio exactly restitution², which the tests check.
Object–object contacts (ball–ball, ball–box, box–box; boxes stay axis-aligned) are resolved with
impulses at the end of each sub-step, followed by a positional correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kinema.world.scene import GROUND_FRICTION, STAGE_WIDTH, ObjectSpec, SceneSpec

SUBSTEP_RATE = 128.0  # sub-steps per second of simulated time
REST_SPEED = 0.9  # m/s: slower impacts on the ground stop the bounce (the object lands)
CONTACT_SPEED = 0.6  # m/s: slower object–object impacts are inelastic resting contacts
EVENT_SPEED = 1.2  # m/s: impacts this fast are reported as collisions or hits on the posts
BOUNCE_SPEED = 2.0  # m/s: rebounds this fast are reported as bounces (they rise visibly for over a frame)
MARK_SPEED = 1.5  # m/s: a paint-covered object leaves a mark when it lands at least this fast
POST_HALF_WIDTH = 0.15
COLLISION_PASSES = 3  # contact resolution passes per sub-step (stacks need more than one)


@dataclass
class Body:
    spec: ObjectSpec
    x: float
    y: float
    vx: float
    vy: float
    present: bool = True
    on_ground: bool = False
    moving: bool = False  # has moved noticeably since it last came to rest

    @property
    def r(self) -> float:
        return self.spec.radius


@dataclass
class PhysicsEvent:
    """Something that happened, for captions and ground truth."""

    frame: int
    kind: str  # bounce | wall | collision | landed | mark | tossed | thrown_left | ... | thrown_in | stopped
    objects: tuple[int, ...]
    x: float = 0.0
    y: float = 0.0
    speed: float = 0.0

    def to_dict(self) -> dict:
        return {"frame": self.frame, "kind": self.kind, "objects": list(self.objects),
                "x": round(self.x, 4), "y": round(self.y, 4), "speed": round(self.speed, 4)}


@dataclass
class Mark:
    object_id: int
    color: str
    x: float
    half_width: float
    frame: int  # frame from which the mark is visible


@dataclass
class Trajectory:
    """Per-frame state of every object (arrays of shape (frames, objects))."""

    x: np.ndarray
    y: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    present: np.ndarray  # bool
    on_ground: np.ndarray  # bool
    events: list[PhysicsEvent] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


def _ground_hit_time(y: float, vy: float, r: float, g: float, dt: float) -> float | None:
    """Time in (0, dt] at which the bottom (y - r) reaches 0 in free flight, if it does."""
    h = y - r
    if g > 0:
        # h + vy t - g t²/2 = 0, later root.
        disc = vy * vy + 2.0 * g * max(h, 0.0)
        t = (vy + math.sqrt(disc)) / g
    elif vy < 0:
        # Gravity flipped or zero: the ground is reached only while moving down.
        a = -0.5 * g
        if a == 0.0:
            t = h / -vy
        else:
            disc = vy * vy - 4.0 * a * h
            if disc < 0:
                return None
            t = (-vy - math.sqrt(disc)) / (2.0 * a)
    else:
        return None
    if t < 1e-12 or t > dt:
        return None
    return t


def _wall_hit_time(x: float, vx: float, r: float, dt: float) -> tuple[float, int] | None:
    if vx < 0:
        t = (x - r - POST_HALF_WIDTH) / -vx
        side = 0
    elif vx > 0:
        t = (STAGE_WIDTH - POST_HALF_WIDTH - r - x) / vx
        side = 1
    else:
        return None
    if t < 0:
        t = 0.0
    return (t, side) if t <= dt else None


def _contact(a: Body, b: Body) -> tuple[float, float, float] | None:
    """(nx, ny, penetration) with the normal pointing from a to b, or None if apart."""
    sa, sb = a.spec.shape, b.spec.shape
    if sa == "ball" and sb == "ball":
        dx, dy = b.x - a.x, b.y - a.y
        dist = math.hypot(dx, dy)
        pen = a.r + b.r - dist
        if pen <= 0:
            return None
        if dist < 1e-9:
            return 1.0, 0.0, pen
        return dx / dist, dy / dist, pen
    if sa == "box" and sb == "box":
        ox = a.r + b.r - abs(b.x - a.x)
        oy = a.r + b.r - abs(b.y - a.y)
        if ox <= 0 or oy <= 0:
            return None
        if ox < oy:
            return (1.0 if b.x >= a.x else -1.0), 0.0, ox
        return 0.0, (1.0 if b.y >= a.y else -1.0), oy
    # ball against box
    ball, box, sign = (a, b, 1.0) if sa == "ball" else (b, a, -1.0)
    cx = min(max(ball.x, box.x - box.r), box.x + box.r)
    cy = min(max(ball.y, box.y - box.r), box.y + box.r)
    dx, dy = ball.x - cx, ball.y - cy
    dist = math.hypot(dx, dy)
    if dist > 1e-9:
        pen = ball.r - dist
        if pen <= 0:
            return None
        nx, ny = dx / dist, dy / dist  # from box to ball
    else:
        # Ball centre inside the box: push out along the axis of least overlap.
        ox = box.r + ball.r - abs(ball.x - box.x)
        oy = box.r + ball.r - abs(ball.y - box.y)
        if ox < oy:
            nx, ny, pen = (1.0 if ball.x >= box.x else -1.0), 0.0, ox
        else:
            nx, ny, pen = 0.0, (1.0 if ball.y >= box.y else -1.0), oy
    # Normal from a to b: from box to ball if a is the box.
    return -sign * nx, -sign * ny, pen


class Simulator:
    """Steps a scene frame by frame. Deterministic: it uses only the scene spec and its seed."""

    def __init__(self, scene: SceneSpec) -> None:
        self.scene = scene
        self.g = scene.gravity
        self.substeps = max(1, int(math.ceil(SUBSTEP_RATE / scene.fps)))
        self.dt = 1.0 / (scene.fps * self.substeps)
        self.rng = np.random.default_rng(np.random.SeedSequence([scene.seed, 0x706879]))
        self.bodies = [Body(o, o.x, o.y, o.vx, o.vy, present=o.action != "thrown_in") for o in scene.objects]
        for b in self.bodies:
            b.on_ground = b.present and b.y <= b.r + 1e-9 and b.vy <= 0.0
        self.events: list[PhysicsEvent] = []
        self.marks: list[Mark] = []
        self.frame = 0

    # -- events -------------------------------------------------------------------------------
    def _apply_scheduled(self) -> None:
        for ev in self.scene.events:
            if ev.frame != self.frame:
                continue
            if ev.kind == "thrown_in":
                body = self.bodies[ev.object_id]
                body.present = True
                self.events.append(PhysicsEvent(self.frame, "thrown_in", (body.spec.id,), body.x, body.y))
                continue
            # A kick: pick a present object that is resting on the ground; skip if there is none.
            resting = [b for b in self.bodies if b.present and b.on_ground and abs(b.vx) < 0.3]
            if not resting:
                continue
            body = resting[int(self.rng.integers(len(resting)))]
            self._kick(body, ev.kind)
            self.events.append(PhysicsEvent(self.frame, ev.kind, (body.spec.id,), body.x, body.y))

    def _kick(self, body: Body, kind: str) -> None:
        rng = self.rng
        room_right = STAGE_WIDTH - body.x
        if kind == "tossed":
            body.vx, body.vy = float(rng.uniform(-0.6, 0.6)), float(rng.uniform(7.0, 9.5))
        elif kind in ("thrown_left", "thrown_right"):
            sign = 1.0 if kind == "thrown_right" else -1.0
            room = room_right if sign > 0 else body.x
            body.vx = sign * float(rng.uniform(2.0, 2.0 + min(3.0, room / 2.0)))
            body.vy = float(rng.uniform(4.0, 7.0))
        else:  # rolls_left / rolls_right
            sign = 1.0 if kind == "rolls_right" else -1.0
            body.vx, body.vy = sign * float(rng.uniform(2.0, 4.0)), 0.0
        body.on_ground = body.vy <= 0.0

    # -- integration --------------------------------------------------------------------------
    def _advance(self, body: Body, dt: float) -> None:
        """Move one body through dt, with exact ground and post impacts."""
        remaining = dt
        for _ in range(8):  # at most a few impacts per sub-step
            if remaining <= 0:
                return
            if body.on_ground and body.vy == 0.0:
                self._slide(body, remaining)
                return
            t_ground = _ground_hit_time(body.y, body.vy, body.r, self.g, remaining)
            wall = _wall_hit_time(body.x, body.vx, body.r, remaining)
            t_wall = wall[0] if wall else None
            t_hit = min(t for t in (t_ground, t_wall, remaining) if t is not None)
            body.x += body.vx * t_hit
            body.y += body.vy * t_hit - 0.5 * self.g * t_hit * t_hit
            body.vy -= self.g * t_hit
            remaining -= t_hit
            if t_ground is not None and t_hit == t_ground:
                body.y = body.r
                self._hit_ground(body)
            elif t_wall is not None and t_hit == t_wall:
                self._hit_wall(body)

    def _slide(self, body: Body, dt: float) -> None:
        """Rolling or sliding on the ground, slowed by friction, with post impacts."""
        decel = GROUND_FRICTION[body.spec.shape] * abs(self.g)
        remaining = dt
        for _ in range(4):
            if body.vx == 0.0 or remaining <= 0:
                return
            wall = _wall_hit_time(body.x, body.vx, body.r, remaining)
            t_stop = abs(body.vx) / decel
            step = min(remaining, t_stop, wall[0] if wall else remaining)
            sign = 1.0 if body.vx > 0 else -1.0
            body.x += body.vx * step - sign * 0.5 * decel * step * step
            body.vx -= sign * decel * step
            remaining -= step
            if step == t_stop:
                body.vx = 0.0
                if body.moving:
                    body.moving = False
                    self.events.append(PhysicsEvent(self.frame, "stopped", (body.spec.id,), body.x, body.y))
                return
            if wall and step == wall[0]:
                self._hit_wall(body)

    def _hit_ground(self, body: Body) -> None:
        impact = -body.vy
        spec = body.spec
        if spec.paint and impact >= MARK_SPEED:
            self.marks.append(Mark(spec.id, spec.color, body.x, spec.radius * 0.9, self.frame + 1))
            self.events.append(PhysicsEvent(self.frame, "mark", (spec.id,), body.x, 0.0, impact))
        if impact >= REST_SPEED:
            body.vy = spec.restitution * impact
            body.on_ground = False
            if body.vy >= BOUNCE_SPEED:
                self.events.append(PhysicsEvent(self.frame, "bounce", (spec.id,), body.x, 0.0, impact))
        else:
            body.vy = 0.0
            body.on_ground = True
            self.events.append(PhysicsEvent(self.frame, "landed", (spec.id,), body.x, 0.0, impact))

    def _hit_wall(self, body: Body) -> None:
        impact = abs(body.vx)
        body.vx = -body.spec.restitution * body.vx
        side = 0.0 if body.vx > 0 else STAGE_WIDTH
        if impact >= EVENT_SPEED:
            self.events.append(PhysicsEvent(self.frame, "wall", (body.spec.id,), side, body.y, impact))

    def _collide(self) -> bool:
        """Resolve every contact once; True if there was any."""
        touching = False
        bodies = [b for b in self.bodies if b.present]
        for i in range(len(bodies)):
            for j in range(i + 1, len(bodies)):
                a, b = bodies[i], bodies[j]
                contact = _contact(a, b)
                if contact is None:
                    continue
                touching = True
                nx, ny, pen = contact
                inv_a, inv_b = 1.0 / a.spec.mass, 1.0 / b.spec.mass
                # A body resting on the ground cannot be pushed down into it.
                if a.on_ground and ny > 0.7:
                    inv_a = 0.0
                if b.on_ground and ny < -0.7:
                    inv_b = 0.0
                if inv_a + inv_b == 0.0:
                    inv_a = inv_b = 1e-9
                vrel = (b.vx - a.vx) * nx + (b.vy - a.vy) * ny
                if vrel < 0:
                    e = min(a.spec.restitution, b.spec.restitution) if -vrel >= CONTACT_SPEED else 0.0
                    j_imp = -(1.0 + e) * vrel / (inv_a + inv_b)
                    a.vx -= j_imp * inv_a * nx
                    a.vy -= j_imp * inv_a * ny
                    b.vx += j_imp * inv_b * nx
                    b.vy += j_imp * inv_b * ny
                    if -vrel >= EVENT_SPEED:
                        self.events.append(PhysicsEvent(self.frame, "collision", (a.spec.id, b.spec.id),
                                                        (a.x + b.x) / 2, (a.y + b.y) / 2, -vrel))
                # Separate the bodies, in proportion to their inverse masses. Lifting a body against
                # gravity would add energy, so any gain is taken back from the pair's kinetic energy.
                before = self._pair_energy(a, b)
                share_a = inv_a / (inv_a + inv_b)
                a.x -= nx * pen * share_a
                a.y -= ny * pen * share_a
                b.x += nx * pen * (1.0 - share_a)
                b.y += ny * pen * (1.0 - share_a)
                for body in (a, b):
                    self._after_push(body)
                self._remove_gain(a, b, before)
        return touching

    def _pair_energy(self, a: Body, b: Body) -> float:
        return sum(body.spec.mass * (0.5 * (body.vx ** 2 + body.vy ** 2) + self.g * (body.y - body.r))
                   for body in (a, b))

    def _remove_gain(self, a: Body, b: Body, before: float) -> None:
        gain = self._pair_energy(a, b) - before
        if gain <= 0:
            return
        kinetic = sum(0.5 * body.spec.mass * (body.vx ** 2 + body.vy ** 2) for body in (a, b))
        if kinetic <= 0:
            return
        scale = math.sqrt(max(0.0, 1.0 - gain / kinetic))
        for body in (a, b):
            body.vx *= scale
            body.vy *= scale

    def _after_push(self, body: Body) -> None:
        lo, hi = body.r + POST_HALF_WIDTH, STAGE_WIDTH - body.r - POST_HALF_WIDTH
        body.x = min(max(body.x, lo), hi)
        if body.y < body.r:
            body.y = body.r
            if body.vy < 0:
                body.vy = 0.0
        if body.on_ground and (body.vy > 1e-9 or body.y > body.r + 1e-6):
            body.on_ground = False
        if not body.on_ground and body.y <= body.r + 1e-9 and abs(body.vy) < 1e-9:
            body.on_ground = True
            body.vy = 0.0

    def step(self) -> None:
        """Advance one frame."""
        self._apply_scheduled()
        for _ in range(self.substeps):
            for body in self.bodies:
                if body.present:
                    if abs(body.vx) > 0.5 or abs(body.vy) > 0.5:
                        body.moving = True
                    if body.on_ground and body.vy > 0:
                        body.on_ground = False
                    self._advance(body, self.dt)
            for _ in range(COLLISION_PASSES):
                if not self._collide():
                    break
        self.frame += 1

    def snapshot(self) -> list[tuple[float, float, float, float, bool, bool]]:
        return [(b.x, b.y, b.vx, b.vy, b.present, b.on_ground) for b in self.bodies]


def simulate(scene: SceneSpec) -> Trajectory:
    """Run the scene for all its frames. Frame k is the state after k frame steps."""
    sim = Simulator(scene)
    n, frames = len(scene.objects), scene.frames
    data = np.zeros((frames, n, 6), dtype=np.float64)
    for f in range(frames):
        if f > 0:
            sim.step()
        else:
            sim._apply_scheduled()  # events scheduled at frame 0 (thrown-in at start)
        for i, s in enumerate(sim.snapshot()):
            data[f, i] = s
    return Trajectory(
        x=data[..., 0], y=data[..., 1], vx=data[..., 2], vy=data[..., 3],
        present=data[..., 4] > 0.5, on_ground=data[..., 5] > 0.5,
        events=sim.events, marks=sim.marks,
    )


def energy(scene: SceneSpec, traj: Trajectory) -> np.ndarray:
    """Total mechanical energy per frame (J-like units), counting present objects only."""
    masses = np.array([o.mass for o in scene.objects])
    radii = np.array([o.radius for o in scene.objects])
    kinetic = 0.5 * masses * (traj.vx ** 2 + traj.vy ** 2)
    potential = masses * scene.gravity * (traj.y - radii)
    return np.where(traj.present, kinetic + potential, 0.0).sum(axis=1)
