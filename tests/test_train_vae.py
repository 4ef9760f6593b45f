"""The VAE training task: a minuscule run end to end (configs/vae/test.yaml), exact resume, the
exported diffusers folder, SSIM/PSNR, and one-line errors for bad configs and commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kinema.cli import main as kinema_main
from kinema.errors import ConfigError, KinemaError
from kinema.train import checkpoint as checkpoint_module
from kinema.train.checkpoint import latest_checkpoint, load_checkpoint
from kinema.train.vae import HELD_OUT_SEED_OFFSET, VAETask, load_vae_config, ssim, train_vae, video_psnr_ssim

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "configs" / "vae" / "test.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def config(out_dir: Path, *overrides: str):
    return load_vae_config(TEST_CONFIG, [f"train.out_dir={out_dir}", *overrides])


def metric_lines(out_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "samples_per_s"} for line in lines]


def test_vae_training_runs_resumes_exactly_and_exports_the_ema_weights(tmp_path, monkeypatch):
    from kinema.models.vae import VideoVAE

    straight = tmp_path / "straight"
    summary = train_vae(config(straight))
    assert summary.step == 6 and summary.skipped_steps == 0
    lines = metric_lines(straight)
    assert {"loss", "l1", "mse", "kl", "lr", "grad_norm"} <= lines[0].keys()
    evals = [line for line in lines if "eval/psnr" in line]
    assert [line["step"] for line in evals] == [3, 6] and 0 < evals[-1]["eval/ssim"] <= 1
    assert summary.metrics["psnr"] == pytest.approx(evals[-1]["eval/psnr"])

    # Killed inside the second save, then resumed: the same losses and bit-identical weights.
    class Killed(Exception):
        pass

    real_publish = checkpoint_module._publish

    def publish(temp, final):
        if final.name == "step_00000006":
            raise Killed
        real_publish(temp, final)

    broken = tmp_path / "broken"
    monkeypatch.setattr(checkpoint_module, "_publish", publish)
    with pytest.raises(Killed):
        train_vae(config(broken))
    monkeypatch.undo()
    train_vae(config(broken), resume=True)
    assert metric_lines(broken) == lines
    done, expected = load_checkpoint(latest_checkpoint(broken)), load_checkpoint(latest_checkpoint(straight))
    for name, tensor in expected.model.items():
        assert torch.equal(done.model[name], tensor), name
    for name, tensor in expected.ema.items():
        assert torch.equal(done.ema[name], tensor), name

    # The exported folder holds the EMA weights and the measured latent statistics.
    vae = VideoVAE.from_pretrained(straight / "vae")
    for name, tensor in expected.ema.items():
        assert torch.equal(vae.state_dict()[name], tensor), name
    assert vae.config.z_dim == 4 and len(vae.config.latents_std) == 4
    assert vae.config.latents_mean != [0.0] * 4 and all(s > 0 for s in vae.config.latents_std)
    assert (straight / "config.yaml").is_file()


def test_held_out_clips_are_fixed_and_outside_the_training_seed_range(tmp_path):
    task = VAETask(config(tmp_path))
    videos = task.held_out_videos()
    assert [tuple(v.shape) for v in videos] == [(2, 3, 5, 16, 16), (2, 3, 5, 16, 24)]
    assert task.held_out_videos() is videos
    assert HELD_OUT_SEED_OFFSET == 2**31  # world training clips use clip_seed(...) < 2**31
    train = task.batch(0, 0, 1)["video"]
    assert train.shape == (4, 3, 5, 16, 16) and not torch.equal(train[:2], videos[0])


def test_ssim_and_psnr_behave():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 24, 24, generator=generator)
    assert torch.allclose(ssim(images, images), torch.ones(3, dtype=torch.float64))
    noisy = (images + 0.1 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    noisier = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    assert (ssim(images, noisier) < ssim(images, noisy)).all() and (ssim(images, noisy) < 1).all()
    # Two flat images: SSIM reduces to its luminance term.
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    assert float(ssim(a, b)) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-6)
    video = torch.rand(2, 3, 5, 16, 16, generator=generator) * 2 - 1
    psnr, similarity = video_psnr_ssim(video + 0.02, video)
    assert psnr.shape == (2,) and torch.allclose(psnr, torch.full((2,), 20 * torch.log10(torch.tensor(100.0))),
                                                  atol=0.05)
    assert (similarity > 0.9).all()


@pytest.mark.parametrize("overrides, words", [
    (["model=huge"], "unknown VAE config 'huge'"),
    (["data.frames=6"], "1 + 4k"),
    (["data.sizes=[65x64]"], "multiples of 8"),
    (["loss.perceptual=1.0"], "not available yet"),
    (["loss.l1=0", "loss.mse=0"], "at least one reconstruction"),
    (["train.batch_size=0"], "batch_size"),
    (["train.lr=fast"], "expected float"),
    (["data.sizez=[64x64]"], "did you mean 'sizes'"),
])
def test_bad_vae_configs_are_one_line_errors(tmp_path, overrides, words):
    with pytest.raises(ConfigError) as error:
        config(tmp_path, *overrides)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_command_prints_one_line_errors_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kinema_main(["train", "vae", "--config", str(TEST_CONFIG), f"train.out_dir={tmp_path}", "model={base_dim: -4}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "base_dim" in err
    with pytest.raises(SystemExit) as exit_info:
        kinema_main(["train", "vae", "--config", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2 and "file not found" in capsys.readouterr().err


def test_the_command_trains_and_resumes(tmp_path, capsys):
    args = ["train", "vae", "--config", str(TEST_CONFIG), f"train.out_dir={tmp_path}", "train.steps=2",
            "train.eval_every=0"]
    kinema_main(args)
    assert "trained 2 steps" in capsys.readouterr().out
    kinema_main([*args[:-2], "train.steps=3", "--resume"])
    out = capsys.readouterr()
    assert "trained 3 steps" in out.out
    assert [line["step"] for line in metric_lines(tmp_path) if "loss" in line] == [1, 2, 3]


def test_torchrun_launches_the_same_command_line(tmp_path):
    """``torchrun -m kinema train vae ...``: two processes run the command line's own entry point; rank 0 reports."""
    import os
    import sys

    from conftest import run_bounded

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "kinema",
               "train", "vae", "--config", str(TEST_CONFIG), f"train.out_dir={tmp_path}", "train.steps=2",
               "train.eval_every=0"]
    for _attempt in range(2):  # a rank may abort in C++ as the processes wind down (see tests/test_train.py)
        result = run_bounded(command, timeout=180, env=os.environ | {"OMP_NUM_THREADS": "1"})
        if result.returncode == 0 or "terminate called without an active exception" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 2 steps") == 1 and "on 2 process(es)" in result.stderr
    assert (tmp_path / "vae" / "config.json").is_file()


def test_detail_loss_weights_what_is_not_sky_or_ground(tmp_path):
    from kinema.train.vae import detail_mask

    video = torch.full((1, 3, 1, 16, 16), -0.5)
    video[:, :, :, 8:] = 0.4  # ground: a plain band
    video[:, 0, :, 3:6, 4:7] = 0.9  # a red-ish object in the sky
    mask = detail_mask(video, 0.12)
    assert mask.shape == (1, 1, 1, 16, 16)
    assert mask[0, 0, 0, 3:6, 4:7].all() and mask.sum() == 9  # the object, nothing of the bands
    task = VAETask(config(tmp_path, "loss.detail=1.0"))
    batch = task.batch(0, 0, 1)
    loss, logs = task.loss(task.model, batch)
    plain = VAETask(config(tmp_path, "loss.detail=0.0"))
    plain.model.load_state_dict(task.model.state_dict())
    base, plain_logs = plain.loss(plain.model, batch)
    assert "detail_l1" in logs and "detail_l1" not in plain_logs and 0 < logs["detail_share"] < 1
    assert loss.item() == pytest.approx(base.item() + logs["detail_l1"].item(), rel=1e-4)


def test_freeze_encoder_keeps_the_latents_and_trains_the_decoder(tmp_path):
    """Decoder-only training from a VAE: the exported encoder and latent statistics are the init's exactly, so a
    DiT trained on its latents keeps working, while the decoder's weights change."""
    from kinema.models.vae import VideoVAE

    train_vae(config(tmp_path / "first"))
    init = VideoVAE.from_pretrained(tmp_path / "first" / "vae")
    train_vae(config(tmp_path / "second", f"init={tmp_path / 'first' / 'vae'}", "freeze_encoder=true"))
    tuned = VideoVAE.from_pretrained(tmp_path / "second" / "vae")
    before, after = init.state_dict(), tuned.state_dict()
    for name, tensor in before.items():
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(after[name], tensor), name
    assert any(not torch.equal(after[n], t) for n, t in before.items() if n.startswith("decoder."))
    assert tuned.config.latents_mean == init.config.latents_mean
    assert tuned.config.latents_std == init.config.latents_std
    # `kinema train export-vae` of the run's checkpoint keeps them too
    from kinema.train.vae import export_checkpoint

    second = config(tmp_path / "second", f"init={tmp_path / 'first' / 'vae'}", "freeze_encoder=true")
    folder, _ = export_checkpoint(second, tmp_path / "exported", dtype=torch.float32)
    exported = VideoVAE.from_pretrained(folder)
    assert exported.config.latents_mean == init.config.latents_mean
    assert exported.config.latents_std == init.config.latents_std
    assert all(torch.equal(exported.state_dict()[n], t) for n, t in tuned.state_dict().items())
    with pytest.raises(ConfigError, match="freeze_encoder needs init"):
        train_vae(config(tmp_path / "third", "freeze_encoder=true"))


def test_a_wider_decoder_trains_on_a_frozen_encoder(tmp_path):
    """decoder_base_dim widens the decoder only; with freeze_encoder it starts fresh on the init's encoder, whose
    latents (and statistics) stay exactly the init's, and a narrower model folder does not fit as init otherwise."""
    from kinema.models.vae import VideoVAE

    train_vae(config(tmp_path / "first"))
    first = tmp_path / "first" / "vae"
    wide = ('model={"base_dim": 4, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, '
            '"mid_attention": false, "decoder_base_dim": 8, "decoder_num_res_blocks": 2}')
    train_vae(config(tmp_path / "second", wide, f"init={first}", "freeze_encoder=true"))
    init, tuned = VideoVAE.from_pretrained(first), VideoVAE.from_pretrained(tmp_path / "second" / "vae")
    assert tuned.config.decoder_base_dim == 8 and len(tuned.decoder.up_blocks[0].resnets) == 3
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert torch.equal(tuned.encode(video).mode(), init.encode(video).mode())
    assert tuned.decode(init.encode(video).mode()).shape == video.shape
    with pytest.raises(KinemaError, match="does not match the model config"):
        train_vae(config(tmp_path / "third", wide, f"init={first}"))


def test_widen_latents_starts_from_the_old_vae_and_trains_the_new_channels(tmp_path):
    """A VAE with more latent channels, warm-started from one with fewer: before training it reconstructs exactly
    as the old one, the old channels' means are the old latents, and training gives the new channels a use."""
    from kinema.models.vae import VideoVAE
    from kinema.train.vae import build_vae, load_init_weights

    train_vae(config(tmp_path / "first"))
    old = VideoVAE.from_pretrained(tmp_path / "first" / "vae").eval()
    options = {k: v for k, v in old.config.items()
               if not k.startswith("_") and k not in ("latents_mean", "latents_std")}
    wide = build_vae(options | {"z_dim": 2 * old.config.z_dim}).eval()
    load_init_weights(wide, str(tmp_path / "first" / "vae"), widen=True)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        before, after = old.encode(video), wide.encode(video)
        z = old.config.z_dim
        assert torch.allclose(after.mean[:, :z], before.mean, atol=1e-5)
        assert torch.allclose(after.logvar[:, :z], before.logvar, atol=1e-5)
        assert after.mean[:, z:].abs().max() > 0  # the new channels carry something ...
        assert torch.allclose(wide.decode(after.mean), old.decode(before.mean), atol=1e-5)  # ... that is ignored
    widened = config(tmp_path / "wide", f"model={json.dumps(options | {'z_dim': 2 * z})}",
                     f"init={tmp_path / 'first' / 'vae'}", "widen_latents=true")
    train_vae(widened)
    trained = VideoVAE.from_pretrained(tmp_path / "wide" / "vae")
    assert trained.config.z_dim == 2 * z and len(trained.config.latents_mean) == 2 * z
    assert trained.state_dict()["decoder.conv_in.weight"][:, z:].abs().max() > 0
    with pytest.raises(ConfigError, match="widen_latents needs init"):
        config(tmp_path / "bad", "widen_latents=true")
    same = config(tmp_path / "same", f"init={tmp_path / 'first' / 'vae'}", "widen_latents=true")
    with pytest.raises(KinemaError, match="must be larger than init's"):
        train_vae(same)


def test_init_partial_keeps_what_fits_after_a_patch_size_change(tmp_path):
    """A VAE warm-started from one with another patch_size (4x and 8x spatial compression): every tensor of the same
    name and shape is copied, the first and last convolutions start fresh, and without init_partial the mismatch is a
    one-line error that names the option."""
    from kinema.models.vae import VideoVAE

    train_vae(config(tmp_path / "first"))
    old = VideoVAE.from_pretrained(tmp_path / "first" / "vae")
    options = {k: v for k, v in old.config.items()
               if not k.startswith("_") and k not in ("latents_mean", "latents_std")}
    model = f"model={json.dumps(options | {'patch_size': 3 - options['patch_size']})}"  # 1 <-> 2
    init = f"init={tmp_path / 'first' / 'vae'}"
    with pytest.raises(KinemaError, match="set init_partial: true"):
        VAETask(config(tmp_path / "strict", model, init))
    task = VAETask(config(tmp_path / "partial", model, init, "init_partial=true"))
    before, after = old.state_dict(), task.model.state_dict()
    fresh = sorted(k for k in after if k not in before or before[k].shape != after[k].shape)
    assert fresh and {".".join(k.split(".")[:2]) for k in fresh} <= {"encoder.conv_in", "decoder.conv_out"}
    assert all(torch.equal(after[k], before[k]) for k in after if k not in fresh)
    task.source.close()
    with pytest.raises(ConfigError, match="init_partial needs init"):
        config(tmp_path / "bad", "init_partial=true")


def test_edge_loss_charges_blurred_edges_and_not_flat_shifts(tmp_path):
    """The edge term: zero for a perfect reconstruction and for a uniform colour shift, positive for a box whose edges
    come back blurred, even where pixel L1 is the same; a run with it logs it, and a negative weight is refused."""
    from kinema.train.vae import edge_l1

    video = -torch.ones(1, 3, 5, 16, 16)
    video[..., 4:12, 4:12] = 1.0  # a white box on black
    blurred = torch.nn.functional.avg_pool3d(video, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    shifted = video + (blurred - video).abs().mean()  # as far off in pixel L1 as the blur, but no edge is lost
    assert edge_l1(video, video) == 0
    assert torch.isclose((shifted - video).abs().mean(), (blurred - video).abs().mean())
    assert edge_l1(shifted, video) < 1e-6 < edge_l1(blurred, video)
    train_vae(config(tmp_path / "edge", "loss.edge=1.0", "train.steps=2"))
    logged = [line for line in metric_lines(tmp_path / "edge") if "loss" in line]
    assert logged and all(line["edge_l1"] > 0 for line in logged)
    with pytest.raises(ConfigError, match="edge must be >= 0"):
        config(tmp_path / "bad", "loss.edge=-1")
