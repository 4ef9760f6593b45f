"""Step caching (diffusers' First-Block Cache on kinema's transformer): speed and how far the result moves, against
no caching, side by side in one run. Prints JSON lines.

    python benchmarks/bench_stepcache.py [--model kinema-tiny] [--thresholds 0.05 0.1 0.2] [--prompts 6]
                                         [--seconds 4] [--size 64x64] [--threads 2]

The first ``--prompts`` prompts of ``configs/eval/basic.yaml``, expanded as ``kinema generate`` expands them, at
the model's defaults (for the embedded model: 20 Euler steps, guidance 4). Every prompt is sampled without the
cache and at each threshold, in turn; one line per threshold: total seconds of sampling (text encoding,
sampling and decoding; no file written) against no caching, the share of block calls the cache skipped, and the
mean relative change of the latents (|cached - plain| / |plain|). How the videos score is measured with
``kinema eval suite configs/eval/basic.yaml --step-cache T``. Every line carries the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `kinema bench` runs this file via runpy
from bench_vae import _machine

SUITE = Path(__file__).resolve().parents[1] / "configs" / "eval" / "basic.yaml"


def block_counter(model) -> list[int]:
    """[first block calls, last block calls], from hooks on their feed-forward layers (skipped blocks do not run)."""
    counts = [0, 0]
    for n, block in ((0, model.blocks[0]), (1, model.blocks[-1])):
        block.ffn.register_forward_hook(lambda *_, n=n: counts.__setitem__(n, counts[n] + 1))
    return counts


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="accepted for `kinema bench stepcache --json`")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from kinema.config import parse_size
    from kinema.frames import frames_for_seconds
    from kinema.inference.expand import expand_prompt
    from kinema.inference.generate import load_pipeline
    from kinema.inference.suite import load_suite

    pipe = load_pipeline(args.model)
    width, height = parse_size(args.size)
    frames = frames_for_seconds(args.seconds, pipe.defaults.fps)
    items = load_suite(SUITE).items[:args.prompts]
    prompts = [expand_prompt(item.prompt, seed=n, seconds=args.seconds) or item.prompt for n, item in enumerate(items)]
    counts = block_counter(pipe.transformer)
    settings = [0.0, *args.thresholds]
    seconds = {t: 0.0 for t in settings}
    cpu = {t: 0.0 for t in settings}
    skipped = {t: [0, 0] for t in settings}
    change = {t: [] for t in settings}
    pipe(prompts[0], num_frames=frames, height=height, width=width)  # warm-up
    for n, prompt in enumerate(prompts):
        plain = None
        for threshold in settings:
            counts[:] = [0, 0]
            wall, process = time.perf_counter(), time.process_time()
            made = pipe(prompt, num_frames=frames, height=height, width=width, step_cache=threshold,
                        generator=torch.Generator().manual_seed(n), output_type="latent").frames
            pipe.decode_latents(made)
            seconds[threshold] += time.perf_counter() - wall
            cpu[threshold] += time.process_time() - process
            skipped[threshold] = [a + b for a, b in zip(skipped[threshold], counts)]
            plain = made if plain is None else plain
            change[threshold].append(float((made - plain).abs().mean() / plain.abs().mean()))
    results = []
    for threshold in args.thresholds:
        line = {"benchmark": "step_cache", "model": pipe.name, "threshold": threshold, "prompts": len(prompts),
                "seconds_of_video": args.seconds, "size": args.size, "steps": pipe.defaults.steps,
                "guidance": pipe.defaults.guidance_scale, "plain_s": round(seconds[0.0], 3),
                "cached_s": round(seconds[threshold], 3), "speedup": round(seconds[0.0] / seconds[threshold], 2),
                "cpu_speedup": round(cpu[0.0] / cpu[threshold], 2),
                "blocks_skipped": round(1 - skipped[threshold][1] / max(skipped[threshold][0], 1), 3),
                "latent_change": round(sum(change[threshold]) / len(prompts), 4), **_machine()}
        results.append(line)
        print(json.dumps(line), flush=True)
    return results


if __name__ == "__main__":
    main()
