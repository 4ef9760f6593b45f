"""The video VAE: causality, chunked == whole clip, Wan equivalence, shapes, checkpoints, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from kinema.cli.vae import pad_video, vae_app
from kinema.errors import KinemaError
from kinema.media import read_metadata, read_video, write_video
from kinema.models.vae import (
    VAE_CONFIGS,
    WEIGHTS_NAME,
    DiagonalGaussianDistribution,
    Resample,
    VideoVAE,
    rename_wan_keys,
    tensor_to_video,
    video_to_tensor,
)

# Two tiny layouts: Wan2.1's (3 down levels, the first spatial only) and the patched one `tiny` uses.
WAN_LAYOUT = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                  temporal_downsample=[False, True, True])
PATCH_LAYOUT = dict(patch_size=2, base_dim=4, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                    temporal_downsample=[True, True])
LAYOUTS = {"wan": WAN_LAYOUT, "patch": PATCH_LAYOUT}
TOLERANCE = 1e-5  # fp32: chunked and whole-clip results agree to rounding


def random_vae(config: dict, seed: int = 0) -> VideoVAE:
    """A VAE with every weight random (the real init zeroes the residual branches, which hides bugs)."""
    torch.manual_seed(seed)
    model = VideoVAE(**config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model


def random_video(frames: int, height: int = 16, width: int = 24, batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, frames, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one thread is faster, and does not stall when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def vae(request) -> VideoVAE:
    return random_vae(LAYOUTS[request.param])


# ----------------------------------------------------------------------------- causality


@torch.no_grad()
def test_first_frame_alone_equals_first_latent(vae):
    video = random_video(13)
    whole = vae.encode(video).mean
    assert max_diff(vae.encode(video[:, :, :1]).mean, whole[:, :, :1]) < TOLERANCE


@torch.no_grad()
def test_a_prefix_of_1_plus_4k_frames_gives_the_first_1_plus_k_latents(vae):
    video = random_video(17)
    whole = vae.encode(video).mean
    for k in (1, 2, 3):
        assert max_diff(vae.encode(video[:, :, : 1 + 4 * k]).mean, whole[:, :, : 1 + k]) < TOLERANCE


@torch.no_grad()
def test_changing_future_frames_leaves_past_latents_and_frames_unchanged(vae):
    video = random_video(13)
    changed = video.clone()
    changed[:, :, 5:] = random_video(8, seed=7)
    before, after = vae.encode(video).mean, vae.encode(changed).mean
    assert max_diff(before[:, :, :2], after[:, :, :2]) < TOLERANCE  # latents 0, 1 cover frames 0..4
    assert max_diff(before[:, :, 2:], after[:, :, 2:]) > 1e-3  # and the change does reach later latents
    latents = before.clone()
    decoded = vae.decode(latents, clamp=False)
    latents[:, :, 2:] += 1.0
    assert max_diff(vae.decode(latents, clamp=False)[:, :, :5], decoded[:, :, :5]) < TOLERANCE


@torch.no_grad()
def test_temporal_resampling_keeps_frame_0_alone():
    torch.manual_seed(0)
    down, up = Resample(4, "down3d"), Resample(4, "up3d")
    x = torch.randn(1, 4, 5, 8, 8)
    out = down(x)
    assert out.shape == (1, 4, 3, 4, 4)
    assert max_diff(down(x[:, :, :1]), out[:, :, :1]) < TOLERANCE  # frame 0 needs nothing else
    assert max_diff(down(x[:, :, :3]), out[:, :, :2]) < TOLERANCE  # 1 + 2n frames -> 1 + n
    # Chunks: frame 0, then pairs, carrying the cache.
    cache: dict = {}
    chunked = torch.cat([down(x[:, :, :1], cache), down(x[:, :, 1:3], cache), down(x[:, :, 3:5], cache)], dim=2)
    assert max_diff(chunked, out) < TOLERANCE

    z = torch.randn(1, 4, 3, 4, 4)
    out = up(z)
    assert out.shape == (1, 2, 5, 8, 8)  # 1 + 2n frames, channels halved
    assert max_diff(up(z[:, :, :1]), out[:, :, :1]) < TOLERANCE  # frame 0 is not doubled
    cache = {}
    chunked = torch.cat([up(z[:, :, :1], cache), up(z[:, :, 1:2], cache), up(z[:, :, 2:3], cache)], dim=2)
    assert max_diff(chunked, out) < TOLERANCE


# ----------------------------------------------------------------------------- chunked == whole


@pytest.mark.parametrize("chunk_frames", [4, 8, 12, 28])  # 12 does not divide the 20 frames after frame 0
@torch.no_grad()
def test_chunked_encode_and_decode_equal_the_whole_clip(vae, chunk_frames):
    video = random_video(21, batch=2 if chunk_frames == 8 else 1)
    posterior = vae.encode(video)
    chunked = vae.encode(video, chunk_frames=chunk_frames)
    assert max_diff(chunked.mean, posterior.mean) < TOLERANCE
    assert max_diff(chunked.logvar, posterior.logvar) < TOLERANCE
    latents = posterior.mean
    whole = vae.decode(latents, clamp=False)
    assert max_diff(vae.decode(latents, chunk_frames=chunk_frames, clamp=False), whole) < TOLERANCE
    assert max_diff(vae.decode(latents, chunk_frames=chunk_frames), whole.clamp(-1, 1)) < TOLERANCE


# ----------------------------------------------------------------------------- the Wan2.1 architecture


@pytest.mark.parametrize("layout", list(LAYOUTS))
@torch.no_grad()
def test_same_weights_give_the_same_outputs_as_diffusers_wan(layout):
    from diffusers import AutoencoderKLWan

    config = LAYOUTS[layout]
    patch = config.get("patch_size", 1)
    torch.manual_seed(0)
    reference = AutoencoderKLWan(
        base_dim=config["base_dim"], z_dim=config["z_dim"], dim_mult=config["dim_mult"],
        num_res_blocks=config["num_res_blocks"], temperal_downsample=config["temporal_downsample"],
        in_channels=3 * patch * patch, out_channels=3 * patch * patch, patch_size=patch if patch > 1 else None,
    ).eval()
    for tensor in reference.state_dict().values():
        tensor.normal_(0.0, 0.3)
    model = VideoVAE(**config).eval()
    model.load_state_dict(rename_wan_keys(reference.state_dict()), strict=True)  # a key rename, nothing else

    video = random_video(9)
    ours, theirs = model.encode(video), reference.encode(video).latent_dist
    assert max_diff(ours.mean, theirs.mean) < 1e-4 and max_diff(ours.logvar, theirs.logvar) < 1e-4
    assert max_diff(model.decode(ours.mean), reference.decode(ours.mean).sample) < 1e-4


def test_wan21_config_has_wan21_dims():
    config = VAE_CONFIGS["wan2.1"]
    assert (config["base_dim"], config["z_dim"], config["dim_mult"], config["num_res_blocks"],
            config["temporal_downsample"]) == (96, 16, [1, 2, 4, 4], 2, [False, True, True])
    assert len(config["latents_mean"]) == len(config["latents_std"]) == 16


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
@torch.no_grad()
def test_shapes(vae, frames):
    latents = vae.encode(random_video(frames, height=16, width=24)).mode()
    assert latents.shape == (1, 4, 1 + (frames - 1) // 4, 2, 3)
    assert vae.decode(latents).shape == (1, 3, frames, 16, 24)


@torch.no_grad()
def test_non_square_size_and_the_named_tiny_config():
    model = VideoVAE.from_name("tiny").eval()
    video = random_video(5, height=48, width=32, batch=2)
    reconstruction, posterior = model(video)
    assert posterior.mean.shape == (2, 16, 2, 6, 4) and reconstruction.shape == video.shape
    assert model.latent_size(17, 48, 32) == (5, 6, 4)


def test_posterior_sample_mode_and_kl():
    moments = torch.zeros(2, 8, 3, 2, 2)
    posterior = DiagonalGaussianDistribution(moments)
    assert torch.equal(posterior.mode(), moments[:, :4]) and torch.equal(posterior.std, torch.ones(2, 4, 3, 2, 2))
    assert torch.equal(posterior.kl(), torch.zeros(2))  # N(0, I) against N(0, I)
    first = posterior.sample(torch.Generator().manual_seed(3))
    assert torch.equal(first, posterior.sample(torch.Generator().manual_seed(3)))
    moments[:, :4] = 1.0
    assert torch.allclose(DiagonalGaussianDistribution(moments).kl(), torch.full((2,), 0.5 * 4 * 3 * 2 * 2))


def test_latent_normalisation_round_trips_and_is_saved(tmp_path):
    model = random_vae(WAN_LAYOUT)
    z = torch.randn(1, 4, 2, 3, 3)
    assert torch.equal(model.normalize_latents(z), z)  # identity until stats are set
    model.set_latent_stats([0.5, -1.0, 0.0, 2.0], [2.0, 1.0, 0.5, 4.0])
    assert torch.allclose(model.denormalize_latents(model.normalize_latents(z)), z, atol=1e-6)
    assert model.normalize_latents(torch.full((1, 4, 1, 1, 1), 0.5))[0, 0].item() == 0.0
    model.save_pretrained(tmp_path)
    assert VideoVAE.from_pretrained(tmp_path).config.latents_std == [2.0, 1.0, 0.5, 4.0]
    with pytest.raises(KinemaError, match="4 values"):
        model.set_latent_stats([0.0] * 3, [1.0] * 3)
    with pytest.raises(KinemaError, match="> 0"):
        model.set_latent_stats([0.0] * 4, [1.0, 1.0, 0.0, 1.0])


def test_frames_and_tensors_convert_exactly():
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 8, 16, 3), dtype=np.uint8)
    tensor = video_to_tensor(frames)
    assert tensor.shape == (1, 3, 5, 8, 16) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(tensor_to_video(tensor)[0], frames)
    assert video_to_tensor(np.stack([frames, frames])).shape == (2, 3, 5, 8, 16)
    with pytest.raises(KinemaError, match="uint8"):
        video_to_tensor(frames.astype(np.float32))


# ----------------------------------------------------------------------------- checkpoints


@torch.no_grad()
def test_save_and_load_give_identical_outputs(tmp_path):
    model = random_vae(PATCH_LAYOUT)
    model.save_pretrained(tmp_path)
    loaded = VideoVAE.from_pretrained(tmp_path).eval()
    video = random_video(5)
    assert torch.equal(loaded.encode(video).mean, model.encode(video).mean)
    assert torch.equal(loaded.decode(model.encode(video).mean), model.decode(model.encode(video).mean))
    with safe_open(tmp_path / WEIGHTS_NAME, framework="pt") as file:  # the weights carry their config
        assert json.loads(file.metadata()["kinema_config"])["patch_size"] == 2


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    random_vae(WAN_LAYOUT).save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def _corrupt(folder: Path, how: str) -> None:
    weights, config = folder / WEIGHTS_NAME, folder / "config.json"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage weights":
        weights.write_bytes(b"\x00not a safetensors file" * 10)
    elif how == "missing weights":
        weights.unlink()
    elif how == "config not json":
        config.write_text("{base_dim: 4,,", encoding="utf-8")
    elif how == "config not an object":
        config.write_text("[1, 2]", encoding="utf-8")
    elif how == "missing config":
        config.unlink()
    elif how == "config mismatch":
        config.write_text(json.dumps({**json.loads(config.read_text()), "base_dim": 8}), encoding="utf-8")
    elif how == "bad config value":
        config.write_text(json.dumps({**json.loads(config.read_text()), "dim_mult": [1, 2]}), encoding="utf-8")


@pytest.mark.parametrize("how, words", [
    ("truncated weights", "truncated or corrupt"),
    ("garbage weights", "truncated or corrupt"),
    ("missing weights", "missing"),
    ("config not json", "not valid JSON"),
    ("config not an object", "JSON object"),
    ("missing config", "config.json is missing"),
    ("config mismatch", "cannot load VAE"),
    ("bad config value", "temporal_downsample"),
])
def test_a_corrupt_checkpoint_is_a_one_line_error(checkpoint, how, words):
    _corrupt(checkpoint, how)
    with pytest.raises(KinemaError, match=words) as error:
        VideoVAE.from_pretrained(checkpoint)
    assert "\n" not in str(error.value) and str(checkpoint) in str(error.value)


def test_a_missing_folder_is_an_error_and_nothing_is_downloaded(tmp_path):
    for path in (tmp_path / "nope", "some-org/some-vae"):  # the second looks like a hub id: never fetched
        with pytest.raises(KinemaError, match="does not exist"):
            VideoVAE.from_pretrained(path)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("video, words", [
    (torch.zeros(1, 3, 4, 16, 16), "1 \\+ 4k"),
    (torch.zeros(1, 3, 5, 12, 16), "multiples of 8"),
    (torch.zeros(1, 4, 5, 16, 16), "shape"),
    (torch.zeros(3, 5, 16, 16), "shape"),
    (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), "video_to_tensor"),
    (torch.zeros(1, 3, 5, 16, 16, dtype=torch.float64), "float64"),
    (np.zeros((1, 3, 5, 16, 16), dtype=np.float32), "torch.Tensor"),
])
def test_bad_video_is_a_clear_error(vae, video, words):
    with pytest.raises(KinemaError, match=words):
        vae.encode(video)


def test_mixed_precision_training_runs_under_autocast_but_plain_calls_still_check_dtypes(vae):
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what train.precision=bf16 does on CUDA
        reconstruction, _ = vae(video, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        latents = vae.encode(video).mode().bfloat16()
        assert vae.decode(latents).shape == video.shape
    assert reconstruction.shape == video.shape and torch.isfinite(reconstruction).all()
    with pytest.raises(KinemaError, match="bfloat16"):
        vae.decode(latents)


@pytest.mark.parametrize("chunk_frames", [0, 6, -4, 2.0, True])
def test_bad_chunk_frames_is_a_clear_error(vae, chunk_frames):
    with pytest.raises(KinemaError, match="chunk_frames"):
        vae.encode(torch.zeros(1, 3, 5, 16, 16), chunk_frames=chunk_frames)
    with pytest.raises(KinemaError, match="chunk_frames"):
        vae.decode(torch.zeros(1, 4, 2, 2, 2), chunk_frames=chunk_frames)


def test_bad_latents_and_config_are_clear_errors(vae):
    with pytest.raises(KinemaError, match="latents must have shape"):
        vae.decode(torch.zeros(1, 3, 2, 2, 2))
    with pytest.raises(KinemaError, match="unknown VAE config 'huge'"):
        VideoVAE.from_name("huge")
    with pytest.raises(KinemaError, match="temporal_downsample"):
        VideoVAE(dim_mult=[1, 2], temporal_downsample=[True, True])


# ----------------------------------------------------------------------------- training


def test_a_few_adam_steps_overfit_one_clip():
    torch.manual_seed(0)
    model = VideoVAE(**{**PATCH_LAYOUT, "base_dim": 8}).train()  # the real init, not random weights
    t, y, x = (torch.arange(n, dtype=torch.float32) for n in (5, 16, 16))
    t, y, x = t.view(5, 1, 1), y.view(1, 16, 1), x.view(1, 1, 16)
    video = 0.8 * torch.stack([torch.sin(0.4 * x + 0.3 * t) + 0 * y, torch.cos(0.3 * y - 0.2 * t) + 0 * x,
                               torch.sin(0.2 * (x + y)) + 0 * t])[None]  # (1, 3, 5, 16, 16): waves that move
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        reconstruction, posterior = model(video)
        loss = (reconstruction - video).abs().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------- kinema vae roundtrip


def test_roundtrip_command_pads_cuts_back_and_records_the_model(tmp_path):
    random_vae(PATCH_LAYOUT).save_pretrained(tmp_path / "vae")
    frames = np.random.default_rng(0).integers(0, 256, size=(7, 18, 22, 3), dtype=np.uint8)
    write_video(tmp_path / "in.mp4", frames, 8.0, sidecar=False)
    result = CliRunner().invoke(vae_app, ["roundtrip", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"),
                                          "--model", str(tmp_path / "vae"), "--chunk-frames", "4"])
    assert result.exit_code == 0, result.output
    assert "7 -> 9 frames" in result.output and "22x18 -> 24x24" in result.output and "PSNR" in result.output
    out, fps = read_video(tmp_path / "out.mp4")
    assert out.shape == (7, 18, 22, 3) and fps == pytest.approx(8.0)
    metadata = read_metadata(tmp_path / "out.mp4")
    assert metadata["model"] == "vae" and len(metadata["model_sha256"]) == 64
    whole = CliRunner().invoke(vae_app, ["roundtrip", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "whole.mp4"),
                                         "--model", str(tmp_path / "vae"), "--chunk-frames", "0"])
    assert whole.exit_code == 0 and whole.output.splitlines()[-1] == result.output.splitlines()[-1]  # same PSNR


def test_roundtrip_command_with_a_broken_model_is_a_one_line_error(tmp_path):
    frames = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "in.mp4", frames, 8.0, sidecar=False)
    result = CliRunner().invoke(vae_app, ["roundtrip", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"),
                                          "--model", str(tmp_path / "missing")])
    assert isinstance(result.exception, KinemaError) and "does not exist" in str(result.exception)


def test_pad_video_reaches_1_plus_4k_frames_and_multiples_of_8():
    padded, notes = pad_video(np.zeros((2, 9, 16, 3), dtype=np.uint8))
    assert padded.shape == (5, 16, 16, 3) and len(notes) == 2
    padded, notes = pad_video(np.zeros((5, 8, 16, 3), dtype=np.uint8))
    assert padded.shape == (5, 8, 16, 3) and notes == []
