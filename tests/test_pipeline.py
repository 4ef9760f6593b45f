"""KinemaPipeline end to end with tiny random models: every mode, shapes, reproducibility."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import random_pipeline
from kinema.errors import KinemaError
from kinema.inference.pipeline import KinemaPipeline
from kinema.models.dit import VideoDiT
from kinema.models.vae import VideoVAE


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline()


def clip(frames=9, height=32, width=48, value=0):
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode, kwargs, frames", [
    ("t2v", {}, 9),
    ("image", {}, 1),
    ("i2v", {"image": clip(1)[0]}, 9),
    ("extend_forward", {"video": clip(5)}, 13),
    ("extend_backward", {"video": clip(5)}, 13),
    ("loop", {}, 8),
    ("connect", {"video": clip(5), "video_end": clip(5, value=1)}, 17),
    ("edit", {"video": clip(9)}, 9),
])
def test_every_mode_runs_with_correct_shapes(pipe, mode, kwargs, frames):
    out = pipe("a red ball bounces", num_frames=frames, height=32, width=48, mode=mode,
               generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert out.shape == (1, frames, 32, 48, 3) and out.dtype == np.uint8


def test_same_seed_same_frames_and_different_seed_differs(pipe):
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return pipe("a blue box", num_frames=5, height=32, width=32, generator=generator).frames

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_batch_of_prompts_and_odd_latent_sizes(pipe):
    out = pipe(["a red ball", "a blue box"], num_frames=5, height=40, width=24).frames
    assert out.shape == (2, 5, 40, 24, 3)


def test_known_latents_stay_fixed(pipe):
    video = clip(5)
    latents = pipe("a red ball", num_frames=13, height=32, width=48, mode="extend_forward", video=video,
                   output_type="latent").frames
    encoded = pipe.encode_video(torch.from_numpy(video).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None])
    assert torch.equal(latents[:, :, :2], encoded)


def test_conditioning_items_are_the_modes_known_frames(pipe):
    """Each mode that keeps frames is a list of items: frames that open or close the video."""
    from kinema.inference.conditioning import ConditioningItem

    start, end = clip(5), clip(5, value=1)
    cases = [({"mode": "extend_forward", "video": start}, [ConditioningItem(start)]),
             ({"mode": "extend_backward", "video": start}, [ConditioningItem(start, "end")]),
             ({"mode": "connect", "video": start, "video_end": end},
              [ConditioningItem(start), ConditioningItem(end, "end")]),
             ({"mode": "i2v", "image": start[0]}, [ConditioningItem(start[0])])]
    for by_mode, items in cases:
        a = pipe("a red ball", num_frames=17, height=32, width=48, generator=torch.Generator().manual_seed(2),
                 **by_mode).frames
        b = pipe("a red ball", num_frames=17, height=32, width=48, generator=torch.Generator().manual_seed(2),
                 conditioning=items).frames
        assert np.array_equal(a, b), by_mode["mode"]
    with pytest.raises(KinemaError, match="conditioning"):
        pipe("a red ball", num_frames=16, mode="loop", conditioning=[ConditioningItem(start)])
    with pytest.raises(KinemaError, match="nothing to generate"):
        pipe("a red ball", num_frames=5, conditioning=[ConditioningItem(start)])


def test_save_load_round_trip(pipe, tmp_path, word_encoder):
    pipe.save_pretrained(tmp_path / "model")
    loaded = KinemaPipeline.from_pretrained(tmp_path / "model", text_encoder=word_encoder())
    g = torch.Generator
    a = pipe("a red ball", num_frames=5, height=32, width=32, generator=g().manual_seed(1)).frames
    b = loaded("a red ball", num_frames=5, height=32, width=32, generator=g().manual_seed(1)).frames
    assert np.array_equal(a, b)
    assert loaded.defaults.steps == 2 and loaded.weights_sha256


@pytest.mark.parametrize("kwargs, words", [
    ({"prompt": ""}, "empty"),
    ({"prompt": "x" * 5000}, "characters"),
    ({"prompt": "a", "height": 30}, "multiple of 8"),
    ({"prompt": "a", "width": 4096}, "at most"),
    ({"prompt": "a", "num_frames": 6}, "1 + 4k"),
    ({"prompt": "a", "num_frames": 0}, "num_frames"),
    ({"prompt": "a", "mode": "i2v"}, "needs an image"),
    ({"prompt": "a", "mode": "warp"}, "mode"),
    ({"prompt": "a", "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "a", "mode": "edit", "video": clip(5), "strength": 1.5, "num_frames": 5}, "strength"),
    ({"prompt": "a", "num_frames": 4097, "height": 1024, "width": 1024, "window": 64}, "tokens"),
    ({"prompt": "a", "num_frames": 9, "height": 1024, "width": 1024, "mode": "loop"}, "multiple of 4"),
])
def test_bad_requests_are_clear_errors(pipe, kwargs, words):
    with pytest.raises(KinemaError, match=re.escape(words)):
        pipe(**kwargs)


def test_missing_or_corrupt_model_folder(tmp_path):
    with pytest.raises(KinemaError, match="does not exist"):
        KinemaPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{not json")
    with pytest.raises(KinemaError, match="not valid JSON"):
        KinemaPipeline.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model_index.json").write_text("{}")
    with pytest.raises(KinemaError, match="transformer"):
        KinemaPipeline.from_pretrained(tmp_path / "m")


def test_the_fp16_copy_script_keeps_config_and_defaults(tmp_path, tiny_model_folder):
    import json
    import runpy
    import sys
    from pathlib import Path

    from safetensors import safe_open

    source = tiny_model_folder(tmp_path / "fp32", steps=7)
    argv = sys.argv
    sys.argv = ["pipeline_fp16.py", str(source), str(tmp_path / "fp16")]
    try:
        runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "pipeline_fp16.py"), run_name="__main__")
    finally:
        sys.argv = argv
    for part in ("transformer", "vae"):
        with safe_open(tmp_path / "fp16" / part / "diffusion_pytorch_model.safetensors", "pt") as stored:
            assert {stored.get_slice(key).get_dtype() for key in stored.keys()}  # noqa: SIM118 (a safetensors handle, not a dict) == {"F16"}, part
    copy = KinemaPipeline.from_pretrained(tmp_path / "fp16")
    assert copy.defaults.steps == 7
    original = KinemaPipeline.from_pretrained(source)
    for name, weight in original.transformer.state_dict().items():
        assert torch.equal(copy.transformer.state_dict()[name], weight.half().to(weight.dtype)), name
    assert json.loads((tmp_path / "fp16" / "model_index.json").read_text())["kinema"]["defaults"]["steps"] == 7
    assert "_name_or_path" not in (tmp_path / "fp16" / "transformer" / "config.json").read_text()


@pytest.mark.parametrize("mode, kwargs, frames", [
    ("t2v", {}, 9),
    ("extend_forward", {"video": clip(5, 40, 72)}, 13),
    ("loop", {}, 8),
])
def test_a_4x_vae_with_4x4_patches_pads_to_whole_patches(word_encoder, mode, kwargs, frames):
    """Any spatial compression and patch size: 72x40 pixels are 18x10 latents at 4x, padded to 20x12 for
    4x4 patches (5x3 tokens a frame), and the output has the asked size."""
    torch.manual_seed(0)
    vae = VideoVAE.from_name("tiny", base_dim=8, z_dim=4, patch_size=1)
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=32,
                   ffn_dim=64, text_dim=16, patch_size=(1, 4, 4))  # width 64 = 4 channels x 4 x 4
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.02)
    pipe4 = KinemaPipeline(dit.eval(), vae.eval(), text_encoder=word_encoder())
    pipe4.defaults.steps = 2
    assert vae.spatial_compression == 4
    assert pipe4.latent_grid(40, 72) == (10, 18, 12, 20) and pipe4.tokens_per_frame(40, 72) == 15
    seen = []
    forward = dit.forward
    dit.forward = lambda x, *a, **k: seen.append(tuple(x.shape[-2:])) or forward(x, *a, **k)
    out = pipe4("a red ball bounces", num_frames=frames, height=40, width=72, mode=mode,
                generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert out.shape == (1, frames, 40, 72, 3)
    assert set(seen) == {(12, 20)}
