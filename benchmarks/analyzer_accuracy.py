"""How well the analyzer recovers the simulator's ground truth through H.264: per-frame colour, shape, size,
centroids, sky and ground, and exact cuts, over fresh world clips at 64x64, 96x64 and 64x96. Prints JSON.

    python benchmarks/analyzer_accuracy.py --clips 126 --seed 0

Clip k uses world seed ``seed + k`` and size ``SIZES[k % 3]``; a third of the clips are single wide shots
(6 s), the rest 8 s with 2 or 3 shots over every framing. Objects are checked where they are whole in frame,
unoccluded and at least 2.5 px in radius (what the suites score); size and centroids only in wide shots, whose
camera the ground truth's pixel positions share with the analyzer's frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kinema.eval import analyze_video
from kinema.media import read_video, write_video
from kinema.world import SceneOptions, make_clip, sample_scene
from kinema.world.scene import SIZES as OBJECT_SIZES

FRAME_SIZES = ((64, 64), (96, 64), (64, 96))
MIN_RADIUS_PX = 2.5


def clip_options(k: int) -> SceneOptions:
    if k % 3 == 0:
        return SceneOptions(seconds=6, shots=1, occluder_probability=0.6, paint_probability=0.4)
    return SceneOptions(seconds=8, shots=(2, 3), occluder_probability=0.5, paint_probability=0.3)


def tally(counts: dict[str, list[int]], key: str, right: bool) -> None:
    counts[key][0] += right
    counts[key][1] += 1


def check_clip(scene, clip, analysis, counts: dict[str, list[int]], offsets: list[float]) -> None:
    """Adds one clip's checks to ``counts`` ([correct, checks] per key) and its wide-shot centroid errors."""
    gt = clip.ground_truth
    framing = np.empty(scene.frames, dtype=object)
    for shot in scene.shots:
        framing[shot.start:shot.end] = shot.framing
    for f, frame in enumerate(analysis.frames):
        tally(counts, "sky", frame.sky == scene.sky)
        tally(counts, "ground", frame.ground == scene.ground)
        for i, obj in enumerate(scene.objects):
            clean = (gt["visible"][f, i] and gt["occluded"][f, i] == 0 and gt["in_frame"][f, i] >= 0.999
                     and gt["radius_px"][f, i] >= MIN_RADIUS_PX)
            if not clean or not frame.objects:
                continue
            col, row = gt["col"][f, i], gt["row"][f, i]
            det = min(frame.objects, key=lambda d: np.hypot(d.col - col, d.row - row))
            tally(counts, "color", det.color == obj.color)
            tally(counts, "shape", det.shape == obj.shape)
            if framing[f] == "wide":
                tally(counts, "size", det.size == obj.size)
                offsets.append(float(np.hypot(det.col - col, det.row - row)))
    tally(counts, "cuts", analysis.cuts == [s.start for s in scene.shots[1:]])


def measure(clips: int, seed: int) -> dict:
    counts = {key: [0, 0] for key in ("color", "shape", "size", "sky", "ground", "cuts")}
    offsets: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(clips):
            width, height = FRAME_SIZES[k % 3]
            scene = sample_scene(seed + k, clip_options(k))
            clip = make_clip(scene, width, height)
            path = write_video(Path(tmp) / f"clip{k}.mp4", clip.frames, scene.fps, sidecar=False)
            check_clip(scene, clip, analyze_video(read_video(path)[0], scene.fps), counts, offsets)
    result = {key: {"correct": c, "checks": n, "rate": round(c / n, 4) if n else None}
              for key, (c, n) in counts.items()}
    result["centroid_px"] = {
        "mean": round(float(np.mean(offsets)), 3) if offsets else None,
        "within_1px": round(float(np.mean(np.asarray(offsets) <= 1.0)), 4) if offsets else None,
        "checks": len(offsets),
    }
    result["frames"] = counts["sky"][1]  # every frame has one sky check
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=126)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.seed < 0:
        print(f"error: --clips must be >= 1 and --seed >= 0 (got {args.clips} and {args.seed})", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = measure(args.clips, args.seed)
    result.update(clips=args.clips, seed=args.seed, object_radii_m=dict(OBJECT_SIZES),
                  seconds=round(time.perf_counter() - start, 1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
