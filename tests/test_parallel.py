"""One video across several processes: sequence-parallel attention (Ulysses) and guidance split across ranks, on 2
CPU processes with gloo, against one process. No GPU here: torchrun's ranks run on the CPU.

What holds here: sequence parallelism is bit-identical to one process (every rank computes each token's values
as one process does; only where attention reads them from differs); guidance split across ranks runs the
transformer on batches of one instead of two, which moves the latents by about 1e-6.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import bench_module, run_bounded

# Each test launches two or three commands that load torch and a model in one or two processes: minutes on a busy
# 2-core machine.
pytestmark = pytest.mark.timeout(900)

TESTS = Path(__file__).resolve().parent
PROMPT = "a red ball is thrown to the right"


def torchrun(*args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    result = run_bounded(command, timeout=300, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def kinema_generate(*args: str, cwd: Path, ranks: int = 1) -> np.ndarray:
    """Run `kinema generate ... -o out.mp4` in one process or under torchrun; the written video's frames."""
    from kinema.media import read_video

    output = cwd / f"{ranks}-ranks.mp4"
    if ranks == 1:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        result = run_bounded([sys.executable, "-m", "kinema", "generate", *args, "-o", str(output)], timeout=300,
                             cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        stderr = torchrun("-m", "kinema", "generate", *args, "-o", str(output), cwd=cwd)
        assert "2 ranks make each video" in stderr
    assert not [p for p in cwd.iterdir() if p.suffix == ".mp4" and p != output and not p.name[0].isdigit()]
    return read_video(output)[0]


def test_sequence_parallel_dit_and_pipeline_match_one_process(tmp_path):
    """The DiT (uneven shares of 15 tokens a frame, per-frame text, a block-causal mask, a frame cache) and the
    pipeline (Euler and frame by frame) on 2 ranks, in both layouts: guidance split, and every pass shared."""
    torchrun(str(TESTS / "parallel_check.py"), str(tmp_path / "found.json"), cwd=tmp_path)
    found = json.loads((tmp_path / "found.json").read_text())
    assert found.pop("world") == 2
    assert len(found) == 16, found
    for name, difference in found.items():
        exact = "split" not in name  # sequence parallelism reorders no arithmetic
        assert difference == 0.0 if exact else difference < 1e-5, (name, difference)


def test_torchrun_generate_makes_the_embedded_models_video(tmp_path):
    """`torchrun --nproc_per_node 2 -m kinema generate` (guidance's passes on the two ranks) writes the video that
    `kinema generate` writes. Both are written losslessly (--crf 0): at the default quality, H.264's choices can
    turn the latents' 1e-6 into a dozen grey levels in a few pixels, which says nothing about the ranks."""
    args = (PROMPT, "--seconds", "2", "--seed", "3", "--crf", "0")
    one = kinema_generate(*args, cwd=tmp_path)
    two = kinema_generate(*args, cwd=tmp_path, ranks=2)
    assert one.shape == two.shape == (17, 64, 64, 3)
    difference = np.abs(one.astype(int) - two.astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.01, (difference.max(), difference.mean())


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory) -> Path:
    """A pipeline folder whose transformer is a tiny random-weight diffusers WanTransformer3DModel, saved with
    save_pretrained and loaded into VideoDiT (as tests/test_dit.py does), beside a tiny VAE."""
    from diffusers import WanTransformer3DModel

    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.dit import VideoDiT
    from kinema.models.vae import VideoVAE

    folder = tmp_path_factory.mktemp("wan")
    dit = bench_module("dit")
    torch.manual_seed(0)
    config = dict(VideoDiT(num_layers=2, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, in_channels=4,
                           out_channels=4).config)
    wan = dit.diffusers_twin(config)
    with torch.no_grad():
        for tensor in wan.state_dict().values():
            tensor.normal_(0.0, 0.05)
    wan.save_pretrained(folder / "wan-transformer")
    loaded = WanTransformer3DModel.from_pretrained(folder / "wan-transformer")
    model = VideoDiT(**{k: v for k, v in config.items() if not k.startswith("_")})
    model.load_state_dict(dit.rename_wan_transformer_keys(loaded.state_dict()), strict=True)
    pipe = KinemaPipeline(model, VideoVAE.from_name("tiny", base_dim=8, z_dim=4))
    pipe.defaults.steps = 4
    pipe.name = "tiny-wan"
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


@pytest.mark.parametrize("sampler", ["euler", "ar"])
def test_torchrun_generate_shares_a_wan_transformer_across_ranks(wan_folder, tmp_path, sampler):
    """Every pass's tokens shared by the two ranks (--no-split-guidance), jointly and frame by frame (each rank's
    frame cache holds its heads): the same uint8 frames as one process."""
    args = (PROMPT, "--model", str(wan_folder), "--seconds", "1", "--size", "48x80", "--sampler", sampler,
            "--no-expand")
    one = kinema_generate(*args, cwd=tmp_path)
    two = kinema_generate(*args, "--no-split-guidance", cwd=tmp_path, ranks=2)
    assert one.shape == (9, 80, 48, 3) and np.array_equal(one, two)
