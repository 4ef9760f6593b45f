"""Few-step generation against the teacher's defaults, side by side in one run. Prints JSON lines.

    python benchmarks/bench_fewstep.py --model runs/distill-tiny/pipeline [--seconds 4 60] [--size 64x64]
                                       [--repeats 3] [--threads 2]

The model folder holds a teacher and its few-step transformer (``kinema train distill``). For each length, the
whole of ``kinema.inference.generate.run`` (prompt expansion, text encoding, sampling, the VAE decode and the MP4
write) with the teacher's defaults (its steps and guidance: two passes a step) against the few-step transformer's
(its steps, one pass a step), alternating, median of the repeats after a warm-up of each. Also the VAE decode
alone for that length (``decode_s``: what no sampler can take away) and each side's real-time factor (seconds of
video per second of wall time). Shared machines are noisy: every line carries the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `kinema bench` runs this file via runpy
from bench_vae import _machine, _median_times

PROMPT = "a red ball is thrown to the right and bounces on the sand"


def compare(pipe, seconds: float, size: str, repeats: int, folder: str) -> dict:
    from kinema.inference.generate import run
    from kinema.inference.request import Request, validate

    few = pipe.defaults.few_step
    requests = {"teacher": Request(prompt=PROMPT, output=f"{folder}/teacher.mp4", seconds=seconds, size=size),
                "few_step": Request(prompt=PROMPT, output=f"{folder}/few.mp4", seconds=seconds, size=size,
                                    steps=few.steps)}
    times = _median_times({key: (lambda r=r: run(pipe, r)) for key, r in requests.items()}, repeats)
    plan = validate(requests["teacher"], pipe.defaults.fps)
    latent_frames = 1 + (plan.frames - 1) // pipe.vae.temporal_compression
    lh, lw = plan.height // pipe.vae.spatial_compression, plan.width // pipe.vae.spatial_compression
    latents = torch.randn(1, pipe.vae.config.z_dim, latent_frames, lh, lw)
    start = time.perf_counter()
    pipe.decode_latents(latents)
    decode = time.perf_counter() - start
    wall = {key: value[0] for key, value in times.items()}
    video_seconds = (plan.frames - 1) / plan.fps
    return {
        "benchmark": "few_step_vs_teacher", "model": pipe.name, "seconds_of_video": video_seconds, "size": size,
        "frames": plan.frames, "teacher": {"steps": pipe.defaults.steps, "guidance": pipe.defaults.guidance_scale},
        "few_step": {"steps": few.steps, "guidance": few.guidance_scale}, "repeats": repeats,
        "teacher_s": round(wall["teacher"], 3), "few_step_s": round(wall["few_step"], 3),
        "speedup": round(wall["teacher"] / wall["few_step"], 2),
        "cpu_speedup": round(times["teacher"][1] / times["few_step"][1], 2), "decode_s": round(decode, 3),
        "teacher_realtime_factor": round(video_seconds / wall["teacher"], 2),
        "few_step_realtime_factor": round(video_seconds / wall["few_step"], 2), **_machine(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a pipeline folder with a few-step transformer")
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 60.0])
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="accepted for `kinema bench fewstep --json`")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from kinema.inference.generate import load_pipeline

    pipe = load_pipeline(args.model)
    if pipe.defaults.few_step is None:
        raise SystemExit(f"'{args.model}' has no few-step transformer (kinema train distill makes one)")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            results.append(compare(pipe, seconds, args.size, args.repeats, folder))
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
