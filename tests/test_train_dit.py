"""The DiT training task end to end on minuscule models: a latent cache, training from it (the loss
falls on a tiny set), exact resume, export as a pipeline folder that generates, and a prompt suite
scored on what that folder makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.errors import KinemaError

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64, "in_channels": 4,
         "out_channels": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def small_vae(tmp_path_factory) -> Path:
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vae") / "vae"
    VideoVAE.from_name("tiny", base_dim=8, z_dim=4).save_pretrained(folder)
    return folder


def dit_config(tmp_path: Path, vae: Path, *overrides: str):
    from kinema.train.dit import load_dit_config

    return load_dit_config(ROOT / "configs" / "dit" / "tiny.yaml", [
        f"model={json.dumps(MODEL)}", f"vae={vae}", "data.sizes=[32x32]", "data.frames=9", "data.latent_cache=[]",
        "train.batch_size=2", "train.steps=4", "train.save_every=2", "train.log_every=1", "train.warmup_steps=0",
        f"train.out_dir={tmp_path / 'run'}", *overrides])


def losses(out_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def test_cache_train_resume_export_generate_and_score(tmp_path, small_vae):
    from kinema.data.latents import LatentSource
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.inference.suite import load_suite, run_suite
    from kinema.train.dit import cache_training_latents, export_pipeline, train_dit

    base = dit_config(tmp_path, small_vae)
    index = cache_training_latents(base, tmp_path / "cache", clips=4)
    cache = LatentSource(index.parent)
    assert len(cache) == 4 and cache.batch(0, 2)["latents"].shape == (2, 4, 3, 4, 4)
    assert cache.batch(0, 2)["latents"].dtype == torch.float16

    # From the cache: 4 steps straight, and 2 + resume 2 (a constant schedule, so that stopping at
    # step 2 is the same run); identical losses.
    cached = (f"data.latent_cache=[{index.parent}]", "train.schedule=constant")
    straight = dit_config(tmp_path / "a", small_vae, *cached)
    summary = train_dit(straight)
    assert summary.step == 4 and summary.skipped_steps == 0
    train_dit(dit_config(tmp_path / "b", small_vae, *cached, "train.steps=2"))
    resumed = train_dit(dit_config(tmp_path / "b", small_vae, *cached), resume=True)
    assert resumed.step == 4
    assert losses(tmp_path / "a" / "run") == losses(tmp_path / "b" / "run")

    folder, step = export_pipeline(straight, tmp_path / "model", dtype=torch.float32)
    assert step == 4 and (folder / "model_index.json").is_file()
    pipe = KinemaPipeline.from_pretrained(folder)
    from kinema.train.checkpoint import load_latest_checkpoint

    ema = load_latest_checkpoint(tmp_path / "a" / "run").ema
    state = pipe.transformer.state_dict()
    assert ema and all(torch.equal(state[k], v) for k, v in ema.items())  # the exported weights are the EMA's
    out = pipe("a red ball", num_frames=5, height=32, width=32, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 5, 32, 32, 3) and out.frames.dtype == np.uint8

    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text("name: mini\ndefaults: {seconds: 1, size: 32x32, steps: 2}\nprompts:\n"
                          "  - a small red ball is thrown to the right on sand at dusk\n"
                          "  - {prompt: a big blue box rests on the ground, seed: 9}\n")
    suite = load_suite(suite_file)
    assert [item.settings["seed"] for item in suite.items] == [0, 9]
    report = run_suite(suite, pipe, tmp_path / "eval", progress=False)
    assert [c["file"] for c in report["clips"]] == ["0000.mp4", "0001.mp4"]
    assert report["summary"]["clips"] == 2.0 and all(c["generate_seconds"] is not None for c in report["clips"])
    targets = report["clip_targets"]
    assert targets["attributes"]["clips"] == 2 and targets["attributes"]["target"] == 0.95
    assert targets["attributes"]["value"] == report["summary"]["attributes"]
    again = run_suite(suite, pipe, tmp_path / "eval", progress=False)  # reuses the videos, same scores
    assert all(c["generate_seconds"] is None for c in again["clips"])
    assert [c["scores"] for c in again["clips"]] == [c["scores"] for c in report["clips"]]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["suite"] == "mini"
    # Two videos per prompt: the first at the prompt's seed (the same videos as above), the second at its own.
    twice = run_suite(suite, pipe, tmp_path / "eval2", progress=False, samples=2)
    assert [c["file"] for c in twice["clips"]] == ["0000.mp4", "0000-1.mp4", "0001.mp4", "0001-1.mp4"]
    assert [c["seed"] for c in twice["clips"]] == [0, 100_000, 9, 100_009]
    assert [twice["clips"][i]["scores"] for i in (0, 2)] == [c["scores"] for c in report["clips"]]
    assert twice["summary"]["clips"] == 4.0 and twice["samples"] == 2
    with pytest.raises(KinemaError, match="samples must be an integer"):
        run_suite(suite, pipe, tmp_path / "eval3", progress=False, samples=0)


def test_the_loss_falls_on_a_tiny_set(tmp_path, small_vae):
    from kinema.train.dit import cache_training_latents, train_dit

    base = dit_config(tmp_path, small_vae)
    index = cache_training_latents(base, tmp_path / "cache", clips=2)
    config = dit_config(tmp_path, small_vae, f"data.latent_cache=[{index.parent}]", "train.steps=60",
                        "train.save_every=60", "train.lr=3e-3", "caption_dropout=0.0")
    train_dit(config)
    values = losses(tmp_path / "run")
    assert len(values) == 60
    assert np.mean(values[-15:]) < 0.8 * np.mean(values[:15]), (np.mean(values[:15]), np.mean(values[-15:]))


def test_expectations_come_from_the_prompt_words():
    from kinema.inference.suite import expectation_from_prompt

    expected = expectation_from_prompt("A close-up at dusk on sand: a big heavy red cube is thrown to the left.",
                                       frames=33, fps=8.0)
    assert (expected["sky"], expected["ground"]) == ("dusk", "sand")
    assert expected["objects"] == [{"color": "red", "shape": "box", "size": "large", "material": "heavy",
                                    "paint": None, "action": "thrown_left"}]
    assert expected["shots"] == [{"start": 0, "end": 33, "framing": "closeup", "subject": 0}]


@pytest.mark.parametrize("text, words", [
    ("prompts: []\n", "non-empty list"),
    ("prompts:\n  - {prompt: ''}\n", "prompt 0"),
    ("prompts:\n  - {prompt: a ball, colour: red}\n", "unknown key(s) colour"),
    ("defaults: {speed: 2}\nprompts: [a ball]\n", "unknown default(s) speed"),
    ("name: x\nextra: 1\nprompts: [a ball]\n", "unknown key(s) extra"),
    ("prompts: [a ball\n", "not valid YAML"),
])
def test_bad_suites_are_one_line_errors(tmp_path, text, words):
    from kinema.inference.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(KinemaError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        load_suite(path)
    assert "\n" not in str(info.value)


def test_shipped_suites_parse_and_cover_the_vocabulary():
    from kinema.inference.suite import expectation_from_prompt, load_suite
    from kinema.world.caption import VOCAB

    suite = load_suite(ROOT / "configs" / "eval" / "basic.yaml")
    assert len(suite.items) >= 50
    seen: dict[str, set] = {key: set() for key in ("color", "shape", "size", "material", "action", "sky", "ground")}
    for item in suite.items:
        expected = expectation_from_prompt(item.prompt, 33, 8.0)
        assert expected["objects"], item.prompt
        for key in ("sky", "ground"):
            seen[key].add(expected[key])
        for obj in expected["objects"]:
            for key in ("color", "shape", "size", "material", "action"):
                seen[key].add(obj[key])
    for key, values in seen.items():
        missing = set(VOCAB[key]) - values - ({"thrown_in"} if key == "action" else set())
        assert not missing, (key, missing)


def test_cache_latents_command_rejects_bad_counts(tmp_path, small_vae):
    from kinema.train.dit import cache_training_latents

    with pytest.raises(KinemaError, match="clips"):
        cache_training_latents(dit_config(tmp_path, small_vae), tmp_path / "c", clips=0)


def test_memory_windows_match_what_long_generation_conditions_on():
    from kinema.train.dit import sample_memory_window

    generator = torch.Generator().manual_seed(0)
    seen_second_memory = seen_gap = False
    for latent_frames in (6, 9, 13) * 40:
        keep, known = sample_memory_window(latent_frames, generator)
        assert keep[0] == 0 and keep == sorted(set(keep)) and keep[-1] == latent_frames - 1
        jumps = np.diff(keep).tolist()
        split = max(i for i, j in enumerate(jumps) if j > 1) + 1  # memory frames, a gap, then a contiguous run
        memory, run = keep[:split], keep[split:]
        assert run == list(range(run[0], latent_frames)) and len(run) >= 2
        assert 1 <= len(memory) <= 2 and 1 <= known - len(memory) <= 3 and known < len(keep)
        seen_second_memory |= len(memory) == 2
        seen_gap |= run[0] - memory[-1] > 2
    assert seen_second_memory and seen_gap


def test_memory_window_batches_know_memory_and_context_only(tmp_path, small_vae):
    from kinema.train.dit import DiTTask, cache_training_latents

    base = dit_config(tmp_path, small_vae, "data.frames=25")
    index = cache_training_latents(base, tmp_path / "cache", clips=2)
    task = DiTTask(dit_config(tmp_path, small_vae, "data.frames=25", f"data.latent_cache=[{index.parent}]",
                              "memory_windows=1.0"))
    for step in range(4):
        batch = task.batch(step, 0, 1)
        known, t = batch["known"], batch["t"]
        frames = batch["latents"].shape[2]
        assert frames < 7 and known.shape == (2, frames)  # 7 latent frames, cut down to a window
        count = int(known[0].sum())
        assert (known[:, :count].all() and not known[:, count:].any()), "known frames lead the window"
        assert (t[known] == 0).all() and (t[~known] > 0).all()


def test_streamed_mix_with_workers_prefetch_and_repeat(tmp_path, small_vae):
    from kinema.train.dit import DiTTask

    mix = '[{frames: 9, shots: [1, 1], weight: 1}, {frames: 17, shots: [2, 2], weight: 1}]'
    task = DiTTask(dit_config(tmp_path, small_vae, f"data.mix={mix}", "data.workers=2", "data.prefetch=2",
                              "data.repeat=2", "shot_captions=1.0", "caption_dropout=0.0"))
    try:
        frames, previous = {}, None
        for step in range(8):
            batch = task.batch(step, 0, 1)
            frames.setdefault(task.source.source_for(step // 2), set()).add(batch["latents"].shape[2])
            if step % 2:  # the second use of a rendered batch: same latents, fresh noise
                assert torch.equal(batch["latents"], previous["latents"])
                assert not torch.equal(batch["noise"], previous["noise"])
            previous = batch
        assert frames.get(0, {3}) == {3} and frames.get(1, {5}) == {5} and len(frames) == 2
        two_shot = next(step for step in range(8) if task.source.source_for(step // 2) == 1)
        index = task.batch(two_shot, 0, 1)["frame_text_index"]
        assert index.max() == 1  # two shots: two caption sequences per clip
    finally:
        task.source.close()


def test_streamed_mix_config_errors(tmp_path, small_vae):
    from kinema.config import ConfigError

    for override, words in (("data.mix=[{frames: 10}]", "1 + 4k"), ("data.mix=[{weight: 0}]", "positive sum"),
                            ("data.repeat=0", "repeat"), ("data.workers=-1", "workers")):
        with pytest.raises(ConfigError) as error:
            dit_config(tmp_path, small_vae, override)
        assert words in str(error.value) and "\n" not in str(error.value)


def saved_random_dit(folder: Path, **options):
    """A VideoDiT with every weight drawn at random (none left at zero), saved to ``folder``."""
    from kinema.models.dit import VideoDiT

    torch.manual_seed(0)
    model = VideoDiT(**options)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.save_pretrained(folder)
    return model


def test_model_name_with_overrides_and_partial_init(tmp_path):
    from kinema.models.dit import VideoDiT
    from kinema.train.dit import build_dit, load_init

    model = build_dit({"name": "tiny", "patch_size": [1, 4, 4], "attention_head_dim": 64, "num_layers": 2})
    assert tuple(model.config.patch_size) == (1, 4, 4) and model.config.num_layers == 2
    assert model.config.ffn_dim == 768  # the rest from `tiny`
    with pytest.raises(KinemaError, match=r"model\.name"):
        build_dit({"name": "huge"})

    two_channels = {**MODEL, "in_channels": 2, "out_channels": 2}  # width 32: 2 channels x 4 x 4 fit exactly
    source = saved_random_dit(tmp_path / "init", **two_channels)
    target = VideoDiT(**{**two_channels, "patch_size": (1, 4, 4)})
    fresh_before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(KinemaError, match="init_partial"):
        load_init(target, str(tmp_path / "init"))
    assert all(torch.equal(v, fresh_before[k]) for k, v in target.state_dict().items())  # nothing half-loaded
    fresh = load_init(target, str(tmp_path / "init"), partial=True)
    assert sorted(fresh) == ["final.proj_out.bias", "final.proj_out.weight", "patch_embedding.weight"]
    for key, value in target.state_dict().items():
        expected = fresh_before[key] if key in fresh else source.state_dict()[key]
        assert torch.equal(value, expected), key
    with pytest.raises(KinemaError, match="architecture"):
        load_init(VideoDiT(**{**two_channels, "num_layers": 2}), str(tmp_path / "init"), partial=True)


def test_init_with_smaller_patches_converts_the_patch_layers(tmp_path):
    """From 2x2 patches to 1x1: a cell embeds as the 2x2 patch that repeats it, and predicts the mean of what
    the 2x2 patch predicted for its four copies; with rope_spatial_scale 0.5 row 2k sits where row k did."""
    import torch.nn.functional as F

    from kinema.models.dit import VideoDiT
    from kinema.train.dit import load_init

    source = saved_random_dit(tmp_path / "init", **MODEL)
    target = VideoDiT(**{**MODEL, "patch_size": (1, 1, 1), "rope_spatial_scale": 0.5})
    with pytest.raises(KinemaError, match="init_partial"):
        load_init(target, str(tmp_path / "init"))
    assert load_init(target, str(tmp_path / "init"), partial=True) == []
    for key, value in target.state_dict().items():
        if not key.startswith(("patch_embedding.weight", "final.proj_out")):
            assert torch.equal(value, source.state_dict()[key]), key
    channels = MODEL.get("in_channels", 16)
    x = torch.randn(2, channels, 3, 4, 6)
    upsampled = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
    assert torch.allclose(target.patchify(x), source.patchify(upsampled), atol=1e-4)
    hidden = torch.randn(2, 3 * 4 * 6, source.final.proj_out.in_features)
    old = source.unpatchify(F.linear(hidden, source.final.proj_out.weight, source.final.proj_out.bias), 3, 8, 12)
    new = target.unpatchify(F.linear(hidden, target.final.proj_out.weight, target.final.proj_out.bias), 3, 4, 6)
    assert torch.allclose(new, F.avg_pool3d(old, (1, 2, 2)), atol=1e-4)
    half, whole = target.rope(1, 8, 1, "cpu"), source.rope(1, 4, 1, "cpu")
    assert torch.allclose(half[::2], whole, atol=1e-6) and not torch.allclose(half[1], whole[1], atol=1e-3)
    with pytest.raises(KinemaError, match="rope_spatial_scale"):
        VideoDiT(**{**MODEL, "rope_spatial_scale": 0.0})


def test_memoized_text_states_match_plain_encoding(monkeypatch):
    from kinema.models.text import TextEncoder

    encoder = TextEncoder.default()
    texts = ["a red ball is thrown to the right", "", "a red ball is thrown to the right",
             "a small blue cube rolls to the left on the grass under a grey sky"]
    plain, plain_mask = encoder.encode(texts)
    memo, memo_mask = encoder.encode_memoized(texts)
    assert torch.equal(memo_mask, plain_mask) and memo.shape == plain.shape
    torch.testing.assert_close(memo, plain, rtol=0, atol=1e-5)
    assert len(encoder._memo) == 3

    def no_model(*args, **kwargs):
        raise AssertionError("a remembered text was encoded again")

    with monkeypatch.context() as patch:  # every text is remembered: the encoder is not run
        patch.setattr(encoder, "encode", no_model)
        again, _ = encoder.encode_memoized(texts[::-1])
    torch.testing.assert_close(again, memo.flip(0), rtol=0, atol=0)

    states, mask = encoder.encode_memoized(["a green ball", "a red ball is thrown to the right"], limit=3)
    assert len(encoder._memo) == 2  # 3 + 1 new would pass the limit: the memo started again
    assert states.shape[0] == 2 and mask[1].sum() == plain_mask[0].sum()


def test_teacher_forcing_batches_train_every_frame_after_clean_ones(tmp_path, small_vae):
    """With teacher_forcing 1, every batch carries lightly noised clean copies (flow time within the configured
    context noise) and fully independent times for the noisy copies; the loss is finite and falls on a tiny set;
    an export carries the sampling defaults the config names (the "ar" sampler)."""
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.train.dit import DiTTask, cache_training_latents, export_pipeline, train_dit

    base = dit_config(tmp_path, small_vae)
    index = cache_training_latents(base, tmp_path / "cache", clips=2)
    overrides = (f"data.latent_cache=[{index.parent}]", "teacher_forcing=1.0", "teacher_forcing_context_noise=0.05",
                 "caption_dropout=0.0", "memory_windows=0.0")
    task = DiTTask(dit_config(tmp_path, small_vae, *overrides))
    batch = task.batch(0, 0, 1)
    assert batch["context_t"].shape == batch["t"].shape == (2, 3)
    assert (batch["context_t"] <= 0.05).all() and (batch["t"] > 0).all()
    assert len(set(batch["t"][0].tolist())) == 3  # each frame its own time
    loss, logs = task.loss(task.model, batch)
    assert torch.isfinite(loss) and float(logs["teacher_forcing"]) == 1.0

    config = dit_config(tmp_path, small_vae, *overrides, "train.steps=60", "train.save_every=60", "train.lr=3e-3",
                        "sampling={sampler: ar, ar_context_noise: 0.05}")
    train_dit(config)
    values = losses(tmp_path / "run")
    assert np.mean(values[-15:]) < 0.8 * np.mean(values[:15]), (np.mean(values[:15]), np.mean(values[-15:]))
    folder, _ = export_pipeline(config, tmp_path / "pipe")
    pipe = KinemaPipeline.from_pretrained(folder)
    assert pipe.defaults.sampler == "ar" and pipe.defaults.ar_context_noise == 0.05


def test_causal_attention_joint_batches_do_not_see_later_frames(tmp_path, small_vae, monkeypatch):
    from kinema.train.dit import DiTTask, cache_training_latents

    base = dit_config(tmp_path, small_vae)
    index = cache_training_latents(base, tmp_path / "cache", clips=2)
    task = DiTTask(dit_config(tmp_path, small_vae, f"data.latent_cache=[{index.parent}]", "causal_attention=true"))
    seen = []
    forward = task.model.forward
    monkeypatch.setattr(task.model, "forward",
                        lambda *a, **k: seen.append(k.get("attention_frames")) or forward(*a, **k))
    task.loss(task.model, task.batch(0, 0, 1))
    assert seen and torch.equal(seen[0], torch.ones(3, 3, dtype=torch.bool).tril())


def test_data_framings_choose_the_shots_the_world_renders(tmp_path, small_vae):
    from kinema.train.dit import world_source
    from kinema.world.scene import sample_scene

    config = dit_config(tmp_path, small_vae, "data.frames=33", "data.shots=[2,3]", "data.framings=[wide,closeup]")
    source = world_source(config.data)
    seen = {shot.framing for i in range(12) for shot in sample_scene(i, source.options).shots}
    assert seen == {"wide", "closeup"}
    everything = world_source(dit_config(tmp_path, small_vae, "data.frames=33", "data.shots=[2,3]").data)
    assert {shot.framing for i in range(12) for shot in sample_scene(i, everything.options).shots} > seen
    with pytest.raises(KinemaError, match="framings must list some of wide, medium, closeup, pan"):
        dit_config(tmp_path, small_vae, "data.framings=[wide,zoom]")


def test_the_shipped_config_exports_the_shipped_sampling_defaults():
    """Retraining the default model with its own config must not lose a sampling default the shipped folder holds
    (the long-video anchor and storyboard guidance): an export writes the config's `sampling:` section."""
    from kinema.train.dit import export_defaults, load_dit_config

    root = Path(__file__).resolve().parents[1]
    shipped = json.loads((root / "src/kinema/weights/kinema-tiny/model_index.json").read_text())["kinema"]["defaults"]
    config = load_dit_config(root / "configs/dit/tiny.yaml")
    exported = export_defaults(config).to_dict()
    assert {key: exported.get(key) for key in shipped} == shipped
