"""Devices and dtypes: --device/--dtype resolution, and every tensor a pipeline call makes is made on the pipeline's
device. No GPU here, so the plumbing is proven on the CPU: the pipeline is given an explicit device object while
torch's default device is 'meta'; a tensor made anywhere without saying where would land on 'meta', so a single one
fails the call or shows up in the recorded devices of every operation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import random_pipeline, run_bounded
from kinema.devices import resolve_device, resolve_dtype
from kinema.errors import KinemaError
from kinema.inference.pipeline import KinemaPipeline
from kinema.models.dit import VideoDiT
from kinema.models.vae import VideoVAE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    # with the anchor, its levels and spreads are made too; with context noise, the noise of "ar" context frames
    return random_pipeline(num_layers=1, anchor=1.0, ar_context_noise=0.1)


class Devices(TorchDispatchMode):
    """Records the device of every tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.seen.add(tensor.device.type)
        return out


def clip(frames: int, value: int = 0) -> np.ndarray:
    return np.random.default_rng(value).integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)


CALLS = {
    "t2v": {"num_frames": 9},
    "i2v": {"num_frames": 9, "image": clip(1)[0]},
    "extend forward": {"num_frames": 13, "mode": "extend_forward", "video": clip(5)},
    "extend backward": {"num_frames": 13, "mode": "extend_backward", "video": clip(5)},
    "connect": {"num_frames": 17, "mode": "connect", "video": clip(5), "video_end": clip(5, 1)},
    "loop": {"num_frames": 8, "mode": "loop"},
    "edit": {"num_frames": 9, "mode": "edit", "video": clip(9)},
    "long, in windows": {"num_frames": 41, "window": 5},
    "long extension": {"num_frames": 41, "mode": "extend_forward", "video": clip(9), "window": 5},
    "frame by frame": {"num_frames": 9, "sampler": "ar"},  # the frame cache and its masks
    "frame by frame, extension": {"num_frames": 13, "mode": "extend_forward", "video": clip(5), "sampler": "ar"},
    "frame by frame, in windows": {"num_frames": 41, "window": 5, "sampler": "ar"},
    "storyboard": {"storyboard": {"scene": "a sunny day", "shots": [
        {"seconds": 1, "framing": "wide", "prompt": "a red ball is dropped"},
        {"seconds": 1, "framing": "close-up", "prompt": "the red ball bounces"}]}, "window": 4},
}


@pytest.mark.parametrize("name", list(CALLS))
def test_every_tensor_of_a_call_is_made_on_the_pipelines_device(pipe, name):
    kwargs = dict(prompt="a red ball is thrown to the right on the sand", height=32, width=32, **CALLS[name])
    expected = pipe(generator=torch.Generator().manual_seed(3), **kwargs).frames
    pipe.to(torch.device("cpu"))  # an explicit device object, not the default device
    with torch.device("meta"), Devices() as devices:
        got = pipe(generator=torch.Generator().manual_seed(3), **kwargs).frames
    assert devices.seen == {"cpu"}, f"{name}: tensors made on {devices.seen - {'cpu'}}"
    assert np.array_equal(got, expected), name


@pytest.mark.parametrize("kwargs", [{"num_frames": 9}, {"num_frames": 41, "window": 5}], ids=["one pass", "windows"])
def test_a_frame_causal_model_makes_every_tensor_on_the_pipelines_device(word_encoder, kwargs):
    """The frame-by-frame model (block-causal masks, a frame cache of keys and values) under the same check."""
    torch.manual_seed(0)
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=24,
                   ffn_dim=64, text_dim=16, causal=True)
    causal = KinemaPipeline(dit.eval(), VideoVAE.from_name("tiny", base_dim=8, z_dim=4).eval(),
                            text_encoder=word_encoder())
    causal.defaults.steps, causal.defaults.sampler, causal.defaults.ar_context_noise = 2, "ar", 0.1
    expected = causal("a red ball", height=32, width=32, generator=torch.Generator().manual_seed(1), **kwargs).frames
    causal.to(torch.device("cpu"))
    with torch.device("meta"), Devices() as devices:
        got = causal("a red ball", height=32, width=32, generator=torch.Generator().manual_seed(1), **kwargs).frames
    assert devices.seen == {"cpu"} and np.array_equal(got, expected)


def test_callbacks_and_latents_stay_on_the_device(pipe):
    seen = []

    def on_step_end(pipeline, step, timestep, tensors):
        seen.append((step, tensors["latents"].device.type, timestep.device.type))
        return {}

    with torch.device("meta"):
        latents = pipe("a red ball", num_frames=9, height=32, width=32, output_type="latent",
                       callback_on_step_end=on_step_end).frames
    assert latents.device.type == "cpu" and [s for s, _, _ in seen] == [0, 1]
    assert {d for _, d, _ in seen} == {"cpu"} and {d for _, _, d in seen} == {"cpu"}


def test_to_casts_and_moves_and_the_call_runs_in_that_dtype(pipe, word_encoder):
    other = KinemaPipeline(VideoDiT(in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2,
                                    attention_head_dim=24, ffn_dim=64, text_dim=16),
                           VideoVAE.from_name("tiny", base_dim=8, z_dim=4), text_encoder=word_encoder())
    other.defaults.steps = 1
    other.to("cpu", torch.bfloat16)
    assert other.transformer.dtype == torch.bfloat16 and other.vae.dtype == torch.bfloat16
    assert other.dtype == torch.bfloat16 and other.device == torch.device("cpu")
    seen = []
    forward = other.transformer.forward
    other.transformer.forward = lambda x, *a, **k: seen.append(x.dtype) or forward(x, *a, **k)
    frames = other("a red ball", num_frames=5, height=32, width=32).frames
    assert frames.shape == (1, 5, 32, 32, 3) and set(seen) == {torch.bfloat16}


def test_cpu_offload_moves_each_model_only_while_it_runs(pipe):
    expected = pipe("a red ball", num_frames=9, height=32, width=32, generator=torch.Generator().manual_seed(1)).frames
    moves = []
    for name in ("transformer", "vae"):
        module = getattr(pipe, name)
        original = module.to
        module.to = lambda *a, _name=name, _to=original, **k: moves.append((_name, str(a[0] if a else k))) or _to(
            *a, **k)
    try:
        pipe.enable_model_cpu_offload(device="cpu")
        assert pipe._execution_device == torch.device("cpu")
        got = pipe("a red ball", num_frames=9, height=32, width=32, generator=torch.Generator().manual_seed(1)).frames
    finally:
        for name in ("transformer", "vae"):
            del getattr(pipe, name).to
        pipe.to("cpu")
    assert np.array_equal(got, expected)
    # the transformer for sampling, then back; the VAE for decoding, then back
    names = [name for name, _ in moves]
    assert names[-4:] == ["transformer", "transformer", "vae", "vae"], moves


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")
        for name in ("cuda", "cuda:1"):
            with pytest.raises(KinemaError, match="CUDA") as error:
                resolve_device(name)
            assert "\n" not in str(error.value)
    with pytest.raises(KinemaError, match="choose cpu, cuda, cuda:N, mps or auto"):
        resolve_device("tpu")
    with pytest.raises(KinemaError, match="choose cpu, cuda, cuda:N, mps or auto"):
        resolve_device("cuda:x")
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32 and resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("float16", cpu) == torch.float16
    assert resolve_dtype(torch.bfloat16, cpu) == torch.bfloat16
    with pytest.raises(KinemaError, match="dtype 'int8'"):
        resolve_dtype("int8", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_is_a_one_line_error_before_the_model_loads(tmp_path, tiny_model_folder):
    import sys

    model = tiny_model_folder(tmp_path / "m")
    for args in (["generate", "a red ball", "--model", str(model), "--device", "cuda", "-o", str(tmp_path / "x.mp4")],
                 ["generate", "a red ball", "--model", str(model), "--dtype", "int4", "-o", str(tmp_path / "x.mp4")],
                 ["serve", "--model", str(model), "--device", "cuda:3", "--db", str(tmp_path / "j.sqlite")],
                 ["eval", "suite", "configs/eval/basic.yaml", "--model", str(model), "--device", "mps", "--limit", "1",
                  "--out", str(tmp_path / "suite")]):
        result = run_bounded([sys.executable, "-m", "kinema.cli", *args], timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "x.mp4").exists()
