"""Frame-causal generation: the block-causal mask, teacher forcing, the frame cache and the "ar" sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_dit
from kinema.diffusion.sampling import flow_schedule, guided, sample_autoregressive, sample_autoregressive_cached
from kinema.models.dit import FrameCache, VideoDiT, block_causal, teacher_forcing_frames


def tiny() -> VideoDiT:
    return random_dit(num_layers=2, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, text_dim=16,
                      in_channels=4, out_channels=4)


def test_block_causal_frames_do_not_see_later_frames():
    model = tiny()
    x, t, text = torch.randn(1, 4, 5, 4, 4), torch.rand(1, 5), torch.randn(1, 6, 16)
    mask = block_causal(5)
    out = model(x, t, text, attention_frames=mask)
    changed = x.clone()
    changed[:, :, 3:] = torch.randn_like(changed[:, :, 3:])
    again = model(changed, t, text, attention_frames=mask)
    assert torch.allclose(out[:, :, :3], again[:, :, :3], atol=1e-6)  # frames 0-2 never saw frames 3-4
    assert not torch.allclose(out[:, :, 3:], again[:, :, 3:], atol=1e-3)
    # Without the mask every frame sees every other one.
    assert not torch.allclose(model(x, t, text)[:, :, :3], model(changed, t, text)[:, :, :3], atol=1e-3)


def test_teacher_forcing_gives_each_noisy_frame_what_generation_gives_it():
    """In one teacher-forcing pass, noisy frame k sees the clean frames before it and itself: its output equals
    a causal pass over [clean 0..k-1, noisy k], which is what the frame-by-frame sampler runs."""
    model = tiny()
    frames = 4
    clean, noisy = torch.randn(2, 4, frames, 4, 4), torch.randn(2, 4, frames, 4, 4)
    t_clean, t_noisy = torch.rand(2, frames) * 0.1, torch.rand(2, frames)
    text = torch.randn(2, 6, 16)
    index = torch.zeros(2, 2 * frames, dtype=torch.long)
    out = model(torch.cat([clean, noisy], 2), torch.cat([t_clean, t_noisy], 1), text, frame_text_index=index,
                frame_positions=torch.arange(frames).repeat(2), attention_frames=teacher_forcing_frames(frames))
    for k in range(frames):
        prefix = torch.cat([clean[:, :, :k], noisy[:, :, k:k + 1]], 2)
        times = torch.cat([t_clean[:, :k], t_noisy[:, k:k + 1]], 1)
        alone = model(prefix, times, text, attention_frames=block_causal(k + 1))
        assert torch.allclose(alone[:, :, k], out[:, :, frames + k], atol=1e-5)


def test_frame_cache_equals_one_causal_pass():
    model = tiny()
    x, t = torch.randn(2, 4, 5, 4, 6), torch.rand(2, 5)
    text = model.prepare_text(torch.randn(2, 6, 16))
    whole = model(x, t, text, attention_frames=block_causal(5))
    cache = FrameCache(len(model.blocks))
    first = model(x[:, :, :2], t[:, :2], text, cache=cache)  # two frames at once: causal between them
    cache.commit(2)
    assert torch.allclose(first, whole[:, :, :2], atol=1e-5)
    for k in range(2, 5):
        one = model(x[:, :, k:k + 1], t[:, k:k + 1], text, cache=cache)
        cache.commit(1)
        assert torch.allclose(one[:, :, 0], whole[:, :, k], atol=1e-5)
    assert cache.frames == 5


@pytest.mark.parametrize("context_time", [0.0, 0.2])
def test_cached_sampler_equals_the_prefix_sampler(context_time):
    """The frame cache changes the cost of frame-by-frame sampling, not its result; a known first frame stays."""
    model = tiny()
    text = torch.randn(1, 6, 16)
    context = model.prepare_text(torch.cat([text, torch.zeros_like(text)]))

    def velocity(x, t, text=None, cache=None):
        return model(x, t, context, attention_frames=None if cache is not None else block_causal(x.shape[2]),
                     cache=cache)

    fn = guided(velocity, 3.0, {"text": text}, {"text": text})
    x, noise = torch.randn(1, 4, 5, 4, 4), torch.randn(1, 4, 5, 4, 4)
    known = torch.zeros(1, 5, dtype=torch.bool)
    known[:, 0] = True
    times = flow_schedule(4, 2.0)
    plain = sample_autoregressive(fn, x, times, known=known, known_latents=x, context_time=context_time,
                                  context_noise=noise)
    cached = sample_autoregressive_cached(fn, x, times, FrameCache(2), known=known, known_latents=x,
                                          context_time=context_time, context_noise=noise)
    assert torch.allclose(plain, cached, atol=1e-5)
    assert torch.equal(cached[:, :, 0], x[:, :, 0])


def test_cached_sampler_wants_known_frames_first():
    model = tiny()
    known = torch.zeros(1, 3, dtype=torch.bool)
    known[:, 2] = True
    with pytest.raises(ValueError, match="known frames first"):
        sample_autoregressive_cached(lambda x, t, cache=None: x, torch.randn(1, 4, 3, 4, 4), flow_schedule(2),
                                     FrameCache(len(model.blocks)), known=known)


# -- the pipeline's "ar" sampler ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(word_encoder):
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE.from_name("tiny", base_dim=8, z_dim=4)
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=24,
                   ffn_dim=64, text_dim=16)
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    pipe = KinemaPipeline(dit.eval(), vae.eval(), text_encoder=word_encoder())
    pipe.defaults.steps = 3
    pipe.defaults.sampler = "ar"
    return pipe


def test_ar_sampling_makes_each_frame_from_the_ones_before(pipe):
    """Frame by frame: the first latent frames of a longer video are those of a shorter one with the same seed, since
    no frame sees a later one (and the noise of the first frames is drawn the same way)."""
    def latents(frames):
        return pipe("a red ball", num_frames=frames, height=32, width=32, output_type="latent",
                    generator=torch.Generator().manual_seed(5)).frames

    short, long = latents(5), latents(9)  # 2 and 3 latent frames
    joint = pipe("a red ball", num_frames=9, height=32, width=32, output_type="latent", sampler="euler",
                 generator=torch.Generator().manual_seed(5)).frames
    assert not torch.allclose(long, joint, atol=1e-3)  # "ar" is not joint sampling
    # Noise is drawn for the whole video at once, so compare a short run made from the long run's first noise.
    noise = torch.randn((1, 4, 3, 4, 4), generator=torch.Generator().manual_seed(5))
    cond, uncond = pipe.encode_text(["a red ball"], [""])
    first = pipe.denoise(noise[:, :, :2], None, None, cond, uncond, 3, pipe.defaults.guidance_scale, 1.0, 1.0, "ar",
                         None)
    whole = pipe.denoise(noise, None, None, cond, uncond, 3, pipe.defaults.guidance_scale, 1.0, 1.0, "ar", None)
    assert torch.allclose(first, whole[:, :, :2], atol=1e-5)
    assert short.shape[2] == 2 and long.shape[2] == 3


@pytest.mark.parametrize("mode, kwargs, frames", [
    ("i2v", {"image": np.full((32, 32, 3), 90, np.uint8)}, 9),
    ("extend_forward", {"video": np.full((5, 32, 32, 3), 60, np.uint8)}, 13),
    ("extend_backward", {"video": np.full((5, 32, 32, 3), 60, np.uint8)}, 13),
    ("connect", {"video": np.full((5, 32, 32, 3), 60, np.uint8), "video_end": np.full((5, 32, 32, 3), 200, np.uint8)},
     17),
    ("loop", {}, 8),
    ("edit", {"video": np.full((9, 32, 32, 3), 60, np.uint8)}, 9),
])
def test_every_mode_runs_with_the_ar_sampler(pipe, mode, kwargs, frames):
    """Known frames first (image to video, extending forward) go frame by frame; the others (backward, connect,
    loop, edit) fall back to joint sampling, which the same model serves."""
    out = pipe("a red ball", num_frames=frames, height=32, width=32, mode=mode,
               generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert out.shape == (1, frames, 32, 32, 3)


def test_known_prefix():
    from kinema.inference.pipeline import known_prefix

    mask = torch.tensor([[True, True, False, False]])
    assert known_prefix(None) and known_prefix(mask) and known_prefix(torch.ones(1, 3, dtype=torch.bool))
    assert not known_prefix(torch.tensor([[True, False, False, True]]))
    assert not known_prefix(torch.tensor([[False, False, True]]))


def test_unknown_sampler_is_a_one_line_error(pipe):
    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="sampler 'nope': choose from euler, heun, ar"):
        pipe("a red ball", num_frames=5, height=32, width=32, sampler="nope")
