"""Simulated world speed: seconds to simulate, caption and render one clip. Prints JSON lines.

    python benchmarks/bench_world.py [--seconds 60] [--size 64x64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from kinema.world import SceneOptions, caption_clip, render, sample_scene, simulate


def measure(seconds: float, width: int, height: int, shots: tuple[int, int], repeats: int, seed: int) -> dict:
    timings = {"simulate": [], "caption": [], "render": [], "total": []}
    for r in range(repeats):
        scene = sample_scene(seed + r, SceneOptions(seconds=seconds, shots=shots))
        t0 = time.perf_counter()
        traj = simulate(scene)
        t1 = time.perf_counter()
        caption_clip(scene, traj)
        t2 = time.perf_counter()
        frames, _ = render(scene, traj, width, height)
        t3 = time.perf_counter()
        for key, value in (("simulate", t1 - t0), ("caption", t2 - t1), ("render", t3 - t2), ("total", t3 - t0)):
            timings[key].append(value)
    return {
        "benchmark": "world_clip",
        "seconds": seconds, "size": f"{width}x{height}", "frames": int(frames.shape[0]),
        "shots": f"{shots[0]}-{shots[1]}", "repeats": repeats,
        **{f"{k}_s_median": round(statistics.median(v), 4) for k, v in timings.items()},
        "total_s_max": round(max(timings["total"]), 4),
        "realtime_factor": round(seconds / statistics.median(timings["total"]), 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    for shots in ((1, 1), (3, 5)):
        print(json.dumps(measure(args.seconds, width, height, shots, args.repeats, args.seed)), flush=True)


if __name__ == "__main__":
    main()
