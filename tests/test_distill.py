"""Few-step distillation (piecewise rectified flow): window targets, recording a teacher's passes, the student's
loss in both kinds of sampling, exact resume, the exported folder that --steps picks from, and a Wan transformer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.diffusion.distill import sample_points, window_boundaries, window_point
from kinema.errors import KinemaError
from kinema.inference.pipeline import KinemaPipeline
from kinema.models.dit import VideoDiT
from kinema.models.vae import VideoVAE
from kinema.train.distill import (
    DistillConfig,
    DistillDataConfig,
    DistillTask,
    RecordEntry,
    load_distill_config,
    record_trajectories,
    train_distill,
)
from kinema.train.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def teacher(word_encoder, sampler: str = "euler", transformer: VideoDiT | None = None) -> KinemaPipeline:
    """A tiny teacher with every layer carrying signal: 3 steps, windows of 5 latent frames (so that 4 s are made
    in windows with known frames), context noise for the "ar" sampler."""
    torch.manual_seed(0)
    if transformer is None:
        transformer = VideoDiT(in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2,
                               attention_head_dim=24, ffn_dim=64, text_dim=16)
        with torch.no_grad():
            for p in transformer.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.05)
    pipe = KinemaPipeline(transformer.eval(), VideoVAE.from_name("tiny", base_dim=8, z_dim=4).eval(),
                          text_encoder=word_encoder())
    pipe.defaults.steps, pipe.defaults.sampler, pipe.defaults.window = 3, sampler, 5
    pipe.defaults.ar_context_noise = 0.2
    return pipe


def benchmark_module(name: str):
    """A script of benchmarks/ as a module (they import their neighbours by file name)."""
    import importlib.util
    import sys

    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def config(out: Path, teacher_folder: Path | str = "unused", **changes) -> DistillConfig:
    """Two 1 s clips, a 4 s clip (two windows) and a 4 s clip of two shots, at 32x32."""
    data = DistillDataConfig(sizes=["32x32"], record=[RecordEntry(1.0, (1, 1), 2), RecordEntry(4.0, (1, 1), 1),
                                                      RecordEntry(4.0, (2, 2), 1)])
    train = TrainConfig(steps=4, batch_size=2, lr=1e-3, schedule="constant", save_every=2, log_every=1,
                        out_dir=out)
    return DistillConfig(**{"teacher": str(teacher_folder), "windows": 3, "data": data, "train": train, **changes})


def test_window_points_walk_the_straight_line_between_boundaries():
    states = torch.randn(2, 4, 3, 5, 2, 2)  # (B, K + 1, C, F', H, W)
    times = torch.tensor([[1.0, 0.8, 0.3, 0.0]] * 2)
    window = torch.tensor([[0, 0, 1, 2, 2], [1, 1, 1, 1, 1]])
    x, t, slope = window_point(states, times, window, torch.zeros(2, 5))
    assert torch.equal(x[0, :, 2], states[0, 1, :, 2]) and torch.equal(t[0], torch.tensor([1.0, 1.0, 0.8, 0.3, 0.3]))
    # One Euler step of the window's length along the slope lands on the window's end.
    end = x + slope * (times.gather(1, window + 1) - t)[:, None, :, None, None]
    assert torch.allclose(end[0, :, 3], states[0, 3, :, 3], atol=1e-6)
    assert torch.allclose(end[1], states[1, 2], atol=1e-6)
    x, t, _ = window_point(states, times, window, torch.full((2, 5), 0.5))
    assert torch.allclose(x[1], (states[1, 1] + states[1, 2]) / 2) and torch.allclose(t[1], torch.full((5,), 0.55))


def test_windows_cut_the_teacher_steps_evenly():
    assert window_boundaries(20, 4) == [0, 5, 10, 15, 20] and window_boundaries(3, 3) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="cannot be cut into 3 windows"):
        window_boundaries(20, 3)
    generator = torch.Generator().manual_seed(0)
    window, u = sample_points(3, 4, 4, generator, per_frame=False, boundary=1.0)
    assert (u == 0).all() and (window == window[:, :1]).all()  # one window a clip, at its start
    window, u = sample_points(64, 4, 4, generator, per_frame=True, boundary=0.0)
    assert (u > 0).all() and (window != window[:, :1]).any() and window.max() == 3


@pytest.mark.parametrize("sampler", ["euler", "ar"])
def test_the_teacher_fits_its_own_one_step_windows(tmp_path, word_encoder, sampler):
    """Recorded without guidance, one window a step, every training point at a window's start: the teacher's own
    velocity is each window's slope, so the loss of the teacher as its own student is zero. This holds for every
    pass recorded (a clip, windows with known and noised context frames, two shots with per-frame text) only if
    recording and the student's inputs reproduce what the sampler computed (frame by frame: the teacher-forcing
    layout equals the frame cache)."""
    pipe = teacher(word_encoder, sampler)
    cfg = config(tmp_path, teacher_guidance=1.0, boundary=1.0, holdout=1)
    folder = record_trajectories(cfg, pipe, tmp_path / "trajectories")
    task = DistillTask(cfg, pipe.transformer, folder, pipe.weights_sha256)
    kinds = {item[2] for item in task.source.items}
    assert kinds == {sampler} and len(task.source.items) + len(task.heldout.items) >= 6  # 2 clips, 2 + 2 windows
    # Its one-step windows sampled in as many steps reach its own videos (the held-out one here).
    assert task.evaluate(task.model.eval())["endpoint_error"] < 1e-5
    seen_known = seen_shots = False
    with torch.no_grad():
        for index in range(4):
            batch = task.batch(index, 0, 1)
            loss, _ = task.loss(task.model.eval(), batch)
            assert loss < 1e-9, (index, float(loss))
            seen_known |= bool(batch["known"].any())
            seen_shots |= batch["frame_text_index"] is not None
            # A student that is not the teacher does not fit: the test can fail.
            other = VideoDiT.from_config(task.model.config).eval()
            with torch.no_grad():
                for p in other.parameters():
                    p.normal_(0, 0.05)
            assert task.loss(other, batch)[0] > 1e-4
    assert seen_known and seen_shots


def test_recording_resumes_and_refuses_other_settings(tmp_path, word_encoder):
    pipe = teacher(word_encoder)
    cfg = config(tmp_path)
    folder = record_trajectories(cfg, pipe, tmp_path / "trajectories")
    files = sorted(folder.glob("*.safetensors"))
    assert [f.name for f in files] == ["000000.safetensors", "000001.safetensors", "000002.safetensors",
                                       "000003.safetensors"]
    stamps = [f.stat().st_mtime_ns for f in files]
    files[2].unlink()
    record_trajectories(cfg, pipe, folder)  # only the missing one is made again
    assert [f.stat().st_mtime_ns for f in sorted(folder.glob("*.safetensors"))][:2] == stamps[:2]
    moved = config(tmp_path)
    moved.data.seed = 5
    with pytest.raises(KinemaError, match="another generation than the config plans"):
        record_trajectories(moved, pipe, folder)
    other = config(tmp_path, windows=1)
    with pytest.raises(KinemaError, match="recorded for 3 windows"):
        DistillTask(other, pipe.transformer, folder, pipe.weights_sha256)
    (folder / "000001.safetensors").write_bytes(b"not a file")
    with pytest.raises(KinemaError, match="corrupt trajectory file"):
        DistillTask(cfg, pipe.transformer, folder, pipe.weights_sha256)


def test_the_student_learns_the_teachers_videos_in_fewer_steps(tmp_path, word_encoder):
    """Distilled from a guided 6-step teacher into 2 steps on its own trajectories, the student's 2 unguided steps
    from a recorded trajectory's noise land nearer the teacher's video than the teacher's own 2 guided steps do."""
    pipe = teacher(word_encoder)
    pipe.defaults.steps, pipe.defaults.guidance_scale = 6, 3.0
    cfg = config(tmp_path, windows=2, boundary=1.0)
    cfg.data.record = [RecordEntry(1.0, (1, 1), 2)]
    cfg.train.steps, cfg.train.lr, cfg.train.ema_decay = 120, 3e-3, 0.0
    record_trajectories(cfg, pipe, tmp_path / "trajectories")
    task = DistillTask(cfg, pipe.transformer, tmp_path / "trajectories", pipe.weights_sha256)
    from safetensors.torch import load_file

    from kinema.train.distill import generations
    from kinema.train.loop import Trainer

    Trainer(task, cfg.train).fit()
    pipe.few_step_model = task.model.eval()
    with torch.no_grad():
        for generation in generations(cfg, pipe.defaults.fps):
            path = tmp_path / "trajectories" / f"{generation.index:06d}.safetensors"
            states = load_file(path)["0.states"]  # (K + 1, C, F', H, W): one pass a 1 s clip
            noise, target = states[None, 0], states[None, -1]
            cond, uncond = pipe.encode_text(generation.texts, [""])
            coarse = pipe.denoise(noise, None, None, cond, uncond, 2, 3.0, 1.0, 1.0, "euler", None)
            fast = pipe.denoise(noise, None, None, cond, uncond, 2, 1.0, 1.0, 1.0, "euler", None, few_step=True)
            assert (fast - target).abs().mean() < 0.25 * (coarse - target).abs().mean()


def test_train_resume_and_export_a_folder_that_steps_pick_from(tmp_path, word_encoder):
    pipe = teacher(word_encoder)
    pipe.save_pretrained(tmp_path / "teacher")
    straight = config(tmp_path / "a", tmp_path / "teacher")
    summary = train_distill(straight, text_encoder=word_encoder())
    assert summary.step == 4 and summary.skipped_steps == 0
    half = config(tmp_path / "b", tmp_path / "teacher")
    half.train.steps = 2
    train_distill(half, text_encoder=word_encoder())
    resumed = train_distill(config(tmp_path / "b", tmp_path / "teacher"), resume=True, text_encoder=word_encoder())
    assert resumed.step == 4

    def losses(out: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert losses(tmp_path / "a") == losses(tmp_path / "b")

    folder = tmp_path / "a" / "pipeline"
    index = json.loads((folder / "model_index.json").read_text())
    few = index["kinema"]["defaults"]["few_step"]
    assert few["steps"] == few["max_steps"] == 3 and few["guidance_scale"] == 1.0
    assert few["distilled_from"]["teacher_steps"] == 3 and (folder / "transformer_few_step" / "config.json").is_file()
    loaded = KinemaPipeline.from_pretrained(folder, text_encoder=word_encoder())
    from kinema.train.checkpoint import load_latest_checkpoint

    ema = load_latest_checkpoint(tmp_path / "a").ema
    state = loaded.few_step_transformer.state_dict()
    assert all(torch.equal(state[k], v.half().float()) for k, v in ema.items())  # the student's EMA, in fp16
    assert loaded.few_step_sha256 and loaded.few_step_sha256 != loaded.weights_sha256

    def latents(steps: int | None) -> torch.Tensor:
        return loaded("a red ball", num_frames=5, height=32, width=32, num_inference_steps=steps, expand=False,
                      generator=torch.Generator().manual_seed(1), output_type="latent").frames

    noise = torch.randn((1, 4, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    cond, uncond = loaded.encode_text(["a red ball"], [""])
    by_student = loaded.denoise(noise, None, None, cond, uncond, 2, 1.0, 1.0, loaded.flow.base_shift, "euler", None,
                                few_step=True)
    by_teacher = loaded.denoise(noise, None, None, cond, uncond, 4, loaded.defaults.guidance_scale, 1.0,
                                loaded.flow.base_shift, "euler", None)
    by_default = loaded.denoise(noise, None, None, cond, uncond, 3, loaded.defaults.guidance_scale, 1.0,
                                loaded.flow.base_shift, "euler", None)
    assert torch.allclose(latents(2), by_student, atol=1e-6)  # 2 <= max_steps: the student, one pass a step
    assert torch.allclose(latents(4), by_teacher, atol=1e-6)  # more: the teacher with its guidance
    assert torch.allclose(latents(None), by_default, atol=1e-6)  # no steps asked: the teacher (default: false)


def test_few_step_declarations_are_checked(tmp_path, word_encoder):
    pipe = teacher(word_encoder)
    pipe.save_pretrained(tmp_path / "m")
    index_file = tmp_path / "m" / "model_index.json"
    index = json.loads(index_file.read_text())
    index["kinema"]["defaults"]["few_step"] = {"transformer": "transformer_few_step", "steps": 2, "max_steps": 2}
    index_file.write_text(json.dumps(index))
    with pytest.raises(KinemaError, match="does not hold") as error:
        KinemaPipeline.from_pretrained(tmp_path / "m")
    assert "\n" not in str(error.value)
    index["kinema"]["defaults"]["few_step"] = {"steps": 5, "max_steps": 4}
    index_file.write_text(json.dumps(index))
    with pytest.raises(KinemaError, match="steps 5"):
        KinemaPipeline.from_pretrained(tmp_path / "m")
    index["kinema"]["defaults"]["few_step"] = {"stepz": 2}
    index_file.write_text(json.dumps(index))
    with pytest.raises(KinemaError, match="unknown key"):
        KinemaPipeline.from_pretrained(tmp_path / "m")


def test_the_distillation_step_runs_on_a_tiny_wan_transformer(tmp_path, word_encoder):
    """A tiny random WanTransformer3DModel folder (diffusers' class, save_pretrained), loaded into VideoDiT as the
    teacher: recording and a training step of the student run, and the student's weights move."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=4,
                                out_channels=4, text_dim=16, freq_dim=256, ffn_dim=64, num_layers=2,
                                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    with torch.no_grad():
        for tensor in wan.state_dict().values():
            tensor.normal_(0.0, 0.05)
    wan.save_pretrained(tmp_path / "wan")
    module = benchmark_module("bench_dit")
    loaded = WanTransformer3DModel.from_pretrained(tmp_path / "wan")
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=24,
                   ffn_dim=64, text_dim=16)
    dit.load_state_dict(module.rename_wan_transformer_keys(loaded.state_dict()), strict=True)
    pipe = teacher(word_encoder, transformer=dit)
    cfg = config(tmp_path / "run")
    cfg.data.record = [RecordEntry(1.0, (1, 1), 1), RecordEntry(4.0, (1, 1), 1)]
    folder = record_trajectories(cfg, pipe, tmp_path / "trajectories")
    task = DistillTask(cfg, pipe.transformer, folder, pipe.weights_sha256)
    before = [p.detach().clone() for p in task.model.parameters()]
    from kinema.train.loop import Trainer

    summary = Trainer(task, TrainConfig(steps=2, batch_size=2, lr=1e-3, out_dir=tmp_path / "out")).fit()
    assert summary.step == 2 and summary.skipped_steps == 0 and np.isfinite(summary.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters()))


def test_the_shipped_distill_config_parses_and_bad_ones_are_one_line_errors(tmp_path):
    cfg = load_distill_config(ROOT / "configs" / "distill" / "kinema-tiny.yaml")
    assert cfg.windows >= 1 and cfg.train.steps > 0 and sum(e.count for e in cfg.data.record) > 0
    window_boundaries(cfg.teacher_steps or 20, cfg.windows)
    bad = tmp_path / "bad.yaml"
    for text, words in (("windows: 0", "windows must be >= 1"), ("teacher_steps: 10\nwindows: 4", "cannot be cut"),
                        ("data: {sizes: [65x64]}", "multiples of 8"), ("boundary: 2", "boundary must be in"),
                        ("data: {record: [{seconds: 4, count: 0}]}", "at least one generation")):
        bad.write_text(text)
        with pytest.raises(KinemaError, match=words) as error:
            load_distill_config(bad)
        assert "\n" not in str(error.value)


def test_distill_command_line(tmp_path, tiny_model_folder):
    """`kinema train distill` on a packaged-layout folder: records, trains, exports; then generate picks the
    student with --steps; a bad config is a one-line error and exit 2."""
    import sys

    from conftest import run_bounded

    def run(*args: str):
        return run_bounded([sys.executable, "-m", "kinema.cli", *args], timeout=300)

    teacher_folder = tiny_model_folder(tmp_path / "teacher", steps=2)
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(f"teacher: {teacher_folder}\nwindows: 2\n"
                   f"data: {{sizes: [32x32], record: [{{seconds: 1, count: 2}}]}}\n"
                   f"train: {{steps: 2, batch_size: 2, out_dir: {tmp_path / 'run'}}}\n")
    result = run("train", "distill", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and (tmp_path / "run" / "pipeline" / "transformer_few_step").is_dir()
    out = tmp_path / "x.mp4"
    result = run("generate", "a red ball", "--model", str(tmp_path / "run" / "pipeline"), "--steps", "2",
                 "--seconds", "1", "--size", "32x32", "-o", str(out))
    assert result.returncode == 0, result.stderr
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["few_step"] is True and metadata["guidance"] == 1.0 and metadata["few_step_sha256"]
    result = run("train", "distill", "--config", str(cfg), "windows=0")
    assert result.returncode == 2 and "windows must be >= 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_suite_runs_are_compared_on_the_clips_both_made_with_the_references_noise():
    """compare_eval sets a student's run against the teacher's: only the clips both made (a --limit run against a
    full one), the band 2 standard errors of the reference's per-sample means, a drop beyond it flagged."""
    compare = benchmark_module("compare_eval").compare

    def report(scores: dict[str, float]) -> dict:
        return {"clips": [{"file": name, "scores": {"attributes": value}} for name, value in scores.items()]}

    # Three samples of two prompts; sample means 0.6, 0.7, 0.8 -> std 0.1, band 2 * 0.1 / sqrt(3) = 0.1155.
    teacher_run = report({"0000.mp4": 0.5, "0001.mp4": 0.7, "0000-1.mp4": 0.6, "0001-1.mp4": 0.8,
                          "0000-2.mp4": 0.7, "0001-2.mp4": 0.9})
    close = report({"0000.mp4": 0.45, "0001.mp4": 0.7, "0000-1.mp4": 0.6, "0001-1.mp4": 0.8, "0000-2.mp4": 0.7,
                    "0001-2.mp4": 0.8})
    [line] = compare(teacher_run, close)
    assert line["noise_band"] == pytest.approx(0.1155, abs=1e-4) and line["within_noise"]
    assert line["difference"] == pytest.approx(-0.025, abs=1e-4)
    far = report({name: 0.4 for name in ("0000.mp4", "0001.mp4", "0000-1.mp4", "0001-1.mp4", "0000-2.mp4",
                                         "0001-2.mp4")})
    assert not compare(teacher_run, far)[0]["within_noise"]
    # A run of the first prompt alone is compared with the reference's first prompt alone.
    [line] = compare(teacher_run, report({"0000.mp4": 0.5, "0000-1.mp4": 0.6, "0000-2.mp4": 0.7}))
    assert line["reference"] == pytest.approx(0.6) and line["clips"] == [3, 3] and line["difference"] == 0
