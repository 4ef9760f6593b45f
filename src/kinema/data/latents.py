"""A latent cache: encode a source's batches once, train from the latents many times.

Layout of ``out_dir``::

    shard_00000.safetensors   tensors ``latents`` (B, C, F', H', W') and ``index`` (B,) int64 item ids;
                              header metadata holds the batch's captions and settings as JSON strings
    shard_00001.safetensors   ... one shard per source batch
    captions.jsonl            one line per item: item, shard, row, captions, shot starts, seed, path
    index.json                format, settings, source description and one entry per shard
                              (file, source batch, latent and video shapes, sha256 of the tensors)

Each shard is written to a temporary name and moved into place, so a shard file that exists is
complete: a rerun skips it (``cache_latents`` is resumable) and ``captions.jsonl``/``index.json``
are rebuilt from the shard headers at the end, also atomically. A shard made with other settings
is an error, not something to mix in.

``LatentSource(out_dir)`` (or a list of cache folders) serves the cache with the same
``batch(index, batch_size)`` contract as the video sources: items are grouped by latent shape and
every batch comes from one group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kinema.data.batching import check_index, epoch_batches, epoch_length, rank_rows
from kinema.errors import KinemaError

log = logging.getLogger("kinema.data")

FORMAT = "kinema-latents/1"
INDEX = "index.json"
CAPTIONS = "captions.jsonl"
RECORD_KEYS = (("captions", "caption"), ("scene_captions", "scene_caption"), ("shot_captions", "shot_captions"),
               ("shot_starts", "shot_starts"), ("seeds", "seed"), ("paths", "path"))


def shard_name(shard: int) -> str:
    return f"shard_{shard:05d}.safetensors"


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def _read_header(path: Path) -> tuple[dict, list[int], str]:
    """(metadata, latents shape, latents dtype) of a shard, from its header only; KinemaError naming the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            latents = f.get_slice("latents")
            shape, dtype = list(latents.get_shape()), str(latents.get_dtype())
            index_shape = list(f.get_slice("index").get_shape())
    except Exception as e:  # safetensors raises several types for broken or truncated files
        raise KinemaError(f"corrupt latent shard '{path}': {' '.join(str(e).split())[:160]}") from None
    if metadata.get("format") != FORMAT or index_shape != shape[:1]:
        raise KinemaError(f"corrupt latent shard '{path}': not a {FORMAT} shard")
    return metadata, shape, dtype


def _tensor_sha256(*tensors: torch.Tensor) -> str:
    """sha256 of the raw bytes of contiguous CPU tensors (any dtype, bfloat16 included)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise KinemaError(f"corrupt latent shard '{path}': {' '.join(str(e).split())[:160]}") from None
    if _tensor_sha256(tensors["latents"], tensors["index"]) != expected:
        raise KinemaError(f"corrupt latent shard '{path}': sha256 of its tensors does not match index.json")


def _records(batch: dict, count: int) -> list[dict]:
    """Per-item captions (and seeds/paths when the source has them) of a source batch."""
    records: list[dict] = [{} for _ in range(count)]
    for batch_key, record_key in RECORD_KEYS:
        if batch_key in batch:
            values = list(batch[batch_key])
            if len(values) != count:
                raise KinemaError(f"source batch has {len(values)} '{batch_key}' for {count} videos")
            for record, value in zip(records, values):
                record[record_key] = value
    return records


def cache_latents(source, encode_fn: Callable[[torch.Tensor], torch.Tensor], out_dir: str | Path, batches: int,
                  batch_size: int, start: int = 0, dtype: torch.dtype | None = None,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Encode ``source.batch(start + k, batch_size)`` for k < ``batches`` into ``out_dir``; returns index.json.

    ``encode_fn(video (B, 3, F, H, W) in [-1, 1]) -> latents (B, C, F', H', W')``, for example a VAE's
    normalised posterior mean; it runs under ``torch.inference_mode``. ``dtype`` casts the stored
    latents (bfloat16 halves the cache). Shards already complete are skipped. ``progress(done)`` is
    called after each shard.
    """
    check_index(start, batch_size)
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise KinemaError(f"batches must be an integer >= 1 (got {batches!r})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    describe = getattr(source, "describe", None)
    fingerprint = json.dumps(describe() if callable(describe) else {"source": type(source).__name__},
                             sort_keys=True)
    shards = []
    for k in range(batches):
        path = out_dir / shard_name(k)
        expected = {"format": FORMAT, "source_batch": str(start + k), "batch_size": str(batch_size),
                    "source": fingerprint}
        metadata = _existing_header(path)
        if metadata is not None:
            different = [key for key, value in expected.items() if metadata.get(key) != value]
            if different:
                raise KinemaError(f"'{path}' was made with other settings ({', '.join(different)} differ); "
                                  f"use a new out_dir or delete the old shards")
        else:
            _write_shard(source, encode_fn, path, start + k, batch_size, dtype, expected)
        shards.append(path)
        if progress is not None:
            progress(k + 1)
    return _write_index(out_dir, shards, batch_size, fingerprint)


def _existing_header(path: Path) -> dict | None:
    """Header of a shard left by an earlier run, or None when there is none (or it is damaged: made again)."""
    if not path.exists():
        return None
    try:
        return _read_header(path)[0]
    except KinemaError as e:
        log.warning("%s; encoding it again", e)
        return None


def _write_shard(source, encode_fn, path: Path, source_batch: int, batch_size: int, dtype: torch.dtype | None,
                 metadata: dict) -> None:
    batch = source.batch(source_batch, batch_size)
    video = batch["video"]  # (B, 3, F, H, W)
    with torch.inference_mode():
        latents = encode_fn(video)
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[0] != video.shape[0]:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise KinemaError(f"encode_fn must return latents (B, C, F', H', W') with B = {video.shape[0]}, got {shape}")
    if not torch.isfinite(latents).all():
        raise KinemaError(f"encode_fn returned NaN or infinite latents for source batch {source_batch}")
    latents = latents.detach().to("cpu", dtype=dtype or latents.dtype).contiguous()
    items = torch.arange(source_batch * batch_size, source_batch * batch_size + latents.shape[0], dtype=torch.int64)
    header = metadata | {"records": json.dumps(_records(batch, latents.shape[0])),
                         "video_shape": json.dumps(list(video.shape[1:])), "sha256": _tensor_sha256(latents, items)}
    _atomic_write(path, lambda temp: save_file({"latents": latents, "index": items}, str(temp), metadata=header))


def _write_index(out_dir: Path, shards: list[Path], batch_size: int, fingerprint: str) -> Path:
    entries, lines = [], []
    item = 0
    for k, path in enumerate(shards):
        metadata, shape, dtype = _read_header(path)
        records = json.loads(metadata["records"])
        video_shape = json.loads(metadata["video_shape"])
        entries.append({"file": path.name, "source_batch": int(metadata["source_batch"]), "items": shape[0],
                        "latent_shape": shape[1:], "video_shape": video_shape, "dtype": dtype,
                        "sha256": metadata["sha256"]})
        for row, record in enumerate(records):
            lines.append(json.dumps({"item": item, "shard": k, "row": row} | record))
            item += 1
    index = {"format": FORMAT, "batch_size": batch_size, "items": item, "source": json.loads(fingerprint),
             "shards": entries}
    _atomic_write(out_dir / CAPTIONS, lambda temp: temp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    index_path = out_dir / INDEX
    _atomic_write(index_path, lambda temp: temp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8"))
    return index_path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KinemaError(f"latent cache file '{path}' is missing; run cache_latents first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KinemaError(f"corrupt latent cache file '{path}': {e}") from None


def latent_frame(frame: int, stride: int) -> int:
    """Latent frame that holds video frame ``frame`` (frame 0 alone, then ``stride`` frames per latent)."""
    return 0 if frame <= 0 else (frame - 1) // stride + 1


class LatentSource:
    """Batches of cached latents: ``{"latents": (B, C, F', H', W'), "captions", "scene_captions",
    "shot_captions", "shot_starts", "shot_latent_starts", "items"}`` plus ``seeds``/``paths`` when cached.

    Items are grouped by latent shape; each epoch is laid out like the folder source's (permuted by
    (seed, epoch) when ``shuffle``, in cache order otherwise). ``verify`` checks every shard's sha256.
    """

    def __init__(self, out_dir: str | Path | list[str | Path], seed: int = 0, shuffle: bool = True,
                 verify: bool = False) -> None:
        folders = [Path(d) for d in out_dir] if isinstance(out_dir, (list, tuple)) else [Path(out_dir)]
        if not folders:
            raise KinemaError("a latent source needs at least one cache folder")
        self.folders = folders
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.entries: list[dict] = []  # one per shard, over all folders
        self.shards: list[Path] = []
        self.items: list[tuple[int, int]] = []  # item -> (shard, row)
        self.records: list[dict] = []
        shapes: list[tuple[int, ...]] = []
        for folder in folders:
            index = _read_json(folder / INDEX)
            if (not isinstance(index, dict) or index.get("format") != FORMAT
                    or not isinstance(index.get("shards"), list)):
                raise KinemaError(f"corrupt latent cache file '{folder / INDEX}': not a {FORMAT} index")
            first_item = len(self.items)
            for entry in index["shards"]:
                path = folder / entry["file"]
                _, shape, _ = _read_header(path)
                if shape != [entry["items"], *entry["latent_shape"]]:
                    raise KinemaError(f"corrupt latent shard '{path}': latents {shape} but the index says "
                                      f"{[entry['items'], *entry['latent_shape']]}")
                if verify:
                    _verify(path, entry["sha256"])
                self.items += [(len(self.shards), row) for row in range(entry["items"])]
                shapes += [tuple(entry["latent_shape"])] * entry["items"]
                self.shards.append(path)
                self.entries.append(entry)
            self.records += self._read_captions(folder, len(self.items) - first_item)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for item, shape in enumerate(shapes):
            by_shape.setdefault(shape, []).append(item)
        self.groups = list(by_shape.values())
        self._plan_key: tuple[int, int] | None = None
        self._plan: list[list[int]] = []

    @staticmethod
    def _read_captions(folder: Path, count: int) -> list[dict]:
        path = folder / CAPTIONS
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        except FileNotFoundError:
            raise KinemaError(f"latent cache file '{path}' is missing; run cache_latents first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise KinemaError(f"corrupt latent cache file '{path}': {e}") from None
        if len(records) != count or any(r.get("item") != i for i, r in enumerate(records)):
            raise KinemaError(f"corrupt latent cache file '{path}': {len(records)} lines for {count} items")
        return records

    def __len__(self) -> int:
        return len(self.items)

    def batches_per_epoch(self, batch_size: int) -> int:
        return epoch_length(self.groups, batch_size)

    def plan(self, index: int, batch_size: int) -> list[int]:
        """Item ids of batch ``index`` (one latent shape)."""
        epoch, position = divmod(index, epoch_length(self.groups, batch_size))
        if self._plan_key != (epoch, batch_size):
            self._plan = epoch_batches(self.groups, batch_size, self.seed, epoch, shuffle=self.shuffle)
            self._plan_key = (epoch, batch_size)
        return self._plan[position]

    def batch(self, index: int, batch_size: int, rank: int = 0, world_size: int = 1) -> dict:
        check_index(index, batch_size)
        ids = self.plan(index, batch_size)
        ids = [ids[i] for i in rank_rows(batch_size, rank, world_size)]
        latents = self._read_rows(ids)
        records = [self.records[i] for i in ids]
        out: dict = {"latents": latents, "items": ids}
        for batch_key, record_key in RECORD_KEYS:
            if all(record_key in r for r in records):
                out[batch_key] = [r[record_key] for r in records]
        if "shot_starts" in out:
            entry = self.entries[self.items[ids[0]][0]]
            frames, latent_frames = entry["video_shape"][1], entry["latent_shape"][1]
            stride = (frames - 1) // (latent_frames - 1) if latent_frames > 1 else max(frames, 1)
            out["shot_latent_starts"] = [[latent_frame(s, stride) for s in starts] for starts in out["shot_starts"]]
        return out

    def _read_rows(self, ids: list[int]) -> torch.Tensor:
        rows: list[torch.Tensor | None] = [None] * len(ids)
        by_shard: dict[int, list[int]] = {}
        for position, item in enumerate(ids):
            by_shard.setdefault(self.items[item][0], []).append(position)
        for shard, positions in by_shard.items():
            path = self.shards[shard]
            try:
                with safe_open(str(path), framework="pt") as f:
                    latents = f.get_slice("latents")
                    for position in positions:
                        row = self.items[ids[position]][1]
                        rows[position] = latents[row:row + 1]
            except Exception as e:
                raise KinemaError(f"corrupt latent shard '{path}': {' '.join(str(e).split())[:160]}") from None
        return torch.cat(rows)  # (B, C, F', H', W')
