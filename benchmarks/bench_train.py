"""Training speed of the VAE task: samples/s through kinema's Trainer, side by side in one run with a
bare PyTorch loop (same model, same batches, plain forward / backward / AdamW; run before and after
the trainer), so the trainer's overhead (data rendering, EMA, clipping, metrics) shows directly.
Prints JSON lines.

    python benchmarks/bench_train.py [--config configs/vae/tiny.yaml] [--steps 4] [--warmup 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kinema.train.loop import Trainer, seed_everything
from kinema.train.vae import VAETask, load_vae_config


def trainer_rates(config, steps: int, warmup: int) -> list[float]:
    """samples/s of each timed step through Trainer.fit (its own per-step timing from metrics.jsonl)."""
    with tempfile.TemporaryDirectory() as out:
        config.train.out_dir = Path(out)
        config.train.steps, config.train.log_every = warmup + steps, 1
        config.train.save_every, config.train.eval_every = 10**9, 0
        seed_everything(config.train.seed)
        task = VAETask(config)
        task.evaluate = None  # only training steps are timed
        Trainer(task, config.train).fit()
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [line["samples_per_s"] for line in lines if "samples_per_s" in line][warmup:]


def bare_rates(config, steps: int, warmup: int) -> tuple[list[float], float]:
    """samples/s of a plain loop on pre-rendered batches (same micro-batches as the trainer in one process),
    and the median seconds to render one batch."""
    seed_everything(config.train.seed)
    task = VAETask(config)
    model = task.model.to("cuda" if torch.cuda.is_available() else "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    render_seconds, batches = [], []
    for index in range(warmup + steps):
        started = time.perf_counter()
        batches.append(task.batch(index, 0, 1))
        render_seconds.append(time.perf_counter() - started)
    micro = config.train.micro_batch_size or config.train.batch_size  # the trainer's micro-batches, one process
    rates = []
    for batch in batches:
        video = batch["video"].to(next(model.parameters()).device)
        started = time.perf_counter()
        for part in video.split(micro):
            reconstruction, posterior = model(part, sample_posterior=True)
            loss = (reconstruction - part).abs().mean() + config.loss.kl * posterior.kl().mean()
            (loss * part.shape[0] / video.shape[0]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # wait for the device
        rates.append(video.shape[0] / (time.perf_counter() - started))
    return rates[warmup:], statistics.median(render_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/vae/tiny.yaml")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_vae_config(args.config, args.overrides)
    sizes = config.data.sizes
    # bare, trainer, bare again: machine noise that drifts over the run hits both sides alike
    bare, render_s = bare_rates(config, args.steps, args.warmup)
    trainer = trainer_rates(load_vae_config(args.config, args.overrides), args.steps, args.warmup)
    bare_after, _ = bare_rates(config, args.steps, args.warmup)
    bare += bare_after
    common = {
        "benchmark": "train_vae", "config": args.config, "model": config.model if isinstance(config.model, str)
        else "custom", "sizes": sizes, "frames": config.data.frames, "batch_size": config.train.batch_size,
        "steps": args.steps, "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
    }
    trainer_median, bare_median = statistics.median(trainer), statistics.median(bare)
    print(json.dumps({**common, "loop": "kinema_trainer", "samples_per_s": round(trainer_median, 3),
                      "samples_per_s_min": round(min(trainer), 3)}), flush=True)
    print(json.dumps({**common, "loop": "bare_pytorch", "samples_per_s": round(bare_median, 3),
                      "samples_per_s_min": round(min(bare), 3), "render_batch_s": round(render_s, 4)}), flush=True)
    render_share = render_s / (config.train.batch_size / trainer_median)
    print(json.dumps({**common, "loop": "ratio", "trainer_over_bare": round(trainer_median / bare_median, 3),
                      "render_share_of_trainer_step": round(render_share, 3)}), flush=True)


if __name__ == "__main__":
    main()
