"""Long-video scaling: time and peak memory of 60 s against 6 s with the default model. Prints JSON lines.

    python benchmarks/bench_long.py [--model DIR] [--size 64x64] [--seconds 6 60] [--steps N] [--threads N]

Each length runs in a fresh process (peak RSS only grows within a process), loads the pipeline, warms up
with a one-window clip, then times ``kinema.inference.generate.run`` on the prompt: windows, one VAE decode and the
MP4 write. One line per length with ``seconds_wall`` and ``peak_rss_mb``, then a summary line with
``time_ratio_60_6`` (goal <= 11), ``rss_ratio_60_6`` (goal <= 1.3) and ``realtime_factor`` (video seconds per
wall second for the longest clip). A run of 6 s fits in one window (13 latent frames); 60 s takes 13 windows.
The lines carry the load average, because shared machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "a red ball is thrown to the right and bounces on the sand"


def child(args: argparse.Namespace) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(args.threads)
    from kinema.inference.generate import load_pipeline, run
    from kinema.inference.request import Request

    pipe = load_pipeline(args.model)
    with tempfile.TemporaryDirectory() as folder:
        run(pipe, Request(prompt=PROMPT, output=f"{folder}/warm.mp4", seconds=1.0, size=args.size,
                          steps=args.steps))
        start = time.perf_counter()
        cpu = time.process_time()
        run(pipe, Request(prompt=PROMPT, output=f"{folder}/clip.mp4", seconds=args.child, size=args.size,
                          steps=args.steps))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"bench": "long", "seconds_video": args.child, "size": args.size, "seconds_wall": round(wall, 3),
                      "seconds_cpu": round(cpu, 3), "peak_rss_mb": round(peak_kb / 1024, 1),
                      "threads": args.threads, "load_avg": os.getloadavg()[0]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="a pipeline folder or a packaged model's name (default: kinema-tiny)")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--seconds", type=float, nargs="+", default=[6.0, 60.0])
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    results = {}
    for seconds in args.seconds:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(seconds), "--size", args.size,
                   "--threads", str(args.threads)]
        if args.model:
            command += ["--model", args.model]
        if args.steps:
            command += ["--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"bench_long: the {seconds:g} s run failed: {done.stderr.strip().splitlines()[-1:]}")
        line = done.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        results[seconds] = json.loads(line)
    short, long = min(results), max(results)
    print(json.dumps({
        "bench": "long_summary", "size": args.size, "short_seconds": short, "long_seconds": long,
        "time_ratio_60_6": round(results[long]["seconds_wall"] / results[short]["seconds_wall"], 2),
        "rss_ratio_60_6": round(results[long]["peak_rss_mb"] / results[short]["peak_rss_mb"], 3),
        "realtime_factor": round(long / results[long]["seconds_wall"], 3),
        "goals": {"time_ratio_60_6": "<= 11", "rss_ratio_60_6": "<= 1.3"}, "load_avg": os.getloadavg()[0],
    }), flush=True)


if __name__ == "__main__":
    main()
