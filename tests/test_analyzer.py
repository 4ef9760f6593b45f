"""The analyzer recovers the simulator's ground truth from H.264 round trips, and survives any input."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from kinema.eval.analyzer import VideoAnalysis, analyze_file, analyze_video, label_components
from kinema.media import read_video, write_video
from kinema.world.physics import Trajectory, simulate
from kinema.world.render import render
from kinema.world.scene import OCCLUDER_SIZE, SceneOptions, SceneSpec, sample_scene

SINGLE = SceneOptions(seconds=4, shots=1, objects=(2, 3), occluder_probability=1.0, paint_probability=0.7)
# Consecutive shots always change the zoom here: a cut between medium and pan can show the very
# same view on both sides, and no analyzer can see it (see the report on the world).
MULTI = SceneOptions(seconds=5, shots=(2, 3), framings=("wide", "medium", "closeup"), paint_probability=0.5)
MULTI_PAN = SceneOptions(seconds=5, shots=(2, 3), framings=("wide", "pan", "closeup"), paint_probability=0.5)
CLIPS = [  # seed, options, width, height
    (1, SINGLE, 64, 64), (2, SINGLE, 96, 64), (3, SINGLE, 64, 96),
    (4, MULTI, 64, 64), (5, MULTI, 96, 64), (6, MULTI, 64, 96),
    (7, MULTI_PAN, 64, 64), (8, MULTI_PAN, 96, 64),
]


@dataclass
class Clip:
    scene: SceneSpec
    traj: Trajectory
    gt: dict
    frames: np.ndarray  # decoded from the MP4
    analysis: VideoAnalysis

    def framing(self, frame: int) -> str:
        return next(s.framing for s in self.scene.shots if s.start <= frame < s.end)


def round_trip(frames: np.ndarray, fps: float, path) -> np.ndarray:
    write_video(path, frames, fps, crf=12, sidecar=False)
    decoded, _ = read_video(path)
    return decoded


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Clip]:
    folder = tmp_path_factory.mktemp("analyzer")
    out = []
    for seed, options, width, height in CLIPS:
        scene = sample_scene(seed, options)
        traj = simulate(scene)
        frames, gt = render(scene, traj, width, height)
        decoded = round_trip(frames, scene.fps, folder / f"clip_{seed}.mp4")
        out.append(Clip(scene, traj, gt, decoded, analyze_video(decoded, scene.fps)))
    return out


def clean_objects(clip: Clip):
    """(frame, object index) of objects fully in frame, clear of the occluder, radius >= 2.5 px."""
    gt = clip.gt
    for f in range(clip.scene.frames):
        for i in range(len(clip.scene.objects)):
            if (gt["visible"][f, i] and gt["in_frame"][f, i] > 0.999 and gt["occluded"][f, i] < 1e-3
                    and gt["radius_px"][f, i] >= 2.5):
                yield f, i


def nearest_detection(clip: Clip, f: int, i: int):
    color = clip.scene.objects[i].color
    candidates = [d for d in clip.analysis.frames[f].objects if d.color == color]
    if not candidates:
        return None
    return min(candidates, key=lambda d: np.hypot(d.col - clip.gt["col"][f, i], d.row - clip.gt["row"][f, i]))


def test_clip_set_covers_occluders_several_objects_and_shots(clips):
    assert any(c.scene.occluder for c in clips)
    assert any(len(c.scene.objects) >= 2 for c in clips)
    assert sum(len(c.scene.shots) >= 2 for c in clips) >= 4
    assert {c.frames.shape[1:3] for c in clips} == {(64, 64), (64, 96), (96, 64)}


def test_object_attributes_are_recovered(clips):
    """Colour and shape everywhere, size class in wide shots (the scale is known there)."""
    checks = wrong = 0
    failures = []
    for clip in clips:
        for f, i in clean_objects(clip):
            spec = clip.scene.objects[i]
            det = nearest_detection(clip, f, i)
            wanted = [spec.color, spec.shape] + ([spec.size] if clip.framing(f) == "wide" else [])
            got = [None] * len(wanted) if det is None else [det.color, det.shape, det.size][:len(wanted)]
            checks += len(wanted)
            misses = sum(a != b for a, b in zip(wanted, got))
            if misses:
                wrong += misses
                failures.append((clip.scene.seed, f, wanted, got))
    assert checks > 1000
    assert wrong / checks <= 0.01, failures[:10]


def test_centroids_within_a_pixel_in_wide_shots(clips):
    errors = []
    for clip in clips:
        for f, i in clean_objects(clip):
            det = nearest_detection(clip, f, i)
            if clip.framing(f) == "wide" and det is not None:
                errors.append(np.hypot(det.col - clip.gt["col"][f, i], det.row - clip.gt["row"][f, i]))
    errors = np.array(errors)
    assert len(errors) > 300
    assert errors.max() < 1.0, np.sort(errors)[-5:]
    assert errors.mean() < 0.4


def test_sky_and_ground_every_frame(clips):
    for clip in clips:
        for f, info in enumerate(clip.analysis.frames):
            ground_visible = clip.gt["ground_row"][f] < clip.frames.shape[1] - 1
            assert info.sky == clip.scene.sky, (clip.scene.seed, f)
            assert info.ground == (clip.scene.ground if ground_visible else None), (clip.scene.seed, f)
            if ground_visible:
                assert abs(info.ground_row - clip.gt["ground_row"][f]) < 0.5


def test_cuts_are_found_exactly(clips):
    multi = [c for c in clips if len(c.scene.shots) > 1]
    assert multi
    for clip in multi:
        assert clip.analysis.cuts == [s.start for s in clip.scene.shots[1:]], clip.scene.seed
    for clip in clips:
        if len(clip.scene.shots) == 1:
            assert clip.analysis.cuts == []


def test_wide_shots_know_their_scale_and_hold_still(clips):
    for clip in clips:
        for shot, spec in zip(clip.analysis.shots, clip.scene.shots):
            if spec.framing == "wide":
                true_scale = clip.frames.shape[2] / clip.gt["camera"][spec.start][2]
                assert shot.scale_known and abs(shot.scale / true_scale - 1) < 0.03
                assert shot.static
            if spec.framing == "closeup":
                assert not shot.static or np.ptp(clip.gt["camera"][spec.start:spec.end, :2], axis=0).max() < 0.05


def test_each_object_is_one_track_across_shots(clips):
    for clip in clips:
        keys = [t.key for t in clip.analysis.tracks]
        assert len(keys) == len(set(keys))
        seen = {(o.color, o.shape) for i, o in enumerate(clip.scene.objects) if clip.gt["visible"][:, i].sum() >= 3}
        assert seen <= set(keys), clip.scene.seed


def test_marks_are_found_where_paint_landed(clips):
    checked = 0
    for clip in clips:
        scene, marks = clip.scene, clip.traj.marks
        wide = [f for f in range(scene.frames) if clip.framing(f) == "wide"]
        for mark in marks:
            later = [f for f in wide if f >= mark.frame]
            if not later:
                continue
            f = later[-1]
            # Skip marks behind the occluder or overlapping a mark of another colour.
            hidden = scene.occluder and (
                abs(mark.x - scene.occluder_x) < OCCLUDER_SIZE[scene.occluder][0] / 2 + mark.half_width)
            mixed = any(m.color != mark.color and m.frame <= f and abs(m.x - mark.x) < m.half_width + mark.half_width
                        for m in marks)
            if hidden or mixed:
                continue
            cx, _, view_width, _ = clip.gt["camera"][f]
            scale = clip.frames.shape[2] / view_width
            col = (mark.x - cx) * scale + clip.frames.shape[2] / 2
            # Marks of one colour that overlap are one detection: the mark's centre must lie in one.
            found = [m for m in clip.analysis.frames[f].marks if m.color == mark.color and m.x0 - 2 <= col <= m.x1 + 2]
            assert found, (scene.seed, f, mark)
            checked += 1
    assert checked >= 5


def test_to_dict_is_plain_json(clips):
    data = json.loads(json.dumps(clips[3].analysis.to_dict()))
    assert data["num_frames"] == clips[3].scene.frames
    assert data["cuts"] == clips[3].analysis.cuts
    first = data["frames"][0]
    assert {"sky", "ground", "ground_row", "objects", "marks", "scale", "scale_known"} <= set(first)
    assert {"color", "shape", "size", "col", "row", "bbox", "touches_border", "occluded", "track"} <= set(
        first["objects"][0])


def test_analyze_file_reads_the_mp4(tmp_path):
    scene = sample_scene(11, SINGLE)
    frames, _ = render(scene, simulate(scene), 64, 64)
    path = tmp_path / "clip.mp4"
    write_video(path, frames[:9], scene.fps, sidecar=False)
    analysis = analyze_file(path)
    assert analysis.num_frames == 9 and analysis.fps == pytest.approx(scene.fps)
    assert analysis.frames[0].sky == scene.sky


@pytest.mark.parametrize("frames", [
    np.zeros((5, 32, 32, 3), np.uint8),  # all black
    np.full((1, 16, 24, 3), 255, np.uint8),  # one white frame
    np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3)).astype(np.uint8),  # noise
    np.random.default_rng(1).random((3, 8, 8)),  # float grey in [0, 1]
    np.zeros((0, 16, 16, 3), np.uint8),  # no frames
    np.zeros((2, 1, 1, 3), np.uint8),  # one pixel
])
def test_weird_input_never_crashes(frames):
    analysis = analyze_video(frames, fps=8.0)
    assert analysis.num_frames == len(frames)
    json.dumps(analysis.to_dict())
    if frames.size and frames.max() == 0:
        assert all(not f.objects for f in analysis.frames)


def test_blank_sky_and_one_flat_object():
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:] = (125, 185, 232)  # day sky
    frame[36:] = (214, 190, 142)  # sand
    frame[20:30, 10:20] = (220, 30, 30)  # a red square of side 10 px
    analysis = analyze_video(np.repeat(frame[None], 3, axis=0), fps=8.0)
    info = analysis.frames[0]
    assert (info.sky, info.ground, info.ground_row) == ("day", "sand", 36.0)
    [det] = info.objects
    assert (det.color, det.shape) == ("red", "box")
    assert (det.col, det.row) == pytest.approx((15.0, 25.0), abs=0.05)
    assert len(analysis.tracks) == 1 and analysis.tracks[0].frames == [0, 1, 2]


def test_a_line_one_pixel_thick_is_an_edge_unless_the_frame_edge_cuts_an_object_to_it():
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:] = (125, 185, 232)  # day sky
    frame[36:] = (214, 190, 142)  # sand
    frame[4:30, 30] = (220, 30, 30)  # a red line, one pixel wide and 26 tall
    frame[12, 40:52] = (220, 30, 30)  # and one pixel tall
    frame[20:24, 0] = (30, 30, 220)  # a blue object cut to one column by the left edge
    frame[0, 10:14] = (240, 200, 30)  # a yellow one cut to one row by the top edge
    seen = {(d.color, d.shape) for d in analyze_video(frame[None], fps=8.0).frames[0].objects}
    assert {color for color, _ in seen} == {"blue", "yellow"}, seen
    frame[4:30, 31] = (220, 30, 30)  # two pixels wide: an object
    assert "red" in {d.color for d in analyze_video(frame[None], fps=8.0).frames[0].objects}


def flood_fill_count(mask: np.ndarray) -> int:
    """Reference 4-connected component count."""
    seen = np.zeros_like(mask, bool)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            r, c = stack.pop()
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
    return count


def test_label_components_matches_flood_fill():
    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = tuple(rng.integers(1, 20, 2))
        classes = (rng.random(shape) < rng.random()) * rng.integers(1, 3, shape)
        labels, count = label_components(classes.astype(np.int8))
        assert count == sum(flood_fill_count(classes == v) for v in (1, 2))
        assert ((labels > 0) == (classes > 0)).all()
        for k in range(1, count + 1):
            assert len(np.unique(classes[labels == k])) == 1
