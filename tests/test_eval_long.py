"""Long-video and storyboard measures on simulator clips, whose truth is known: a 60 s world clip is
stable and a blurred or recoloured ending is not; the cuts of a multi-shot world clip keep scene and
subject and a splice of two scenes does not; each shot is scored against its own prompt; the two
shipped suites parse and cover the vocabulary; a suite of storyboards and long prompts runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kinema.errors import KinemaError
from kinema.eval import expectation_from_scene
from kinema.eval.long import (
    CONSISTENCY_TARGET,
    DRIFT_TARGET,
    analyze_shots,
    cross_shot_consistency,
    drift,
    format_targets,
    shot_adherence,
    shot_subjects,
    stability,
    window_seams,
)
from kinema.world import SceneOptions, make_clip, render, sample_scene, simulate
from kinema.world.scene import ObjectSpec, SceneSpec, ShotSpec

ROOT = Path(__file__).resolve().parents[1]
FPS = 8.0

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: the suite test runs a tiny model


@pytest.fixture(scope="module")
def minute():
    """A 60 s wide world clip at 64x64 (481 frames) in which two objects are thrown in and paint marks
    pile up: the content changes, the picture's colours and sharpness do not."""
    clip = make_clip(sample_scene(1, SceneOptions(seconds=60, shots=1)), 64, 64)
    assert len(clip.frames) == 481
    assert sum(e.kind == "thrown_in" for e in clip.trajectory.events) == 2 and clip.trajectory.marks
    return clip


def blur(frames: np.ndarray) -> np.ndarray:
    """A light blur: the [1, 2, 1] / 4 kernel along rows and columns (about a 0.7 px Gaussian)."""
    x = frames.astype(np.float32)
    for axis in (1, 2):
        padded = np.concatenate([np.take(x, [0], axis), x, np.take(x, [-1], axis)], axis=axis)
        n = x.shape[axis]
        x = (np.take(padded, range(0, n), axis) + 2 * np.take(padded, range(1, n + 1), axis)
             + np.take(padded, range(2, n + 2), axis)) / 4
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


# -- stability ---------------------------------------------------------------------------------


def test_a_minute_of_the_world_does_not_drift(minute):
    out = stability(minute.frames, FPS, expected=expectation_from_scene(minute.scene, minute.trajectory))
    assert out["window_frames"] == 80
    assert out["drift_max"] < 0.02 and out["within_target"], out
    assert out["color_drift_max"] < 0.01 and out["sharpness_drift"] < 0.02, out
    assert out["permanence"] == 1.0 and out["vanish_events"] == out["spawn_events"] == 0, out


def test_a_blurred_last_10_seconds_is_drift(minute):
    frames = minute.frames.copy()
    frames[-80:] = blur(frames[-80:])
    out = drift(frames, FPS)
    assert out["sharpness_drift"] > 0.1 and out["sharpness_last"] < out["sharpness_first"], out
    assert out["color_drift_max"] < 0.01  # blurring keeps the colours
    assert out["drift_max"] > DRIFT_TARGET and not out["within_target"]
    # Blurring the middle of the clip instead leaves both windows alone.
    middle = minute.frames.copy()
    middle[100:380] = blur(middle[100:380])
    assert drift(middle, FPS)["within_target"]


@pytest.mark.parametrize("gain, channels", [((1.08, 1.0, 1.0), {"r"}), ((0.9, 0.9, 0.9), {"r", "g", "b"}),
                                            ((1.0, 1.0, 0.93), {"b"})])
def test_a_recoloured_last_10_seconds_is_drift(minute, gain, channels):
    frames = minute.frames.copy()
    frames[-80:] = np.clip(np.round(frames[-80:] * np.array(gain)), 0, 255).astype(np.uint8)
    out = drift(frames, FPS)
    drifted = {c for c, v in out["color_drift"].items() if v > DRIFT_TARGET}
    assert drifted == channels, out["color_drift"]
    assert max(out["color_drift"].values()) < 0.12
    assert out["sharpness_drift"] < 0.02  # the re-blur ratio does not change with a colour gain
    assert not out["within_target"]


def test_a_slow_fade_over_the_minute_is_drift(minute):
    fade = np.linspace(1.0, 0.85, len(minute.frames))[:, None, None, None]
    frames = np.round(minute.frames * fade).astype(np.uint8)
    out = drift(frames, FPS)
    assert all(v > 0.1 for v in out["color_drift"].values()), out["color_drift"]


def test_a_minute_of_the_world_has_no_seams_and_a_jump_at_each_join_is_one(minute):
    """The world's own minute, cut where a 60 s video's passes would meet, shows no joins; the same minute
    with the picture shifted a little at each join, as a pass that does not quite continue its context
    would, shows them, and so does a blur that comes and goes with the passes. Jumps elsewhere do not
    count as seams."""
    from kinema.inference.longvideo import window_start_frames

    joins = window_start_frames(481, 13, 1, 2)
    assert joins[0] == 49 and len(joins) == 10 and all((j - 1) % 4 == 0 for j in joins)
    frames = minute.frames
    clean = window_seams(frames, joins)
    assert clean["joins"] == 10 and clean["seam_ratio"] < 1.5, clean
    shifted = frames.copy()
    blurred = frames.copy()
    for n, (start, end) in enumerate(zip(joins, joins[1:] + [len(frames)])):
        shifted[start:end] = np.roll(frames[start:end], (n % 2) + 1, axis=2)  # content 1-2 px off per pass
        if n % 2 == 0:
            blurred[start:end] = blur(frames[start:end])
    for jumpy in (shifted, blurred):
        seams = window_seams(jumpy, joins)
        assert seams["seam_ratio"] > 2 * clean["seam_ratio"], (seams, clean)
        elsewhere = window_seams(jumpy, [j + 12 for j in joins])  # frames inside the passes
        assert elsewhere["seam_ratio"] < 1.5, elsewhere
    assert window_seams(frames, [0, 481, 900]) is None


def test_stability_counts_an_object_that_vanishes_in_the_open():
    obj = ObjectSpec(0, "red", "ball", "large", "heavy", False, "rests", 6.0, 1.1, 0.0, 0.0)
    frames = 33
    scene = SceneSpec(seed=0, fps=FPS, frames=frames, sky="day", ground="grass", occluder=None, occluder_x=3.0,
                      objects=[obj], shots=[ShotSpec(0, frames, "wide", 0)])
    traj = simulate(scene)
    whole, _ = render(scene, traj, 64, 64)
    traj.present[20:, 0] = False
    gone, _ = render(scene, traj, 64, 64)
    assert stability(whole, FPS)["permanence"] == 1.0
    out = stability(gone, FPS)
    assert out["window_frames"] == 16  # a short clip compares its halves
    assert out["permanence"] < 1.0 and out["vanish_events"] >= 1, out


@pytest.mark.parametrize("call, words", [
    (lambda: drift(np.zeros((4, 8, 8, 3), np.float32), FPS), "uint8"),
    (lambda: drift(np.zeros((4, 8, 8), np.uint8), FPS), "shape"),
    (lambda: drift(np.zeros((4, 8, 8, 3), np.uint8), 0.0), "fps"),
    (lambda: drift(np.zeros((4, 8, 8, 3), np.uint8), FPS, window_seconds=-1), "window_seconds"),
    (lambda: cross_shot_consistency(np.zeros((9, 8, 8, 3), np.uint8), [0, 12]), "shot starts"),
    (lambda: cross_shot_consistency(np.zeros((9, 8, 8, 3), np.uint8), [1, 5]), "frame 0"),
    (lambda: shot_adherence(np.zeros((9, 8, 8, 3), np.uint8), [0, 5], ["a red ball"]), "1 shot prompts for 2"),
])
def test_bad_input_is_a_one_line_error(call, words):
    with pytest.raises(KinemaError, match=words) as info:
        call()
    assert "\n" not in str(info.value)


# -- cross-shot consistency --------------------------------------------------------------------


def subjects_of(scene: SceneSpec) -> list[tuple[str, str]]:
    return [(scene.objects[s.subject].color, scene.objects[s.subject].shape) for s in scene.shots]


def test_multi_shot_world_clips_keep_their_cuts():
    cuts = kept = 0
    for seed in (3, 4, 6):
        scene = sample_scene(seed, SceneOptions(seconds=6, shots=(3, 3)))
        clip = make_clip(scene, 64, 64)
        starts = [s.start for s in scene.shots]
        assert {s.framing for s in scene.shots} - {"wide"}, "every clip mixes framings"
        out = cross_shot_consistency(clip.frames, starts, FPS, subjects=subjects_of(scene))
        assert [c["frame"] for c in out["cuts"]] == starts[1:]
        assert out["scene_kept"] == 1.0, out
        cuts += len(out["cuts"])
        kept += sum(c["kept"] for c in out["cuts"])
    assert cuts == 6 and kept / cuts >= CONSISTENCY_TARGET


def one_object_scene(color: str, shape: str, sky: str = "dusk", ground: str = "sand") -> SceneSpec:
    """A large ball or box dropped on an empty stage, filmed wide, in close-up, then wide again."""
    obj = ObjectSpec(0, color, shape, "large", "bouncy", False, "dropped", 6.0, 6.0, 0.0, 0.0)
    shots = [ShotSpec(0, 17, "wide", 0), ShotSpec(17, 33, "closeup", 0), ShotSpec(33, 49, "wide", 0)]
    return SceneSpec(seed=0, fps=FPS, frames=49, sky=sky, ground=ground, occluder=None, occluder_x=3.0,
                     objects=[obj], shots=shots)


def frames_of(scene: SceneSpec) -> np.ndarray:
    return render(scene, simulate(scene), 64, 64)[0]


STARTS = [0, 17, 33]


def test_a_subject_that_changes_at_a_cut_fails_that_cut():
    right = frames_of(one_object_scene("red", "ball"))
    shots = analyze_shots(right, STARTS, FPS)
    kept = cross_shot_consistency(right, STARTS, FPS, subjects=[("red", "ball")] * 3, analyses=shots)
    assert kept["consistency"] == 1.0 and all(c["reason"] == "" for c in kept["cuts"]), kept
    # Without subjects, the object that covers the most pixels is the subject.
    assert cross_shot_consistency(right, STARTS, FPS, analyses=shots)["consistency"] == 1.0
    for color, shape in (("red", "box"), ("blue", "ball")):
        spliced = right.copy()
        spliced[17:33] = frames_of(one_object_scene(color, shape))[17:33]  # the close-up shows another object
        shots = analyze_shots(spliced, STARTS, FPS)
        given = cross_shot_consistency(spliced, STARTS, FPS, subjects=[("red", "ball")] * 3, analyses=shots)
        first, second = given["cuts"]
        assert first["scene_kept"] and not first["subject_kept"]
        assert first["reason"] == "subject red ball not in view after the cut"
        assert second["kept"]  # back to the wide shot of the red ball, seen before
        largest = cross_shot_consistency(spliced, STARTS, FPS, analyses=shots)["cuts"][0]
        assert not largest["kept"] and largest["reason"] == f"subject {color} {shape} not in view before the cut"


def test_a_splice_of_two_scenes_fails_that_cut():
    dusk_sand = frames_of(one_object_scene("red", "ball"))
    for sky, ground, reason in (("night", "sand", "sky dusk -> night"), ("dusk", "snow", "ground sand -> snow")):
        spliced = dusk_sand.copy()
        spliced[33:] = frames_of(one_object_scene("red", "ball", sky, ground))[33:]
        out = cross_shot_consistency(spliced, STARTS, FPS, subjects=[("red", "ball")] * 3)
        assert [c["kept"] for c in out["cuts"]] == [True, False], out
        assert out["cuts"][1]["reason"] == reason and out["cuts"][1]["subject_kept"]
        assert out["consistency"] == 0.5 and out["scene_kept"] == 0.5 and out["subject_kept"] == 1.0


def test_world_shot_starts_from_random_scenes_can_fail_too():
    # Two random multi-shot world clips spliced at a shared cut: a different scene after the cut.
    a = sample_scene(3, SceneOptions(seconds=6, shots=(3, 3)))
    b = sample_scene(5, SceneOptions(seconds=6, shots=(3, 3)))
    assert (a.sky, a.ground) != (b.sky, b.ground)
    frames = make_clip(a, 64, 64).frames.copy()
    cut = a.shots[-1].start
    frames[cut:] = make_clip(b, 64, 64).frames[cut:]
    out = cross_shot_consistency(frames, [s.start for s in a.shots], FPS)
    assert [c["scene_kept"] for c in out["cuts"]] == [True, False], out


# -- adherence per shot ------------------------------------------------------------------------


SCENE = "At dusk on a beach: a big bouncy red ball."
SHOTS = ["the red ball is dropped from high up", "the red ball bounces on the sand", "the red ball rests"]


def test_each_shot_is_scored_against_its_own_prompt():
    frames = frames_of(one_object_scene("red", "ball"))
    framings = ["wide", "closeup", "wide"]
    out = shot_adherence(frames, STARTS, SHOTS, FPS, SCENE, framings)
    assert [(s["start"], s["end"]) for s in out["shots"]] == [(0, 17), (17, 33), (33, 49)]
    assert out["shots"][1]["prompt"] == f"{SCENE} A close-up. {SHOTS[1]}"
    assert all(s["scores"]["attributes"] == 1.0 for s in out["shots"]), out
    assert out["attributes"] == 1.0
    wrong = shot_adherence(frames, STARTS, [s.replace("red ball", "blue box") for s in SHOTS], FPS,
                           "At night on snow: a small blue box.", framings)
    assert wrong["attributes"] < 0.3, wrong["attributes"]


def test_a_close_up_asks_only_for_its_subject():
    scene = "On grass in daylight: a large bouncy red ball and a small heavy green box."
    assert shot_subjects(["the green box sits still", "a close-up"], scene) == [("green", "box"), ("red", "ball")]
    frames = frames_of(one_object_scene("red", "ball", "day", "grass"))
    out = shot_adherence(frames, STARTS, ["the red ball falls"] * 3, FPS, scene, ["wide", "closeup", "wide"])
    wide, close, _ = (s["scores"]["attributes"] for s in out["shots"])
    assert close == 1.0 and wide < 1.0  # the green box is missing from the wide shots only


# -- the shipped suites ------------------------------------------------------------------------


# Words of prompts that no training caption uses (kinema.world.caption.EXTRA_WORDS and other phrasings).
NON_CAPTION_WORDS = ("twilight", "nighttime", "daytime", "pavement", "stony", "afternoon", "launched", "hurled toward",
                     "minute", "tight on", "comes falling", "is rolling")


def coverage(texts: list[str]) -> dict[str, set]:
    from kinema.eval.metrics import expectation_from_prompt

    seen: dict[str, set] = {k: set() for k in ("color", "shape", "size", "material", "action", "sky", "ground",
                                               "occluder", "paint")}
    for text in texts:
        expected = expectation_from_prompt(text, 33, FPS)
        assert expected["objects"] and expected["sky"] and expected["ground"], text
        for key in ("sky", "ground", "occluder"):
            seen[key].add(expected[key])
        for obj in expected["objects"]:
            assert obj["color"] and obj["shape"] and obj["size"] and obj["material"], text
            for key in ("color", "shape", "size", "material", "action", "paint"):
                seen[key].add(obj[key])
    return seen


def assert_covers_the_vocabulary(seen: dict[str, set]) -> None:
    from kinema.world.caption import VOCAB

    for key in ("color", "shape", "size", "material", "action", "sky", "ground", "occluder"):
        missing = set(VOCAB[key]) - seen[key]
        assert not missing, (key, missing)
    assert None in seen["occluder"] and True in seen["paint"]


def test_the_long_suite_covers_the_vocabulary_in_60_second_prompts():
    from kinema.inference.suite import load_suite

    suite = load_suite(ROOT / "configs" / "eval" / "long.yaml")
    assert len(suite.items) >= 50
    assert all(item.settings["seconds"] == 60 and item.storyboard is None for item in suite.items)
    texts = [item.prompt for item in suite.items]
    assert len(set(texts)) == len(texts)
    assert_covers_the_vocabulary(coverage(texts))
    # One static wide shot each: no prompt names another framing.
    from kinema.world.caption import parse_prompt

    assert all(set(parse_prompt(t)["framings"]) <= {"wide"} for t in texts)
    assert sum(any(w in t.lower() for w in NON_CAPTION_WORDS) for t in texts) >= len(texts) // 2


def test_the_storyboard_suite_covers_the_vocabulary_in_wide_and_close_shots():
    from kinema.eval.long import shot_text
    from kinema.inference.storyboard import storyboard_from_dict
    from kinema.inference.suite import load_suite

    suite = load_suite(ROOT / "configs" / "eval" / "storyboard.yaml")
    assert len(suite.items) >= 50
    texts = []
    for item in suite.items:
        board = storyboard_from_dict(item.storyboard)
        framings = [s.framing for s in board.shots]
        assert 3 <= len(board.shots) <= 5 and "wide" in framings and "closeup" in framings, item.storyboard
        assert item.settings["seconds"] == board.seconds and item.prompt == board.scene
        board.frame_plan(FPS)  # every shot lasts a latent frame or more
        # Every shot's subject is in view in an earlier shot (a wide one shows every object).
        subjects = shot_subjects([s.prompt for s in board.shots], board.scene)
        for k in range(1, len(board.shots)):
            assert "wide" in framings[:k] or subjects[k] in subjects[:k], item.storyboard
        texts += [shot_text(board.scene, s.framing, s.prompt) for s in board.shots]
    assert_covers_the_vocabulary(coverage(texts))
    assert sum(any(w in t.lower() for w in NON_CAPTION_WORDS) for t in texts) >= len(texts) // 4


def test_framing_words_match_the_storyboard_captions():
    from kinema.frames import FRAMING_TEXT
    from kinema.frames import FRAMING_TEXT as STORYBOARD_FRAMING_TEXT
    from kinema.inference.storyboard import storyboard_from_dict

    assert FRAMING_TEXT == STORYBOARD_FRAMING_TEXT
    board = storyboard_from_dict({"scene": SCENE, "shots": [{"seconds": 2, "framing": "close-up", "prompt": SHOTS[0]}]})
    from kinema.eval.long import shot_text

    assert board.shot_texts() == [shot_text(board.scene, "closeup", SHOTS[0])]


@pytest.mark.parametrize("entry, words", [
    ("{storyboard: {shots: []}}", "prompt 0: storyboard: 'shots' must be a non-empty list"),
    ("{storyboard: {shots: [{seconds: 2, framing: zoom, prompt: a ball}]}}", "framing 'zoom'"),
    ("{storyboard: {shots: [{seconds: 2, prompt: a ball}]}, seconds: 60}", "seconds 60 is not allowed"),
    ("{storyboard: {shots: [{seconds: 2, prompt: a ball}]}, prompt: a ball}", "not both"),
    ("{storyboard: {shots: [{seconds: 2, prompt: a ball}]}, speed: 2}", "unknown key(s) speed"),
    ("{storyboard: [a ball]}", "must be a mapping"),
])
def test_bad_storyboard_entries_are_one_line_errors(tmp_path, entry, words):
    from kinema.inference.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(f"prompts:\n  - {entry}\n")
    with pytest.raises(KinemaError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        load_suite(path)
    assert "\n" not in str(info.value)


# -- a suite end to end ------------------------------------------------------------------------


SUITE = f"""name: mixed
defaults: {{size: 64x64, steps: 2}}
prompts:
  - storyboard:
      scene: "{SCENE}"
      shots:
        - {{seconds: 2, framing: wide, prompt: "{SHOTS[0]}"}}
        - {{seconds: 2, framing: close-up, prompt: "{SHOTS[1]}"}}
        - {{seconds: 2, framing: wide, prompt: "{SHOTS[2]}"}}
  - {{prompt: "{SCENE[:-1]}, dropped from high up.", seconds: 20}}
  - {{prompt: "{SCENE[:-1]}, dropped from high up.", seconds: 4}}
"""


class WorldPipe:
    """Stands in for a model: 'generates' the world's truth for the suite above."""

    name = "world"
    weights_sha256 = "0" * 64

    class defaults:
        fps, steps, guidance_scale, storyboard_guidance, sampler = FPS, 2, 1.0, None, "euler"
        window, context, memory, context_noise, anchor = 13, 1, 2, 0.0, 0.0
        expand = True

    class vae:
        temporal_compression = 4


def world_run(pipe, request, progress=None):
    """Writes the clip a perfect model would make, with the metadata ``kinema.inference.generate.run`` writes."""
    from kinema.inference.request import validate
    from kinema.inference.settings import expands, long_video_settings
    from kinema.inference.storyboard import storyboard_from_dict
    from kinema.media import write_video

    _, frames, width, height, fps = validate(request, pipe.defaults)
    scene = one_object_scene("red", "ball")
    starts = [0]
    if request.storyboard is not None:
        board = storyboard_from_dict(request.storyboard)
        frames, starts = board.frame_plan(fps)
        ends = starts[1:] + [frames]
        scene.shots = [ShotSpec(a, b, s.framing, 0) for a, b, s in zip(starts, ends, board.shots)]
    else:
        scene.shots = [ShotSpec(0, frames, "wide", 0)]
    scene.frames = frames
    video, _ = render(scene, simulate(scene), width, height)
    metadata = {"prompt": request.prompt, "seed": request.seed, "size": f"{width}x{height}", "fps": fps,
                "steps": request.steps or pipe.defaults.steps, "guidance": pipe.defaults.guidance_scale,
                "model": pipe.name, "model_sha256": pipe.weights_sha256, "frames": frames,
                "storyboard": None if request.storyboard is None else board.to_dict(), "shot_starts": starts,
                "expand": expands(pipe, request)}
    if request.storyboard is not None or 1 + (frames - 1) // 4 > pipe.defaults.window:
        metadata |= long_video_settings(pipe, request)
    return write_video(Path(request.output), video, fps, metadata=metadata)


def test_a_suite_of_a_long_prompt_and_a_storyboard_end_to_end(tmp_path, monkeypatch):
    import kinema.inference.generate
    from kinema.inference.suite import load_suite, run_suite

    monkeypatch.setattr(kinema.inference.generate, "run", world_run)
    path = tmp_path / "mixed.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    report = run_suite(suite, WorldPipe(), tmp_path / "eval", progress=False)
    board_clip, long_clip, short_clip = report["clips"]
    # A short clip is scored as before: no stability, no shots.
    assert set(short_clip) == {"file", "prompt", "seed", "size", "frames", "generate_seconds", "scores"}
    assert "stability_drift" not in short_clip["scores"] and short_clip["scores"]["attributes"] == 1.0
    assert long_clip["frames"] == 161 and long_clip["stability"]["within_target"], long_clip["stability"]
    assert long_clip["scores"]["stability_drift"] == long_clip["stability"]["drift_max"]
    assert long_clip["scores"]["permanence"] == 1.0 and long_clip["scores"]["attributes"] == 1.0
    seams = long_clip["stability"]["seams"]  # from the window settings in the clip's metadata
    assert seams["joins"] == 3 and long_clip["scores"]["window_seam_ratio"] == seams["seam_ratio"] < 1.5, seams
    assert report["targets"]["window_seam_ratio"] == seams["seam_ratio"]
    assert board_clip["shot_starts"] == [0, 17, 33] and board_clip["frames"] == 49
    assert board_clip["cross_shot"]["consistency"] == 1.0 and board_clip["scores"]["cross_shot_consistency"] == 1.0
    assert [s["scores"]["attributes"] for s in board_clip["shots"]] == [1.0, 1.0, 1.0]
    assert "stability" not in board_clip and "cross_shot" not in long_clip
    targets = report["targets"]
    assert targets["cross_shot_consistency"]["value"] == 1.0 and targets["cross_shot_consistency"]["met"]
    assert targets["drift"]["clips"] == 1 and targets["drift"]["met"]
    text = format_targets(targets)
    assert f"target >= {CONSISTENCY_TARGET:.2f}: met" in text and f"target <= {DRIFT_TARGET:.2f}: met" in text
    assert f"window seams: the change across a join is {seams['seam_ratio']:.2f}x" in text
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["targets"] == json.loads(json.dumps(targets))
    assert saved["clips"][0]["cross_shot"]["cuts"][0]["frame"] == 17
    # The cuts pooled by the framing they go to: one into the close-up, one back to the wide view, both kept.
    assert [c["framing"] for c in board_clip["cross_shot"]["cuts"]] == ["closeup", "wide"]
    by_framing = targets["cross_shot_consistency"]["by_framing"]
    assert by_framing == {name: {"cuts": 1, "kept": 1.0, "scene_kept": 1.0, "subject_kept": 1.0}
                          for name in ("closeup", "wide")}, by_framing
    assert "by the framing cut to: closeup 1.000 of 1 (scene 1.000, subject 1.000); wide 1.000 of 1" in text
    # Run again: the storyboard's video is reused (its metadata names the same storyboard), same scores.
    again = run_suite(suite, WorldPipe(), tmp_path / "eval", limit=1, progress=False)
    assert again["clips"][0]["generate_seconds"] is None and again["clips"][0]["scores"] == board_clip["scores"]
    # Other window settings make the window-by-window clips again; the short clip is reused.
    other = WorldPipe()
    other.defaults = type("defaults", (WorldPipe.defaults,), {"context_noise": 0.4})
    remade = run_suite(suite, other, tmp_path / "eval", progress=False)
    assert [c["generate_seconds"] is None for c in remade["clips"]] == [False, False, True]


def test_a_storyboard_suite_runs_on_a_tiny_random_model(tmp_path, word_encoder):
    """The real generation path: the video's recorded shot starts agree with the storyboard's plan."""
    import torch

    from kinema.inference.pipeline import KinemaPipeline
    from kinema.inference.suite import load_suite, run_suite
    from kinema.models.dit import VideoDiT
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE.from_name("tiny", base_dim=8, z_dim=4)
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=8,
                   ffn_dim=32, text_dim=16)
    pipe = KinemaPipeline(dit.eval(), vae.eval(), text_encoder=word_encoder())
    path = tmp_path / "suite.yaml"
    path.write_text("defaults: {size: 32x32, steps: 1}\nprompts:\n  - storyboard:\n"
                    f"      scene: \"{SCENE}\"\n      shots:\n"
                    "        - {seconds: 1, framing: wide, prompt: the red ball falls}\n"
                    "        - {seconds: 1, framing: close-up, prompt: the red ball bounces}\n")
    report = run_suite(load_suite(path), pipe, tmp_path / "eval", progress=False)
    clip = report["clips"][0]
    assert clip["shot_starts"] == [0, 9] and clip["frames"] == 17
    assert len(clip["cross_shot"]["cuts"]) == 1 and len(clip["shots"]) == 2
    assert set(clip["scores"]) >= {"cross_shot_consistency", "scene_kept", "subject_kept", "attributes"}
