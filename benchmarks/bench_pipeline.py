"""Text-to-video end to end, side by side with diffusers' WanPipeline. Prints JSON lines.

    python benchmarks/bench_pipeline.py [--frames 33] [--size 64x64] [--steps 20] [--repeats 3]
                                        [--default-model MODEL]

- end to end: kinema ``KinemaPipeline(VideoDiT tiny, VideoVAE tiny)`` against diffusers ``WanPipeline`` with
  twins of the same dims holding the same random weights (``WanTransformer3DModel`` as in bench_dit.py,
  ``AutoencoderKLWan`` as in bench_vae.py, its latents_mean/std and scale factors set to the kinema VAE's),
  ``FlowMatchEulerDiscreteScheduler`` with the shift kinema picks for the token count (passed to kinema
  too) and kinema's grid of flow times (uniform from 1 to 0, then shifted; ``--stock-scheduler`` keeps the
  scheduler's own grid, which ends at a small sigma before 0), the same steps, guidance 4 (two model
  evaluations per step: kinema batches the pair, diffusers runs them one after the other), fp32, same
  threads, the same seeded noise. WanPipeline gets no tokenizer or text encoder: its ``prompt_embeds`` /
  ``negative_prompt_embeds`` come from kinema's MiniLM text encoder (one instance shared by both sides,
  loaded before timing), and that encoding is inside the diffusers timing, so both sides do the same work:
  encode the prompt (the empty negative prompt is cached on both sides), denoise, decode with the VAE, and
  return uint8 frames (B, F, H, W, 3) (WanPipeline's float frames in [0, 1] are converted to uint8 inside
  the timing). On the same grid both pipelines compute the same video: ``max_abs_diff_uint8`` compares the
  frames of the last timed runs. Median seconds of the repeats after a warmup, the two pipelines
  alternating; ``speedup_vs_diffusers`` = diffusers time / kinema time (wall; ``cpu_speedup_vs_diffusers``
  from process CPU time).
- ``--wan CONFIG`` (``wan2.1-1.3b``, ``wan2.2-ti2v-5b``) ``[--wan-dtype bfloat16]``: a random-weight diffusers Wan
  folder at that model's real transformer and VAE dims (a 1-layer UMT5 of the real 4096-d width stands in for the
  5.7B text encoder), written with diffusers' classes in 2 GB shards (``wan_folders.make_large_wan_folder``), then
  loaded and run by each side in a fresh
  child process of its own, the two alternating: kinema ``KinemaPipeline.from_pretrained`` (lazy, shard by shard)
  against ``WanPipeline.from_pretrained``, the folder's UniPC scheduler, the same seed, steps, guidance 5 and
  Wan's negative prompt. Each child reports seconds to load, seconds to generate and its peak RSS
  (``ru_maxrss``: weights, activations and the interpreter); ``max_abs_diff_uint8`` compares the frames.
- ``--default-model MODEL``: seconds for kinema alone to generate the same clip from a pipeline folder or a
  packaged model (``kinema.weights.find_model``, e.g. ``kinema-tiny``) with its default sampling settings.
- ``--compile`` (with ``--default-model``): the same clip per video with the transformer's repeated blocks
  compiled by ``torch.compile`` (``compile_repeated_blocks``) against eager, alternating; ``first_video_s`` is the
  first compiled video, compiling included (a C++ compiler is needed on the CPU).

Shared machines are noisy: every line carries the load average at the time it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kinema.diffusion.flow import shift_for_tokens
from kinema.inference.pipeline import KinemaPipeline
from kinema.models.text import TextEncoder
from kinema.weights import find_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `kinema bench` runs this file via runpy
import bench_dit
import bench_vae
from bench_vae import _machine, _median_times

PROMPT = "a red ball bounces across a blue floor while the camera pans left"
GUIDANCE = 4.0


def uniform_grid_scheduler(shift: float):
    """FlowMatchEulerDiscreteScheduler on kinema's grid: sigmas 1, 1 - 1/n, ..., 1/n, shifted, then 0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class UniformGrid(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, **kwargs):
            if sigmas is None and num_inference_steps is not None:
                sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1].tolist()  # shifted by the parent
                num_inference_steps = None
            return super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, **kwargs)

    return UniformGrid(shift=shift)


def pipelines(dit: str, vae: str, encoder: TextEncoder):
    """(KinemaPipeline, WanPipeline) over twin models with the same random weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    transformer, reference_transformer = bench_dit.twins(dit, seed=0)
    vae_model, reference_vae = bench_vae.twins(vae, seed=1)
    # diffusers' default latents_mean/std are Wan2.1's; WanPipeline denormalises with these before decoding,
    # exactly as VideoVAE.denormalize_latents does with its own.
    reference_vae.register_to_config(
        latents_mean=list(vae_model.config.latents_mean), latents_std=list(vae_model.config.latents_std),
        scale_factor_spatial=vae_model.spatial_compression, scale_factor_temporal=vae_model.temporal_compression)
    ours = KinemaPipeline(transformer.eval(), vae_model.eval(), text_encoder=encoder)
    theirs = WanPipeline(tokenizer=None, text_encoder=None, vae=reference_vae.eval(),
                         scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), transformer=reference_transformer.eval())
    theirs.set_progress_bar_config(disable=True)
    return ours, theirs


def end_to_end(dit: str, vae: str, encoder: TextEncoder, frames: int, width: int, height: int, steps: int,
               repeats: int, fps: float, stock_scheduler: bool = False) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    ours, theirs = pipelines(dit, vae, encoder)
    latent_frames, latent_height, latent_width = ours.vae.latent_size(frames, height, width)
    _, ph, pw = ours.transformer.config.patch_size
    tokens = latent_frames * -(-latent_height // ph) * -(-latent_width // pw)
    shift = shift_for_tokens(tokens, ours.flow)
    stock = FlowMatchEulerDiscreteScheduler(shift=shift)
    theirs.scheduler = stock if stock_scheduler else uniform_grid_scheduler(shift)
    outputs: dict[str, np.ndarray] = {}

    def kinema() -> None:
        outputs["kinema"] = ours(PROMPT, num_frames=frames, height=height, width=width, num_inference_steps=steps,
                                 guidance_scale=GUIDANCE, shift=shift,
                                 generator=torch.Generator().manual_seed(0)).frames

    def diffusers() -> None:
        prompt_embeds, _ = encoder.encode([PROMPT])  # (1, L, 384); the mask is all True for one prompt
        negative_embeds, _ = encoder.encode_cached("")  # as KinemaPipeline.encode_text does
        video = theirs(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, height=height,
                       width=width, num_frames=frames, num_inference_steps=steps, guidance_scale=GUIDANCE,
                       generator=torch.Generator().manual_seed(0), output_type="np").frames
        outputs["diffusers"] = (video * 255.0).round().clip(0, 255).astype(np.uint8)  # (B, F, H, W, 3)

    with torch.inference_mode():
        times = _median_times({"kinema": kinema, "diffusers": diffusers}, repeats)
    wall = {key: value[0] for key, value in times.items()}
    cpu = {key: value[1] for key, value in times.items()}
    difference = None
    if outputs["kinema"].shape == outputs["diffusers"].shape:
        difference = np.abs(outputs["kinema"].astype(np.int16) - outputs["diffusers"].astype(np.int16))
    return {
        "benchmark": "pipeline_t2v", "dit": dit, "vae": vae, "frames": frames, "fps": fps,
        "seconds_of_video": round((frames - 1) / fps, 2), "size": f"{width}x{height}", "steps": steps,
        "guidance_scale": GUIDANCE, "model_evaluations": 2 * steps, "shift": round(shift, 4),
        "diffusers_grid": "scheduler" if stock_scheduler else "kinema",
        "latent_shape": [1, ours.vae.config.z_dim, latent_frames, latent_height, latent_width], "tokens": tokens,
        "repeats": repeats,
        "kinema_s": round(wall["kinema"], 3), "diffusers_s": round(wall["diffusers"], 3),
        "speedup_vs_diffusers": round(wall["diffusers"] / wall["kinema"], 2),
        "kinema_cpu_s": round(cpu["kinema"], 3), "diffusers_cpu_s": round(cpu["diffusers"], 3),
        "cpu_speedup_vs_diffusers": round(cpu["diffusers"] / cpu["kinema"], 2),
        "kinema_output_shape": list(outputs["kinema"].shape), "kinema_output_dtype": str(outputs["kinema"].dtype),
        "diffusers_output_shape": list(outputs["diffusers"].shape),
        "max_abs_diff_uint8": None if difference is None else int(difference.max()),
        "mean_abs_diff_uint8": None if difference is None else round(float(difference.mean()), 4),
        **_machine(),
    }


def default_model(folder: Path, encoder: TextEncoder, frames: int, width: int, height: int, repeats: int,
                  fps: float) -> dict:
    pipe = KinemaPipeline.from_pretrained(folder, text_encoder=encoder)
    outputs: dict[str, np.ndarray] = {}

    def generate() -> None:
        outputs["frames"] = pipe(PROMPT, num_frames=frames, height=height, width=width,
                                 generator=torch.Generator().manual_seed(0)).frames

    wall, cpu = _median_times({"kinema": generate}, repeats)["kinema"]
    return {
        "benchmark": "pipeline_default_model", "model": str(folder), "name": pipe.name, "frames": frames,
        "fps": fps, "seconds_of_video": round((frames - 1) / fps, 2), "size": f"{width}x{height}",
        "defaults": dict(pipe.defaults.__dict__), "repeats": repeats,
        "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "output_shape": list(outputs["frames"].shape), **_machine(),
    }


def compiled_video(folder: Path, encoder: TextEncoder, frames: int, width: int, height: int, repeats: int,
                   fps: float) -> dict:
    eager = KinemaPipeline.from_pretrained(folder, text_encoder=encoder)
    compiled = KinemaPipeline.from_pretrained(folder, text_encoder=encoder)
    compiled.transformer.compile_repeated_blocks()

    def video(pipe: KinemaPipeline):
        return lambda: pipe(PROMPT, num_frames=frames, height=height, width=width,
                            generator=torch.Generator().manual_seed(0)).frames

    start = time.perf_counter()
    first = video(compiled)()
    first_s = time.perf_counter() - start
    times = _median_times({"eager": video(eager), "compiled": video(compiled)}, repeats)
    difference = np.abs(first.astype(np.int16) - video(eager)().astype(np.int16))
    return {
        "benchmark": "pipeline_compiled", "model": str(folder), "frames": frames, "fps": fps,
        "seconds_of_video": round((frames - 1) / fps, 2), "size": f"{width}x{height}",
        "defaults": {"steps": eager.defaults.steps, "guidance": eager.defaults.guidance_scale}, "repeats": repeats,
        "first_video_s": round(first_s, 2), "eager_s": round(times["eager"][0], 3),
        "compiled_s": round(times["compiled"][0], 3), "speedup": round(times["eager"][0] / times["compiled"][0], 2),
        "cpu_speedup": round(times["eager"][1] / times["compiled"][1], 2),
        "max_abs_diff_uint8": int(difference.max()), **_machine(),
    }


WAN_CONFIGS = {"wan2.1-1.3b": ("wan2.1", "WAN21_1_3B"), "wan2.2-ti2v-5b": ("wan2.2-ti2v", "WAN22_5B")}


def wan_child(side: str, folder: str, frames: int, width: int, height: int, steps: int, dtype: str, out: str) -> None:
    """One side of the Wan comparison, in a process of its own (so that its peak RSS is its own)."""
    import resource
    import time

    torch.manual_seed(0)
    chosen = getattr(torch, dtype)
    started = time.perf_counter()
    if side == "kinema":
        pipe = KinemaPipeline.from_pretrained(folder, dtype=chosen)
        pipe.release_text_encoder = True  # as `kinema generate` runs
        loaded = time.perf_counter()
        video = pipe(PROMPT, num_frames=frames, height=height, width=width, num_inference_steps=steps,
                     guidance_scale=5.0, generator=torch.Generator().manual_seed(0)).frames
    else:
        from diffusers import AutoencoderKLWan, WanPipeline

        from kinema.models.wan import WAN_NEGATIVE_PROMPT

        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
        pipe = WanPipeline.from_pretrained(folder, vae=vae, torch_dtype=chosen)  # the VAE in fp32, as the model card
        pipe.set_progress_bar_config(disable=True)
        loaded = time.perf_counter()
        video = pipe(PROMPT, negative_prompt=WAN_NEGATIVE_PROMPT, num_frames=frames, height=height, width=width,
                     num_inference_steps=steps, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
                     output_type="np").frames
        video = (video * 255.0).round().clip(0, 255).astype(np.uint8)
    done = time.perf_counter()
    np.save(out, video)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"load_s": round(loaded - started, 2), "generate_s": round(done - loaded, 2),
                      "peak_rss_gib": round(peak, 2)}), flush=True)


def wan_end_to_end(config: str, frames: int, width: int, height: int, steps: int, repeats: int,
                   dtype: str = "float32") -> dict:
    import subprocess
    import tempfile

    import wan_folders

    kind, dims = WAN_CONFIGS[config]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / config
        parameters = wan_folders.make_large_wan_folder(folder, kind, getattr(wan_folders, dims),
                                                       getattr(torch, dtype))
        runs: dict[str, list[dict]] = {"kinema": [], "diffusers": []}
        for _ in range(repeats):
            for side in runs:
                out = Path(tmp) / f"{side}.npy"
                child = subprocess.run([sys.executable, __file__, "--wan-child", side, str(folder), str(frames),
                                        str(width), str(height), str(steps), dtype, str(out)], capture_output=True,
                                       text=True, check=True)
                runs[side].append(json.loads(child.stdout.strip().splitlines()[-1]))
        ours, theirs = np.load(Path(tmp) / "kinema.npy"), np.load(Path(tmp) / "diffusers.npy")
    best = {side: min(items, key=lambda r: r["generate_s"]) for side, items in runs.items()}
    return {
        "benchmark": "pipeline_wan", "config": config, "transformer_parameters": parameters, "dtype": dtype,
        "device": "cpu", "frames": frames, "size": f"{width}x{height}", "steps": steps, "guidance_scale": 5.0,
        "repeats": repeats, **{f"{side}_{key}": value for side, run in best.items() for key, value in run.items()},
        "speedup_vs_diffusers": round(best["diffusers"]["generate_s"] / best["kinema"]["generate_s"], 2),
        "max_abs_diff_uint8": int(np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max()),
        **_machine(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dit", default="tiny", help="DiT config of both pipelines")
    parser.add_argument("--vae", default="tiny", help="VAE config of both pipelines")
    parser.add_argument("--frames", type=int, default=33, help="frames (1 + 4k); 33 = 4 s at 8 fps")
    parser.add_argument("--fps", type=float, default=8.0, help="only labels the clip length")
    parser.add_argument("--size", default="64x64", help="WIDTHxHEIGHT")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compare", action="store_true", help="skip the kinema vs diffusers comparison")
    parser.add_argument("--stock-scheduler", action="store_true",
                        help="diffusers keeps its scheduler's own flow-time grid instead of kinema's")
    parser.add_argument("--default-model", default=None,
                        help="also time kinema alone with this model (a pipeline folder or a packaged name such as "
                             "kinema-tiny) and its default settings")
    parser.add_argument("--compile", action="store_true",
                        help="with --default-model: also time videos with the transformer's blocks compiled")
    parser.add_argument("--wan", default=None, choices=list(WAN_CONFIGS),
                        help="compare kinema and WanPipeline on a random-weight folder of this Wan model's dims")
    parser.add_argument("--wan-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the Wan transformer's dtype (stored and run; the VAE stays float32)")
    parser.add_argument("--wan-child", nargs=8, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true",
                        help="accepted for `kinema bench pipeline --json`; always JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.wan_child:
        side, folder, frames, width, height, steps, dtype, out = args.wan_child
        wan_child(side, folder, int(frames), int(width), int(height), int(steps), dtype, out)
        return []
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.wan:
        line = wan_end_to_end(args.wan, args.frames, width, height, args.steps, args.repeats, args.wan_dtype)
        print(json.dumps(line), flush=True)
        return [line]
    encoder = TextEncoder.default()

    results: list[dict] = []

    def emit(line: dict) -> None:
        results.append(line)
        print(json.dumps(line), flush=True)

    if not args.no_compare:
        emit(end_to_end(args.dit, args.vae, encoder, args.frames, width, height, args.steps, args.repeats, args.fps,
                        args.stock_scheduler))
    if args.default_model is not None:
        folder = find_model(args.default_model)
        emit(default_model(folder, encoder, args.frames, width, height, args.repeats, args.fps))
        if args.compile:
            emit(compiled_video(folder, encoder, args.frames, width, height, args.repeats, args.fps))
    return results


if __name__ == "__main__":
    main()
