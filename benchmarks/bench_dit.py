"""Video DiT speed, side by side with diffusers' WanTransformer3DModel. Prints JSON lines.

    python benchmarks/bench_dit.py [--configs tiny] [--cases 2x9x8x8,2x13x8x12,1x21x16x16] [--repeats 3] [--train]

- forward: kinema ``VideoDiT`` against diffusers ``WanTransformer3DModel`` built with the identical dims
  (patch (1, 2, 2), heads, head dim, FFN, layers, text and frequency dims, cross-attention norm, RMS qk norm
  across heads, eps 1e-6) and the same (random) weights, fp32, eval mode, ``torch.inference_mode``, same
  threads, same inputs: latents (B, 16, F', H', W'), one timestep per sample (kinema takes flow time in
  [0, 1], diffusers the same time x 1000) and text (B, 64, 384) (kinema also gets its text mask, all True).
  Median milliseconds per forward of the repeats after a warmup, the two models alternating;
  ``speedup_vs_diffusers`` = diffusers time / kinema time (wall; ``cpu_speedup_vs_diffusers`` from
  process CPU time). The default cases: 4 s of 64x64 at batch 2 (a CFG pair) = (2, 16, 9, 8, 8); 6 s of
  96x64 = (2, 16, 13, 8, 12); and a larger (1, 16, 21, 16, 16). ``tokens`` counts the patch tokens of one
  sample (F' x H'/2 x W'/2).
- ``--compile``: the forward cases again with both models' repeated blocks compiled by ``torch.compile``
  (``compile_repeated_blocks``, diffusers' regional compilation; needs a C++ compiler), with the seconds
  the first call took (compiling included) as ``kinema_compile_s`` and ``diffusers_compile_s``.
- ``--train``: seconds per training step (forward + MSE loss + backward + AdamW) of each model, batch 8 of
  (16, 5, 8, 8) latents, one timestep per sample, the steps of the two models alternating.
- ``--loop``: the transformer in a sampling loop, text states, guidance and all: 20 Euler steps (``--loop-steps``)
  with guidance 4 from the same noise and the same text (64 tokens, and 64 of the empty prompt), each step's update
  done the same way on both sides. kinema as its pipeline drives it: the text's keys and values prepared once
  (``prepare_text``), the conditional and unconditional passes in one batch. diffusers as ``WanPipeline`` drives
  ``WanTransformer3DModel``: a conditional and an unconditional call a step, each projecting the text again
  (``diffusers_batched_s``: the two in one batch, for reference). ``--loop-cache T`` adds both models under
  diffusers' First-Block Cache at threshold T (kinema's through ``enable_cache``, the same hooks), with the
  share of block calls each skipped. ``max_abs_diff_vs_diffusers`` compares the final latents.

Shared machines are noisy: every line carries the load average at the time it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

from kinema.models.dit import DIT_CONFIGS, VideoDiT
from kinema.models.wan import rename_wan_transformer_keys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `kinema bench` runs this file via runpy
from bench_vae import _machine, _median_times

TEXT_TOKENS = 64
DEFAULT_CASES = "2x9x8x8,2x13x8x12,1x21x16x16"


def diffusers_twin(config: dict[str, Any]):
    """diffusers' WanTransformer3DModel with the same architecture as VideoDiT(**config)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=tuple(config["patch_size"]), num_attention_heads=config["num_attention_heads"],
        attention_head_dim=config["attention_head_dim"], in_channels=config["in_channels"],
        out_channels=config["out_channels"], text_dim=config["text_dim"], freq_dim=config["freq_dim"],
        ffn_dim=config["ffn_dim"], num_layers=config["num_layers"], cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=config["eps"],
    )


def twins(name: str, seed: int = 0) -> tuple[VideoDiT, Any]:
    """A kinema DiT and its diffusers twin holding the same random weights, in eval mode."""
    torch.manual_seed(seed)
    if name not in DIT_CONFIGS:
        raise SystemExit(f"unknown config '{name}': choose from {', '.join(DIT_CONFIGS)}")
    model = VideoDiT.from_name(name).eval()
    reference = diffusers_twin(dict(model.config)).eval()
    with torch.no_grad():  # not adaLN-zero: with zero modulation both would output zeros
        for tensor in reference.state_dict().values():
            tensor.normal_(0.0, 0.05)
    model.load_state_dict(rename_wan_transformer_keys(reference.state_dict()), strict=True)
    return model, reference


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _inputs(shape: tuple[int, ...], text_dim: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    batch = shape[0]
    x = torch.randn(shape, generator=generator)  # (B, C, F', H', W')
    t = torch.rand(batch, generator=generator)  # (B,) flow time in [0, 1]
    text = torch.randn(batch, TEXT_TOKENS, text_dim, generator=generator)  # (B, L, D_text)
    mask = torch.ones(batch, TEXT_TOKENS, dtype=torch.bool)  # (B, L)
    return x, t, text, mask


def forward_speed(name: str, shape: tuple[int, ...], repeats: int, compile_blocks: bool = False) -> dict:
    model, reference = twins(name)
    x, t, text, mask = _inputs(shape, model.config.text_dim)
    _, ph, pw = model.config.patch_size
    batch, _, frames, height, width = shape
    compile_s = {}
    if compile_blocks:  # regional compilation on both sides; the first call of each compiles
        model.compile_repeated_blocks()
        reference.compile_repeated_blocks()
    with torch.inference_mode():
        start = time.perf_counter()
        ours = model(x, t, text, mask)
        compile_s["kinema"] = time.perf_counter() - start
        start = time.perf_counter()
        theirs = reference(hidden_states=x, timestep=t * 1000.0, encoder_hidden_states=text, return_dict=False)[0]
        compile_s["diffusers"] = time.perf_counter() - start
        max_abs_diff = (ours - theirs).abs().max().item()
        times = _median_times({
            "kinema": lambda: model(x, t, text, mask),
            "diffusers": lambda: reference(hidden_states=x, timestep=t * 1000.0, encoder_hidden_states=text,
                                           return_dict=False),
        }, repeats)
    wall = {key: value[0] for key, value in times.items()}
    cpu = {key: value[1] for key, value in times.items()}
    return {
        "benchmark": "dit_forward", "config": name, "latent_shape": list(shape), "batch": batch,
        "tokens": frames * (height // ph) * (width // pw), "text_tokens": TEXT_TOKENS, "repeats": repeats,
        "kinema_params": _params(model), "diffusers_params": _params(reference),
        "kinema_ms": round(wall["kinema"] * 1000, 2), "diffusers_ms": round(wall["diffusers"] * 1000, 2),
        "speedup_vs_diffusers": round(wall["diffusers"] / wall["kinema"], 2),
        "kinema_cpu_ms": round(cpu["kinema"] * 1000, 2), "diffusers_cpu_ms": round(cpu["diffusers"] * 1000, 2),
        "cpu_speedup_vs_diffusers": round(cpu["diffusers"] / cpu["kinema"], 2),
        "max_abs_diff_vs_diffusers": float(f"{max_abs_diff:.3g}"),
        **({"compiled": True, "kinema_compile_s": round(compile_s["kinema"], 1),
            "diffusers_compile_s": round(compile_s["diffusers"], 1)} if compile_blocks else {}),
        **_machine(),
    }


def train_step_time(name: str, batch: int, latent: tuple[int, ...], steps: int) -> dict:
    model, reference = twins(name)
    model.train()
    reference.train()
    x, t, text, mask = _inputs((batch, *latent), model.config.text_dim)
    target = torch.randn_like(x)
    optimizers = {key: torch.optim.AdamW(m.parameters(), lr=1e-4) for key, m in (("kinema", model),
                                                                                 ("diffusers", reference))}

    def step(key: str) -> None:
        if key == "kinema":
            prediction = model(x, t, text, mask)
        else:
            prediction = reference(hidden_states=x, timestep=t * 1000.0, encoder_hidden_states=text,
                                   return_dict=False)[0]
        loss = (prediction.float() - target).pow(2).mean()
        optimizers[key].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[key].step()

    times = _median_times({"kinema": lambda: step("kinema"), "diffusers": lambda: step("diffusers")}, steps)
    wall = {key: value[0] for key, value in times.items()}
    cpu = {key: value[1] for key, value in times.items()}
    return {
        "benchmark": "dit_train_step", "config": name, "batch": batch, "latent_shape": [batch, *latent],
        "kinema_params": _params(model), "diffusers_params": _params(reference), "steps": steps,
        "kinema_step_s": round(wall["kinema"], 3), "diffusers_step_s": round(wall["diffusers"], 3),
        "speedup_vs_diffusers": round(wall["diffusers"] / wall["kinema"], 2),
        "kinema_step_cpu_s": round(cpu["kinema"], 3), "diffusers_step_cpu_s": round(cpu["diffusers"], 3),
        "cpu_speedup_vs_diffusers": round(cpu["diffusers"] / cpu["kinema"], 2),
        **_machine(),
    }


def sampling_loop(name: str, shape: tuple[int, ...], steps: int, repeats: int, guidance: float = 4.0,
                  cache: float | None = None) -> dict:
    """Seconds of a guided Euler sampling loop: kinema (text prepared once, guidance batched) against diffusers'
    WanTransformer3DModel called as WanPipeline calls it (conditional, then unconditional, each with the text)."""
    from kinema.diffusion.sampling import flow_schedule

    model, reference = twins(name)
    noise, _, text, mask = _inputs(shape, model.config.text_dim)
    negative = torch.randn(text.shape, generator=torch.Generator().manual_seed(2))
    times = flow_schedule(steps, shift=1.24)
    skipped: dict[str, list[int]] = {}
    if cache is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        for key, module in (("kinema", model), ("diffusers", reference)):
            module.enable_cache(FirstBlockCacheConfig(threshold=cache))
            skipped[key] = _count_tail_calls(module)

    def kinema() -> torch.Tensor:
        context = model.prepare_text(torch.cat([text, negative]), torch.cat([mask, mask]))  # once a video
        x = noise
        for i in range(steps):
            t = torch.full((2 * x.shape[0],), float(times[i]))
            with _cache_context(model, cache, "denoise"):
                v_cond, v_uncond = model(torch.cat([x, x]), t, context).chunk(2)
            x = x + (float(times[i + 1]) - float(times[i])) * (v_uncond + guidance * (v_cond - v_uncond))
        _reset(model, cache)
        return x

    def diffusers(batched: bool = False) -> torch.Tensor:
        x = noise
        for i in range(steps):
            t = torch.full((x.shape[0],), float(times[i]) * 1000.0)
            if batched:
                v_cond, v_uncond = reference(hidden_states=torch.cat([x, x]), timestep=torch.cat([t, t]),
                                             encoder_hidden_states=torch.cat([text, negative]),
                                             return_dict=False)[0].chunk(2)
            else:
                with _cache_context(reference, cache, "cond"):
                    v_cond = reference(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
                with _cache_context(reference, cache, "uncond"):
                    v_uncond = reference(hidden_states=x, timestep=t, encoder_hidden_states=negative,
                                         return_dict=False)[0]
            x = x + (float(times[i + 1]) - float(times[i])) * (v_uncond + guidance * (v_cond - v_uncond))
        _reset(reference, cache)
        return x

    runs = {"kinema": kinema, "diffusers": diffusers}
    if cache is None:
        runs["diffusers_batched"] = lambda: diffusers(batched=True)
    with torch.inference_mode():
        max_abs_diff = (kinema() - diffusers()).abs().max().item()
        for counts in skipped.values():
            counts[:] = [0, 0]
        times_taken = _median_times(runs, repeats)
    wall = {key: value[0] for key, value in times_taken.items()}
    cpu = {key: value[1] for key, value in times_taken.items()}
    _, _, frames, height, width = shape
    line = {
        "benchmark": "dit_sampling_loop", "config": name, "latent_shape": list(shape), "steps": steps,
        "guidance": guidance, "tokens": frames * (height // 2) * (width // 2), "text_tokens": TEXT_TOKENS,
        "repeats": repeats, "kinema_s": round(wall["kinema"], 3), "diffusers_s": round(wall["diffusers"], 3),
        "speedup_vs_diffusers": round(wall["diffusers"] / wall["kinema"], 2),
        "cpu_speedup_vs_diffusers": round(cpu["diffusers"] / cpu["kinema"], 2),
        "max_abs_diff_vs_diffusers": float(f"{max_abs_diff:.3g}"), **_machine(),
    }
    if cache is None:
        line |= {"diffusers_batched_s": round(wall["diffusers_batched"], 3),
                 "speedup_vs_diffusers_batched": round(wall["diffusers_batched"] / wall["kinema"], 2)}
    else:
        line |= {"first_block_cache": cache,
                 **{f"{key}_blocks_skipped": round(1 - counts[1] / max(counts[0], 1), 3)
                    for key, counts in skipped.items()}}
    return line


def _count_tail_calls(module) -> list[int]:
    """[first block calls, last block calls], counted by hooks on their feed-forward layers (a skipped block's
    does not run)."""
    counts = [0, 0]
    blocks = module.blocks
    for n, block in ((0, blocks[0]), (1, blocks[-1])):
        block.ffn.register_forward_hook(lambda *_, n=n: counts.__setitem__(n, counts[n] + 1))
    return counts


def _cache_context(module, cache: float | None, name: str):
    import contextlib

    return module.cache_context(name) if cache is not None else contextlib.nullcontext()


def _reset(module, cache: float | None) -> None:
    if cache is not None:
        module._reset_stateful_cache()  # a video ends: as diffusers' pipelines do


def _shape(text: str, channels: int = 16) -> tuple[int, ...]:
    """'BxFxHxW' (latent sizes) -> (B, 16, F', H', W')."""
    try:
        batch, frames, height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bad case '{text}': expected BxFxHxW in latent units, e.g. 2x9x8x8") from None
    return batch, channels, frames, height, width


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny", help=f"comma-separated DiT configs ({', '.join(DIT_CONFIGS)})")
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="comma-separated latent sizes BxF'xH'xW' (16 channels)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--train", action="store_true", help="also time training steps (batch 8 of 16x5x8x8)")
    parser.add_argument("--compile", action="store_true",
                        help="also time forwards with both models' blocks compiled (compile_repeated_blocks)")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--loop", action="store_true",
                        help="also time a guided 20-step sampling loop of each case at batch 1 (text prepared once "
                             "and guidance batched for kinema; WanPipeline's two calls a step for diffusers)")
    parser.add_argument("--loop-steps", type=int, default=20)
    parser.add_argument("--loop-cache", type=float, nargs="*", default=[],
                        help="also run the loop with both models under First-Block Cache at these thresholds")
    parser.add_argument("--json", action="store_true", help="accepted for `kinema bench dit --json`; always JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [_shape(case) for case in args.cases.split(",") if case]

    results: list[dict] = []

    def emit(line: dict) -> None:
        results.append(line)
        print(json.dumps(line), flush=True)

    for name in args.configs.split(","):
        if not args.no_speed:
            for shape in cases:
                emit(forward_speed(name, shape, args.repeats))
            for shape in cases if args.compile else []:
                emit(forward_speed(name, shape, args.repeats, compile_blocks=True))
        if args.train:
            emit(train_step_time(name, batch=8, latent=(16, 5, 8, 8), steps=args.train_steps))
        for shape in cases if args.loop else []:
            single = (1, *shape[1:])
            emit(sampling_loop(name, single, args.loop_steps, args.repeats))
            for threshold in args.loop_cache:
                emit(sampling_loop(name, single, args.loop_steps, args.repeats, cache=threshold))
    return results


if __name__ == "__main__":
    main()
