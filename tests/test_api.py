"""The Python API in diffusers' manner: ``from kinema import KinemaPipeline``, the call's defaults, expansion and
windowing the same as the CLI's, output types, several videos per prompt, ``callback_on_step_end``, diffusers' own
loader, and the README's snippet."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_pipeline, run_bounded
from kinema.inference.pipeline import KinemaPipeline

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "src" / "kinema" / "weights" / "kinema-tiny"
PROMPT = "a red ball is thrown to the right and bounces on the sand"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline(num_layers=1, size="32x32")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_package_exports_the_pipeline_and_the_export_helper(tmp_path):
    import kinema

    assert kinema.KinemaPipeline is KinemaPipeline
    frames = np.zeros((9, 32, 32, 3), np.uint8)
    frames[:, :, :16] = 200
    for suffix in (".mp4", ".webm", ".gif"):
        path = kinema.export_to_video(frames, tmp_path / f"x{suffix}", fps=8)
        from kinema.media import read_video

        back, fps = read_video(path)
        assert back.shape == frames.shape and fps == pytest.approx(8.0, abs=0.2), suffix
        assert abs(int(back[4, 10, 4, 0]) - 200) <= 3 and int(back[4, 10, 28, 0]) <= 3, suffix
    as_pt = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (F, 3, H, W), as output_type="pt" gives
    assert read_video_frames(kinema.export_to_video(as_pt, tmp_path / "pt.mp4")).shape == frames.shape


def read_video_frames(path) -> np.ndarray:
    from kinema.media import read_video

    return read_video(path)[0]


def test_the_calls_defaults_are_the_clis(pipe, tmp_path):
    """Length, size, steps and guidance come from the model's defaults, as for `kinema generate`."""
    from kinema.inference.request import Request, validate

    out = pipe("a blue box", generator=seeded())
    plan = validate(Request(prompt="a blue box", output=str(tmp_path / "x.mp4")), pipe.defaults)
    assert out.frames.shape == (1, plan.frames, plan.height, plan.width, 3) == (1, 33, 32, 32, 3)
    assert out.settings["steps"] == 2 and out.settings["guidance"] == pipe.defaults.guidance_scale


def test_the_api_expands_the_prompt_as_the_cli_does_and_makes_the_same_video(pipe, tmp_path, monkeypatch):
    from kinema.inference import generate
    from kinema.inference.expand import expand_prompt
    from kinema.inference.request import Request

    out = pipe(PROMPT, num_frames=9, generator=seeded(4))
    expected = expand_prompt(PROMPT, seed=4, seconds=1.0, fps=8.0)
    assert out.expanded_prompts == [expected] and out.prompts == [expected]
    plain = pipe(expected, num_frames=9, generator=seeded(4), expand=False).frames
    assert np.array_equal(out.frames, plain)
    written = {}
    monkeypatch.setattr("kinema.media.write_video",
                        lambda path, frames, fps, metadata, crf: written.update(frames=frames, metadata=metadata,
                                                                                 crf=crf) or path)
    generate.run(pipe, Request(prompt=PROMPT, output=str(tmp_path / "x.mp4"), frames=9, seed=4))
    assert np.array_equal(written["frames"], out.frames[0])
    assert written["metadata"]["expanded_prompt"] == expected
    assert written["crf"] == written["metadata"]["crf"] == 12  # the file's quality, recorded with it


def test_a_long_num_frames_runs_in_windows(pipe):
    from kinema.inference.longvideo import generate_long

    seen = []
    forward = pipe.transformer.forward
    pipe.transformer.forward = lambda x, *a, **k: seen.append(x.shape[2]) or forward(x, *a, **k)
    try:
        out = pipe("a red ball rolls", num_frames=41, window=5, generator=seeded(2), expand=False)
    finally:
        del pipe.transformer.forward
    assert max(seen) <= 5 and out.frames.shape[1] == 41
    assert out.settings["window"] == 5 and out.settings["context"] == pipe.defaults.context
    expected = generate_long(pipe, ["a red ball rolls"], 41, 32, 32, window=5, generator=seeded(2))
    assert np.array_equal(out.frames[0], expected)


def night_sand_clip(x: float) -> np.ndarray:
    """A world clip (9 frames, 64x64) of a large red ball dropped at ``x`` on sand, at night."""
    from kinema.world.dataset import make_clip
    from kinema.world.scene import ObjectSpec, SceneSpec, ShotSpec

    ball = ObjectSpec(0, "red", "ball", "large", "bouncy", False, "dropped", x, 4.0, 0.0, 0.0)
    scene = SceneSpec(seed=3, fps=8.0, frames=9, sky="night", ground="sand", occluder=None, occluder_x=6.0,
                      objects=[ball], shots=[ShotSpec(0, 9, "wide", 0)], far_seed=1)
    return make_clip(scene, 64, 64).frames


def test_connect_and_image_to_video_expand_on_what_their_inputs_show(pipe):
    """The expansion of a connection (and of an image to video) keeps the inputs' stage and subject, whatever
    ground and sky the seed would pick for the prompt alone."""
    from kinema.world.caption import parse_prompt

    first, last = night_sand_clip(4.0), night_sand_clip(8.0)
    calls = {"connect": {"mode": "connect", "video": first, "video_end": last, "num_frames": 25},
             "i2v": {"image": first[0], "num_frames": 9}}
    for name, kwargs in calls.items():
        for seed in range(3):
            out = pipe("the red ball rolls", generator=seeded(seed), output_type="latent", **kwargs)
            got = parse_prompt(out.expanded_prompts[0])
            assert (got["sky"], got["ground"]) == ("night", "sand"), (name, out.expanded_prompts[0])
            assert any(o["color"] == "red" and o["shape"] == "ball" for o in got["objects"]), name


def test_output_types(pipe):
    base = pipe("a blue box", num_frames=5, generator=seeded(1), expand=False).frames
    pil = pipe("a blue box", num_frames=5, generator=seeded(1), expand=False, output_type="pil").frames
    assert isinstance(pil, list) and len(pil) == 1 and len(pil[0]) == 5
    assert pil[0][0].size == (32, 32) and np.array_equal(np.asarray(pil[0][3]), base[0, 3])
    pt = pipe("a blue box", num_frames=5, generator=seeded(1), expand=False, output_type="pt").frames
    assert pt.shape == (1, 5, 3, 32, 32) and pt.dtype == torch.float32
    assert torch.equal((pt * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2), torch.from_numpy(base))
    latents = pipe("a blue box", num_frames=5, generator=seeded(1), expand=False, output_type="latent").frames
    assert latents.shape == (1, 4, 2, 4, 4)
    assert np.array_equal(pipe.decode_latents(latents), base)
    tup = pipe("a blue box", num_frames=5, generator=seeded(1), expand=False, return_dict=False)
    assert isinstance(tup, tuple) and np.array_equal(tup[0], base)


def test_several_videos_per_prompt(pipe):
    out = pipe(["a red ball", "a blue box"], num_frames=5, num_videos_per_prompt=2, generator=seeded(3),
               expand=False)
    assert out.frames.shape == (4, 5, 32, 32, 3) and out.prompts == ["a red ball"] * 2 + ["a blue box"] * 2
    assert not np.array_equal(out.frames[0], out.frames[1])  # each its own noise
    long = pipe("a red ball", num_frames=41, window=5, num_videos_per_prompt=2, generator=seeded(3), expand=False)
    assert long.frames.shape == (2, 41, 32, 32, 3) and not np.array_equal(long.frames[0], long.frames[1])


def test_callback_on_step_end_sees_and_replaces_the_latents(pipe):
    calls = []

    def watch(pipeline, step, timestep, tensors):
        calls.append((step, float(timestep), tuple(tensors["latents"].shape)))
        return {}

    pipe("a red ball", num_frames=5, generator=seeded(0), callback_on_step_end=watch, expand=False)
    assert [c[0] for c in calls] == [0, 1] and calls[-1][1] == 0.0 and calls[0][2] == (1, 4, 2, 4, 4)
    assert 0 < calls[0][1] < 1000

    def zero_at_the_end(pipeline, step, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 1 else {}

    zeroed = pipe("a red ball", num_frames=5, generator=seeded(0), callback_on_step_end=zero_at_the_end,
                  expand=False).frames
    assert np.array_equal(zeroed, pipe.decode_latents(torch.zeros(1, 4, 2, 4, 4)))
    with pytest.raises(Exception, match="callback_on_step_end_tensor_inputs"):
        pipe("a red ball", num_frames=5, callback_on_step_end=watch, callback_on_step_end_tensor_inputs=["noise"])


def test_bad_generators_and_callbacks_are_one_line_errors_before_any_work(pipe):
    from kinema.errors import KinemaError

    calls = []
    pipe.transformer.forward = lambda *a, **k: calls.append(1)
    try:
        for kwargs, words in [
            ({"generator": "x"}, "generator must be a torch.Generator or a list of them (got str)"),
            ({"generator": [seeded(), seeded()]}, "generator: a list of 2 for 1 videos"),
            ({"generator": [seeded()], "num_videos_per_prompt": 2, "num_frames": 41, "window": 5},
             "generator: a list of 1 for 2 videos"),
            ({"callback_on_step_end": 5}, "callback_on_step_end must be callable (got int)"),
            ({"callback": "x"}, "callback must be callable (got str)"),
        ]:
            with pytest.raises(KinemaError, match=re.escape(words)):
                pipe("a red ball", **{"num_frames": 5, **kwargs})
    finally:
        del pipe.transformer.forward
    assert not calls
    two = pipe("a red ball", num_frames=5, num_videos_per_prompt=2, generator=[seeded(1), seeded(2)], expand=False)
    alone = pipe("a red ball", num_frames=5, generator=seeded(2), expand=False)
    assert np.array_equal(two.frames[1], alone.frames[0])  # one generator for each video, as in diffusers


def test_every_default_in_the_folder_is_kept_and_new_ones_survive(tmp_path, tiny_model_folder):
    folder = tiny_model_folder(tmp_path / "m", storyboard_guidance=7.5, anchor=0.5, seconds=2.0)
    index = json.loads((folder / "model_index.json").read_text())
    index["kinema"]["defaults"]["a_later_field"] = {"kept": True}  # written by a newer kinema
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = KinemaPipeline.from_pretrained(folder)
    assert (pipe.defaults.storyboard_guidance, pipe.defaults.anchor, pipe.defaults.seconds) == (7.5, 0.5, 2.0)
    pipe.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "model_index.json").read_text())["kinema"]["defaults"]
    assert again["a_later_field"] == {"kept": True} and again["anchor"] == 0.5


def test_diffusers_own_loader_reads_the_packaged_folder_offline_with_its_defaults(tmp_path):
    """DiffusionPipeline.from_pretrained(folder, trust_remote_code=True) imports KinemaPipeline through the folder's
    pipeline.py; every default of model_index.json arrives, as through KinemaPipeline.from_pretrained."""
    code = f"""
import json
from diffusers import DiffusionPipeline
from kinema import KinemaPipeline
ours = KinemaPipeline.from_pretrained({str(PACKAGED)!r})
for how in ({{}}, {{"custom_pipeline": {str(PACKAGED)!r}}}):
    theirs = DiffusionPipeline.from_pretrained({str(PACKAGED)!r}, trust_remote_code=True, **how)
    assert type(theirs) is KinemaPipeline, type(theirs)
    assert theirs.defaults == ours.defaults and theirs.flow == ours.flow and theirs.name == ours.name
print(json.dumps(ours.defaults.to_dict()))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HOME": str(tmp_path / "hf"), "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = run_bounded([sys.executable, "-c", code], timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    defaults = json.loads(result.stdout.strip().splitlines()[-1])
    assert defaults["storyboard_guidance"] == 8.0 and defaults["anchor"] == 1.0


def readme_python_api() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_python_api_snippet_runs(tmp_path):
    result = run_bounded([sys.executable, "-c", readme_python_api()], timeout=600, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    from kinema.media import read_video

    for name in ("ball.mp4", "ball.gif"):
        frames, fps = read_video(tmp_path / name)
        assert frames.shape == (33, 64, 64, 3) and fps == pytest.approx(8.0, abs=0.2), name
