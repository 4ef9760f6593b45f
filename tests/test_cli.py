"""The command line: real runs and the bad-input corpus (one-line errors, exit status 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_bounded
from kinema.media import read_video


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return run_bounded([sys.executable, "-m", "kinema.cli", *args], timeout=300, cwd=cwd)


def test_world_make_writes_playable_clips_and_a_manifest(tmp_path):
    out = tmp_path / "w"
    result = run("world", "make", "--out", str(out), "--clips", "3", "--seconds", "2", "--size", "96x64",
                 "--seed", "4", "--shots", "1-2")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        frames, fps = read_video(out / line["file"])
        assert frames.shape == (17, 64, 96, 3) and fps == pytest.approx(8.0)
        assert line["caption"] and all(s["caption"] for s in line["shots"])
        assert line["shots"][0]["start"] == 0 and line["shots"][-1]["end"] == 17
        with np.load(out / line["ground_truth"], allow_pickle=False) as gt:
            assert gt["x"].shape == (17, len(line["scene"]["objects"]))
    # The same seed writes the same clips.
    again = tmp_path / "again"
    run("world", "make", "--out", str(again), "--clips", "3", "--seconds", "2", "--size", "96x64", "--seed", "4",
        "--shots", "1-2")
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()
    # The simulator's own clips score as what their manifest says, check by check.
    scored = run("eval", "clips", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    checks = next(line for line in scored.stderr.splitlines() if line.startswith("attribute checks: "))
    assert "sky 1.00" in checks and "ground 1.00" in checks, checks
    targets = next(line for line in scored.stderr.splitlines() if line.startswith("targets: "))
    assert "attributes " in targets and "(3 clips; >= 0.95" in targets, targets
    report = json.loads((out / "eval.json").read_text())
    assert report["clip_targets"]["attributes"]["clips"] == 3
    assert report["clip_targets"]["attributes"]["met"] is None and "too few clips to judge" in targets
    summary = json.loads(scored.stdout)  # with --json, standard output is the JSON alone
    assert summary["attributes_sky"] == 1.0 and summary["attributes"] >= 0.9, summary


def test_world_vocab_and_show(tmp_path):
    vocab = run("world", "vocab")
    assert vocab.returncode == 0 and "close-up" in vocab.stdout and "purple" in vocab.stdout
    sheet = tmp_path / "sheet.png"
    shown = run("world", "show", "-o", str(sheet), "--seconds", "2", "--seed", "3", "--shots", "2")
    assert shown.returncode == 0, shown.stderr
    assert "frames 0-" in shown.stdout
    from kinema.media import read_image

    assert read_image(sheet).shape[0] > 64


@pytest.mark.parametrize("args, words", [
    (["world", "make", "--out", "X", "--size", "65x64"], "multiples of 8"),
    (["world", "make", "--out", "X", "--size", "huge"], "WIDTHxHEIGHT"),
    (["world", "make", "--out", "X", "--size", "8192x64"], "1024"),
    (["world", "make", "--out", "X", "--clips", "0"], "clips"),
    (["world", "make", "--out", "X", "--seconds", "-1"], "seconds"),
    (["world", "make", "--out", "X", "--seconds", "0"], "seconds"),
    (["world", "make", "--out", "X", "--seconds", "100000"], "seconds"),
    (["world", "make", "--out", "X", "--fps", "0"], "fps"),
    (["world", "make", "--out", "X", "--shots", "0"], "shots"),
    (["world", "make", "--out", "X", "--shots", "3-1"], "shots"),
    (["world", "make", "--out", "X", "--framings", "sideways"], "framings"),
    (["world", "make", "--out", "X", "--objects", "5"], "objects"),
    (["world", "make", "--out", "X", "--paint-probability", "2"], "paint-probability"),
    (["world", "show", "--video", "does-not-exist.mp4"], "does-not-exist.mp4"),
    (["eval", "clips", "no-such-folder"], "manifest"),
    (["no-such-command"], "no-such-command"),
    (["world", "make", "--out", "X", "--no-such-flag"], "--no-such-flag"),
    (["world", "make", "--out", "X", "--clips", "many"], "--clips"),
    (["train", "dit", "--no-such-flag"], "--no-such-flag"),
    (["vae", "roundtrip"], "source"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, words):
    args = [a.replace("X", str(tmp_path / "x")) for a in args]
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert words in lines[0]
    assert "Traceback" not in result.stderr


def test_the_distributed_trainer_reports_a_bad_flag_in_one_line(tmp_path):
    result = run_bounded([sys.executable, "-m", "kinema", "train", "dit", "--no-such-flag"], timeout=300,
                         cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: No such option: --no-such-flag"), result.stderr


def test_a_corrupt_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    result = run("world", "show", "--video", str(bad), "-o", str(tmp_path / "s.png"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, tiny_model_folder):
    """A tiny randomly initialised pipeline folder (fast to load, fast to run)."""
    return tiny_model_folder(tmp_path_factory.mktemp("model") / "tiny-random", steps=2)


def test_generate_writes_video_image_and_provenance(tmp_path, random_model):
    from kinema.media import read_image, read_metadata

    out = tmp_path / "a.mp4"
    result = run("generate", "a red ball is thrown to the right", "-o", str(out), "--model", str(random_model),
                 "--seconds", "1", "--size", "96x64", "--seed", "3")
    assert result.returncode == 0, result.stderr
    frames, fps = read_video(out)
    assert frames.shape == (9, 64, 96, 3) and fps == pytest.approx(8.0)
    meta = read_metadata(out)
    assert meta["prompt"] == "a red ball is thrown to the right" and meta["seed"] == 3
    assert len(meta["model_sha256"]) == 64 and meta["kinema_version"]
    assert json.loads((tmp_path / "a.json").read_text())["steps"] == 2
    # Same seed, same video.
    again = tmp_path / "b.mp4"
    run("generate", "a red ball is thrown to the right", "-o", str(again), "--model", str(random_model),
        "--seconds", "1", "--size", "96x64", "--seed", "3")
    assert np.array_equal(read_video(again)[0], frames)
    png = tmp_path / "c.png"
    assert run("generate", "a blue box", "-o", str(png), "--model", str(random_model)).returncode == 0
    assert read_image(png).shape == (64, 64, 3)
    # image to video from that PNG, and a batch file
    i2v = tmp_path / "d.mp4"
    assert run("generate", "a blue box", "-o", str(i2v), "--model", str(random_model), "--image", str(png),
               "--seconds", "1").returncode == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red ball", "seed": 1}\na green box rolls left\n')
    batch = run("generate", "--prompts", str(prompts), "--out-dir", str(tmp_path / "batch"), "--model",
                str(random_model), "--seconds", "1")
    assert batch.returncode == 0, batch.stderr
    assert sorted(p.name for p in (tmp_path / "batch").glob("*.mp4")) == ["0000.mp4", "0001.mp4"]


@pytest.mark.parametrize("args, words", [
    (["generate", ""], "prompt is empty"),
    (["generate", "x" * 5000, "--model", "M"], "characters"),
    (["generate", "a ball", "--size", "63x64", "--model", "M"], "multiples of 8"),
    (["generate", "a ball", "--seconds", "0", "--model", "M"], "seconds"),
    (["generate", "a ball", "--seconds", "-2", "--model", "M"], "seconds"),
    (["generate", "a ball", "--model", "no-such-model"], "does not exist"),
    (["generate", "a ball", "--model", "CORRUPT"], "model_index.json"),
    (["generate", "a ball", "--image", "missing.png", "--model", "M"], "missing.png"),
    (["generate", "a ball", "--image", "NOTANIMAGE", "--model", "M"], "cannot read"),
    (["generate", "a ball", "--loop", "--edit", "NOTANIMAGE", "--model", "M"], "choose one"),
    (["generate", "a ball", "--direction", "sideways", "--extend", "NOTANIMAGE", "--model", "M"], "direction"),
    (["generate", "a ball", "--fps", "0", "--model", "M"], "fps must be > 0"),
    (["generate", "a ball", "--fps", "-8", "--model", "M"], "fps must be > 0"),
])
def test_generate_bad_input_is_one_clear_line(tmp_path, random_model, args, words):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model_index.json").write_text("{oops")
    not_image = tmp_path / "not-image.png"
    not_image.write_text("hello")
    swap = {"M": str(random_model), "CORRUPT": str(corrupt), "NOTANIMAGE": str(not_image)}
    result = run(*[swap.get(a, a) for a in args], cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_generate_expands_the_prompt_unless_told_not_to(tmp_path, random_model):
    from kinema.media import read_metadata

    out = tmp_path / "e.mp4"
    result = run("generate", "a ball bouncing on snow", "-o", str(out), "--model", str(random_model), "--seconds",
                 "1", "--seed", "2")
    assert result.returncode == 0, result.stderr
    meta = read_metadata(out)
    assert meta["expand"] is True and "snow" in meta["expanded_prompt"] and meta["prompt"] == "a ball bouncing on snow"
    assert meta["expanded_prompt"] in result.stdout + result.stderr, "the expansion is printed"
    plain = tmp_path / "p.mp4"
    result = run("generate", "a ball bouncing on snow", "-o", str(plain), "--model", str(random_model), "--seconds",
                 "1", "--seed", "2", "--no-expand")
    assert result.returncode == 0, result.stderr
    assert read_metadata(plain)["expand"] is False and read_metadata(plain)["expanded_prompt"] is None


@pytest.mark.parametrize("line, words", [
    ('{"prompt": 5}', "prompts.jsonl:2: prompt must be a string (got 5)"),
    ('{"prompt": "a red ball", "bogus": 1}', "prompts.jsonl:2: unknown key(s) bogus"),
    ('{"seed": 1}', "prompts.jsonl:2: needs 'prompt'"),
    ('{"prompt": "a red ball", "seed": "one"}', "prompts.jsonl:2: seed must be an integer (got 'one')"),
    ('{"prompt": "a red ball", "seconds": true}', "prompts.jsonl:2: seconds must be a number (got True)"),
    ('{"prompt": "a red ball", "connect": "a.mp4"}', "prompts.jsonl:2: connect must be a list"),
    ('{"prompt": "a red ball", "name": "../outside"}', "prompts.jsonl:2: name must be a file name"),
    ('{"prompt": "a red ball",}', "prompts.jsonl:2: not valid JSON"),
    ('{"prompt": "a red ball", "x": ' + "[" * 5000 + "]" * 5000 + "}",
     "prompts.jsonl:2: not valid JSON (nested too deeply)"),
])
def test_prompts_file_lines_are_checked_before_the_model_loads(tmp_path, line, words):
    """Each line of a --prompts file is one request: a wrong type or an unknown key is named, with its line."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a green box"}\n' + line + "\n")
    result = run("generate", "--prompts", str(prompts), "--out-dir", str(tmp_path / "out"), "--model", "no-such-model")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert "does not exist" not in lines[0], "the file is checked before the model is looked for"


def test_eval_clips_json_is_json_alone_on_stdout(tmp_path):
    """kinema eval clips DIR --json | python -m json.tool: the table, the checks and 'wrote' go to stderr."""
    out = tmp_path / "w"
    assert run("world", "make", "--out", str(out), "--clips", "1", "--seconds", "1", "--seed", "2").returncode == 0
    scored = run("eval", "clips", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=scored.stdout, capture_output=True, text=True)
    assert tool.returncode == 0, (scored.stdout, tool.stderr)
    assert json.loads(scored.stdout)["attributes_sky"] == 1.0
    assert "wrote" in scored.stderr and "attribute checks:" in scored.stderr
    plain = run("eval", "clips", str(out))
    assert "attribute checks:" in plain.stdout and not plain.stdout.lstrip().startswith("{")


def test_every_request_field_has_a_type_check():
    from dataclasses import fields

    from kinema.inference.request import FIELD_TYPES, Request

    assert set(FIELD_TYPES) == {f.name for f in fields(Request)}
