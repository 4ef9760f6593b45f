"""A folder of real videos with captions, served as shape-bucketed, index-addressable batches.

Captions come from a manifest when there is one, otherwise from a ``.txt`` file beside each video with the same
stem (as kohya's and musubi-tuner's datasets do). A manifest is ``manifest.jsonl``, ``metadata.jsonl``,
``manifest.csv`` or ``metadata.csv`` in ROOT (the first found), or any such file named explicitly: JSON lines, or a
CSV with a header row. Each entry names its video relative to ROOT (``file``, or ``file_name`` as Hugging Face
datasets' folders do, ``video``, ``video_path`` or ``path``) and its caption (``caption``, ``text`` or
``prompt``); JSON lines may add ``scene_caption`` and ``shots``, a list of ``{"start": source frame or
"start_seconds": s, "caption": ...}``, as ``kinema world make`` writes.

The scan at construction reads headers only (``video_info``). Files that cannot be used are
skipped and reported in ``skipped`` as (path, reason), with a one-line summary logged to
``kinema.data``; the scan never raises for a single file.

**Bucket rule.** A bucket is (frames, height, width). For a video that lasts ``available`` frames
at the target fps:

1. only buckets with ``frames <= available`` fit (none fits: skipped as too short);
2. among those, the aspect ratio nearest the video's, measured as ``|log(w/h) - log(bw/bh)|``,
   because a wrong aspect ratio costs content to the crop while a shorter clip only costs time;
3. among those, the largest frame count;
4. among those, the largest area that does not upscale the video (``bh * bw <= h * w``), or the
   smallest area when all upscale;
5. remaining ties go to the bucket listed first.

**Decoding.** Frames are picked by timestamp at the target fps (nearest source frame, assuming a
constant source frame rate), from a window that starts at a seeded random time per (seed, epoch,
video) or at 0 with ``random_window=False``; then each frame is resized with Pillow (area when
shrinking, bicubic when enlarging) from its centred crop of the bucket's aspect ratio.

**Batches.** Each epoch permutes the videos inside each bucket with a generator seeded by
(seed, epoch), cuts batches that never mix buckets (the last batch of a bucket wraps around to its
start) and permutes the batch order; ``batch(index)`` reads batch ``index % per_epoch`` of epoch
``index // per_epoch``. A file that fails to decode is replaced by the next video of the same bucket
in scan order (deterministically) and reported.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kinema.data.batching import check_index, epoch_batches, epoch_length, epoch_rng, frames_to_video_tensor, rank_rows
from kinema.data.world import check_frames
from kinema.errors import KinemaError, MediaError
from kinema.media import read_video, resize_crop, video_info

log = logging.getLogger("kinema.data")

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
MANIFEST = "manifest.jsonl"
MANIFESTS = (MANIFEST, "metadata.jsonl", "manifest.csv", "metadata.csv")  # looked for in ROOT, in this order
FILE_KEYS = ("file", "file_name", "video", "video_path", "path")  # a manifest entry's video, relative to ROOT
CAPTION_KEYS = ("caption", "text", "prompt")
_EPS = 1e-6


@dataclass
class VideoRecord:
    """One usable video, as the scan found it."""

    path: Path
    caption: str
    scene_caption: str
    shots: list[tuple[int, str]]  # (start as a source frame, caption), sorted; empty: one shot
    source_fps: float
    source_frames: int
    width: int
    height: int
    bucket: int


# ----------------------------------------------------------------------------- pure helpers


def available_frames(source_frames: int, source_fps: float, fps: float) -> int:
    """Frames at ``fps`` that fit in ``source_frames`` at ``source_fps``: floor((n - 1) * fps / source_fps) + 1."""
    if source_frames < 1:
        return 0
    return int(math.floor((source_frames - 1) * fps / source_fps + _EPS)) + 1


def resample_indices(source_frames: int, source_fps: float, fps: float, frames: int | None = None,
                     start: int = 0) -> np.ndarray:
    """Source frame shown at each output frame: output frame j is at time start / source_fps + j / fps and
    takes the nearest source frame. ``frames`` defaults to all that fit after ``start``."""
    if frames is None:
        frames = available_frames(source_frames - start, source_fps, fps)
    ratio = source_fps / fps
    indices = start + np.floor(np.arange(frames) * ratio + 0.5 + _EPS).astype(np.int64)
    return np.minimum(indices, source_frames - 1)


def assign_bucket(buckets: list[tuple[int, int, int]], width: int, height: int, available: int) -> int | None:
    """Index of the bucket for a ``width`` x ``height`` video lasting ``available`` target-fps frames
    (the rule in the module docstring), or None when no bucket is short enough."""
    fitting = [i for i, (f, _, _) in enumerate(buckets) if f <= available]
    if not fitting:
        return None
    aspect = math.log(width / height)

    def aspect_error(i: int) -> float:
        _, bh, bw = buckets[i]
        return round(abs(math.log(bw / bh) - aspect), 9)

    best = min(aspect_error(i) for i in fitting)
    fitting = [i for i in fitting if aspect_error(i) == best]
    longest = max(buckets[i][0] for i in fitting)
    fitting = [i for i in fitting if buckets[i][0] == longest]
    no_upscale = [i for i in fitting if buckets[i][1] * buckets[i][2] <= width * height]
    if no_upscale:
        return max(no_upscale, key=lambda i: (buckets[i][1] * buckets[i][2], -i))
    return min(fitting, key=lambda i: (buckets[i][1] * buckets[i][2], i))


def check_buckets(buckets: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    if not buckets:
        raise KinemaError("buckets must list at least one (frames, height, width)")
    result = []
    for bucket in buckets:
        if len(bucket) != 3:
            raise KinemaError(f"bucket {bucket!r} must be (frames, height, width)")
        frames, height, width = (int(v) for v in bucket)
        check_frames(frames)
        if height <= 0 or width <= 0 or height % 8 or width % 8:
            raise KinemaError(f"bucket {bucket!r}: height and width must be positive multiples of 8")
        result.append((frames, height, width))
    return result


# ----------------------------------------------------------------------------- caption sources


def find_manifest(root: Path) -> Path | None:
    """The manifest of a video folder: the first of MANIFESTS in it, or None (captions from .txt files)."""
    return next((root / name for name in MANIFESTS if (root / name).is_file()), None)


def _manifest_rows(manifest: Path, skipped: list[tuple[str, str]]) -> list[tuple[str, object]]:
    """(where, row) for every non-empty row of a JSONL or CSV manifest; rows that are not valid are skipped."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise KinemaError(f"cannot read '{manifest}': {e}") from None
    if manifest.suffix.lower() == ".csv":
        import csv

        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not set(reader.fieldnames) & set(FILE_KEYS):
            raise KinemaError(f"manifest '{manifest}': its header must name the video column "
                              f"({' or '.join(FILE_KEYS)}) and the caption column ({' or '.join(CAPTION_KEYS)})")
        return [(f"{manifest}:{n}", row) for n, row in enumerate(reader, start=2)]
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{manifest}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            skipped.append((f"{manifest}:{n}", f"bad manifest line: not valid JSON ({e.msg})"))
    return rows


def _manifest_entries(root: Path, manifest: Path, skipped: list[tuple[str, str]]) -> list[tuple[Path, dict]]:
    entries = []
    for where, record in _manifest_rows(manifest, skipped):
        file = next((record[k] for k in FILE_KEYS if isinstance(record, dict) and isinstance(record.get(k), str)),
                    None)
        if file is None:
            skipped.append((where, f"bad manifest line: expected an object with a video ({', '.join(FILE_KEYS)})"))
            continue
        caption = next((record[k] for k in CAPTION_KEYS if isinstance(record.get(k), str)), None)
        entries.append((root / file, {**record, "caption": caption}))
    return entries


def _text_entries(root: Path, skipped: list[tuple[str, str]]) -> list[tuple[Path, dict]]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                       and not p.name.startswith(".")):
        caption_file = path.with_suffix(".txt")
        caption = ""
        if caption_file.is_file():
            try:
                caption = caption_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                skipped.append((str(caption_file), f"no caption: cannot read it ({e})"))
                continue
        entries.append((path, {"caption": caption}))
    return entries


def _parse_shots(shots: object, source_fps: float) -> list[tuple[int, str]] | None:
    """Manifest shots as sorted (source frame, caption), or None when malformed."""
    if shots is None:
        return []
    if not isinstance(shots, list):
        return None
    parsed = []
    for shot in shots:
        if not isinstance(shot, dict) or not isinstance(shot.get("caption"), str):
            return None
        if isinstance(shot.get("start"), numbers.Real):
            start = int(shot["start"])
        elif isinstance(shot.get("start_seconds"), numbers.Real):
            start = int(math.floor(shot["start_seconds"] * source_fps + 0.5))
        else:
            return None
        parsed.append((max(0, start), shot["caption"]))
    return sorted(parsed, key=lambda s: s[0])


# ----------------------------------------------------------------------------- the source


class VideoFolderSource:
    """Batches of real videos from ``root``, bucketed by aspect ratio and duration (module docstring)."""

    def __init__(self, root: str | Path, fps: float, buckets: list[tuple[int, int, int]], batch_size: int,
                 seed: int, min_frames: int | None = None, random_window: bool = True,
                 manifest: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise KinemaError(f"video folder '{root}' does not exist or is not a directory")
        self.manifest = Path(manifest) if manifest is not None else find_manifest(self.root)
        if self.manifest is not None and not self.manifest.is_file():
            raise KinemaError(f"manifest '{manifest}' does not exist")
        if self.manifest is not None and self.manifest.suffix.lower() not in (".jsonl", ".csv"):
            raise KinemaError(f"manifest '{manifest}': expected a .jsonl or .csv file")
        if not (isinstance(fps, numbers.Real) and 0 < fps <= 1000):
            raise KinemaError(f"fps must be in (0, 1000] (got {fps!r})")
        check_index(0, batch_size)
        self.fps = float(fps)
        self.buckets = check_buckets(buckets)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.random_window = bool(random_window)
        shortest = min(f for f, _, _ in self.buckets)
        self.min_frames = max(shortest, int(min_frames or 0))
        self.skipped: list[tuple[str, str]] = []  # (path, reason): scan skips, then decode failures
        self.records = self._scan()
        self.groups = [[i for i, r in enumerate(self.records) if r.bucket == b] for b in range(len(self.buckets))]
        self._failed: dict[int, str] = {}
        self._plan_key: tuple[int, int] | None = None
        self._plan: list[list[int]] = []
        self.summary = self._summary()
        (log.warning if self.skipped else log.info)(self.summary)
        if not self.records:
            raise KinemaError(f"no usable videos in '{self.root}': {self.summary}")

    # ------------------------------------------------------------------ scan

    def _scan(self) -> list[VideoRecord]:
        if self.manifest is not None:
            entries = _manifest_entries(self.root, self.manifest, self.skipped)
        else:
            entries = _text_entries(self.root, self.skipped)
        records = []
        for path, entry in entries:
            reason_or_record = self._check(path, entry)
            if isinstance(reason_or_record, str):
                self.skipped.append((str(path), reason_or_record))
            else:
                records.append(reason_or_record)
        return records

    def _check(self, path: Path, entry: dict) -> VideoRecord | str:
        caption = entry.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            return "no caption"
        try:
            info = video_info(path)
        except MediaError as e:
            return f"unreadable: {e}"
        if not info["width"] or not info["height"] or not info["fps"] or info["fps"] <= 0:
            return "unreadable: no frame size or frame rate in the header"
        available = available_frames(int(info["frames"]), float(info["fps"]), self.fps)
        if available < self.min_frames:
            return (f"too short: {available} frames at {self.fps:g} fps ({info['seconds']:.2f} s), "
                    f"need {self.min_frames}")
        bucket = assign_bucket(self.buckets, info["width"], info["height"], available)
        if bucket is None:
            return f"too short: {available} frames at {self.fps:g} fps fit no bucket"
        shots = _parse_shots(entry.get("shots"), float(info["fps"]))
        if shots is None:
            return "bad shots: expected a list of {start or start_seconds, caption}"
        scene_caption = entry.get("scene_caption")
        return VideoRecord(
            path=path, caption=caption.strip(),
            scene_caption=scene_caption.strip() if isinstance(scene_caption, str) and scene_caption.strip()
            else caption.strip(),
            shots=shots, source_fps=float(info["fps"]), source_frames=int(info["frames"]),
            width=int(info["width"]), height=int(info["height"]), bucket=bucket,
        )

    def _summary(self) -> str:
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        used = sum(1 for g in self.groups if g)
        text = f"{self.root}: {len(self.records)} videos in {used} of {len(self.buckets)} buckets"
        if self.skipped:
            text += f", {len(self.skipped)} skipped (" + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")"
        return text

    # ------------------------------------------------------------------ addressing

    def describe(self) -> dict:
        return {"source": "folder", "root": str(self.root), "fps": self.fps, "buckets": [list(b) for b in self.buckets],
                "seed": self.seed, "videos": len(self.records), "random_window": self.random_window}

    def close(self) -> None:
        """Nothing to stop (sources with render processes stop them here)."""

    def batches_per_epoch(self, batch_size: int | None = None) -> int:
        return epoch_length(self.groups, batch_size or self.batch_size)

    def plan(self, index: int, batch_size: int) -> list[int]:
        """Record ids of batch ``index`` (one bucket)."""
        per_epoch = epoch_length(self.groups, batch_size)
        epoch, position = divmod(index, per_epoch)
        if self._plan_key != (epoch, batch_size):
            self._plan = epoch_batches(self.groups, batch_size, self.seed, epoch)
            self._plan_key = (epoch, batch_size)
        return self._plan[position]

    def batch(self, index: int, batch_size: int | None = None, rank: int = 0, world_size: int = 1) -> dict:
        """Batch ``index`` (all one bucket); with ``world_size > 1`` only this rank's rows."""
        batch_size = self.batch_size if batch_size is None else batch_size
        check_index(index, batch_size)
        epoch = index // epoch_length(self.groups, batch_size)
        ids = self.plan(index, batch_size)
        items = [self._load_or_replace(ids[i], epoch) for i in rank_rows(batch_size, rank, world_size)]
        return {
            "video": frames_to_video_tensor([it["frames"] for it in items]),  # (B, 3, F, H, W)
            "captions": [it["caption"] for it in items],
            "scene_captions": [it["scene_caption"] for it in items],
            "shot_captions": [it["shot_captions"] for it in items],
            "shot_starts": [it["shot_starts"] for it in items],
            "paths": [it["path"] for it in items],
        }

    # ------------------------------------------------------------------ decoding

    def _load_or_replace(self, record_id: int, epoch: int) -> dict:
        group = self.groups[self.records[record_id].bucket]
        start = group.index(record_id)
        for step in range(len(group)):
            candidate = group[(start + step) % len(group)]
            if candidate in self._failed:
                continue
            try:
                return self.load(candidate, epoch)
            except MediaError as e:
                self._failed[candidate] = str(e)
                self.skipped.append((str(self.records[candidate].path), f"unreadable at decode: {e}"))
                log.warning("skipping %s at decode (replaced by the next video in its bucket): %s",
                            self.records[candidate].path, e)
        raise KinemaError(f"every video of bucket {self.buckets[self.records[record_id].bucket]} failed to decode; "
                          f"first: {self.records[record_id].path}")

    def window_start(self, record_id: int, epoch: int) -> int:
        """First source frame of the clip taken from a video in ``epoch``."""
        record = self.records[record_id]
        frames = self.buckets[record.bucket][0]
        spare_seconds = (record.source_frames - 1) / record.source_fps - (frames - 1) / self.fps
        last_start = max(0, int(math.floor(spare_seconds * record.source_fps + _EPS)))
        if not self.random_window or last_start == 0:
            return 0
        return int(epoch_rng(self.seed, epoch, 1 + record_id).integers(last_start + 1))

    def load(self, record_id: int, epoch: int = 0) -> dict:
        """Decode one video into its bucket: uint8 frames (F, H, W, 3), captions and shot starts.

        Raises MediaError when the file cannot be decoded or holds fewer frames than its header said.
        """
        record = self.records[record_id]
        frames, height, width = self.buckets[record.bucket]
        start = self.window_start(record_id, epoch)
        indices = resample_indices(record.source_frames, record.source_fps, self.fps, frames, start)
        needed = int(indices[-1]) + 1
        video, _ = read_video(record.path, max_frames=needed)
        if video.shape[0] < needed:
            raise MediaError(f"cannot read video '{record.path}': decoded {video.shape[0]} frames, "
                             f"the header promised {record.source_frames}")
        clip = resize_crop(video[indices], height, width)
        shot_captions, shot_starts = [record.caption], [0]
        if record.shots:
            shot_captions, shot_starts = [], []
            for source_start, caption in record.shots:
                first = 0 if source_start <= start else int(np.searchsorted(indices, source_start, side="left"))
                if first >= frames:
                    break
                if shot_starts and shot_starts[-1] == first:  # a later shot hides one that had no frame
                    shot_captions.pop()
                    shot_starts.pop()
                shot_captions.append(caption)
                shot_starts.append(first)
            if not shot_starts or shot_starts[0] != 0:  # the window opens before the first listed shot
                shot_captions.insert(0, record.caption)
                shot_starts.insert(0, 0)
        return {"frames": clip, "caption": record.caption, "scene_caption": record.scene_caption,
                "shot_captions": shot_captions, "shot_starts": shot_starts, "path": str(record.path)}
