"""kinema.data: deterministic, index-addressable sources (world, video folder, latent cache)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinema.data import (
    LatentSource,
    VideoFolderSource,
    WorldMixSource,
    WorldVideoSource,
    assign_bucket,
    available_frames,
    cache_latents,
    epoch_batches,
    resample_indices,
    resize_crop,
)
from kinema.errors import KinemaError
from kinema.media import write_video
from kinema.world import SceneOptions, make_clip, sample_scene
from kinema.world.dataset import clip_seed

# ----------------------------------------------------------------------------- world source


def world(**kw) -> WorldVideoSource:
    args = {"seed": 3, "sizes": [(32, 32), (48, 32)], "frames": 9, "shots": (1, 2)} | kw
    return WorldVideoSource(**args)


def test_world_batch_is_a_pure_function_of_seed_and_index():
    a, b = world().batch(5, 3), world().batch(5, 3)
    assert torch.equal(a["video"], b["video"])
    assert a["captions"] == b["captions"] and a["seeds"] == b["seeds"] and a["shot_starts"] == b["shot_starts"]
    other = world().batch(7, 3)  # same size as batch 5 (sizes cycle with period 2)
    assert other["video"].shape == a["video"].shape and not torch.equal(other["video"], a["video"])
    assert not torch.equal(world(seed=4).batch(5, 3)["video"], a["video"])


def test_world_shapes_range_and_size_cycle():
    source = world()
    for index, (width, height) in enumerate([(32, 32), (48, 32), (32, 32)]):
        batch = source.batch(index, 2)
        video = batch["video"]
        assert video.dtype == torch.float32 and video.shape == (2, 3, 9, height, width)
        assert video.min() >= -1.0 and video.max() <= 1.0 and video.std() > 0.05
        assert batch["seeds"] == [clip_seed(3, index * 2 + i) for i in range(2)]
        assert all(len(batch[k]) == 2 for k in ("captions", "scene_captions", "shot_captions", "shot_starts"))


def test_world_captions_and_frames_match_the_rendered_clip():
    source = world(frames=13, shots=(2, 3))
    batch = source.batch(2, 2)
    options = SceneOptions(seconds=12 / 8, fps=8.0, shots=(2, 3))
    for row, seed in enumerate(batch["seeds"]):
        clip = make_clip(sample_scene(seed, options), 32, 32)
        assert batch["captions"][row] == clip.captions.caption
        assert batch["scene_captions"][row] == clip.captions.scene
        assert batch["shot_captions"][row] == clip.captions.shots
        assert batch["shot_starts"][row] == [s.start for s in clip.scene.shots]
        assert all((s - 1) % 4 == 0 for s in batch["shot_starts"][row][1:])  # cuts on latent boundaries
        pixels = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, F, H, W)
        assert torch.equal(batch["video"][row], pixels)


def test_world_item_equals_batch_row_and_ranks_split_a_batch():
    source = world()
    full = source.batch(3, 4)
    item = source.item(3 * 4 + 2, size=source.size_for(3))
    assert torch.equal(item["video"], full["video"][2]) and item["caption"] == full["captions"][2]
    parts = [source.batch(3, 4, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([p["video"] for p in parts]), full["video"])
    assert parts[0]["seeds"] + parts[1]["seeds"] == full["seeds"]
    assert source.item(0)["video"].shape == (3, 9, 32, 32)


@pytest.mark.parametrize("frames", [0, 8, 10, 16, 2.0])
def test_world_frames_must_be_one_plus_4k(frames):
    with pytest.raises(KinemaError, match="frames must be 1 \\+ 4k"):
        WorldVideoSource(0, [(32, 32)], frames)


def test_world_rejects_bad_sizes_and_simulates_exact_lengths():
    with pytest.raises(KinemaError, match="multiples of 8"):
        WorldVideoSource(0, [(30, 32)], 9)
    for frames, fps in [(1, 8.0), (5, 24.0), (21, 7.3)]:
        assert WorldVideoSource(0, [(16, 16)], frames, fps=fps).batch(0, 1)["video"].shape[2] == frames


def test_world_workers_give_identical_batches():
    with world(workers=2) as pooled:
        a = pooled.batch(4, 4)
        b = pooled.batch(5, 4)
    assert torch.equal(a["video"], world().batch(4, 4)["video"])
    reference = world().batch(5, 4)
    assert torch.equal(b["video"], reference["video"]) and b["captions"] == reference["captions"]


def test_world_prefetch_gives_identical_batches_in_any_order():
    with world(workers=2, prefetch=2) as pooled:
        # in order (served from the prefetch), then a jump back and a jump ahead (rendered on demand)
        got = {i: pooled.batch(i, 3) for i in (0, 1, 2, 3)}
        got_back, got_ahead = pooled.batch(1, 3), pooled.batch(9, 3)
        assert len(pooled._renderer._pending) == 2  # 10 and 11 are on their way
    plain = world()
    for i, batch in got.items():
        reference = plain.batch(i, 3)
        assert torch.equal(batch["video"], reference["video"]) and batch["captions"] == reference["captions"]
    assert torch.equal(got_back["video"], plain.batch(1, 3)["video"])
    assert torch.equal(got_ahead["video"], plain.batch(9, 3)["video"])
    with pytest.raises(KinemaError, match="prefetch"):
        world(prefetch=-1)


def test_world_mix_draws_sources_by_weight_and_is_deterministic():
    short = world(frames=5, shots=(1, 1))
    long = world(seed=4, frames=13, shots=(2, 2))
    mix = WorldMixSource([short, long], [3.0, 1.0], seed=7)
    picks = [mix.source_for(i) for i in range(400)]
    assert 0.68 < picks.count(0) / 400 < 0.82  # 3:1
    assert picks == [WorldMixSource([short, long], [3.0, 1.0], seed=7).source_for(i) for i in range(400)]
    assert picks != [WorldMixSource([short, long], [3.0, 1.0], seed=8).source_for(i) for i in range(400)]
    for index in (picks.index(0), picks.index(1)):
        batch = mix.batch(index, 2)
        source = (short, long)[picks[index]]
        reference = source.batch(index, 2)
        assert torch.equal(batch["video"], reference["video"]) and batch["shot_starts"] == reference["shot_starts"]
    assert mix.batch(picks.index(1), 2)["video"].shape[2] == 13
    with WorldMixSource([short, long], [1.0, 1.0], workers=2, prefetch=1) as pooled:
        for i in range(3):
            assert torch.equal(pooled.batch(i, 2)["video"], (short, long)[pooled.source_for(i)].batch(i, 2)["video"])
    assert [WorldMixSource([short, long], [0.0, 1.0]).source_for(i) for i in range(20)] == [1] * 20
    with pytest.raises(KinemaError, match="weights"):
        WorldMixSource([short, long], [1.0, -1.0])
    with pytest.raises(KinemaError, match="one weight per source"):
        WorldMixSource([short], [1.0, 1.0])


# ----------------------------------------------------------------------------- folder helpers


def test_resample_keeps_duration():
    # 24 fps for 2 s -> 8 fps: one frame every 3, 16 or 17 frames depending on the last frame.
    assert resample_indices(48, 24.0, 8.0).tolist() == list(range(0, 48, 3))
    assert len(resample_indices(49, 24.0, 8.0)) == 17
    assert available_frames(25, 12.0, 8.0) == 17 and resample_indices(25, 12.0, 8.0)[-1] == 24
    assert resample_indices(10, 8.0, 8.0, 5, start=3).tolist() == [3, 4, 5, 6, 7]
    up = resample_indices(9, 4.0, 8.0)  # 4 -> 8 fps repeats frames, still 2 s
    assert len(up) == 17 and up[-1] == 8


def marker_frame(height: int, width: int, cx: float, cy: float, half: int = 3) -> np.ndarray:
    frame = np.zeros((1, height, width, 3), np.uint8)
    frame[0, int(cy) - half:int(cy) + half, int(cx) - half:int(cx) + half] = 255
    return frame


def centroid(frame: np.ndarray) -> tuple[float, float]:
    weight = frame[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:frame.shape[0], :frame.shape[1]]
    return float((xs * weight).sum() / weight.sum()), float((ys * weight).sum() / weight.sum())


@pytest.mark.parametrize("source_size,target", [((48, 96), (32, 32)), ((96, 48), (32, 32)), ((40, 40), (48, 64)),
                                                ((60, 90), (32, 48))])
def test_resize_crop_keeps_content_centred(source_size, target):
    height, width = source_size
    out = resize_crop(marker_frame(height, width, width / 2, height / 2), *target)
    assert out.shape == (1, *target, 3)
    cx, cy = centroid(out[0])
    assert abs(cx - (target[1] - 1) / 2) < 0.25 and abs(cy - (target[0] - 1) / 2) < 0.25
    # An off-centre marker lands where the centred crop box maps it.
    out = resize_crop(marker_frame(96, 192, 120, 60), 32, 32)  # crop x 48..144, scale 1/3
    cx, cy = centroid(out[0])
    assert abs(cx - ((120 - 48) / 3 - 0.5)) < 0.3 and abs(cy - (60 / 3 - 0.5)) < 0.3


BUCKETS = [(9, 32, 32), (17, 32, 32), (9, 32, 48), (17, 32, 48)]


def test_bucket_rule():
    assert assign_bucket(BUCKETS, 48, 48, 17) == 1  # square, long enough for 17
    assert assign_bucket(BUCKETS, 48, 48, 12) == 0  # square, only 9 fit
    assert assign_bucket(BUCKETS, 96, 64, 40) == 3  # 3:2
    assert assign_bucket(BUCKETS, 48, 64, 17) == 1  # 3:4 is nearer 1:1 than 3:2
    assert assign_bucket(BUCKETS, 160, 64, 9) == 2  # very wide: the wide bucket, the length that fits
    assert assign_bucket(BUCKETS, 48, 48, 8) is None
    # Aspect first: a wide video long enough for a square 17 still goes to the wide 9.
    assert assign_bucket([(17, 32, 32), (9, 32, 48)], 96, 64, 20) == 1
    # Same aspect and length: the largest area that does not upscale, else the smallest.
    sizes = [(9, 32, 32), (9, 64, 64), (9, 128, 128)]
    assert assign_bucket(sizes, 100, 100, 9) == 1 and assign_bucket(sizes, 16, 16, 9) == 0


def test_epoch_batches_cover_every_item_once_per_group():
    groups = [[0, 1, 2, 3, 4], [5, 6], []]
    batches = epoch_batches(groups, 2, seed=1, epoch=0)
    assert len(batches) == 4 and all(len(b) == 2 for b in batches)
    assert all(set(b) <= set(groups[0]) or set(b) <= set(groups[1]) for b in batches)
    assert {i for b in batches for i in b} == set(range(7))
    assert batches == epoch_batches(groups, 2, seed=1, epoch=0) != epoch_batches(groups, 2, seed=1, epoch=1)


# ----------------------------------------------------------------------------- folder source


def ramp_video(frames: int, height: int, width: int) -> np.ndarray:
    """Frame i is flat grey 4 * i (so the frame index can be read back), with a coloured square."""
    video = np.repeat((4 * np.arange(frames, dtype=np.uint8))[:, None, None, None], 3, axis=3)
    video = np.ascontiguousarray(np.broadcast_to(video, (frames, height, width, 3)))
    video[:, height // 4:height // 2, width // 4:width // 2] = (200, 40, 40)
    return video


VIDEOS = {  # name: (frames, height, width, fps, caption)
    "square24": (49, 48, 48, 24.0, "a square clip at 24 fps"),
    "wide12": (25, 64, 96, 12.0, "a wide clip at 12 fps"),
    "tall8": (17, 64, 48, 8.0, "a tall clip"),
    "short_square": (10, 48, 48, 8.0, "a short square clip"),
    "wide8": (19, 32, 64, 8.0, "a very wide clip"),
    "tooshort": (5, 48, 48, 8.0, "too short"),
    "nocaption": (17, 48, 48, 8.0, None),
    "truncated": (49, 48, 48, 24.0, "header fine, data cut"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name, (frames, height, width, fps, caption) in VIDEOS.items():
        write_video(root / f"{name}.mp4", ramp_video(frames, height, width), fps, sidecar=False)
        if caption is not None:
            (root / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
    data = (root / "truncated.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[:len(data) // 3])
    (root / "corrupt.mp4").write_bytes(os.urandom(3000))
    (root / "corrupt.txt").write_text("noise", encoding="utf-8")
    return root


def test_folder_scan_reports_bad_files_and_buckets(folder, caplog):
    with caplog.at_level(logging.INFO, logger="kinema.data"):
        source = VideoFolderSource(folder, fps=8.0, buckets=BUCKETS, batch_size=2, seed=0)
    reasons = {Path(p).stem: r for p, r in source.skipped}
    assert set(reasons) == {"corrupt", "tooshort", "nocaption"}
    assert reasons["nocaption"] == "no caption" and reasons["corrupt"].startswith("unreadable")
    assert reasons["tooshort"].startswith("too short")
    assert len([r for r in caplog.records if r.name == "kinema.data"]) == 1 and "3 skipped" in source.summary
    bucket_of = {r.path.stem: BUCKETS[r.bucket] for r in source.records}
    assert bucket_of == {"square24": (17, 32, 32), "wide12": (17, 32, 48), "tall8": (17, 32, 32),
                         "short_square": (9, 32, 32), "wide8": (17, 32, 48), "truncated": (17, 32, 32)}


def test_folder_batches_share_a_shape_and_replace_broken_files(folder):
    source = VideoFolderSource(folder, fps=8.0, buckets=BUCKETS, batch_size=2, seed=1)
    per_epoch = source.batches_per_epoch()
    assert per_epoch == 4  # buckets of 1, 3 (-> 2 batches), 0 and 2 videos
    seen = []
    for index in range(per_epoch):
        batch = source.batch(index)
        frames, height, width = BUCKETS[source.records[source.plan(index, 2)[0]].bucket]
        assert batch["video"].shape == (2, 3, frames, height, width)
        assert batch["video"].min() >= -1 and batch["video"].max() <= 1
        assert len(batch["captions"]) == 2 and all(batch["captions"]) and batch["shot_starts"] == [[0], [0]]
        seen += batch["paths"]
    # The truncated file decodes to fewer frames than its header says: reported, replaced in its bucket.
    assert "truncated.mp4" not in {Path(p).name for p in seen}
    assert any(Path(p).name == "truncated.mp4" and r.startswith("unreadable at decode") for p, r in source.skipped)
    assert {Path(p).stem for p in seen} == {"square24", "wide12", "tall8", "short_square", "wide8"}
    # A fresh source (not knowing what failed) returns the same batches; the next epoch is reshuffled.
    again = VideoFolderSource(folder, fps=8.0, buckets=BUCKETS, batch_size=2, seed=1)
    for index in (0, 3, 5):
        assert torch.equal(again.batch(index)["video"], source.batch(index)["video"])
    epochs = [[again.plan(e * 4 + i, 2) for i in range(4)] for e in range(4)]
    assert any(epoch != epochs[0] for epoch in epochs[1:])
    parts = [source.batch(2, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([p["video"] for p in parts]), source.batch(2)["video"])


def test_folder_picks_frames_by_timestamp(folder):
    source = VideoFolderSource(folder, fps=8.0, buckets=[(17, 48, 48)], batch_size=1, seed=0, random_window=False)
    record = next(i for i, r in enumerate(source.records) if r.path.stem == "square24")
    clip = source.load(record)["frames"]  # 24 fps for 2 s -> every third frame, 17 frames
    assert clip.shape == (17, 48, 48, 3)
    grey = clip[:, -4:, -4:].astype(np.float64).mean(axis=(1, 2, 3))  # a corner away from the square
    assert np.abs(grey - 4 * np.arange(0, 49, 3)).max() < 3


def test_folder_window_moves_with_the_epoch_and_stays_inside(folder):
    source = VideoFolderSource(folder, fps=8.0, buckets=[(9, 32, 32)], batch_size=1, seed=0)
    record = next(i for i, r in enumerate(source.records) if r.path.stem == "square24")
    starts = {source.window_start(record, epoch) for epoch in range(12)}
    assert len(starts) > 1 and min(starts) >= 0 and max(starts) <= 48 - 24  # 1 s of a 2 s clip


def test_folder_manifest_with_shots(tmp_path):
    write_video(tmp_path / "a.mp4", ramp_video(33, 32, 32), 8.0, sidecar=False)
    write_video(tmp_path / "b.mp4", ramp_video(17, 32, 32), 8.0, sidecar=False)
    lines = [
        {"file": "a.mp4", "caption": "two shots", "scene_caption": "a stage",
         "shots": [{"start": 0, "end": 9, "caption": "first"}, {"start": 9, "end": 33, "caption": "second"}]},
        {"file": "b.mp4", "caption": "no shots"},
        {"file": "missing.mp4", "caption": "gone"},
        {"file": "b.mp4"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    (tmp_path / "manifest.jsonl").write_text(text, encoding="utf-8")
    source = VideoFolderSource(tmp_path, fps=8.0, buckets=[(17, 32, 32)], batch_size=2, seed=0, random_window=False)
    assert [r.path.name for r in source.records] == ["a.mp4", "b.mp4"]
    assert sorted(r.split(":")[0] for _, r in source.skipped) == ["bad manifest line", "no caption", "unreadable"]
    a = source.load(0)
    assert a["shot_captions"] == ["first", "second"] and a["shot_starts"] == [0, 9]
    assert a["scene_caption"] == "a stage" and source.load(1)["shot_captions"] == ["no shots"]


def test_folder_without_usable_videos_is_a_clear_error(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"junk" * 100)
    with pytest.raises(KinemaError, match="no usable videos"):
        VideoFolderSource(tmp_path, fps=8.0, buckets=BUCKETS, batch_size=1, seed=0)
    with pytest.raises(KinemaError, match="frames must be 1 \\+ 4k"):
        VideoFolderSource(tmp_path, fps=8.0, buckets=[(8, 32, 32)], batch_size=1, seed=0)


# ----------------------------------------------------------------------------- latent cache


def fake_encode(video: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a VAE: (B, 3, 1 + 4k, H, W) -> (B, 4, 1 + k, H / 8, W / 8)."""
    first = F.avg_pool3d(video[:, :, :1], (1, 8, 8))
    rest = F.avg_pool3d(video[:, :, 1:], (4, 8, 8))
    latents = torch.cat([first, rest], dim=2)  # (B, 3, F', H', W')
    return torch.cat([latents, latents.mean(1, keepdim=True) * 2], dim=1)


def test_latent_cache_round_trip_and_resume(tmp_path):
    source = world(frames=9)
    calls = []

    def encode(video):
        calls.append(video.shape)
        return fake_encode(video)

    cache_latents(source, encode, tmp_path, batches=2, batch_size=2)
    index = cache_latents(source, encode, tmp_path, batches=3, batch_size=2)  # resumes: one new shard
    assert len(calls) == 3 and index.name == "index.json"
    assert not list(tmp_path.glob(".*part"))
    cached = LatentSource(tmp_path, shuffle=False, verify=True)
    assert len(cached) == 6 and cached.batches_per_epoch(2) == 3
    expected = {}
    for k in range(3):
        batch = source.batch(k, 2)
        for row, latent in enumerate(fake_encode(batch["video"])):
            expected[k * 2 + row] = (latent, batch["captions"][row], batch["seeds"][row], batch["shot_starts"][row])
    for index in range(3):
        out = cached.batch(index, 2)
        assert out["latents"].shape[0] == 2 and len({tuple(t.shape) for t in out["latents"]}) == 1
        for row, item in enumerate(out["items"]):
            latent, caption, seed, starts = expected[item]
            assert torch.equal(out["latents"][row], latent)
            assert (out["captions"][row], out["seeds"][row], out["shot_starts"][row]) == (caption, seed, starts)
            assert out["shot_latent_starts"][row] == [0 if s == 0 else (s - 1) // 4 + 1 for s in starts]
    shuffled = LatentSource(tmp_path, seed=5)
    assert torch.equal(shuffled.batch(4, 2)["latents"], LatentSource(tmp_path, seed=5).batch(4, 2)["latents"])
    assert [len(shuffled.batch(i, 1)["captions"]) for i in range(6)] == [1] * 6
    with pytest.raises(KinemaError, match="other settings"):
        cache_latents(world(seed=99), encode, tmp_path, batches=1, batch_size=2)
    # A damaged shard found on resume is encoded again (only that one).
    (tmp_path / "shard_00001.safetensors").write_bytes(b"garbage")
    cache_latents(source, encode, tmp_path, batches=3, batch_size=2)
    assert len(calls) == 4
    remade = LatentSource(tmp_path, shuffle=False, verify=True)
    assert all(torch.equal(remade.batch(i, 2)["latents"], cached.batch(i, 2)["latents"]) for i in range(3))


def test_latent_cache_interrupted_write_leaves_no_partial_shard(tmp_path):
    source = world(frames=5, sizes=[(16, 16)])

    def failing(video):
        raise RuntimeError("out of memory")

    cache_latents(source, fake_encode, tmp_path, batches=1, batch_size=2)
    with pytest.raises(RuntimeError):
        cache_latents(source, failing, tmp_path, batches=2, batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.jsonl", "index.json", "shard_00000.safetensors"]
    cache_latents(source, fake_encode, tmp_path, batches=2, batch_size=2)
    assert len(LatentSource(tmp_path)) == 4


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_latent_shard_is_a_one_line_error(tmp_path, damage):
    source = world(frames=5, sizes=[(16, 16)])
    cache_latents(source, fake_encode, tmp_path, batches=2, batch_size=2)
    shard = tmp_path / "shard_00001.safetensors"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-40])
    elif damage == "garbage":
        shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}" + os.urandom(64))
    else:
        shard.unlink()
    with pytest.raises(KinemaError, match=r"shard_00001\.safetensors") as error:
        LatentSource(tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "index.json").write_text("{", encoding="utf-8")
    with pytest.raises(KinemaError, match=r"index\.json"):
        LatentSource(tmp_path)


def test_latent_cache_detects_flipped_bytes_with_verify(tmp_path):
    source = world(frames=5, sizes=[(16, 16)])
    cache_latents(source, fake_encode, tmp_path, batches=1, batch_size=2)
    shard = tmp_path / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    LatentSource(tmp_path)  # headers are fine: only the checksum can tell
    with pytest.raises(KinemaError, match="sha256"):
        LatentSource(tmp_path, verify=True)


def test_encode_fn_output_is_checked(tmp_path):
    with pytest.raises(KinemaError, match="encode_fn must return latents"):
        cache_latents(world(frames=5), lambda v: v.mean(1), tmp_path, batches=1, batch_size=2)


def test_latent_source_reads_several_caches_and_keeps_shapes_apart(tmp_path):
    short, long_ = world(frames=5, sizes=[(16, 16)]), world(frames=9, sizes=[(16, 16)], seed=3)
    cache_latents(short, fake_encode, tmp_path / "a", batches=2, batch_size=2)
    cache_latents(long_, fake_encode, tmp_path / "b", batches=1, batch_size=2)
    both = LatentSource([tmp_path / "a", tmp_path / "b"], shuffle=False)
    assert len(both) == 6 and both.batches_per_epoch(2) == 3
    seen = {}
    for index in range(3):
        out = both.batch(index, 2)
        assert len({tuple(t.shape) for t in out["latents"]}) == 1  # never mixes clip lengths
        for row, item in enumerate(out["items"]):
            seen[item] = (out["latents"][row], out["captions"][row])
    assert sorted(seen) == list(range(6))
    second = long_.batch(0, 2)
    for row in range(2):  # items 4 and 5 are the second folder's clips, in order
        assert torch.equal(seen[4 + row][0], fake_encode(second["video"])[row])
        assert seen[4 + row][1] == second["captions"][row]
    with pytest.raises(KinemaError, match="missing"):
        LatentSource([tmp_path / "a", tmp_path / "nothing-here"])
