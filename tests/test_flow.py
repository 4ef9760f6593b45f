"""Flow matching objective and samplers."""

from __future__ import annotations

import torch

from kinema.diffusion.flow import FlowConfig, add_noise, flow_loss, sample_condition, shift_for_tokens, velocity_target
from kinema.diffusion.sampling import flow_schedule, guided, sample_euler, sample_heun


def test_noise_path_and_target():
    x0, eps = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    t = torch.tensor([[0.0, 0.25, 0.5, 1.0], [1.0, 1.0, 0.0, 0.0]])
    xt = add_noise(x0, eps, t)
    assert torch.equal(xt[0, :, 0], x0[0, :, 0]) and torch.equal(xt[0, :, 3], eps[0, :, 3])
    assert torch.allclose(xt[0, :, 1], 0.75 * x0[0, :, 1] + 0.25 * eps[0, :, 1])
    # Moving along the target velocity from x_t by -t lands on x0.
    assert torch.allclose(xt - t[:, None, :, None, None] * velocity_target(x0, eps), x0, atol=1e-6)


def gaussian_velocity(mean: float, std: float):
    """Exact marginal velocity E[ε - x0 | x_t] when x0 ~ N(mean, std²) and ε ~ N(0, 1)."""

    def v(x, t, **_):
        a = 1.0 - t[:, None, :, None, None]
        tt = t[:, None, :, None, None]
        var = a * a * std * std + tt * tt
        resid = x - a * mean
        return tt * resid / var - (mean + a * std * std * resid / var)

    return v


def test_euler_transports_noise_to_the_data_distribution():
    torch.manual_seed(0)
    noise = torch.randn(4000, 1, 1, 1, 1)
    model = gaussian_velocity(mean=2.0, std=0.5)
    out = sample_euler(model, noise, flow_schedule(200))
    assert abs(out.mean().item() - 2.0) < 0.03 and abs(out.std().item() - 0.5) < 0.02
    # The flow between two Gaussians is the monotone affine map ε -> mean + std ε.
    assert torch.allclose(out, 2.0 + 0.5 * noise, atol=0.02)
    # Heun reaches that accuracy with a tenth of the steps; Euler with as many model calls does not.
    out_heun = sample_heun(model, noise, flow_schedule(20))
    assert torch.allclose(out_heun, 2.0 + 0.5 * noise, atol=0.02)
    out_euler = sample_euler(model, noise, flow_schedule(40))
    assert (out_euler - (2.0 + 0.5 * noise)).abs().max() > 0.05


def test_sampler_keeps_known_frames_bit_identical():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 2, 2)
    known_latents = torch.randn(2, 3, 5, 2, 2)
    known = torch.tensor([[True, False, False, False, True], [False, False, True, True, False]])
    seen_t = []

    def model(x, t, **_):
        seen_t.append(t.clone())
        return torch.sin(x) + 1.0

    for sampler in (sample_euler, sample_heun):
        out = sampler(model, x, flow_schedule(4, shift=3.0), known=known, known_latents=known_latents)
        mask = known[:, None, :, None, None].expand_as(out)
        assert torch.equal(out[mask], known_latents[mask])
        assert not torch.allclose(out[~mask], x[~mask])
    assert all(torch.all(t[known] == 0) for t in seen_t)


def test_guidance_batches_both_passes_and_combines():
    calls = []

    def model(x, t, text):
        calls.append(x.shape[0])
        return text[:, :1, None, None, None].expand(x.shape[0], *x.shape[1:]) + 0 * x

    cond, uncond = {"text": torch.full((2, 3), 2.0)}, {"text": torch.full((2, 3), 1.0)}
    v = guided(model, 4.0, cond, uncond)(torch.zeros(2, 1, 1, 1, 1), torch.zeros(2, 1))
    assert calls == [4]  # one batched call
    assert torch.allclose(v, torch.full_like(v, 1.0 + 4.0 * (2.0 - 1.0)))


def test_condition_masks_and_loss_on_unknown_frames_only():
    config = FlowConfig(mask_probs={"first": 1.0})
    g = torch.Generator().manual_seed(0)
    t, known = sample_condition(8, 5, config, shift=2.0, generator=g)
    assert known[:, 0].all() and not known[:, 1:].any() and torch.all(t[known] == 0) and torch.all(t[~known] > 0)
    config = FlowConfig(mask_probs={"forcing": 1.0})
    t, known = sample_condition(4, 6, config, shift=1.0, generator=g)
    assert not known.any() and len(torch.unique(t[0])) == 6  # independent levels per frame
    config = FlowConfig(mask_probs={"last_k": 1.0})
    t, known = sample_condition(16, 6, config, shift=1.0, generator=g)
    assert known[:, -1].all() and not known[:, 0].any()
    x0, eps = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    known = torch.tensor([[True, False, False, False], [True, True, False, False]])
    pred = torch.randn_like(x0)
    base = flow_loss(pred, x0, eps, known)
    pred2 = pred.clone()
    pred2[:, :, 0] += 10.0  # only known frames change
    assert torch.equal(flow_loss(pred2, x0, eps, known), base)
    pred2[:, :, 3] += 1.0
    assert flow_loss(pred2, x0, eps, known) > base


def test_shift_grows_with_tokens():
    config = FlowConfig()
    assert shift_for_tokens(64, config) == 1.0
    assert abs(shift_for_tokens(4096, config) - 3.0) < 1e-9
    assert 1.0 < shift_for_tokens(512, config) < 3.0
    assert abs(shift_for_tokens(10**6, config) - 3.0) < 1e-9
