"""Step caching (diffusers' First-Block Cache on VideoDiT) and the work done once per generation."""

from __future__ import annotations

import pytest
import torch

from kinema.errors import KinemaError
from kinema.inference.pipeline import KinemaPipeline
from kinema.models.dit import FrameCache, VideoDiT
from kinema.models.vae import VideoVAE

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def pipe(word_encoder) -> KinemaPipeline:
    torch.manual_seed(0)
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=3, num_attention_heads=2, attention_head_dim=24,
                   ffn_dim=64, text_dim=16)
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    pipe = KinemaPipeline(dit.eval(), VideoVAE.from_name("tiny", base_dim=8, z_dim=4).eval(),
                          text_encoder=word_encoder())
    pipe.defaults.steps, pipe.defaults.window, pipe.defaults.ar_context_noise = 8, 5, 0.2
    return pipe


def count_blocks(model: VideoDiT) -> list[int]:
    """How many times each block's feed-forward runs (a block the cache skips does not run it)."""
    counts = [0] * len(model.blocks)
    for n, block in enumerate(model.blocks):
        block.ffn.register_forward_hook(lambda *_, n=n: counts.__setitem__(n, counts[n] + 1))
    return counts


def latents(pipe: KinemaPipeline, **kwargs) -> torch.Tensor:
    return pipe("a red ball rolls", num_frames=9, height=32, width=32, output_type="latent",
                generator=torch.Generator().manual_seed(3), **kwargs).frames


@pytest.mark.parametrize("sampler", ["euler", "ar"])
def test_first_block_cache_skips_the_later_blocks_while_the_first_barely_changes(pipe, sampler):
    counts = count_blocks(pipe.transformer)
    plain = latents(pipe, sampler=sampler)
    calls = counts[0]
    assert counts == [calls] * 3
    counts[:] = [0, 0, 0]
    assert torch.equal(latents(pipe, sampler=sampler, step_cache=1e-9), plain)  # nothing is close enough to reuse
    assert counts == [calls] * 3
    counts[:] = [0, 0, 0]
    cached = latents(pipe, sampler=sampler, step_cache=0.5)
    assert counts[0] == calls and counts[1] == counts[2] < calls  # the first block always runs, the rest less
    assert cached.shape == plain.shape and torch.isfinite(cached).all() and not torch.equal(cached, plain)
    assert not pipe.transformer.is_cache_enabled  # the pipeline's own cache lasts one call
    # No state survives from one generation to the next.
    assert torch.equal(latents(pipe, sampler=sampler, step_cache=0.5), cached)


def test_a_cache_the_user_enables_is_used_and_starts_afresh_every_pass(pipe):
    from diffusers.hooks import FirstBlockCacheConfig

    counts = count_blocks(pipe.transformer)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.5))
    first = latents(pipe)
    skipped = counts[0] - counts[1]
    second = latents(pipe)
    assert skipped > 0 and torch.equal(first, second) and counts[0] - counts[1] == 2 * skipped
    pipe.transformer.disable_cache()


def test_frame_cache_commits_run_every_block_under_step_caching(pipe):
    """With the frame cache, the call whose keys and values are kept must run every block: the sampler marks it
    (FrameCache.committing) and the pipeline starts the step cache afresh for it; a commit after a call that
    skipped blocks is refused instead of keeping stale keys and values."""
    from diffusers.hooks import FirstBlockCacheConfig

    model = pipe.transformer
    model.enable_cache(FirstBlockCacheConfig(threshold=1.0))
    text = model.prepare_text(torch.randn(1, 5, 16))
    cache = FrameCache(len(model.blocks))
    x = torch.randn(1, 4, 1, 4, 4)
    with torch.no_grad(), model.cache_context("test"):
        model(x, torch.full((1, 1), 0.5), text, cache=cache)
        model(x + 1e-4, torch.full((1, 1), 0.5), text, cache=cache)  # nearly the same: the later blocks are skipped
    with pytest.raises(KinemaError, match="did not run every block"):
        cache.commit(1)
    model.disable_cache()
    # Through the pipeline, frame by frame with a cache that would skip everything it may: every commit is whole.
    made = latents(pipe, sampler="ar", step_cache=1.0)
    assert torch.isfinite(made).all()


def test_only_first_block_cache_applies_and_thresholds_are_checked(pipe):
    from diffusers.hooks import TaylorSeerCacheConfig

    with pytest.raises(KinemaError, match="FirstBlockCacheConfig only"):
        pipe.transformer.enable_cache(TaylorSeerCacheConfig())
    with pytest.raises(KinemaError, match="step_cache 2"):
        latents(pipe, step_cache=2.0)
    from kinema.inference.request import Request, validate

    with pytest.raises(KinemaError, match="step cache must be a threshold"):
        validate(Request(prompt="a ball", step_cache=-0.1))


def test_the_text_is_prepared_once_per_generation(pipe, monkeypatch):
    """The text's keys and values are computed once for a video made in several windows, and again only when the
    text changes."""
    from kinema.inference.longvideo import generate_long

    calls = []
    original = VideoDiT.prepare_text

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VideoDiT, "prepare_text", counted)
    generate_long(pipe, ["a red ball rolls"], 33, 32, 32, num_inference_steps=2, output_type="latent",
                  generator=torch.Generator().manual_seed(0))  # 9 latent frames: windows of 5, 3 passes
    assert len(calls) == 1
    board = generate_long(pipe, ["a red ball", "a blue box"], 33, 32, 32, shot_starts=[0, 17], num_inference_steps=2,
                          output_type="latent", generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2 and board.shape[2] == 9
    # Reusing the prepared text changes nothing: the same video as with the memo cleared before every pass.
    again = []
    original_denoise = KinemaPipeline.denoise

    def fresh(self, *args, **kwargs):
        self.text_memo = []
        again.append(1)
        return original_denoise(self, *args, **kwargs)

    monkeypatch.setattr(KinemaPipeline, "denoise", fresh)
    unmemoized = generate_long(pipe, ["a red ball", "a blue box"], 33, 32, 32, shot_starts=[0, 17],
                               num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0))
    assert len(again) >= 2 and torch.equal(unmemoized, board)


def test_text_made_under_inference_mode_is_kept_by_identity(pipe):
    """Tensors made under torch.inference_mode keep no version count: the memo compares them by identity."""
    with torch.inference_mode():
        made = [generate_long_latents(pipe) for _ in range(2)]
    assert torch.equal(made[0], made[1]) and pipe.text_memo


def generate_long_latents(pipe: KinemaPipeline) -> torch.Tensor:
    from kinema.inference.longvideo import generate_long

    return generate_long(pipe, ["a red ball rolls"], 33, 32, 32, num_inference_steps=2, output_type="latent",
                         generator=torch.Generator().manual_seed(0))
