"""The diffusion transformer: patches, RoPE, per-frame timesteps and per-frame text."""

from __future__ import annotations

import torch

from kinema.models.dit import RotaryEmbedding3D, VideoDiT, apply_rotary
from kinema.models.wan import rename_wan_transformer_keys


def tiny(**kw) -> VideoDiT:
    torch.manual_seed(0)
    model = VideoDiT(num_layers=2, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, text_dim=16,
                     in_channels=4, out_channels=4, **kw)
    # Give the zero-initialised layers random values so that every path carries signal.
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model.eval()


def test_zero_initialised_output():
    model = VideoDiT(num_layers=2, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, text_dim=16,
                     in_channels=4, out_channels=4)
    out = model(torch.randn(1, 4, 3, 4, 4), 0.5, torch.randn(1, 5, 16))
    assert out.shape == (1, 4, 3, 4, 4) and out.abs().max() == 0


def test_patchify_unpatchify_round_trip():
    model = tiny()
    x = torch.randn(2, 4, 3, 6, 8)
    b, c, f, h, w = x.shape
    # Patches laid out as unpatchify expects: (B, N, pt*ph*pw*C) with the channel last.
    patches = x.reshape(b, c, f, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 4, 6, 1).reshape(b, f * h * w // 4, -1)
    assert torch.equal(model.unpatchify(patches, f, h, w), x)
    # The patch embedding sees exactly one 1x2x2 patch per token, in the same order.
    weight = model.patch_embedding.weight  # (D, C, 1, 2, 2)
    manual = patches @ weight.permute(0, 2, 3, 4, 1).reshape(weight.shape[0], -1).T + model.patch_embedding.bias
    assert torch.allclose(model.patchify(x), manual, atol=1e-5)


def test_a_width_below_the_latent_values_of_a_token_is_refused():
    """The output projection must be able to reach every latent value of a patch: with 4 channels, 4x4 patches
    carry 64 values, so width 48 is refused in one line and width 64 builds, its projection of full rank."""
    import pytest

    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="64 latent values a token, more than the model width 48") as error:
        tiny(patch_size=(1, 4, 4))
    assert "\n" not in str(error.value)
    model = VideoDiT(num_layers=1, num_attention_heads=2, attention_head_dim=32, ffn_dim=64, text_dim=16,
                     in_channels=4, out_channels=4, patch_size=(1, 4, 4))
    torch.nn.init.normal_(model.final.proj_out.weight)
    assert torch.linalg.matrix_rank(model.final.proj_out.weight) == 64


def test_rope_depends_only_on_relative_position():
    rope = RotaryEmbedding3D(head_dim=24)
    q, k = torch.randn(1, 1, 1, 24), torch.randn(1, 1, 1, 24)

    def score(pos_q, pos_k):
        rq = rope(1, 1, 1, "cpu", torch.tensor([pos_q]))
        rk = rope(1, 1, 1, "cpu", torch.tensor([pos_k]))
        return (apply_rotary(q, rq) * apply_rotary(k, rk)).sum()

    assert torch.allclose(score(3, 1), score(10, 8), atol=1e-5)
    assert torch.allclose(score(0, 5), score(7, 12), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)
    # Spatial axes too: shifting both rows by the same amount keeps attention scores.
    rotation = rope(1, 6, 1, "cpu")
    rq, rk = apply_rotary(q.expand(1, 1, 6, 24), rotation), apply_rotary(k.expand(1, 1, 6, 24), rotation)
    assert torch.allclose((rq[..., 4, :] * rk[..., 1, :]).sum(), (rq[..., 5, :] * rk[..., 2, :]).sum(), atol=1e-5)


def test_scalar_timestep_equals_the_same_timestep_per_frame():
    model = tiny()
    x, text = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 5, 16)
    a = model(x, 0.3, text)
    b = model(x, torch.full((2,), 0.3), text)
    c = model(x, torch.full((2, 3), 0.3), text)
    assert torch.equal(a, b) and torch.equal(a, c)
    d = model(x, torch.tensor([[0.3, 0.3, 0.9], [0.3, 0.3, 0.3]]), text)
    assert not torch.allclose(d[0], a[0]) and torch.allclose(d[1], a[1])


def test_per_frame_text_routes_cross_attention():
    model = tiny()
    x = torch.randn(1, 4, 4, 4, 4)
    texts = torch.randn(1, 2, 5, 16)  # shot 1 and shot 2 captions
    index = torch.tensor([[0, 0, 1, 1]])  # frames 2 and 3 belong to shot 2
    outputs = []
    model.blocks[0].register_forward_hook(lambda m, i, o: outputs.append(o))
    model(x, 0.5, texts, frame_text_index=index)
    changed = texts.clone()
    changed[:, 1] = torch.randn(5, 16)
    model(x, 0.5, changed, frame_text_index=index)
    first, second = (o.view(1, 4, 4, -1) for o in outputs)  # (B, F', H'W', D)
    assert torch.equal(first[:, :2], second[:, :2])  # shot 1's frames are untouched after the first block
    assert not torch.allclose(first[:, 2:], second[:, 2:])


def test_one_sequence_per_frame_reduces_to_plain_cross_attention():
    model = tiny()
    x, text = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 6, 16)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    plain = model(x, 0.4, text, text_mask=mask)
    routed = model(x, 0.4, text[:, None], text_mask=mask[:, None], frame_text_index=torch.zeros(2, 3, dtype=torch.long))
    assert torch.allclose(plain, routed, atol=1e-5)
    # Padding is ignored: changing masked tokens changes nothing.
    text2 = text.clone()
    text2[1, 4:] = 100.0
    assert torch.allclose(model(x, 0.4, text2, text_mask=mask), plain, atol=1e-5)


def test_any_latent_size_and_save_load(tmp_path):
    model = tiny()
    for shape in [(1, 4, 1, 2, 2), (1, 4, 5, 6, 4), (2, 4, 2, 8, 12)]:
        assert model(torch.randn(shape), 0.5, torch.randn(shape[0], 3, 16)).shape == shape
    model.save_pretrained(tmp_path / "dit")
    loaded = VideoDiT.from_pretrained(tmp_path / "dit").eval()
    x, text = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 3, 16)
    assert torch.equal(model(x, 0.7, text), loaded(x, 0.7, text))
    assert list((tmp_path / "dit").glob("*.safetensors"))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny().train()
    x, text = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 3, 16)
    model(x, 0.5, text).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x, 0.5, text).square().sum().backward()
    for a, p in zip(plain, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_prepared_text_gives_the_same_velocity():
    """Keys and values computed once (as the sampler does for all its steps) change nothing."""
    model = tiny()
    x, text = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 2, 5, 16)
    mask = torch.tensor([[[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]] * 2, dtype=torch.bool)
    index = torch.tensor([[0, 1, 1], [1, 0, 0]])
    with torch.no_grad():
        direct = model(x, torch.tensor([0.3, 0.8]), text, mask, index)
        context = model.prepare_text(text, mask)
        assert len(context.kv) == 2
        prepared = model(x, torch.tensor([0.3, 0.8]), context, frame_text_index=index)
    assert torch.allclose(direct, prepared, atol=1e-6)
    import pytest

    from kinema.errors import KinemaError

    with pytest.raises(KinemaError, match="text batch"):
        model(torch.randn(3, 4, 3, 4, 4), 0.5, context)


def test_fast_gelu_is_the_tanh_gelu_with_its_gradient():
    from kinema.models.dit import gelu_tanh

    x = (torch.randn(1000) * 4).requires_grad_()
    reference = torch.nn.functional.gelu(x, approximate="tanh")
    (grad_ref,) = torch.autograd.grad(reference.sum(), x)
    fast = gelu_tanh(x)
    (grad,) = torch.autograd.grad(fast.sum(), x)
    assert torch.allclose(fast, reference, atol=2e-6) and torch.allclose(grad, grad_ref, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(gelu_tanh(x), reference, atol=2e-6)


def test_rotary_rotates_interleaved_pairs(monkeypatch):
    """The complex product is Wan's rotation of pairs (x[2i], x[2i+1]) by the table's angles."""
    rope = RotaryEmbedding3D(head_dim=24)
    x = torch.randn(2, 3, 20, 24)  # (B, heads, N, d)
    rotation = rope(2, 2, 5, "cpu", torch.tensor([0, 7]))  # (N, d/2, 2)
    cos, sin = rotation.unbind(-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    expected = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    assert torch.allclose(apply_rotary(x, rotation), expected, atol=1e-6)
    # The real-valued form used under torch.compile gives the same rotation.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.allclose(apply_rotary(x, rotation), expected, atol=1e-6)
    monkeypatch.undo()
    # Angles of frame 7 at row 0, column 0 on the time axis: position * theta^(-2i/t_dim).
    t_dim = rope.t_dim
    freqs = 10000.0 ** (-torch.arange(0, t_dim, 2, dtype=torch.float64) / t_dim)
    n = 1 * 10 + 0 * 5 + 0  # frame index 1 (position 7), row 0, column 0
    angle = torch.atan2(sin[n, : t_dim // 2], cos[n, : t_dim // 2]).double()
    assert torch.allclose(angle, torch.remainder(7 * freqs + torch.pi, 2 * torch.pi) - torch.pi, atol=1e-5)


def test_matches_diffusers_wan_transformer():
    """With the same weights, VideoDiT is diffusers' WanTransformer3DModel (text-to-video layout)."""
    from conftest import bench_module

    module = bench_module("dit")
    torch.manual_seed(0)
    model = VideoDiT(num_layers=2, num_attention_heads=2, attention_head_dim=32, ffn_dim=64, text_dim=16).eval()
    reference = module.diffusers_twin(dict(model.config)).eval()
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            tensor.normal_(0.0, 0.05)
    model.load_state_dict(rename_wan_transformer_keys(reference.state_dict()), strict=True)
    x, text = torch.randn(2, 16, 3, 6, 4), torch.randn(2, 7, 16)
    with torch.inference_mode():
        ours = model(x, torch.tensor([0.25, 0.75]), text)
        theirs = reference(x, torch.tensor([250.0, 750.0]), text, return_dict=False)[0]
    assert ours.abs().max() > 0.1
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_rotary_table_made_under_inference_mode_serves_training():
    model = tiny()
    x, text = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 5, 16)
    with torch.inference_mode():
        model(x, 0.5, text)  # evaluation first fills the table cache
    model.train()
    model(x, 0.5, text).square().mean().backward()
    assert all(p.grad is not None for p in model.blocks[0].attn1.parameters())
