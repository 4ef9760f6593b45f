"""Metrics: simulator clips score near-perfect, and each kind of wrong clip fails its metric."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from kinema.eval.analyzer import analyze_video
from kinema.eval.metrics import ATTRIBUTE_CHECKS, attribute_checks, expectation_from_scene, score_clip, summarize
from kinema.media import read_video, write_video
from kinema.world.physics import simulate
from kinema.world.render import render
from kinema.world.scene import OBJECT_COLORS, SKIES, SceneOptions, sample_scene

SINGLE = SceneOptions(seconds=4, shots=1, paint_probability=0.5)
MULTI = SceneOptions(seconds=5, shots=(2, 3), framings=("wide", "medium", "closeup"))


def find_scene(options: SceneOptions, wanted, start: int = 0, limit: int = 300):
    """The first (scene, trajectory) from seed ``start`` on for which ``wanted`` holds."""
    for seed in range(start, start + limit):
        scene = sample_scene(seed, options)
        traj = simulate(scene)
        if wanted(scene, traj):
            return scene, traj
    raise AssertionError("no scene in range fits the test's needs; the world's sampling changed")


def score(scene, traj, path, width: int = 64, height: int = 64, expected: dict | None = None,
          frames: np.ndarray | None = None) -> dict:
    """Render (unless frames are given), round-trip through H.264 and score against the scene."""
    if frames is None:
        frames, _ = render(scene, traj, width, height)
    write_video(path, frames, scene.fps, crf=12, sidecar=False)
    decoded, fps = read_video(path)
    analysis = analyze_video(decoded, fps)
    return score_clip(analysis, expected or expectation_from_scene(scene, traj, width / height))


def early_collision(traj, obj: int, frames: int = 6) -> bool:
    return any(e.kind in ("collision", "wall") and obj in e.objects and e.frame < frames for e in traj.events)


def directional(scene, traj) -> bool:
    """One shot, an object thrown or rolled sideways that hits nothing at first, no later kicks."""
    return (not scene.events and any(o.action in ("thrown_right", "rolls_right", "thrown_left", "rolls_left")
                                     and not early_collision(traj, o.id) for o in scene.objects))


@pytest.fixture(scope="module")
def ground_truth_scores(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("metrics")
    out, start = [], 0
    # Single wide shots with sideways actions, then multi-shot clips of any kind.
    for options, count, wanted in ((SINGLE, 4, directional), (MULTI, 2, lambda s, t: True)):
        for _ in range(count):
            scene, traj = find_scene(options, wanted, start)
            start = scene.seed + 1
            out.append(score(scene, traj, folder / f"gt_{scene.seed}.mp4"))
    return out


def test_ground_truth_clips_score_near_perfect(ground_truth_scores):
    for scores in ground_truth_scores:
        assert scores["attributes"] >= 0.99, scores
        assert scores["permanence"] == 1.0 and scores["vanish_events"] == 0 and scores["spawn_events"] == 0, scores
        assert scores["color_stability"] == 1.0, scores
        for name, floor in (("motion_direction", 1.0), ("gravity_consistency", 0.9), ("bounces", 0.9),
                            ("cross_shot_consistency", 1.0), ("shot_count", 1.0)):
            assert scores[name] is None or scores[name] >= floor, (name, scores)
        assert scores["parabola_residual_px"] is None or scores["parabola_residual_px"] <= 1.0, scores
    summary = summarize(ground_truth_scores)
    # Every metric was exercised somewhere.
    for name in ("motion_direction", "gravity_consistency", "bounces", "cross_shot_consistency"):
        assert summary[name] is not None, name
    assert summary["gravity_estimate"] == pytest.approx(9.81, rel=0.05)


def test_wrong_colour_lowers_attributes(tmp_path):
    scene, traj = find_scene(SINGLE, lambda s, t: len(s.objects) >= 2)
    expected = expectation_from_scene(scene, traj)
    right = score(scene, traj, tmp_path / "right.mp4", expected=expected)
    wrong_scene = copy.deepcopy(scene)
    used = {o.color for o in scene.objects}
    wrong_scene.objects[0].color = next(c for c in OBJECT_COLORS if c not in used)
    wrong = score(wrong_scene, traj, tmp_path / "wrong.mp4", expected=expected)
    assert right["attributes"] >= 0.99
    assert wrong["attributes"] <= right["attributes"] - 0.1
    # The breakdown names what failed: the recoloured object is not found, by shape or by colour alone,
    # while the sky and the ground still pass.
    assert right["attributes_object"] == 1.0 and right["attributes_object_colour"] == 1.0
    assert wrong["attributes_object"] < 1.0 and wrong["attributes_object_colour"] < 1.0
    assert wrong["attributes_sky"] == 1.0 and wrong["attributes_ground"] == 1.0


def test_attribute_checks_split_the_attribute_score(tmp_path):
    scene, traj = find_scene(SINGLE, lambda s, t: len(s.objects) >= 2)
    expected = expectation_from_scene(scene, traj)
    expected["sky"] = next(name for name in SKIES if name != expected["sky"])
    frames, _ = render(scene, traj, 64, 64)
    write_video(tmp_path / "c.mp4", frames, scene.fps, crf=12, sidecar=False)
    analysis = analyze_video(read_video(tmp_path / "c.mp4")[0], scene.fps)
    checks = attribute_checks(analysis, expected)
    assert checks["sky"] == [False] and checks["ground"] == [True] and all(checks["object"])
    assert len(checks["object"]) == len(expected["objects"]) and checks["count"] == [True]
    scores = score_clip(analysis, expected)
    pooled = [ok for name in ATTRIBUTE_CHECKS for ok in checks[name]]
    assert scores["attributes"] == pytest.approx(sum(pooled) / len(pooled)) and scores["attributes"] < 1.0
    assert scores["attributes_sky"] == 0.0 and scores["attributes_object"] == 1.0


def test_reversed_motion_scores_zero_direction(tmp_path):
    # Everything has come to rest by the end, so the reversed clip starts still.
    scene, traj = find_scene(SINGLE, lambda s, t: directional(s, t) and np.abs(t.vx[-4:]).max() < 0.05
                             and np.abs(t.vy[-4:]).max() < 0.05)
    expected = expectation_from_scene(scene, traj)
    frames, _ = render(scene, traj, 64, 64)
    assert score(scene, traj, tmp_path / "forward.mp4", frames=frames)["motion_direction"] == 1.0
    backward = score(scene, traj, tmp_path / "backward.mp4", frames=frames[::-1].copy(), expected=expected)
    assert backward["motion_direction"] == 0.0
    # The same clip against a prompt that says the other way.
    flipped = copy.deepcopy(expected)
    for obj in flipped["objects"]:
        if "right" in obj["action"] or "left" in obj["action"]:
            side = "left" if "right" in obj["action"] else "right"
            obj["action"] = obj["action"].rsplit("_", 1)[0] + "_" + side
    assert score(scene, traj, tmp_path / "flipped.mp4", frames=frames, expected=flipped)["motion_direction"] == 0.0


def test_object_deleted_mid_clip_breaks_permanence(tmp_path):
    def in_the_open(scene, traj) -> bool:
        return any(np.all(traj.present[10:, i]) and 3.0 < traj.x[12, i] < 9.0
                   and (scene.occluder is None or abs(traj.x[12, i] - scene.occluder_x) > 2.5)
                   for i in range(len(scene.objects)))

    scene, traj = find_scene(SINGLE, in_the_open)
    expected = expectation_from_scene(scene, traj)
    victim = next(i for i in range(len(scene.objects)) if 3.0 < traj.x[12, i] < 9.0
                  and (scene.occluder is None or abs(traj.x[12, i] - scene.occluder_x) > 2.5))
    assert score(scene, traj, tmp_path / "whole.mp4", expected=expected)["permanence"] == 1.0
    cut = copy.deepcopy(traj)
    cut.present[12:, victim] = False
    scores = score(scene, cut, tmp_path / "deleted.mp4", expected=expected)
    assert scores["permanence"] < 1.0
    assert scores["vanish_events"] >= 1


def test_flipped_gravity_fails_gravity_consistency(tmp_path):
    scene, _ = find_scene(SINGLE, lambda s, t: any(o.action == "dropped" for o in s.objects))
    expected = expectation_from_scene(scene, simulate(scene))
    upside_down = copy.deepcopy(scene)
    upside_down.gravity = -9.81
    traj = simulate(upside_down)
    # A portrait frame leaves room above for things to fall up through.
    scores = score(upside_down, traj, tmp_path / "up.mp4", width=64, height=96, expected=expected)
    assert scores["gravity_consistency"] is not None
    assert scores["gravity_consistency"] <= 0.1
    assert scores["gravity_estimate"] < 0


def test_summarize_ignores_missing_values():
    summary = summarize([{"a": 1.0, "b": None}, {"a": 0.0, "b": None, "c": 0.5}])
    assert summary == {"a": 0.5, "b": None, "c": 0.5, "clips": 2.0}


def test_score_clip_without_expectations_still_runs():
    scene = sample_scene(3, SINGLE)
    frames, _ = render(scene, simulate(scene), 64, 64)
    scores = score_clip(analyze_video(frames, scene.fps), {})
    assert scores["attributes"] is None and scores["shot_count"] is None
    assert scores["permanence"] is not None


@pytest.mark.parametrize("frames", [
    np.zeros((0, 16, 16, 3), np.uint8),
    np.zeros((5, 32, 32, 3), np.uint8),
    np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8),
])
def test_score_clip_survives_weird_video(frames):
    expected = {"sky": "day", "objects": [{"color": "red", "shape": "ball", "action": "thrown_right"}],
                "shots": [{"start": 0, "end": 5, "framing": "wide", "subject": 0}]}
    scores = score_clip(analyze_video(frames, 8.0), expected)
    assert scores["attributes"] < 0.5  # no red ball, wrong sky
    assert all(v is None or np.isfinite(v) for v in scores.values())
