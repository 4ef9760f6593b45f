"""The simulated world: physics laws, determinism, captions that tell the truth, rendering."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from kinema.errors import KinemaError
from kinema.world import SceneOptions, caption_clip, make_clip, parse_prompt, sample_scene, simulate
from kinema.world.physics import POST_HALF_WIDTH, Body, _contact, energy
from kinema.world.scene import LATENT_STRIDE, STAGE_WIDTH, ObjectSpec, SceneSpec, ShotSpec

G = 9.81
KICKS = {"tossed", "thrown_left", "thrown_right", "rolls_left", "rolls_right", "thrown_in"}


def single(action: str, *, shape="ball", size="medium", material="bouncy", x=6.0, y=None, vx=0.0, vy=0.0,
           seconds=6.0, gravity=G) -> SceneSpec:
    r = {"small": 0.55, "medium": 0.8, "large": 1.1}[size]
    obj = ObjectSpec(0, "red", shape, size, material, False, action, x, r if y is None else y, vx, vy)
    frames = 1 + LATENT_STRIDE * int(seconds * 8 / LATENT_STRIDE)
    return SceneSpec(seed=1, fps=8.0, frames=frames, sky="day", ground="sand", occluder=None, occluder_x=6.0,
                     objects=[obj], shots=[ShotSpec(0, frames, "wide", 0)], gravity=gravity)


def flights(traj, i=0):
    """Runs of consecutive frames in free flight (no contact between them)."""
    runs, run = [], []
    vy = traj.vy[:, i]
    for f in range(len(vy)):
        if run and not (vy[f] < vy[f - 1] - 1e-9):  # velocity must keep dropping by g*dt
            runs.append(run)
            run = []
        run.append(f)
    runs.append(run)
    return [r for r in runs if len(r) >= 4]


def test_free_flight_is_a_parabola_with_the_configured_gravity():
    for gravity in (G, 4.0):
        scene = single("tossed", vx=0.5, vy=9.0, gravity=gravity)
        traj = simulate(scene)
        runs = flights(traj)
        assert runs, "no free flight found"
        for run in runs:
            t = np.array(run) / scene.fps
            y = traj.y[run, 0]
            coef, residual, *_ = np.polyfit(t, y, 2, full=True)
            assert coef[0] == pytest.approx(-gravity / 2, rel=1e-6)
            assert np.sqrt(residual[0] / len(t) if len(residual) else 0.0) < 1e-6
            # Horizontal motion is uniform in flight.
            assert np.allclose(np.diff(traj.x[run, 0]), np.diff(traj.x[run, 0])[0], atol=1e-9)


def test_bounce_height_ratio_is_restitution_squared():
    for material, e in (("bouncy", 0.8), ("heavy", 0.35)):
        scene = single("dropped", material=material, y=0.8 + 7.0, seconds=8.0)
        traj = simulate(scene)
        # Apex height of each flight from energy: h = (y - r) + vy² / 2g, the same at any frame of a flight.
        apexes = [float(traj.y[run[1], 0] - 0.8 + traj.vy[run[1], 0] ** 2 / (2 * G)) for run in flights(traj)]
        assert apexes[0] == pytest.approx(7.0, rel=1e-9)
        assert len(apexes) >= 2
        for a, b in itertools.pairwise(apexes):
            assert b / a == pytest.approx(e * e, rel=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_energy_never_increases_and_objects_stay_on_stage(seed):
    scene = sample_scene(seed, SceneOptions(seconds=20, objects=(2, 3)))
    traj = simulate(scene)
    e = energy(scene, traj)
    kicked = {ev.frame for ev in traj.events if ev.kind in KICKS}
    for f in range(1, scene.frames):
        if f - 1 in kicked or f in kicked:  # a kick adds energy in the step after it
            continue
        assert e[f] <= e[f - 1] + 1e-4, f"energy rose at frame {f}: {e[f - 1]} -> {e[f]}"
    radii = np.array([o.radius for o in scene.objects])
    present = traj.present
    assert np.all((traj.x - radii >= POST_HALF_WIDTH - 1e-6) | ~present)
    assert np.all((traj.x + radii <= STAGE_WIDTH - POST_HALF_WIDTH + 1e-6) | ~present)
    assert np.all((traj.y - radii >= -1e-9) | ~present)
    # Overlap between bodies stays small.

    for f in range(scene.frames):
        bodies = [Body(o, traj.x[f, i], traj.y[f, i], 0, 0) for i, o in enumerate(scene.objects) if present[f, i]]
        for a in range(len(bodies)):
            for b in range(a + 1, len(bodies)):
                c = _contact(bodies[a], bodies[b])
                assert c is None or c[2] < 0.08, f"overlap {c[2]:.3f} m at frame {f}"


def test_friction_stops_rolling_and_boxes_slide_shorter():
    ball = simulate(single("rolls_right", shape="ball", x=2.0, vx=3.0, seconds=8))
    box = simulate(single("rolls_right", shape="box", x=2.0, vx=3.0, seconds=8))
    assert ball.vx[-1, 0] == 0.0 and box.vx[-1, 0] == 0.0
    assert box.x[-1, 0] - 2.0 < ball.x[-1, 0] - 2.0
    assert np.all(np.diff(ball.x[:, 0]) >= -1e-12)  # never rolls back


def test_same_seed_same_bytes_different_seed_different_clip():
    opts = SceneOptions(seconds=4, shots=(1, 3))
    a = make_clip(sample_scene(5, opts), 64, 64)
    b = make_clip(sample_scene(5, opts), 64, 64)
    c = make_clip(sample_scene(6, opts), 64, 64)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.captions == b.captions
    assert a.frames.tobytes() != c.frames.tobytes()
    assert a.captions.caption != c.captions.caption


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (64, 96), (256, 144), (8, 8)])
def test_renders_any_multiple_of_8(size):
    clip = make_clip(sample_scene(3, SceneOptions(seconds=1, shots=1)), *size)
    assert clip.frames.shape == (9, size[1], size[0], 3)
    assert clip.frames.dtype == np.uint8


@pytest.mark.parametrize("size", [(65, 64), (64, 0), (-8, 8)])
def test_bad_sizes_are_clear_errors(size):
    with pytest.raises(KinemaError, match="multiples of 8"):
        make_clip(sample_scene(3, SceneOptions(seconds=1)), *size)


def test_shots_cut_on_latent_boundaries_and_cover_the_clip():
    for seed in range(30):
        scene = sample_scene(seed, SceneOptions(seconds=12, shots=(2, 5)))
        assert scene.shots[0].start == 0 and scene.shots[-1].end == scene.frames
        for a, b in zip(scene.shots, scene.shots[1:]):
            assert a.end == b.start
            assert (b.start - 1) % LATENT_STRIDE == 0
            assert a.framing != b.framing  # every cut is visible
        assert (scene.frames - 1) % LATENT_STRIDE == 0


def test_scene_options_are_validated():
    with pytest.raises(KinemaError, match="framings"):
        sample_scene(0, SceneOptions(framings=("sideways",)))
    with pytest.raises(KinemaError, match="seconds"):
        sample_scene(0, SceneOptions(seconds=0))


def _object_index(scene, sentence):
    parsed = parse_prompt(sentence)["objects"]
    assert parsed, sentence
    first = parsed[0]
    matches = [o.id for o in scene.objects if (o.color, o.shape) == (first["color"], first["shape"])]
    assert len(matches) == 1, sentence
    return matches[0], parsed


def _ground_contacts(traj, i):
    """Frames after which the object went from falling to rising near the ground."""
    vy, _y = traj.vy[:, i], traj.y[:, i]
    return [f for f in range(1, len(vy)) if vy[f - 1] < 0 < vy[f]]


@pytest.mark.parametrize("seed", range(40))
def test_every_caption_claim_holds_in_the_ground_truth(seed):
    scene = sample_scene(seed, SceneOptions(seconds=10, shots=(1, 3), occluder_probability=0.8,
                                            paint_probability=0.5))
    clip = make_clip(scene, 64, 64)
    traj = clip.trajectory
    # Occlusion is a fact of the world: check it in a wide view of the whole clip.
    wide = SceneSpec(**{**scene.__dict__, "shots": [ShotSpec(0, scene.frames, "wide", 0)]})
    gt = make_clip(wide, 64, 64).ground_truth
    texts = [clip.captions.caption, *clip.captions.shots]
    # Colour and shape words name the scene's objects and nothing else.
    parsed = parse_prompt(clip.captions.caption)
    assert sorted((o["color"], o["shape"]) for o in parsed["objects"]) == \
        sorted((o.color, o.shape) for o in scene.objects)
    assert (parsed["sky"], parsed["ground"], parsed["occluder"]) == (scene.sky, scene.ground, scene.occluder)
    for text in texts:
        for sentence in re.split(r"(?<=\.) ", text):
            s = sentence.lower()
            if " bounces " in s and "edge" not in s:
                i, _ = _object_index(scene, s)
                assert _ground_contacts(traj, i), f"claimed bounce without ground contact: {sentence}"
            if "passes behind" in s:
                i, _ = _object_index(scene, s)
                assert scene.occluder and gt["occluded"][:, i].max() > 0.0, sentence
            if "paint marks" in s:
                i, _ = _object_index(scene, s)
                assert scene.objects[i].paint and any(m.object_id == i for m in traj.marks), sentence
            if any(w in s for w in ("collides with", "bumps into", " hits ")):
                i, objs = _object_index(scene, s)
                j = next(o.id for o in scene.objects if (o.color, o.shape) == (objs[1]["color"], objs[1]["shape"]))
                gap = np.hypot(traj.x[:, i] - traj.x[:, j], traj.y[:, i] - traj.y[:, j])
                both = traj.present[:, i] & traj.present[:, j]
                limit = (scene.objects[i].radius + scene.objects[j].radius) * 1.45
                assert np.any(both & (gap <= limit)), sentence
    # Opening actions are what the trajectory does.
    for o in scene.objects:
        i = o.id
        if o.action in ("thrown_right", "rolls_right"):
            assert traj.vx[0, i] > 0
        if o.action in ("thrown_left", "rolls_left"):
            assert traj.vx[0, i] < 0
        if o.action == "tossed":
            assert traj.vy[0, i] > 5
        if o.action == "dropped":
            assert traj.vy[0, i] == 0 and traj.y[0, i] > 5
        if o.action == "rests":
            assert traj.vx[0, i] == 0 and traj.vy[0, i] == 0 and traj.y[0, i] == pytest.approx(o.radius)


def test_captions_parse_back_to_the_scene():
    for seed in range(100):
        scene = sample_scene(seed, SceneOptions(seconds=6, shots=(1, 3)))
        captions = caption_clip(scene, simulate(scene))
        parsed = parse_prompt(captions.caption)
        expected = sorted((o.color, o.shape, o.size, o.material, o.paint or None) for o in scene.objects)
        got = sorted((o["color"], o["shape"], o["size"], o["material"], o["paint"]) for o in parsed["objects"])
        assert got == expected, captions.caption
        actions = {(o["color"], o["shape"]): o["action"] for o in parsed["objects"]}
        for o in scene.objects:
            told = actions[(o.color, o.shape)]
            if o.action == "thrown_in":
                # A throw-in filmed by a shot about another object goes untold.
                assert told in ("thrown_in", "rests", None), captions.caption
            else:
                assert told == o.action, captions.caption


def test_parse_prompt_reads_user_phrasing():
    p = parse_prompt("A red ball is thrown to the right and bounces on the sand")
    assert p["ground"] == "sand" and p["objects"][0]["color"] == "red"
    assert p["objects"][0]["action"] == "thrown_right"
    p = parse_prompt("close-up of a big blue cube rolling left at night, with a tree in front")
    assert p["framings"] == ["closeup"] and p["sky"] == "night" and p["occluder"] == "tree"
    assert p["objects"] == [{"color": "blue", "shape": "box", "size": "large", "material": None, "paint": None,
                             "action": "rolls_left"}]


def test_tracking_cameras_keep_the_subject_in_view():
    for seed in range(10):
        scene = sample_scene(seed, SceneOptions(seconds=8, shots=(3, 4), framings=("closeup", "pan")))
        clip = make_clip(scene, 64, 64)
        gt = clip.ground_truth
        for shot in scene.shots[1:]:
            i = shot.subject
            frames = [f for f in range(shot.start, shot.end) if clip.trajectory.present[f, i]]
            inside = [gt["in_frame"][f, i] > 0.5 for f in frames]
            assert np.mean(inside) > 0.8, (seed, shot)
