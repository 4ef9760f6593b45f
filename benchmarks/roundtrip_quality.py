"""How much of the world a VAE's round trip keeps, read by the analyzer: the ceiling for any transformer on its latents.

Renders fresh world clips (single wide shots and storyboards of several framings), round-trips each through every
VAE given (encode, take the posterior's mode, decode) and scores the originals and the round trips alike, both
written as H.264 at the same quality:

- per clip (``kinema eval clips``): attributes, motion direction, bounces, permanence_clean;
- per storyboard cut, with the suite's measure (``kinema.eval.long.cross_shot_consistency``) and the subject the
  world filmed in each shot: cuts kept, scene kept and subject kept, and the same pooled by the framing cut to.

    python benchmarks/roundtrip_quality.py --vae kinema-tiny --vae path/to/vae --out runs/rt

Prints one JSON object: per source ("originals", then each VAE) the pooled measures, with the clips each was
read in. Clips are rendered once into OUT and reused by later runs with the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CLIP_KEYS = ("attributes", "motion_direction", "bounces", "permanence_clean")


def render(out: Path, seed: int, clips: int, seconds: float, shots: tuple[int, int], size: tuple[int, int]) -> Path:
    from kinema.world.dataset import make_dataset
    from kinema.world.scene import FRAMINGS, SceneOptions

    folder = out / f"world-s{seed}-{clips}x{seconds:g}s-shots{shots[0]}-{shots[1]}-{size[0]}x{size[1]}"
    if not (folder / "manifest.jsonl").exists():
        options = SceneOptions(seconds=seconds, fps=8.0, shots=shots, framings=FRAMINGS)
        make_dataset(folder, clips, options, size, seed)
    return folder


def roundtrip_folder(vae, source: Path, dest: Path) -> Path:
    import torch

    from kinema.media import read_video, write_video
    from kinema.models.vae import tensor_to_video, video_to_tensor

    if (dest / "manifest.jsonl").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    lines = (source / "manifest.jsonl").read_text().splitlines()
    with torch.no_grad():
        for line in lines:
            name = json.loads(line)["file"]
            frames, fps = read_video(source / name)
            x = video_to_tensor(frames)
            latents = vae.encode(x, chunk_frames=32).mode()
            write_video(dest / name, tensor_to_video(vae.decode(latents, chunk_frames=32))[0], fps)
            truth = source / name.replace(".mp4", ".gt.npz")
            if truth.exists():
                (dest / truth.name).write_bytes(truth.read_bytes())
    (dest / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return dest


def clip_measures(folder: Path) -> dict:
    from kinema.eval.clips import evaluate_folder

    report = evaluate_folder(folder, progress=False)
    targets = report.get("clip_targets") or {}
    return {key: {"value": None if targets.get(key, {}).get("value") is None else round(targets[key]["value"], 3),
                  "clips": targets.get(key, {}).get("clips", 0)} for key in CLIP_KEYS}


def cut_measures(folder: Path) -> list[dict]:
    from kinema.eval.long import cross_shot_consistency
    from kinema.media import read_video

    cuts = []
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if len(record["shots"]) < 2:
            continue
        truth = np.load(folder / record["file"].replace(".mp4", ".gt.npz"), allow_pickle=False)
        objects = record["scene"]["objects"]
        subjects = [None if shot.get("subject") is None else
                    (objects[shot["subject"]]["color"], objects[shot["subject"]]["shape"]) for shot in record["shots"]]
        frames, fps = read_video(folder / record["file"])
        result = cross_shot_consistency(np.asarray(frames), [int(s) for s in truth["shot_starts"]], fps,
                                        subjects=subjects)
        for k, cut in enumerate(result["cuts"]):
            cuts.append({"to": record["shots"][k + 1]["framing"], "kept": cut["kept"],
                         "scene_kept": cut["scene_kept"], "subject_kept": cut["subject_kept"]})
    return cuts


def pool_cuts(cuts: list[dict]) -> dict:
    def pooled(rows: list[dict]) -> dict:
        return {"cuts": len(rows), **{key: round(float(np.mean([r[key] for r in rows])), 3) if rows else None
                                      for key in ("kept", "scene_kept", "subject_kept")}}

    framings = sorted({c["to"] for c in cuts})
    return pooled(cuts) | {"by_framing": {f: pooled([c for c in cuts if c["to"] == f]) for f in framings}}


def key(folder: Path) -> str:
    """A folder name for one VAE's round trips: its resolved path and weights' size and time, hashed."""
    import hashlib

    weights = sorted(Path(folder).glob("*.safetensors"))
    stamp = [str(Path(folder).resolve())] + [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights]
    return hashlib.sha256("|".join(stamp).encode()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", action="append", required=True,
                        help="a VAE folder, or a model (folder or packaged name) whose vae/ to use; repeatable")
    parser.add_argument("--out", type=Path, required=True, help="folder for the clips and their round trips")
    parser.add_argument("--clips", type=int, default=24, help="clips of each kind (default 24)")
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--size", default="64x64")
    args = parser.parse_args()

    from kinema.cli.vae import vae_folder
    from kinema.config import parse_size
    from kinema.errors import KinemaError
    from kinema.models.vae import VideoVAE

    try:
        if not 1 <= args.clips <= 10_000:
            raise KinemaError(f"clips must be between 1 and 10000 (got {args.clips})")
        size = parse_size(args.size)
        sources = {"single": render(args.out, args.seed, args.clips, 4.0, (1, 1), size),
                   "storyboard": render(args.out, args.seed + 1, args.clips, 10.0, (3, 5), size)}
        results = {}
        vaes = [("originals", None)] + [(name, vae_folder(name)) for name in args.vae]
        for n, (label, folder) in enumerate(vaes):
            row = {} if folder is None else {"vae": str(folder)}
            vae = None if folder is None else VideoVAE.from_pretrained(folder).float().eval()
            for kind, source in sources.items():
                dest = None if vae is None else args.out / f"rt-{key(folder)}" / source.name
                target = source if vae is None else roundtrip_folder(vae, source, dest)
                row[kind] = clip_measures(target)
                if kind == "storyboard":
                    row["storyboard_cuts"] = pool_cuts(cut_measures(target))
            results[label if label not in results else f"{label} ({n})"] = row
    except KinemaError as error:
        sys.exit(f"error: {error}")
    print(json.dumps({"clips_each": args.clips, "seed": args.seed, "size": args.size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
