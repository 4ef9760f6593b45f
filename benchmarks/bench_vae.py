"""Video VAE speed and memory, side by side with diffusers' AutoencoderKLWan. Prints JSON lines.

    python benchmarks/bench_vae.py [--configs tiny] [--size 64x64] [--repeats 3] [--train] [--no-memory]

- speed: kinema ``VideoVAE`` (whole clip, and chunked) against diffusers ``AutoencoderKLWan`` built with the
  identical config and the same (random) weights, fp32, eval mode, ``torch.inference_mode``, same threads;
  encode and decode frames/s (median of the repeats after a warmup, the two models alternating) at 17
  frames and at 60 s (481 frames at 8 fps); ``speedup_vs_diffusers`` = diffusers time / kinema time.
- memory: peak resident set of a fresh ``python -c`` process per case that decodes 6 s and 60 s of
  latents (chunked, whole clip, and diffusers); ``rss_ratio_60_6`` = peak(60 s) / peak(6 s).
- ``--train``: seconds per training step (forward + backward + AdamW, batch 4, 17x64x64) per config.

Shared machines are noisy: every line carries the load average at the time it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from kinema.models.vae import VAE_CONFIGS, VideoVAE, rename_wan_keys

# Alternatives to the named configs, for --train step times (the Wan2.1 layout without patches).
TRAIN_ALTERNATIVES: dict[str, dict[str, Any]] = {
    "wan-layout-base8": dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                             temporal_downsample=[False, True, True]),
    "wan-layout-base16": dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                              temporal_downsample=[False, True, True]),
}


def _config(name: str) -> dict[str, Any]:
    if name in VAE_CONFIGS:
        return dict(VAE_CONFIGS[name])
    if name in TRAIN_ALTERNATIVES:
        return dict(TRAIN_ALTERNATIVES[name])
    raise SystemExit(f"unknown config '{name}': choose from {', '.join([*VAE_CONFIGS, *TRAIN_ALTERNATIVES])}")


def _machine() -> dict[str, Any]:
    return {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def diffusers_twin(config: dict[str, Any]):
    """diffusers' AutoencoderKLWan with the same architecture as VideoVAE(**config)."""
    from diffusers import AutoencoderKLWan

    patch = config.get("patch_size", 1)
    return AutoencoderKLWan(
        base_dim=config["base_dim"], z_dim=config["z_dim"], dim_mult=list(config["dim_mult"]),
        num_res_blocks=config["num_res_blocks"], temperal_downsample=list(config["temporal_downsample"]),
        in_channels=3 * patch * patch, out_channels=3 * patch * patch, patch_size=patch if patch > 1 else None,
    )


def twins(name: str, seed: int = 0) -> tuple[VideoVAE, Any]:
    """A kinema VAE and its diffusers twin holding the same random weights, in eval mode."""
    torch.manual_seed(seed)
    config = _config(name)
    reference = diffusers_twin(config).eval()
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            tensor.normal_(0.0, 0.05)
    model = VideoVAE(**config).eval()
    model.load_state_dict(rename_wan_keys(reference.state_dict()), strict=True)
    return model, reference


def _median_times(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall seconds, process CPU seconds) of each function; one warmup each, then the functions
    alternate every repeat. CPU seconds hardly change when other processes share the cores; wall does."""
    for function in functions.values():
        function()
    times: dict[str, list[tuple[float, float]]] = {key: [] for key in functions}
    for _ in range(repeats):
        for key, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            times[key].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {key: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
            for key, values in times.items()}


def speed(name: str, frames: int, width: int, height: int, repeats: int, chunk_frames: int) -> list[dict]:
    model, reference = twins(name)
    video = torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        latents = model.encode(video).mean
        reference_latents = reference.encode(video).latent_dist.mean
        decoded = model.decode(latents)
        max_abs_diff = max((latents - reference_latents).abs().max().item(),
                           (decoded - reference.decode(latents).sample).abs().max().item())
        encode = _median_times({
            "kinema": lambda: model.encode(video),
            "kinema_chunked": lambda: model.encode(video, chunk_frames=chunk_frames),
            "diffusers": lambda: reference.encode(video),
        }, repeats)
        decode = _median_times({
            "kinema": lambda: model.decode(latents),
            "kinema_chunked": lambda: model.decode(latents, chunk_frames=chunk_frames),
            "diffusers": lambda: reference.decode(latents),
        }, repeats)
    lines = []
    for operation, times in (("encode", encode), ("decode", decode)):
        wall = {key: value[0] for key, value in times.items()}
        cpu = {key: value[1] for key, value in times.items()}
        lines.append({
            "benchmark": f"vae_{operation}", "config": name, "frames": frames, "size": f"{width}x{height}",
            "chunk_frames": chunk_frames, "repeats": repeats,
            "kinema_fps": round(frames / wall["kinema"], 1),
            "kinema_chunked_fps": round(frames / wall["kinema_chunked"], 1),
            "diffusers_fps": round(frames / wall["diffusers"], 1),
            "kinema_s": round(wall["kinema"], 4), "kinema_chunked_s": round(wall["kinema_chunked"], 4),
            "diffusers_s": round(wall["diffusers"], 4),
            "speedup_vs_diffusers": round(wall["diffusers"] / wall["kinema"], 2),
            "speedup_chunked_vs_diffusers": round(wall["diffusers"] / wall["kinema_chunked"], 2),
            "kinema_cpu_s": round(cpu["kinema"], 4), "kinema_chunked_cpu_s": round(cpu["kinema_chunked"], 4),
            "diffusers_cpu_s": round(cpu["diffusers"], 4),
            "cpu_speedup_vs_diffusers": round(cpu["diffusers"] / cpu["kinema"], 2),
            "max_abs_diff_vs_diffusers": float(f"{max_abs_diff:.3g}"),
            **_machine(),
        })
    return lines


# A fresh interpreter per case, so one case's allocations cannot hide another's peak. The peak is VmHWM
# from /proc/self/status: getrusage's ru_maxrss survives exec on Linux, so a child spawned by this (large)
# process would report this process's peak instead of its own.
_RSS_CHILD = """
import resource, sys, torch
sys.path.insert(0, {bench_dir!r})
from bench_vae import twins

def peak_kib():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

torch.set_num_threads({threads})
model, reference = twins({name!r})
latents = torch.randn(1, model.config.z_dim, {latent_frames}, {latent_height}, {latent_width})
base = peak_kib()
with torch.inference_mode():
    if {mode!r} == "diffusers":
        reference.decode(latents)
    else:
        model.decode(latents, chunk_frames={chunk_frames})
print(base, peak_kib())
"""


def peak_rss_mib(name: str, seconds: float, fps: float, width: int, height: int, mode: str,
                 chunk_frames: int | None) -> tuple[float, float]:
    """(RSS before decoding, peak RSS) in MiB of a child process that decodes `seconds` of latents."""
    config = VideoVAE(**_config(name))
    frames = 1 + 4 * round(seconds * fps / 4)
    latent_frames, latent_height, latent_width = config.latent_size(frames, height, width)
    code = _RSS_CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), threads=torch.get_num_threads(),
                             name=name, latent_frames=latent_frames, latent_height=latent_height,
                             latent_width=latent_width, mode=mode, chunk_frames=chunk_frames)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, check=True)
    base_kib, peak_kib = (int(v) for v in result.stdout.split()[-2:])
    return base_kib / 1024, peak_kib / 1024


def memory(name: str, width: int, height: int, fps: float, chunk_frames: int) -> list[dict]:
    lines = []
    for mode, chunk in (("kinema_chunked", chunk_frames), ("kinema_whole", None), ("diffusers", None)):
        (base6, peak6), (base60, peak60) = (peak_rss_mib(name, s, fps, width, height, mode, chunk) for s in (6, 60))
        lines.append({
            "benchmark": "vae_decode_peak_rss", "config": name, "mode": mode, "size": f"{width}x{height}",
            "chunk_frames": chunk, "rss_before_mib": round(base60, 1),
            "peak_rss_6s_mib": round(peak6, 1), "peak_rss_60s_mib": round(peak60, 1),
            "rss_ratio_60_6": round(peak60 / peak6, 3),
            "growth_ratio_60_6": round((peak60 - base60) / max(peak6 - base6, 1e-6), 2),
            **_machine(),
        })
    return lines


def train_step_time(name: str, batch: int, frames: int, width: int, height: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = VideoVAE(**_config(name)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.rand(batch, 3, frames, height, width) * 2 - 1
    times, cpu_times = [], []
    for _ in range(steps + 1):  # the first step is warmup
        wall, cpu = time.perf_counter(), time.process_time()
        reconstruction, posterior = model(video, sample_posterior=True)
        loss = (reconstruction - video).abs().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    step_s = statistics.median(times[1:])
    return {"benchmark": "vae_train_step", "config": name, "params": sum(p.numel() for p in model.parameters()),
            "batch": batch, "frames": frames, "size": f"{width}x{height}", "step_s_median": round(step_s, 3),
            "step_s_min": round(min(times[1:]), 3), "steps_per_s": round(1 / step_s, 2),
            "step_cpu_s_median": round(statistics.median(cpu_times[1:]), 3), **_machine()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny", help="comma-separated VAE configs for speed and memory")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the long clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-frames", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--train", action="store_true", help="also time training steps")
    parser.add_argument("--train-configs", default="tiny,small,wan-layout-base8,wan-layout-base16")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="accepted for `kinema bench vae --json`; always JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    long_frames = 1 + 4 * round(args.seconds * args.fps / 4)

    results: list[dict] = []

    def emit(line: dict) -> None:
        results.append(line)
        print(json.dumps(line), flush=True)

    for name in args.configs.split(","):
        if not args.no_speed:
            for frames in (17, long_frames):
                repeats = args.repeats if frames <= 17 else max(1, min(args.repeats, 3))
                for line in speed(name, frames, width, height, repeats, args.chunk_frames):
                    emit(line)
        if not args.no_memory:
            for line in memory(name, width, height, args.fps, args.chunk_frames):
                emit(line)
    if args.train:
        for name in args.train_configs.split(","):
            emit(train_step_time(name, batch=4, frames=17, width=64, height=64, steps=args.train_steps))
    return results


if __name__ == "__main__":
    main()
