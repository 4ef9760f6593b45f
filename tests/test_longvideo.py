"""Long videos in windows and storyboards: window plans, exactness, routing, the parser and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import random_pipeline, run_bounded
from kinema.errors import KinemaError
from kinema.frames import shot_of_latent_frames
from kinema.inference.longvideo import MAX_SPREAD_CHANGE, anchor_levels, generate_long, latent_levels, plan_windows
from kinema.inference.pipeline import frames_to_tensor
from kinema.inference.storyboard import (
    Shot,
    Storyboard,
    load_storyboard,
    parse_shot_flag,
    storyboard_from_dict,
    storyboard_from_flags,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline(scale=0.05)


# -- window plans ------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_frames, window, context, memory, shots", [
    (5, 13, 2, 2, [0]), (13, 13, 2, 2, [0]), (14, 13, 2, 2, [0]), (121, 13, 2, 2, [0]),
    (121, 13, 2, 2, [0, 30, 61, 90]), (40, 5, 1, 0, [0]), (40, 6, 3, 2, [0, 7, 20]), (61, 9, 4, 1, [0, 33]),
])
def test_windows_make_every_frame_once_from_earlier_frames(latent_frames, window, context, memory, shots):
    plan = plan_windows(latent_frames, window, context, memory, shots)
    made: list[int] = []
    for win in plan:
        assert len(win.frames) <= window and win.count >= 1
        assert all(k < win.start for k in win.known), "known frames are already made"
        assert set(win.known) <= set(made)
        if made:
            recent = list(range(win.start - context, win.start))
            assert [k for k in win.known if k in recent] == recent, "the last `context` frames are the context"
            assert 0 in win.known or memory == 0
            shot_start = max(s for s in shots if s <= win.start)
            if memory >= 2 and shot_start < win.start - context:
                assert shot_start in win.known, "the current shot's first frame is a memory frame"
            assert len(win.known) <= context + memory
        made += list(range(win.start, win.start + win.count))
    assert made == list(range(latent_frames))


def test_window_plan_rejects_impossible_settings():
    with pytest.raises(KinemaError, match="context"):
        plan_windows(20, 4, 2, 2)
    with pytest.raises(KinemaError, match="window"):
        plan_windows(20, 1, 1, 0)


def test_sixty_seconds_cost_grows_linearly():
    """Cost is the number of latent frames the transformer sees: one window's worth per window."""
    def seen(latent_frames: int) -> int:
        return sum(len(w.frames) for w in plan_windows(latent_frames, 13, 2, 2))

    six, sixty, two_minutes = seen(13), seen(121), seen(241)
    assert sixty / six < 13 and two_minutes / sixty == pytest.approx(2.0, rel=0.05)


# -- generation ------------------------------------------------------------------------------------


def test_windowed_equals_single_window_when_the_video_fits(pipe):
    prompt = "a red ball is thrown to the right"
    single = pipe(prompt, num_frames=17, height=32, width=48, generator=torch.Generator().manual_seed(5),
                  expand=False).frames[0]
    windowed = generate_long(pipe, [prompt], 17, 32, 48, window=5, generator=torch.Generator().manual_seed(5))
    assert np.array_equal(single, windowed)
    other_seed = generate_long(pipe, [prompt], 17, 32, 48, window=5, generator=torch.Generator().manual_seed(6))
    assert not np.array_equal(single, other_seed)


@pytest.mark.parametrize("context_noise", [0.0, 0.3])
def test_context_and_memory_frames_stay_bit_identical(pipe, monkeypatch, context_noise):
    """Known frames leave the sampler as they entered; memory frames (and, without context noise, the context)
    enter as the frames made before."""
    calls = []
    denoise = pipe.denoise

    def recording(latents, known, known_latents, *args, **kwargs):
        out = denoise(latents, known, known_latents, *args, **kwargs)
        calls.append((latents.clone(), None if known is None else known.clone(), out.clone()))
        return out

    monkeypatch.setattr(pipe, "denoise", recording)
    latents = generate_long(pipe, ["a blue box", "a close-up of the blue box"], 57, 32, 32, shot_starts=[0, 25],
                            window=5, context=2, memory=2, generator=torch.Generator().manual_seed(0),
                            output_type="latent", context_noise=context_noise)
    plan = plan_windows(15, 5, 2, 2, [0, 7])
    assert len(calls) == len(plan) > 3
    for win, (x_in, known, out) in zip(plan, calls):
        k = len(win.known)
        if k:
            assert known[0, :k].all() and not known[0, k:].any()
            assert torch.equal(out[:, :, :k], x_in[:, :, :k]), "known frames leave the sampler unchanged"
            clean = [i for i, f in enumerate(win.known) if context_noise == 0 or f < win.start - 2]
            assert torch.equal(x_in[:, :, clean], latents[:, :, [win.known[i] for i in clean]]), "frames made before"
            if context_noise:
                assert len(clean) < k and not torch.equal(x_in[:, :, :k], latents[:, :, list(win.known)])
        assert torch.equal(out[:, :, k:], latents[:, :, win.start:win.start + win.count])


def test_each_latent_frame_attends_to_its_shots_caption(pipe, monkeypatch):
    seen = []
    forward = pipe.transformer.forward

    def recording(x, t, text, text_mask=None, frame_text_index=None, **kwargs):
        seen.append(None if frame_text_index is None else frame_text_index.clone())
        return forward(x, t, text, text_mask, frame_text_index, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", recording)
    shot_starts = [0, 13, 29]  # frames 0-12, 13-28, 29-40 -> latents 0-3, 4-7, 8-10
    generate_long(pipe, ["shot one", "shot two", "shot three"], 41, 32, 32, shot_starts=shot_starts, window=6,
                  context=2, memory=1, num_inference_steps=1, guidance_scale=1.0,
                  generator=torch.Generator().manual_seed(0))
    expected = shot_of_latent_frames(shot_starts, 11)
    assert expected == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    for win, index in zip(plan_windows(11, 6, 2, 1, [0, 4, 8]), seen):
        assert index[0].tolist() == [expected[f] for f in win.frames]


def test_frame_to_shot_routing_matches_the_storyboards_frame_ranges():
    board = Storyboard((Shot(2.0, "wide", "a"), Shot(1.5, "closeup", "b"), Shot(3.25, "pan", "c"),
                        Shot(0.5, "medium", "d")))
    for fps in (8.0, 12.0, 24.0):
        frames, starts = board.frame_plan(fps)
        assert starts[0] == 0 and all((s - 1) % 4 == 0 for s in starts[1:]) and (frames - 1) % 4 == 0
        assert frames == 1 + 4 * int(board.seconds * fps / 4 + 0.5)
        latent_shot = shot_of_latent_frames(starts, 1 + (frames - 1) // 4)
        ends = starts[1:] + [frames]
        for frame in range(frames):
            truth = next(k for k, (a, b) in enumerate(zip(starts, ends)) if a <= frame < b)
            latent = 0 if frame == 0 else 1 + (frame - 1) // 4
            assert latent_shot[latent] == truth, (fps, frame)
        cut_times = [s / fps for s in starts]
        assert cut_times[1] == pytest.approx(2.0, abs=2 / fps)


# -- the storyboard format ---------------------------------------------------------------------------


def test_storyboards_round_trip_through_yaml_and_json(tmp_path):
    import yaml

    board = storyboard_from_dict({"scene": "Snow at night.", "shots": [
        {"seconds": 3, "framing": "wide", "prompt": "A red ball is dropped."},
        {"seconds": 2.5, "framing": "close-up", "prompt": "The red ball bounces: twice."},
        {"seconds": 4, "framing": "pan", "prompt": "The red ball rolls to the left."}]})
    assert [s.framing for s in board.shots] == ["wide", "closeup", "pan"] and board.seconds == 9.5
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(board.to_dict()))
    (tmp_path / "b.json").write_text(json.dumps(board.to_dict()))
    assert load_storyboard(tmp_path / "b.yaml") == board == load_storyboard(tmp_path / "b.json")
    texts = board.shot_texts()
    assert texts[1] == "Snow at night. A close-up. The red ball bounces: twice."
    flags = storyboard_from_flags(["3:wide:A red ball is dropped.", "2.5:close-up:The red ball bounces: twice.",
                                   "4:pan:The red ball rolls to the left."], "Snow at night.")
    assert flags == board
    assert parse_shot_flag("1:Close-Up:x: y") == Shot(1.0, "closeup", "x: y")


@pytest.mark.parametrize("text, words", [
    ("shots: [{seconds: 2, framing: sideways, prompt: a}]", "framing 'sideways'"),
    ("shots: [{seconds: -2, framing: wide, prompt: a}]", "seconds must be > 0"),
    ("shots: [{seconds: 0, framing: wide, prompt: a}]", "seconds must be > 0"),
    ("shots: [{seconds: 400, framing: wide, prompt: a}, {seconds: 300, framing: wide, prompt: b}]", "limit"),
    ("shots: [{seconds: 2, framing: wide}]", "missing 'prompt'"),
    ("shots: [{seconds: 2, framing: wide, prompt: '  '}]", "non-empty prompt"),
    ("shots: [{framing: wide, prompt: a}]", "missing 'seconds'"),
    ("shots: [{seconds: two, framing: wide, prompt: a}]", "must be a number"),
    ("shots: [{seconds: 2, prompt: a, camera: left}]", "unknown key"),
    ("scene: x", "'shots' must be a non-empty list"),
    ("shots: []", "'shots' must be a non-empty list"),
    ("- just\n- a list", "must be a mapping"),
    ("shots: [{seconds: 2, prompt: a}\n", "not valid YAML"),
    ("scene: a\nstyle: b\nshots: [{seconds: 2, prompt: a}]", "unknown key(s) style"),
])
def test_bad_storyboards_are_clear_errors(tmp_path, text, words):
    path = tmp_path / "board.yaml"
    path.write_text(text)
    with pytest.raises(KinemaError) as error:
        load_storyboard(path)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_shots_shorter_than_a_latent_frame_are_refused():
    board = Storyboard((Shot(2.0, "wide", "a"), Shot(0.1, "closeup", "b"), Shot(2.0, "wide", "c")))
    with pytest.raises(KinemaError, match="shot 2"):
        board.frame_plan(8.0)
    assert board.frame_plan(48.0)[0] == 1 + 4 * int(4.1 * 48 / 4 + 0.5)


# -- the command line --------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return run_bounded([sys.executable, "-m", "kinema.cli", *args], timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, tiny_model_folder):
    return tiny_model_folder(tmp_path_factory.mktemp("model") / "tiny-random", steps=1, window=5)


def test_cli_storyboard_and_long_video(tmp_path, random_model):
    from kinema.media import read_metadata, read_video

    board = tmp_path / "board.yaml"
    board.write_text("scene: 'Sand, day.'\nshots:\n  - {seconds: 2, framing: wide, prompt: a red ball}\n"
                     "  - {seconds: 1, framing: close-up, prompt: the red ball bounces}\n")
    out = tmp_path / "board.mp4"
    result = run("generate", "--storyboard", str(board), "-o", str(out), "--model", str(random_model))
    assert result.returncode == 0, result.stderr
    frames, _ = read_video(out)
    meta = read_metadata(out)
    assert frames.shape[0] == 25 and meta["shot_starts"] == [0, 17]
    assert meta["storyboard"]["shots"][1]["framing"] == "closeup"
    # Shots are used as written unless expansion is asked for, even by a model that expands prompts.
    assert meta["shot_texts"][1] == "Sand, day. A close-up. the red ball bounces" and not meta["expand"]
    assert meta["expanded_prompt"] is None
    flags = tmp_path / "flags.mp4"
    result = run("generate", "Sand, day.", "--shot", "2:wide:a red ball", "--shot", "1:close-up:the red ball bounces",
                 "-o", str(flags), "--model", str(random_model))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(read_video(flags)[0], frames), "flags and file describe the same storyboard"
    # --expand gives each shot the training captions' shape: the scene's caption, the same in every shot, then the
    # shot's own about its subject.
    expanded = tmp_path / "expanded.mp4"
    result = run("generate", "--storyboard", str(board), "-o", str(expanded), "--model", str(random_model), "--expand")
    assert result.returncode == 0, result.stderr
    meta = read_metadata(expanded)
    scene, _, close_up = meta["shot_texts"][1].partition(" A close-up of the red ")
    assert scene.startswith("A scene on sand") and "The objects: a" in scene and "red ball." in scene, scene
    assert meta["shot_texts"][0].startswith(scene + " A wide shot. ") and close_up, meta["shot_texts"]
    assert meta["expand"] and meta["expanded_prompt"] == " | ".join(meta["shot_texts"])
    long = tmp_path / "long.mp4"
    result = run("generate", "a blue box rolls to the left", "--seconds", "12", "-o", str(long), "--model",
                 str(random_model), "--size", "32x32", "--context-noise", "0.25", "--anchor", "0.5")
    assert result.returncode == 0, result.stderr
    assert read_video(long)[0].shape == (97, 32, 32, 3) and read_metadata(long)["window"] == 5
    assert read_metadata(long)["context_noise"] == 0.25 and read_metadata(long)["anchor"] == 0.5
    extended = tmp_path / "extended.mp4"
    result = run("generate", "the blue box keeps rolling", "--extend", str(long), "--seconds", "6", "-o",
                 str(extended), "--model", str(random_model), "--size", "32x32")
    assert result.returncode == 0, result.stderr
    assert read_video(extended)[0].shape[0] == 97 + 48 and read_metadata(extended)["window"] == 5


@pytest.mark.parametrize("args, words", [
    (["--shot", "2:sideways:a"], "framing 'sideways'"),
    (["--shot", "2:wide"], "SECONDS:FRAMING:PROMPT"),
    (["--shot", "-1:wide:a"], "seconds must be > 0"),
    (["--shot", "400:wide:a", "--shot", "300:wide:b"], "limit"),
    (["--storyboard", "missing.yaml"], "does not exist"),
    (["--shot", "2:wide:a", "-o", "x.png"], "storyboard"),
    (["--shot", "2:wide:a", "--loop"], "storyboard"),
    (["a", "--seconds", "8", "--window", "0"], "window"),
    (["a", "--seconds", "8", "--context-noise", "1.5"], "context noise"),
    (["a", "--seconds", "8", "--context-noise", "-0.1"], "context noise"),
    (["a", "--seconds", "8", "--anchor", "1.5"], "anchor"),
    (["a", "--seconds", "8", "--anchor", "-0.5"], "anchor"),
])
def test_cli_bad_storyboards_are_one_line(tmp_path, random_model, args, words):
    result = run("generate", *args, "--model", str(random_model))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_extending_a_video_by_a_minute_continues_from_its_frames(pipe, monkeypatch):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)  # 3 latent frames
    calls = []
    denoise = pipe.denoise

    def recording(latents, known, known_latents, *args, **kwargs):
        calls.append(None if known is None else known.clone())
        return denoise(latents, known, known_latents, *args, **kwargs)

    monkeypatch.setattr(pipe, "denoise", recording)
    latents = generate_long(pipe, ["a red ball rolls"], 9 + 4 * 8, 32, 32, video=source, window=5, context=2,
                            memory=1, generator=torch.Generator().manual_seed(0), output_type="latent")
    encoded = pipe.encode_video(frames_to_tensor(source, 32, 32))
    assert torch.equal(latents[:, :, :3], encoded), "the given video's latents are kept as they are"
    plan = plan_windows(11, 5, 2, 1, given=3)
    assert plan[0].known == (0, 1, 2) and plan[0].start == 3 and len(calls) == len(plan)
    assert all(bool(k[0, : len(w.known)].all()) for k, w in zip(calls, plan)), "every pass starts from known frames"
    with pytest.raises(KinemaError, match="nothing is left"):
        plan_windows(3, 5, 2, 1, given=3)


def test_context_noise_noises_the_context_of_later_passes_and_keeps_memory_frames_clean(pipe, monkeypatch):
    """With context noise s, every pass after the first holds its context frames at (1 - s) x + s e and tells
    the transformer t = s for them; memory frames and an image to video's first frame stay clean (t = 0), and
    s = 0 changes nothing."""
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    plan = plan_windows(11, 5, 1, 1, first_known=True)
    assert [w.known for w in plan] == [(0,), (0, 4), (0, 7)]

    def run(noise_level):
        passes = []
        denoise = pipe.denoise

        def recording(latents, known, known_latents, *args, **kwargs):
            seen_t = []
            forward = pipe.transformer.forward

            def spy(x, t, *a, **k):
                seen_t.append(t.clone())
                return forward(x, t, *a, **k)

            monkeypatch.setattr(pipe.transformer, "forward", spy)
            try:
                out = denoise(latents, known, known_latents, *args, **kwargs)
            finally:
                monkeypatch.setattr(pipe.transformer, "forward", forward)
            passes.append((latents.clone(), seen_t))
            return out

        monkeypatch.setattr(pipe, "denoise", recording)
        latents = generate_long(pipe, ["a green ball is dropped"], 41, 32, 32, image=image, window=5, context=1,
                                memory=1, context_noise=noise_level, generator=torch.Generator().manual_seed(3),
                                output_type="latent")
        monkeypatch.setattr(pipe, "denoise", denoise)
        return latents, passes

    clean_latents, clean_passes = run(0.0)
    latents, passes = run(0.3)
    assert len(passes) == len(plan) == 3
    for n, (win, (x_in, seen_t)) in enumerate(zip(plan, passes)):
        k = len(win.known)
        expected = [0.0] if n == 0 else [0.0, 0.3]  # (image) or (memory frame 0, context frame)
        assert seen_t and all(torch.allclose(t[0, :k], torch.tensor(expected)) for t in seen_t)
        assert all((t[:, k:] > 0).all() for t in seen_t), "new frames are being denoised"
        made = latents[:, :, list(win.known)]
        assert torch.equal(x_in[:, :, 0], made[:, :, 0]), "the image and the memory frame stay clean"
        if n > 0:
            context_in, context_made = x_in[:, :, 1], made[:, :, 1]
            gap = (context_in - 0.7 * context_made).std() / context_made.std()
            assert not torch.allclose(context_in, context_made) and 0.1 < float(gap) < 1.0, float(gap)
        _, clean_t = clean_passes[n]
        assert all(bool((t[:, :k] == 0).all()) for t in clean_t), "no context noise: clean context at t = 0"
    assert torch.equal(latents[:, :, :5], clean_latents[:, :, :5]), "the first pass is untouched"
    assert not torch.equal(latents[:, :, 5:], clean_latents[:, :, 5:])
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(KinemaError, match="context noise"):
            generate_long(pipe, ["a ball"], 41, 32, 32, window=5, context=1, context_noise=bad)


def test_anchor_levels_pulls_each_shot_back_to_the_levels_and_spread_of_its_opening():
    """Shot 0 holds frames 0-4 and 5-7, shot 1 opens at frame 6: a pass making frames 5-7 moves frame 5 (shot 0,
    made before) toward shot 0's row levels and spread by the strength, and leaves shot 1's opening as it is."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.tensor([1.0, 0.5, -1.0, -2.0]).repeat_interleave(4)[None, None, None, :, None]  # sky, ground
    latents = torch.zeros(1, 3, 8, 16, 16)
    latents[:, :, :5] = rows + 0.3 * torch.randn(1, 3, 5, 16, 16, generator=gen)
    shot_of = [0, 0, 0, 0, 0, 0, 1, 1]
    # The next pass came out brighter in every row, with rows of their own and more contrast.
    new = rows + 2.0 + torch.tensor([0.0, 0.4, 0.0, -0.3]).repeat_interleave(4)[None, None, None, :, None] \
        + 1.5 * (latents[:, :, 1:4] - rows)
    reference_levels, reference_spread = latent_levels(latents[:, :, :5])
    assert reference_levels.shape == (1, 3, 1, 16, 1) and reference_spread.shape == (1, 3, 1, 1, 1)
    references: dict = {}
    full = anchor_levels(new, latents, 5, shot_of, references, 1.0)
    levels, spread = latent_levels(full[:, :, :1])
    assert torch.allclose(levels, reference_levels, atol=1e-5), "back to the opening's row levels"
    assert torch.allclose(spread, reference_spread, atol=1e-5), "and to its spread"
    assert torch.equal(full[:, :, 1:], new[:, :, 1:]), "a shot that opens in this pass sets its own levels"
    assert set(references) == {0} and torch.equal(references[0][0], reference_levels)
    # Each frame keeps its own detail: its deviations from the levels are only rescaled.
    new_levels, new_spread = latent_levels(new[:, :, :1])
    ratio = reference_spread / new_spread
    assert bool(((ratio > 1 / MAX_SPREAD_CHANGE) & (ratio < 1)).all()), "more contrast, within the clamp"
    assert torch.allclose(full[:, :, :1] - levels, (new[:, :, :1] - new_levels) * ratio, atol=1e-5)
    half = anchor_levels(new, latents, 5, shot_of, {}, 0.5)
    half_levels, half_spread = latent_levels(half[:, :, :1])
    assert torch.allclose(half_levels - reference_levels, 0.5 * (new_levels - reference_levels), atol=1e-5)
    assert torch.allclose(half_spread, new_spread * ratio.sqrt(), atol=1e-5)
    # The reference is frozen: frames made later do not move it.
    latents[:, :, 5:8] = full
    anchor_levels(new, latents, 5, shot_of, references, 1.0)
    assert torch.equal(references[0][0], reference_levels)
    # An object on a quarter of a row moves that row's level within the noise (its mean would move by 12.5).
    spot = latents[:, :, :5].clone()
    spot[:, :, :, 1, :4] += 50.0
    assert torch.allclose(latent_levels(spot)[0], reference_levels, atol=0.3)
    # A pass with almost no detail is not blown up: the spread changes by MAX_SPREAD_CHANGE at most.
    flat = rows + 1e-3 * torch.randn(1, 3, 3, 16, 16, generator=gen)
    lifted = anchor_levels(flat, latents, 5, [0] * 8, {}, 1.0)
    assert torch.allclose(latent_levels(lifted)[1], MAX_SPREAD_CHANGE * latent_levels(flat)[1], rtol=1e-4)


def test_anchor_keeps_a_long_videos_later_passes_at_the_levels_of_its_first(pipe):
    def make(anchor):
        return generate_long(pipe, ["a red ball rolls"], 4 * 16 + 1, 32, 32, window=5, context=1, memory=1,
                             context_noise=0.3, anchor=anchor, generator=torch.Generator().manual_seed(2),
                             output_type="latent")

    plan = plan_windows(17, 5, 1, 1)
    free, held = make(0.0), make(1.0)
    first = slice(0, plan[0].count)
    assert torch.equal(held[:, :, first], free[:, :, first]), "the first pass is untouched"
    reference_levels, reference_spread = latent_levels(held[:, :, first])
    drifted = 0.0
    for win in plan[1:]:
        levels, spread = latent_levels(held[:, :, win.start:win.start + win.count])
        assert torch.allclose(levels, reference_levels, atol=1e-4) and torch.allclose(spread, reference_spread,
                                                                                      atol=1e-4), win
        drifted = max(drifted, float((latent_levels(free[:, :, win.start:win.start + win.count])[0]
                                      - reference_levels).abs().max()))
    assert drifted > 1e-2, "without the anchor the later passes' levels are not the first's"
    default = generate_long(pipe, ["a red ball rolls"], 4 * 16 + 1, 32, 32, window=5, context=1, memory=1,
                            context_noise=0.3, generator=torch.Generator().manual_seed(2), output_type="latent")
    assert torch.equal(default, make(pipe.defaults.anchor))
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(KinemaError, match="anchor"):
            generate_long(pipe, ["a ball"], 41, 32, 32, window=5, context=1, anchor=bad)


def test_storyboards_use_the_models_storyboard_guidance(tmp_path, tiny_model_folder, monkeypatch):
    from types import SimpleNamespace

    from kinema.inference.pipeline import SamplingDefaults
    from kinema.inference.request import Request
    from kinema.inference.settings import guidance_for
    from kinema.media import read_metadata, read_video

    board = {"shots": [{"seconds": 1, "framing": "wide", "prompt": "a red ball"},
                       {"seconds": 1, "framing": "closeup", "prompt": "the red ball"}]}
    pipe = SimpleNamespace(defaults=SamplingDefaults(guidance_scale=4.0, storyboard_guidance=7.0))
    assert guidance_for(pipe, Request(prompt="", storyboard=board)) == 7.0
    assert guidance_for(pipe, Request(prompt="", storyboard=board, guidance=2.0)) == 2.0, "the request's own wins"
    assert guidance_for(pipe, Request(prompt="a red ball")) == 4.0
    plain = SimpleNamespace(defaults=SamplingDefaults(guidance_scale=4.0))
    assert guidance_for(plain, Request(prompt="", storyboard=board)) == 4.0, "none set: the model's guidance"
    # End to end: the model's storyboard guidance is what the storyboard runs with.
    model = tiny_model_folder(tmp_path / "model", steps=1, window=5, storyboard_guidance=2.5)
    path = tmp_path / "board.yaml"
    path.write_text(json.dumps(board))
    made, given = tmp_path / "made.mp4", tmp_path / "given.mp4"
    assert run("generate", "--storyboard", str(path), "-o", str(made), "--model", str(model)).returncode == 0
    assert run("generate", "--storyboard", str(path), "-o", str(given), "--model", str(model),
               "--guidance", "2.5").returncode == 0
    assert read_metadata(made)["guidance"] == 2.5
    assert np.array_equal(read_video(made)[0], read_video(given)[0])
    # (A random tiny model ignores its text, so guidance cannot change its pixels: the sampler's call is checked.)
    import kinema.inference.longvideo
    from kinema.inference.generate import load_pipeline
    from kinema.inference.generate import run as run_request

    seen = []
    real = kinema.inference.longvideo.generate_long

    def recording(*args, **kwargs):
        seen.append(kwargs["guidance_scale"])
        return real(*args, **kwargs)

    monkeypatch.setattr(kinema.inference.longvideo, "generate_long", recording)
    loaded = load_pipeline(model)
    run_request(loaded, Request(prompt="", storyboard=board, output=str(tmp_path / "a.mp4")))
    run_request(loaded, Request(prompt="", storyboard=board, output=str(tmp_path / "b.mp4"), guidance=4.0))
    run_request(loaded, Request(prompt="a red ball", seconds=8, size="32x32", output=str(tmp_path / "c.mp4")))
    assert seen == [2.5, 4.0, 4.0], "storyboard default, the request's own, the model's guidance for the rest"
