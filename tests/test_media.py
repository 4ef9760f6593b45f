"""Tests for kinema.media: round trips, metadata, bad files and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import kinema
from kinema import media
from kinema.errors import MediaError
from kinema.media import (
    file_sha256,
    read_image,
    read_metadata,
    read_video,
    video_info,
    write_image,
    write_video,
)


def make_frames(frames: int = 17, height: int = 64, width: int = 96, square: bool = True) -> np.ndarray:
    """Smooth colour gradients that drift over time, plus (optionally) a moving coloured square."""
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    y = np.arange(height, dtype=np.float64)[None, :, None]
    x = np.arange(width, dtype=np.float64)[None, None, :]
    red = 40 + 160 * x / width + 2 * t
    green = 40 + 160 * y / height + 0 * t
    blue = 120 + 60 * np.sin(2 * np.pi * (x + y) / (width + height) + 0.2 * t)
    video = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)  # (F, H, W, 3)
    if square:
        for index in range(frames):
            left, top = 4 + 3 * index % (width - 16), 8 + index % (height - 24)
            video[index, top : top + 12, left : left + 12] = (230, 40, 200)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def media_error(match: str, function, *args, **kwargs) -> str:
    """Call `function`, expect a one-line MediaError whose text (file names hidden) matches `match`."""
    with pytest.raises(MediaError) as error:
        function(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    # Paths are quoted and hold the test's name, so they must not be what satisfies `match`.
    assert re.search(match, re.sub(r"'[^']*'", "'...'", message)), message
    return message


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 33-frame 96x64 8 fps clip shared by the read-only tests."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, make_frames(33), 8.0, metadata={"prompt": "a red ball", "seed": 7})
    return path


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("square", [False, True], ids=["smooth", "moving-square"])
def test_write_read_round_trip_keeps_count_size_fps_and_pixels(tmp_path: Path, square: bool) -> None:
    frames = make_frames(25, height=64, width=96, square=square)
    write_video(tmp_path / "out.mp4", frames, 8.0)
    decoded, fps = read_video(tmp_path / "out.mp4")
    assert decoded.shape == frames.shape
    assert decoded.dtype == np.uint8
    assert fps == 8.0
    # Measured at crf 12: 0.84 (smooth) and 1.34 (with the square's sharp edges; yuv420p halves chroma).
    # swscale's default YUV->RGB rounding would give 1.51 and 1.86, darkening every channel by about 1.4.
    assert mean_abs_error(decoded, frames) < (1.5 if square else 1.0)
    colour_shift = (decoded.astype(np.float64) - frames).mean(axis=(0, 1, 2))  # (3,) per channel
    assert np.abs(colour_shift).max() < 1.0, colour_shift


def test_crf_0_is_lossless_up_to_yuv420p_and_keeps_small_differences_small(tmp_path: Path) -> None:
    """At crf 0 H.264 codes the yuv420p frames exactly: a frame that differs by one level in a patch reads back
    within 2 levels of the other's file, where crf 12's choices move that patch's pixels by more."""
    frames = make_frames(17, height=64, width=64, square=True)
    nudged = frames.copy()
    nudged[5:, 20:40, 20:40] = np.clip(nudged[5:, 20:40, 20:40].astype(int) + 1, 0, 255).astype(np.uint8)
    largest = {}
    for crf in (12, 0):
        write_video(tmp_path / "a.mp4", frames, 8.0, crf=crf, sidecar=False)
        write_video(tmp_path / "b.mp4", nudged, 8.0, crf=crf, sidecar=False)
        a, b = (read_video(tmp_path / f"{n}.mp4")[0].astype(int) for n in "ab")
        largest[crf] = int(np.abs(a - b).max())
    assert largest[0] <= 2 < largest[12], largest


def test_float_frames_encode_like_their_uint8_rounding(tmp_path: Path) -> None:
    frames = make_frames(9, 64, 64)
    write_video(tmp_path / "u8.mp4", frames, 8.0)
    # Values outside [0, 1] are clipped; 0.3/255 off-grid values must round to the same uint8.
    floats = frames.astype(np.float32) / 255.0 + np.float32(0.3 / 255.0)
    floats[0, 0, 0] = (-0.5, 1.5, 0.0)
    expected = frames.copy()
    expected[0, 0, 0] = (0, 255, 0)
    write_video(tmp_path / "f32.mp4", floats, 8.0)
    write_video(tmp_path / "expected.mp4", expected, 8.0)
    np.testing.assert_array_equal(read_video(tmp_path / "f32.mp4")[0], read_video(tmp_path / "expected.mp4")[0])


def test_the_same_frames_always_encode_to_the_same_stream(tmp_path: Path) -> None:
    """Same seed, same video: x264's SIMD code once let some encodes of identical frames choose other
    B-frames (from 1 in 50 to 1 in 3 on a busy machine), with one thread or several."""
    frames = make_frames(25, 64, 64)  # with x264's SIMD code, 12 of 40 encodes of these differed
    streams = set()
    for n in range(40):
        path = write_video(tmp_path / f"{n}.mp4", frames, 8.0, metadata={"prompt": "x" * n})
        with av.open(str(path)) as container:
            streams.add(hashlib.sha256(b"".join(bytes(p) for p in container.demux(video=0))).hexdigest())
    assert len(streams) == 1


@pytest.mark.parametrize("fps", [23.976, 24000 / 1001, 29.97, 12.5])
def test_non_integer_fps_round_trips(tmp_path: Path, fps: float) -> None:
    path = write_video(tmp_path / "out.mp4", make_frames(17, 64, 64), fps)
    assert abs(read_video(path)[1] - fps) < 0.01
    info = video_info(path)
    assert abs(info["fps"] - fps) < 0.01
    assert abs(info["seconds"] - 17 / fps) < 0.01


def test_video_info_reads_the_header(clip_path: Path) -> None:
    info = video_info(clip_path)
    assert info == {**info, "frames": 33, "fps": 8.0, "width": 96, "height": 64, "codec": "h264"}
    assert info["frames_estimated"] is False
    assert abs(info["seconds"] - 33 / 8) < 1e-6


def test_max_frames_stops_decoding(clip_path: Path) -> None:
    frames, _ = read_video(clip_path, max_frames=5)
    assert frames.shape[0] == 5
    np.testing.assert_array_equal(frames, read_video(clip_path)[0][:5])
    media_error("max_frames must be a positive integer", read_video, clip_path, max_frames=0)


def test_mp4_is_h264_yuv420p_with_moov_before_mdat(clip_path: Path) -> None:
    with av.open(str(clip_path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    data = clip_path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: playable while downloading


# ----------------------------------------------------------------------------- metadata


def test_metadata_in_container_and_sidecar(clip_path: Path) -> None:
    with av.open(str(clip_path)) as container:
        in_container = json.loads(container.metadata["comment"])
        assert container.metadata["description"] == f"made with kinema {kinema.__version__}"
    in_sidecar = json.loads(clip_path.with_suffix(".json").read_text())
    assert in_container == in_sidecar
    assert in_container["prompt"] == "a red ball"
    assert in_container["seed"] == 7
    assert in_container["kinema_version"] == kinema.__version__
    assert in_container["created"].endswith("+00:00")
    assert read_metadata(clip_path) == in_container


def test_read_metadata_without_sidecar_uses_container(tmp_path: Path) -> None:
    metadata = {"storyboard": ["a ball rolls", "it falls"], "seed": np.int64(3), "guidance": 4.5, "text": "né"}
    path = write_video(tmp_path / "out.mp4", make_frames(9, 64, 64), 8.0, metadata=metadata)
    expected = read_metadata(path)
    path.with_suffix(".json").unlink()
    assert read_metadata(path) == expected
    assert expected["seed"] == 3 and expected["text"] == "né" and expected["storyboard"][1] == "it falls"


def test_sidecar_false_writes_no_json(tmp_path: Path) -> None:
    path = write_video(tmp_path / "out.mp4", make_frames(9, 64, 64), 8.0, metadata={"seed": 1}, sidecar=False)
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
    assert read_metadata(path)["seed"] == 1


def write_foreign_mp4(path: Path, comment: str) -> Path:
    """A video made by another tool, with its own comment tag."""
    with av.open(str(path), "w") as container:
        container.metadata["comment"] = comment
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(make_frames(1, 64, 64)[0], format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("comment", ["shot on a phone", '{"camera": "phone"}'])
def test_read_metadata_ignores_foreign_comments_then_uses_sidecar(tmp_path: Path, comment: str) -> None:
    path = write_foreign_mp4(tmp_path / "foreign.mp4", comment)
    assert read_metadata(path) == {}
    path.with_suffix(".json").write_text('{"seed": 5}')
    assert read_metadata(path) == {"seed": 5}
    path.with_suffix(".json").write_text('{"seed": ')
    media_error("corrupt JSON", read_metadata, path)
    path.with_suffix(".json").write_text("[1, 2]")
    media_error("expected a JSON object, got list", read_metadata, path)


def test_png_metadata_round_trip(tmp_path: Path) -> None:
    frame = make_frames(1, 64, 96)[0]
    path = write_image(tmp_path / "still.png", frame, metadata={"prompt": "a blue cube", "seed": 11})
    with Image.open(path) as image:
        in_chunk = json.loads(image.text["kinema"])
    assert in_chunk["prompt"] == "a blue cube"
    assert in_chunk == json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").unlink()
    assert read_metadata(path) == in_chunk
    np.testing.assert_array_equal(read_image(path), frame)  # PNG is lossless


def test_unserialisable_metadata_is_rejected(tmp_path: Path) -> None:
    frames = make_frames(3, 64, 64)
    media_error("not JSON-serialisable", write_video, tmp_path / "out.mp4", frames, 8.0, metadata={"model": object()})
    assert os.listdir(tmp_path) == []


def test_file_sha256(clip_path: Path, tmp_path: Path) -> None:
    assert file_sha256(clip_path) == hashlib.sha256(clip_path.read_bytes()).hexdigest()
    media_error("does not exist", file_sha256, tmp_path / "missing.bin")


# ----------------------------------------------------------------------------- other formats


def test_gif_and_animated_webp_read(tmp_path: Path) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 220, 220)]
    images = [Image.new("RGB", (96, 64), colour) for colour in colours]
    for name, options in [("anim.gif", {}), ("anim.webp", {"lossless": True})]:
        # Frame durations 100/150 ms: fps is the average rate, 1000 / 120 ms.
        durations = [100, 150, 100, 150, 100]
        images[0].save(tmp_path / name, save_all=True, append_images=images[1:], duration=durations, loop=0, **options)
        frames, fps = read_video(tmp_path / name)
        assert frames.shape == (5, 64, 96, 3), name
        assert abs(fps - 1000 / 120) < 1e-6, name
        np.testing.assert_allclose(frames.mean(axis=(1, 2)), np.array(colours, dtype=float), atol=3, err_msg=name)
        info = video_info(tmp_path / name)
        assert (info["frames"], info["width"], info["height"]) == (5, 96, 64), name
        assert abs(info["fps"] - 1000 / 120) < 1e-6 and abs(info["seconds"] - 0.6) < 1e-6, name


def test_webm_read(tmp_path: Path) -> None:
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("this PyAV build has no libvpx-vp9 encoder")
    frames = make_frames(17, 64, 96)
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape
    assert fps == 8.0
    assert mean_abs_error(decoded, frames) < 3.0
    info = video_info(path)
    assert (info["width"], info["height"], info["codec"]) == (96, 64, "vp9")
    assert info["frames_estimated"] is True  # webm headers carry a duration, not a frame count
    assert abs(info["frames"] - 17) <= 1


def test_still_png_is_a_one_frame_video(tmp_path: Path) -> None:
    frame = make_frames(1, 64, 96)[0]
    Image.fromarray(frame).save(tmp_path / "still.png")
    frames, fps = read_video(tmp_path / "still.png")
    assert frames.shape == (1, 64, 96, 3)
    assert fps == media.DEFAULT_FPS
    np.testing.assert_array_equal(frames[0], frame)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_read_image_converts_modes_to_rgb(tmp_path: Path, mode: str) -> None:
    Image.new("RGB", (16, 8), (10, 120, 240)).convert(mode).save(tmp_path / "image.png")
    image = read_image(tmp_path / "image.png")
    assert image.shape == (8, 16, 3) and image.dtype == np.uint8
    expected = np.asarray(Image.new("RGB", (16, 8), (10, 120, 240)).convert(mode).convert("RGB"))
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_write_video_with_one_frame_to_image_path_writes_an_image(tmp_path: Path, suffix: str) -> None:
    frames = make_frames(1, 64, 96)
    path = write_video(tmp_path / f"still{suffix}", frames, 8.0, metadata={"seed": 2})
    with Image.open(path) as image:
        assert image.format == ("PNG" if suffix == ".png" else "JPEG")
        assert image.size == (96, 64)
    path.with_suffix(".json").unlink()
    assert read_metadata(path)["seed"] == 2
    assert mean_abs_error(read_image(path), frames[0]) < (0.01 if suffix == ".png" else 2.0)
    media_error("an image holds 1 frame, got 2", write_video, tmp_path / f"many{suffix}", make_frames(2, 64, 96), 8.0)


# ----------------------------------------------------------------------------- bad files


def _truncate_after_moov(data: bytes) -> bytes:
    """Keep ftyp + moov (the index) but no sample data: opens fine, decodes nothing."""
    ftyp = struct.unpack(">I", data[:4])[0]
    moov = struct.unpack(">I", data[ftyp : ftyp + 4])[0]
    assert data[ftyp + 4 : ftyp + 8] == b"moov"
    return data[: ftyp + moov + 64]


BAD_FILES = {
    "missing": None,
    "directory": None,
    "empty": b"",
    "text": b"this is not a video\n" * 20,
    "random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "200-bytes": lambda data: data[:200],
    "no-sample-data": _truncate_after_moov,
}


BAD_FILE_REASONS = {
    "missing": "does not exist",
    "directory": "is a directory",
    "empty": "is empty",
    "text": "not a video or image file|not an image file",
    "random": "not a video or image file|not an image file",
    "200-bytes": "no video stream|not an image file",
    "no-sample-data": "truncated or corrupt|not an image file",
}
# The container header of these is intact (or absent), so header-only readers answer without decoding.
HEADER_ONLY_ANSWERS = {
    ("video_info", "no-sample-data"),
    ("read_metadata", "200-bytes"),
    ("read_metadata", "no-sample-data"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_raise_one_line_media_error(tmp_path: Path, clip_path: Path, kind: str) -> None:
    path = tmp_path / "bad.mp4"
    content = BAD_FILES[kind]
    if kind == "directory":
        path.mkdir()
    elif callable(content):
        path.write_bytes(content(clip_path.read_bytes()))
    elif content is not None:
        path.write_bytes(content)
    for read in (read_video, video_info, read_image, read_metadata):
        if (read.__name__, kind) in HEADER_ONLY_ANSWERS:
            continue
        message = media_error(BAD_FILE_REASONS[kind], read, path)
        assert "bad.mp4" in message, (read.__name__, message)


def test_truncated_mp4_returns_the_frames_that_decode(tmp_path: Path, clip_path: Path) -> None:
    data = clip_path.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    frames, fps = read_video(path)
    assert 0 < frames.shape[0] < 33
    assert fps == 8.0
    np.testing.assert_array_equal(frames, read_video(clip_path)[0][: frames.shape[0]])


def test_damaged_mp4_returns_the_frames_before_the_damage(tmp_path: Path, clip_path: Path) -> None:
    data = bytearray(clip_path.read_bytes())
    start = len(data) // 2
    data[start:] = np.random.default_rng(1).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    frames, _ = read_video(path)
    assert 0 < frames.shape[0] < 33
    np.testing.assert_array_equal(frames, read_video(clip_path)[0][: frames.shape[0]])


def test_no_sample_data_says_no_decodable_frames(tmp_path: Path, clip_path: Path) -> None:
    path = tmp_path / "index-only.mp4"
    path.write_bytes(_truncate_after_moov(clip_path.read_bytes()))
    media_error("truncated or corrupt", read_video, path)


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG that claims width x height but holds one row of pixels: cheap to make, a bomb to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * width)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [5000, 30000])  # over our limit; also over Pillow's own bomb limit
def test_image_over_pixel_limit_is_refused_from_the_header(tmp_path: Path, size: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(size, size))
    for read in (read_image, read_video):
        media_error(r"too large|over the limit", read, path)


def test_pixel_limit_names_size_and_limit(tmp_path: Path, clip_path: Path) -> None:
    Image.new("RGB", (200, 100)).save(tmp_path / "wide.png")
    media_error(r"200x100 = 20,000 pixels .* 10,000 pixels", read_image, tmp_path / "wide.png", max_pixels=10_000)
    media_error(r"96x64 = 6,144 pixels .* 1,000 pixels", read_video, clip_path, max_pixels=1_000)


# ----------------------------------------------------------------------------- bad writes


@pytest.mark.parametrize(
    ("frames", "fps", "match"),
    [
        (np.zeros((3, 63, 64, 3), np.uint8), 8.0, "odd side; H.264 yuv420p needs even width and height"),
        (np.zeros((3, 64, 65, 3), np.uint8), 8.0, "odd side; H.264 yuv420p needs even width and height"),
        (np.zeros((3, 64, 64, 3), np.int64), 8.0, "dtype int64; expected uint8"),
        (np.zeros((3, 64, 64, 3), bool), 8.0, "dtype bool"),
        (np.zeros((3, 64, 64), np.uint8), 8.0, r"shape \(frames, height, width, 3\) .* got shape \(3, 64, 64\)"),
        (np.zeros((3, 64, 64, 4), np.uint8), 8.0, r"shape \(frames, height, width, 3\) .* got shape \(3, 64, 64, 4\)"),
        (np.zeros((64, 64, 3), np.uint8), 8.0, r"shape \(frames, height, width, 3\) .* got shape \(64, 64, 3\)"),
        (np.zeros((0, 64, 64, 3), np.uint8), 8.0, r"shape \(frames, height, width, 3\) .* got shape \(0, 64, 64, 3\)"),
        (np.full((3, 64, 64, 3), np.nan, np.float32), 8.0, "NaN or infinite"),
        (np.zeros((3, 64, 64, 3), np.uint8), 0.0, r"fps must be a number in \(0, 1000\], got 0.0"),
        (np.zeros((3, 64, 64, 3), np.uint8), float("nan"), "fps must be a number .* got nan"),
        (np.zeros((3, 64, 64, 3), np.uint8), "8", "fps must be a number .* got '...'"),
    ],
)
def test_bad_writes_raise_media_error_and_leave_nothing(tmp_path: Path, frames: np.ndarray, fps, match: str) -> None:
    media_error(match, write_video, tmp_path / "out.mp4", frames, fps)
    assert os.listdir(tmp_path) == []


def test_bad_suffix_and_crf_are_rejected(tmp_path: Path) -> None:
    frames = make_frames(3, 64, 64)
    media_error("suffix must be one of .mp4", write_video, tmp_path / "out.avi", frames, 8.0)
    media_error(r"crf must be an integer in \[0, 51\], got 60", write_video, tmp_path / "out.mp4", frames, 8.0, crf=60)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- atomic writes


def test_write_leaves_no_temp_files_and_replaces_existing(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    write_video(path, make_frames(17, 64, 64), 8.0, metadata={"seed": 1})
    write_video(path, make_frames(9, 64, 96), 12.0, metadata={"seed": 2})
    assert sorted(os.listdir(tmp_path)) == ["out.json", "out.mp4"]
    frames, fps = read_video(path)
    assert frames.shape == (9, 64, 96, 3) and fps == 12.0
    assert read_metadata(path)["seed"] == 2
    assert json.loads(path.with_suffix(".json").read_text())["seed"] == 2


def test_failed_encode_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "out.mp4", make_frames(9, 64, 64), 8.0)
    before = path.read_bytes()

    def broken_encoder(target: Path, *args: object) -> None:
        target.write_bytes(b"half a video")
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(media, "_encode_h264", broken_encoder)
    media_error("cannot write video .*: Invalid data", write_video, path, make_frames(17, 64, 64), 8.0)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.json", "out.mp4"]
