"""The measures behind the physics targets: free flight fits a parabola with the world's gravity,
heavy objects rebound lower than bouncy ones, and paint marks stay. World clips pass them, and
clips that break the rule they check fail them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kinema.eval import analyze_video, expectation_from_scene, score_clip
from kinema.eval.analyzer import (
    FrameAnalysis,
    MarkDetection,
    ObjectDetection,
    ShotSummary,
    Track,
    VideoAnalysis,
    analyze_frame,
)
from kinema.eval.clips import expectation_from_record
from kinema.eval.metrics import (
    REBOUND_SPLIT,
    bounce_in_rows,
    expected_bouncers,
    marks_kept_score,
    permanence_events,
    real_track,
    rebounds,
    static_frames,
)
from kinema.media import read_video, write_video
from kinema.world import SceneOptions, render, sample_scene, simulate
from kinema.world.scene import LATENT_STRIDE, ObjectSpec, SceneSpec, ShotSpec


def through_h264(frames, tmp_path, name="clip.mp4"):
    return read_video(write_video(tmp_path / name, frames, 8.0, sidecar=False))[0]


def dropped(material="bouncy", paint=False, gravity=9.81, seconds=4, y=7.0, ground="sand"):
    obj = ObjectSpec(0, "red", "ball", "large", material, paint, "dropped", 6.0, y, 0.0, 0.0)
    frames = 1 + LATENT_STRIDE * int(seconds * 2)
    return SceneSpec(seed=0, fps=8.0, frames=frames, sky="day", ground=ground, occluder=None, occluder_x=3.0,
                     objects=[obj], shots=[ShotSpec(0, frames, "wide", 0)], gravity=gravity)


def analysed(scene, tmp_path):
    traj = simulate(scene)
    frames, _ = render(scene, traj, 64, 64)
    frames = through_h264(frames, tmp_path)
    return frames, traj, analyze_video(frames, 8.0), expectation_from_scene(scene, traj)


def test_world_clips_pass_the_physics_measures(tmp_path):
    pooled: dict[str, list[float]] = {"parabola_fit": [], "rebound": [], "marks_kept": [], "marks_made": []}
    for seed in range(40, 52):
        scene = sample_scene(seed, SceneOptions(seconds=6, shots=1, occluder_probability=0.5, paint_probability=0.6))
        traj = simulate(scene)
        frames, _ = render(scene, traj, 64, 64)
        scores = score_clip(analyze_video(through_h264(frames, tmp_path), 8.0), expectation_from_scene(scene, traj))
        for key, values in pooled.items():
            if scores[key] is not None:
                values.append(scores[key])
    for key, values in pooled.items():
        assert len(values) >= 3, (key, values)  # the measure applies to enough clips to mean something
        assert np.mean(values) >= 0.9, (key, values)


@pytest.mark.parametrize("material", ["bouncy", "heavy"])
def test_rebound_tells_heavy_from_bouncy(tmp_path, material):
    _, _, analysis, expected = analysed(dropped(material), tmp_path)
    track = next(t for t in analysis.tracks if t.key == ("red", "ball"))
    ratios = [r["ratio"] for r in rebounds(analysis, track, static_frames(analysis, expected))]
    assert ratios, "the first rebound is readable"
    assert (ratios[0] < REBOUND_SPLIT) == (material == "heavy"), ratios
    assert score_clip(analysis, expected)["rebound"] == 1.0
    expected["objects"][0]["material"] = "heavy" if material == "bouncy" else "bouncy"
    assert score_clip(analysis, expected)["rebound"] == 0.0


def test_marks_kept_fails_when_the_marks_fade(tmp_path):
    scene = dropped("bouncy", paint=True, ground="grass")
    frames, traj, analysis, expected = analysed(scene, tmp_path)
    assert traj.marks
    kept = score_clip(analysis, expected)
    assert kept["marks_kept"] == 1.0 and kept["marks_made"] == 1.0, kept
    # The ground below the surface as it was before any mark, from three frames after the first one.
    first = min(m.frame for m in traj.marks)
    top = int(np.ceil(analysis.frames[0].ground_row + 0.5))
    faded = frames.copy()
    faded[first + 3:, top:] = frames[0, top:]
    scores = score_clip(analyze_video(through_h264(faded, tmp_path, "faded.mp4"), 8.0), expected)
    assert scores["marks_made"] == 1.0 and scores["marks_kept"] == 0.0, scores


def test_parabola_fit_needs_the_worlds_gravity(tmp_path):
    _, _, analysis, expected = analysed(dropped(gravity=9.81, seconds=2, y=9.0), tmp_path)
    assert score_clip(analysis, expected)["parabola_fit"] == 1.0
    # A world with half the gravity: the flight is still a parabola, but the wrong one.
    _, _, slow, _ = analysed(dropped(gravity=4.9, seconds=2, y=9.0), tmp_path)
    scores = score_clip(slow, expected)
    assert scores["parabola_residual_px"] <= 1.0 and scores["parabola_fit"] == 0.0, scores


# ----------------------------------------------------------------------------- permanence, read from tracks


def tracked(paths: dict[int, dict[int, tuple[float, float]]], frames: int = 20, size: int = 64, cuts=()):
    """A VideoAnalysis of red balls 4 px wide on an empty stage: ``paths[track][frame] = (col, row)``."""
    analyses = [FrameAnalysis(f, "day", "sand", 52.0, None, None, 4.0, True) for f in range(frames)]
    tracks = []
    for track_id, path in paths.items():
        track = Track(track_id, "red", "ball", "medium")
        for f, (col, row) in sorted(path.items()):
            analyses[f].objects.append(ObjectDetection("red", "ball", "medium", 2.0, col, row,
                                                       (col - 2, row - 2, col + 2, row + 2), 12.0, 0.78, False, False,
                                                       False, track=track_id))
            track.frames.append(f)
            track.col.append(col)
            track.row.append(row)
        tracks.append(track)
    bounds = [0, *cuts, frames]
    shots = [ShotSummary(n, a, b, "day", "sand", None, 4.0, True, True)
             for n, (a, b) in enumerate(itertools.pairwise(bounds))]
    return VideoAnalysis(8.0, size, size, analyses, list(cuts), shots, tracks)


def events(paths, **kwargs) -> tuple[int, int]:
    vanish, spawn, _ = permanence_events(tracked(paths, **kwargs), {})
    return vanish, spawn


def test_permanence_counts_gaps_in_the_open_and_forgives_a_blob_shared_with_a_touching_object():
    still = {f: (20.0, 40.0) for f in range(20)}
    assert events({0: still}) == (0, 0)
    gap = {f: p for f, p in still.items() if not 8 <= f < 12}  # four frames missing in the middle of the stage
    assert events({0: gap}) == (1, 1)
    beside = {f: (24.5, 40.0) for f in range(20)}  # another object right next to it the whole time
    assert events({0: gap, 1: beside}) == (0, 0)
    away = {f: (24.5 if f < 10 else 40.0, 40.0) for f in range(20)}  # beside it when it went, not when it came back
    assert events({0: gap, 1: away}) == (1, 1)
    far = {f: (40.0, 40.0) for f in range(20)}
    assert events({0: gap, 1: far}) == (1, 1)
    # A track that starts or ends beside another object is still counted: a blob splitting off or melting in.
    assert events({0: {f: p for f, p in still.items() if f < 12}, 1: beside}) == (1, 0)


def test_permanence_allows_one_missed_frame_at_a_shots_ends_as_anywhere_else():
    still = {f: (20.0, 40.0) for f in range(20)}
    assert events({0: {f: p for f, p in still.items() if f != 9}}, cuts=(10,)) == (0, 0)
    assert events({0: {f: p for f, p in still.items() if f not in (8, 9)}}, cuts=(10,)) == (1, 0)
    assert events({0: {f: p for f, p in still.items() if f != 10}}, cuts=(10,)) == (0, 0)
    assert events({0: {f: p for f, p in still.items() if f not in (10, 11)}}, cuts=(10,)) == (0, 1)


def test_lone_detections_at_the_clips_start_are_noise_unless_unbroken():
    analysis = tracked({0: {0: (20.0, 40.0), 3: (30.0, 40.0)}, 1: {0: (40.0, 20.0)},
                        2: {18: (9.0, 9.0), 19: (9.0, 9.0)}, 3: {5: (9.0, 9.0), 6: (9.0, 9.0)},
                        4: {5: (9.0, 9.0), 6: (9.0, 9.0), 7: (9.0, 9.0)}})
    assert [real_track(analysis, t) for t in analysis.tracks] == [False, True, True, False, True]
    assert events({0: {0: (20.0, 40.0), 3: (30.0, 40.0)}}) == (0, 0)
    assert events({0: {0: (20.0, 40.0), 1: (20.0, 40.0)}}) == (1, 0)  # an object seen twice, then gone


# ----------------------------------------------------------------------------- marks, read from detections


def marked(marks: dict[int, list[tuple[str, float, float]]], objects: dict[int, list[tuple]] | None = None,
           frames: int = 20):
    """A still wide shot on sand, ground at row 40, 4 px a metre: ``marks[frame]`` = [(colour, x0, x1)],
    ``objects[frame]`` = [(colour, bbox)]."""
    analysis = tracked({}, frames=frames)
    for f, info in enumerate(analysis.frames):
        info.ground_row = 40.0
        info.marks = [MarkDetection(c, x0, x1, 0.5 * (x0 + x1), 42.0, x1 - x0) for c, x0, x1 in marks.get(f, [])]
        info.objects = [ObjectDetection(c, "box", "medium", 3.0, 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]), b, 36.0,
                                        1.0, False, False, False) for c, b in (objects or {}).get(f, [])]
    return analysis


def kept(analysis, color="red") -> float | None:
    return marks_kept_score(analysis, {"objects": [{"color": color, "paint": True}]})


def test_a_mark_hidden_by_other_paint_or_by_an_object_on_it_is_not_a_mark_that_faded():
    # Made at frame 3, out of the reads from frame 8 to 15, seen again from 16 on.
    red = {f: [("red", 10.0, 16.0)] for f in [*range(3, 8), *range(16, 20)]}
    assert kept(marked(red)) == 0.0
    blue_over = {f: [("blue", 8.0, 18.0)] for f in range(8, 16)}  # another colour's paint over it meanwhile
    assert kept(marked(red | blue_over)) == 1.0
    blue_beside = {f: [("blue", 20.0, 30.0)] for f in range(8, 16)}
    assert kept(marked(red | blue_beside)) == 0.0
    resting = {f: [("red", (9.0, 32.0, 17.0, 40.0))] for f in range(8, 16)}  # an object standing on it meanwhile
    assert kept(marked(red, resting)) == 1.0
    flying = {f: [("red", (9.0, 5.0, 17.0, 13.0))] for f in range(8, 16)}  # one high above it casts no shade
    assert kept(marked(red, flying)) == 0.0


def test_marks_side_by_side_are_each_seen_in_paint_that_spans_them():
    marks = {f: [("red", 10.0, 14.0), ("red", 20.0, 24.0)] for f in range(2, 6)}
    marks |= {f: [("red", 10.0, 24.0)] for f in range(6, 20)}  # from frame 6 the two read as one stretch
    assert kept(marked(marks)) == 1.0


def test_marks_are_read_against_bare_ground_when_paint_covers_much_of_the_band():
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:] = (125, 185, 232)  # day sky
    frame[44:] = (214, 190, 142)  # sand
    for x0 in range(2, 62, 6):  # a trail of green marks over most of the band
        frame[45:47, x0:x0 + 5] = (40, 170, 60)
    marks = analyze_frame(frame).marks
    assert marks and {m.color for m in marks} == {"green"}, marks
    assert sum(m.x1 - m.x0 for m in marks) >= 40, marks


def test_a_mark_out_of_sight_at_the_end_is_not_judged():
    red = {f: [("red", 10.0, 16.0)] for f in range(3, 12)}
    resting = {f: [("red", (9.0, 32.0, 17.0, 40.0))] for f in range(12, 20)}  # covered to the end
    assert kept(marked(red, resting)) is None
    resting[18] = resting[19] = []  # in sight again in the last two frames, and gone
    assert kept(marked(red, resting)) == 0.0


# ----------------------------------------------------------------------------- bounces the ground truth shows


def test_a_bounce_is_expected_only_where_the_true_rows_show_one_the_analyzer_can_see():
    falls_and_rises = np.array([30.0, 36.0, 42.0, 45.0, 42.5, 40.5, 39.5])  # lowest at frame 3
    swallowed = np.array([30.0, 36.0, 42.0, 45.0, 45.1, 45.0, 44.9])  # lands and stays: something on top
    plateau = np.array([30.0, 36.0, 42.0, 45.0, 44.9, 43.0, 41.0])  # two samples at the bottom
    assert bounce_in_rows(falls_and_rises, 3) and bounce_in_rows(falls_and_rises, 2)
    assert not bounce_in_rows(swallowed, 3) and not bounce_in_rows(plateau, 3)
    assert not bounce_in_rows(np.full(7, np.nan), 3)

    objects = [{"color": "red", "shape": "ball", "material": "bouncy"},
               {"color": "blue", "shape": "box", "material": "heavy"}]
    record = {"file": "c.mp4", "scene": {"sky": "day", "ground": "sand", "objects": objects},
        "events": [{"kind": "bounce", "frame": 3, "objects": [0], "speed": 8.0},
                   {"kind": "bounce", "frame": 3, "objects": [1], "speed": 8.0},
                   {"kind": "collision", "frame": 3, "objects": [0, 1], "speed": 8.0}]}
    truth = {"row": np.stack([falls_and_rises, swallowed], axis=1), "present": np.ones((7, 2), bool),
             "in_frame": np.ones((7, 2))}
    marked_events = expectation_from_record(record, truth)["events"]
    assert [e.get("visible") for e in marked_events] == [True, False, None]
    assert "visible" not in record["events"][0]  # the manifest's own events are left as they were
    assert all("visible" not in e for e in expectation_from_record(record)["events"])

    # Both objects in clear view throughout: without the truth both must be seen bouncing, with it only the ball.
    analysis = tracked({0: {f: (20.0, r) for f, r in enumerate(falls_and_rises)},
                        1: {f: (40.0, r) for f, r in enumerate(swallowed)}}, frames=7)
    box = analysis.tracks[1]
    box.color, box.shape = "blue", "box"
    for track in analysis.tracks:
        track.clean = [True] * len(track.frames)
    still = np.ones(7, bool)
    assert expected_bouncers(analysis, expectation_from_record(record), still) == {0, 1}
    assert expected_bouncers(analysis, expectation_from_record(record, truth), still) == {0}
