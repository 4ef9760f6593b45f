"""Read and write videos and images, and the provenance metadata kinema stores in them.

Reading: ``read_video`` decodes any video PyAV can open (mp4, webm, mov, mkv, ...) to a uint8 RGB array
``(frames, height, width, 3)``. Images (png, jpg, gif, webp, bmp, tiff) go through Pillow instead: a still
image is a 1-frame video (what image-to-video expects) and an animated gif/png/webp gives all its frames.

Writing: ``write_video`` makes an H.264 yuv420p MP4 with ``+faststart`` so it plays in browsers, a VP9 WebM, or a
GIF (one palette of 256 colours for the whole clip, so colours do not flicker between frames), all with PyAV; and
``write_image`` a PNG (or JPEG). Each writes to a temporary file in the target directory and ``os.replace``s it, so
a reader never sees a half-written file. ``export_to_video`` is the same for the frames a pipeline returns, in any
of its output types, as diffusers' helper of that name.

Frames: ``resize_crop`` fits frames to a size (centred crop, then resize) and ``contact_sheet`` tiles them into
one image.

Metadata: a JSON object (prompt, seed, settings, model name and sha256, ...) always carrying
``kinema_version`` and ``created``. It goes in the MP4 and WebM ``comment`` tag (the muxers keep it; ``encoder``
is overwritten by libavformat), in the PNG ``tEXt`` chunk ``kinema`` or the JPEG comment, and in a sidecar
``<name>.json`` next to the file (a GIF has only the sidecar).

Every problem with a file raises ``MediaError`` with a one-line message; no PyAV or Pillow exception
escapes. libav logging is left at PyAV's default (off), so nothing is printed to the terminal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image, PngImagePlugin

import kinema
from kinema.errors import MediaError

# If someone enables libav logging (av.logging.set_level), keep its messages out of stderr unless the
# application configured logging itself; the errors reach the caller as MediaError anyway.
logging.getLogger("libav").addHandler(logging.NullHandler())

DEFAULT_FPS = 8.0  # used when a file does not say how fast it plays (still images, some streams)
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_CRF = 12  # H.264/VP9 quality of written videos: near-transparent at these sizes (0: lossless H.264)
METADATA_TAG = "comment"  # the MP4 container tag that holds the metadata JSON
PNG_TEXT_KEY = "kinema"
VIDEO_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".webm": "webm", ".gif": "gif"}
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
# (colorspace, primaries, transfer, range) = BT.709, BT.709, BT.709, limited ("MPEG").
BT709_TAGS = (1, 1, 1, 1)
# swscale's default YUV->RGB path rounds down (about -1.5 per channel); these flags make it exact.
DECODE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
# Formats Pillow identifies by their magic bytes; anything else is handed to PyAV.
PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


# ----------------------------------------------------------------------------- helpers


def _describe(error: BaseException) -> str:
    """One short line for a library exception (without errno numbers or temp file names)."""
    strerror = getattr(error, "strerror", None) if isinstance(error, (OSError, av.FFmpegError)) else None
    text = " ".join(str(strerror or error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_readable(path: Path, what: str) -> None:
    """Raise MediaError unless `path` is an existing, non-empty regular file."""
    if not path.exists():
        raise MediaError(f"cannot read {what} '{path}': file does not exist")
    if path.is_dir():
        raise MediaError(f"cannot read {what} '{path}': it is a directory, not a file")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise MediaError(f"cannot read {what} '{path}': {_describe(error)}") from None
    if size == 0:
        raise MediaError(f"cannot read {what} '{path}': file is empty")
    if not os.access(path, os.R_OK):
        raise MediaError(f"cannot read {what} '{path}': permission denied")


def _check_pixels(path: Path, what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(
            f"cannot read {what} '{path}': size {width}x{height} = {width * height:,} pixels is over "
            f"the limit of {max_pixels:,} pixels (max_pixels)"
        )


def _check_max_frames(max_frames: int | None) -> None:
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, numbers.Integral) or max_frames < 1
    ):
        raise MediaError(f"max_frames must be a positive integer or None, got {max_frames!r}")


def _open_pillow_image(path: Path) -> Image.Image | None:
    """Open `path` lazily (header only) if it is an image format Pillow knows; None otherwise."""
    try:
        return Image.open(path, formats=PILLOW_FORMATS)
    except Image.UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as error:
        raise MediaError(f"cannot read image '{path}': image is too large ({_describe(error)})") from None
    except Exception as error:  # Pillow raises many types for broken headers (SyntaxError, struct.error...)
        raise MediaError(f"cannot read image '{path}': file is truncated or corrupt ({_describe(error)})") from None


def _pillow_frame_count(image: Image.Image) -> int:
    return int(getattr(image, "n_frames", 1))


def _fps_from_durations(durations_ms: list[float]) -> float:
    """Average fps of an animated image from its per-frame durations; 8 fps for a still image."""
    mean_ms = sum(durations_ms) / len(durations_ms) if len(durations_ms) > 1 else 0.0
    return 1000.0 / mean_ms if mean_ms > 0 else DEFAULT_FPS


def _pillow_duration(image: Image.Image) -> float:
    """Duration in ms of the current frame. WebP only knows it after decoding the frame."""
    if "duration" not in image.info:
        image.load()
    return float(image.info.get("duration") or 0.0)


def _pillow_fps(image: Image.Image, frames: int) -> float:
    if frames < 2:
        return DEFAULT_FPS
    durations = []
    for index in range(frames):
        image.seek(index)
        durations.append(_pillow_duration(image))
    image.seek(0)
    return _fps_from_durations(durations)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any Pillow mode; transparency is composited over black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _json_default(value: Any) -> Any:
    """Let numpy scalars/arrays and paths appear in metadata."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def _complete_metadata(metadata: dict | None) -> dict:
    if metadata is not None and not isinstance(metadata, dict):
        raise MediaError(f"metadata must be a dict, got {type(metadata).__name__}")
    result = dict(metadata or {})
    result.setdefault("kinema_version", kinema.__version__)
    result.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return result


def _dump_metadata(metadata: dict, *, indent: int | None = None) -> str:
    try:
        return json.dumps(metadata, default=_json_default, indent=indent, ensure_ascii=indent is None, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise MediaError(f"metadata is not JSON-serialisable: {_describe(error)}") from None


def _temp_path(path: Path) -> Path:
    """A hidden temporary name in the same directory, so os.replace is atomic."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success move it over `path`, on failure delete it."""
    if path.is_dir():
        raise MediaError(f"cannot write '{path}': it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MediaError(f"cannot write '{path}': cannot create directory ({_describe(error)})") from None
    temp = _temp_path(path)
    try:
        yield temp
        os.replace(temp, path)
    except OSError as error:
        raise MediaError(f"cannot write '{path}': {_describe(error)}") from None
    finally:
        if temp.exists():
            temp.unlink()


def sidecar_path(path: str | os.PathLike) -> Path:
    """The sidecar JSON that belongs to a media file: ``out.mp4`` -> ``out.json``."""
    return Path(path).with_suffix(".json")


def _write_sidecar(path: Path, metadata: dict) -> None:
    text = _dump_metadata(metadata, indent=2) + "\n"
    with _atomic_target(sidecar_path(path)) as temp:
        temp.write_text(text, encoding="utf-8")


def _validate_frames(frames: Any, *, single: bool) -> np.ndarray:
    """Check shape (F, H, W, 3) (or (H, W, 3) when `single`) and dtype; return the array unconverted."""
    try:
        array = np.asarray(frames)
    except Exception as error:
        raise MediaError(f"frames must be a numpy array, got {type(frames).__name__} ({_describe(error)})") from None
    expected = "(height, width, 3)" if single else "(frames, height, width, 3)"
    ndim = 3 if single else 4
    if array.ndim != ndim or array.shape[-1] != 3 or 0 in array.shape:
        raise MediaError(f"frames must have shape {expected} with RGB channels, got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise MediaError("frames contain NaN or infinite values; expected floats in [0, 1]")
        return array
    raise MediaError(f"frames have dtype {array.dtype}; expected uint8 in [0, 255] or float in [0, 1]")


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    """uint8 frame; floats in [0, 1] are clipped, scaled and rounded."""
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    return np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB (first frame if animated).

    The size in the header is checked against `max_pixels` before any pixel is decoded.
    """
    path = Path(path)
    _check_readable(path, "image")
    image = _open_pillow_image(path)
    if image is None:
        raise MediaError(f"cannot read image '{path}': not an image file (supported: png, jpg, gif, webp, bmp, tiff)")
    with image:
        _check_pixels(path, "image", image.width, image.height, max_pixels)
        try:
            image.load()
            return _to_rgb(image)
        except Exception as error:
            raise MediaError(f"cannot read image '{path}': file is truncated or corrupt ({_describe(error)})") from None


def _read_pillow_frames(
    path: Path, image: Image.Image, max_frames: int | None, max_pixels: int
) -> tuple[np.ndarray, float]:
    """All frames of a still or animated image, via Pillow."""
    with image:
        _check_pixels(path, "video", image.width, image.height, max_pixels)
        frames: list[np.ndarray] = []
        durations: list[float] = []
        try:
            total = _pillow_frame_count(image)
            count = total if max_frames is None else min(total, max_frames)
            for index in range(count):
                image.seek(index)
                image.load()
                durations.append(_pillow_duration(image))
                frames.append(_to_rgb(image))
        except Exception as error:
            if not frames:
                raise MediaError(
                    f"cannot read video '{path}': file is truncated or corrupt ({_describe(error)})"
                ) from None
    fps = _fps_from_durations(durations[: len(frames)])
    return np.stack(frames), fps


def _stream_fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate and float(rate) > 0 else DEFAULT_FPS


def _open_av(path: Path, what: str) -> Any:
    try:
        return av.open(str(path), metadata_errors="replace")
    except Exception as error:
        if isinstance(error, av.error.InvalidDataError):
            reason = "not a video or image file, or the file is corrupt"
        else:
            reason = _describe(error)
        raise MediaError(f"cannot read {what} '{path}': {reason}") from None


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise MediaError(f"cannot read video '{path}': no video stream (the file may be truncated or corrupt)")
    return container.streams.video[0]


def read_video(
    path: str | os.PathLike, *, max_frames: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, float]:
    """Decode a video (or image) to ((F, H, W, 3) uint8 RGB, fps).

    A still image is a 1-frame video at 8 fps. A truncated file returns the frames that decode, as
    ffmpeg does; if none decode, MediaError. Size is checked against `max_pixels` from the header.
    """
    path = Path(path)
    _check_readable(path, "video")
    _check_max_frames(max_frames)
    image = _open_pillow_image(path)
    if image is not None:
        return _read_pillow_frames(path, image, max_frames, max_pixels)

    container = _open_av(path, "video")
    with container:
        stream = _video_stream(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:
            _check_pixels(path, "video", width, height, max_pixels)
        fps = _stream_fps(stream)
        stream.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        reformatter = VideoReformatter()  # one for all frames: it keeps its swscale context
        try:
            for frame in container.decode(stream):
                if not frames:  # the header may not know the size; the first frame does
                    width, height = frame.width, frame.height
                    _check_pixels(path, "video", width, height, max_pixels)
                # Frames that change size mid-stream are scaled to the first frame's size.
                rgb = reformatter.reformat(
                    frame, format="rgb24", width=width, height=height, interpolation=DECODE_FLAGS
                )
                frames.append(rgb.to_ndarray())
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except MediaError:
            raise
        except Exception as error:
            if not frames:  # otherwise keep what decoded, like ffmpeg does with a truncated file
                raise MediaError(
                    f"cannot read video '{path}': file is truncated or corrupt ({_describe(error)})"
                ) from None
    if not frames:
        raise MediaError(f"cannot read video '{path}': file is truncated or corrupt (no decodable frames)")
    return np.stack(frames), fps


def video_info(path: str | os.PathLike) -> dict:
    """Header-only facts: frames (estimated if the header lacks a count), fps, width, height, seconds, codec.

    ``frames_estimated`` says whether ``frames`` came from duration x fps rather than a frame count.
    """
    path = Path(path)
    _check_readable(path, "video")
    image = _open_pillow_image(path)
    if image is not None:
        with image:
            try:
                frames = _pillow_frame_count(image)
                fps = _pillow_fps(image, frames)
            except Exception as error:
                raise MediaError(
                    f"cannot read video '{path}': file is truncated or corrupt ({_describe(error)})"
                ) from None
            return {
                "frames": frames,
                "fps": fps,
                "width": image.width,
                "height": image.height,
                "seconds": frames / fps,
                "codec": str(image.format).lower(),
                "frames_estimated": False,
            }

    container = _open_av(path, "video")
    with container:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = 0.0
        frames, estimated = int(stream.frames), False
        if frames <= 0:
            frames, estimated = max(1, round(seconds * fps)), True
        if seconds <= 0:
            seconds = frames / fps
        return {
            "frames": frames,
            "fps": fps,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "seconds": seconds,
            "codec": stream.codec_context.name,
            "frames_estimated": estimated,
        }


def _parse_metadata(text: str | bytes, source: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise MediaError(f"cannot read metadata from {source}: corrupt JSON ({_describe(error)})") from None
    if not isinstance(value, dict):
        raise MediaError(f"cannot read metadata from {source}: expected a JSON object, got {type(value).__name__}")
    return value


def _container_metadata(path: Path) -> dict | None:
    """Kinema metadata in the container `comment` tag, or None. Comments that are not a JSON object
    holding ``kinema_version`` were written by other tools and are ignored."""
    container = _open_av(path, "file")
    with container:  # the mp4 muxer keeps the tag's case, matroska (WebM) writes it upper case
        comment = next((v for k, v in container.metadata.items() if k.lower() == METADATA_TAG), None)
    if not comment:
        return None
    try:
        value = json.loads(comment)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "kinema_version" in value else None


def read_metadata(path: str | os.PathLike) -> dict:
    """Kinema metadata of an MP4 (comment tag) or PNG/JPEG (text chunk/comment); else the sidecar; else {}."""
    path = Path(path)
    _check_readable(path, "file")
    image = _open_pillow_image(path)
    if image is not None:
        with image:
            text = image.info.get(PNG_TEXT_KEY) if image.format == "PNG" else None
            if image.format == "JPEG" and image.info.get("comment"):
                comment = image.info["comment"]
                text = comment if comment.lstrip()[:1] in (b"{", "{") else None
        if text:
            return _parse_metadata(text, f"'{path}'")
    else:
        found = _container_metadata(path)
        if found is not None:
            return found
    sidecar = sidecar_path(path)
    if sidecar.is_file() and sidecar != path:
        try:
            text = sidecar.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise MediaError(f"cannot read metadata from '{sidecar}': {_describe(error)}") from None
        return _parse_metadata(text, f"'{sidecar}'")
    return {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    path = Path(path)
    if not path.is_file():
        reason = "it is a directory" if path.is_dir() else "file does not exist"
        raise MediaError(f"cannot hash '{path}': {reason}")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise MediaError(f"cannot hash '{path}': {_describe(error)}") from None
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writing


def write_image(path: str | os.PathLike, frame: Any, *, metadata: dict | None = None, sidecar: bool = True) -> Path:
    """Write one (H, W, 3) frame as PNG (metadata in tEXt chunk ``kinema``) or JPEG (in its comment).

    uint8 or float in [0, 1]; also writes the sidecar ``.json`` when `sidecar`. Atomic.
    """
    path = Path(path)
    image_format = IMAGE_SUFFIXES.get(path.suffix.lower())
    if image_format is None:
        raise MediaError(f"cannot write image '{path}': suffix must be one of {', '.join(IMAGE_SUFFIXES)}")
    array = _as_uint8(_validate_frames(frame, single=True))
    metadata = _complete_metadata(metadata)
    text = _dump_metadata(metadata)  # ASCII, so it fits a PNG tEXt chunk
    if image_format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_TEXT_KEY, text)
        options: dict[str, Any] = {"pnginfo": info}
    else:
        options = {"quality": 95, "comment": text}
    with _atomic_target(path) as temp:
        try:
            Image.fromarray(array).save(temp, format=image_format, **options)
        except OSError:
            raise
        except Exception as error:
            raise MediaError(f"cannot write image '{path}': {_describe(error)}") from None
    if sidecar:
        _write_sidecar(path, metadata)
    return path


def _check_fps(fps: float) -> Fraction:
    if (
        isinstance(fps, bool)
        or not isinstance(fps, numbers.Real)
        or not math.isfinite(float(fps))
        or not 0 < float(fps) <= 1000
    ):
        raise MediaError(f"fps must be a number in (0, 1000], got {fps!r}")
    return Fraction(float(fps)).limit_denominator(1001)


def write_video(
    path: str | os.PathLike,
    frames: Any,
    fps: float,
    *,
    metadata: dict | None = None,
    crf: int = DEFAULT_CRF,
    sidecar: bool = True,
) -> Path:
    """Write (F, H, W, 3) frames (uint8, or float in [0, 1]) as an H.264 yuv420p MP4 that browsers play, a VP9 WebM
    (``.webm``, ``crf`` on VP9's scale) or a GIF (``.gif``), chosen by the suffix.

    Width and height must be even for MP4 and WebM (yuv420p). Metadata JSON goes in the ``comment`` tag (not in a
    GIF) and, when `sidecar`, in ``<name>.json``. A ``.png``/``.jpg`` path with exactly one frame writes an image
    via ``write_image``. The file is written to a temp name and moved into place.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    array = _validate_frames(frames, single=False)
    if suffix in IMAGE_SUFFIXES:
        if array.shape[0] != 1:
            raise MediaError(f"cannot write '{path}': an image holds 1 frame, got {array.shape[0]}; use a .mp4 path")
        return write_image(path, array[0], metadata=metadata, sidecar=sidecar)
    container_format = VIDEO_SUFFIXES.get(suffix)
    if container_format is None:
        allowed = ", ".join([*VIDEO_SUFFIXES, *IMAGE_SUFFIXES])
        raise MediaError(f"cannot write video '{path}': suffix must be one of {allowed}")
    rate = _check_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= 51:
        raise MediaError(f"crf must be an integer in [0, 51], got {crf!r}")
    _, height, width, _ = array.shape
    if container_format != "gif" and (width % 2 or height % 2):
        codec = "VP9" if container_format == "webm" else "H.264"
        raise MediaError(
            f"cannot write video '{path}': size {width}x{height} has an odd side; "
            f"{codec} yuv420p needs even width and height"
        )
    metadata = _complete_metadata(metadata)
    comment = _dump_metadata(metadata)

    with _atomic_target(path) as temp:
        try:
            if container_format == "gif":
                _encode_gif(temp, array, rate)
            elif container_format == "webm":
                _encode_vp9(temp, array, rate, int(crf), comment)
            else:
                _encode_h264(temp, container_format, array, rate, int(crf), comment, metadata["kinema_version"])
        except OSError:
            raise
        except Exception as error:
            raise MediaError(f"cannot write video '{path}': {_describe(error)}") from None
    if sidecar:
        _write_sidecar(path, metadata)
    return path


def _encode_h264(
    target: Path,
    container_format: str,
    frames: np.ndarray,
    rate: Fraction,
    crf: int,
    comment: str,
    version: str,
) -> None:
    with av.open(str(target), "w", format=container_format, options={"movflags": "+faststart"}) as container:
        container.metadata[METADATA_TAG] = comment
        container.metadata["description"] = f"made with kinema {version}"
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # x264's plain C code (asm=0): with its SIMD code the same frames do not always encode to the same bytes
        # (the macroblock tree's B-frame choices varied in up to 1 encode in 3 on a busy machine, one thread or
        # several), so the same seed would not always give the same video. The C code gave the same bytes in 250
        # of 250 encodes and costs about 0.4 s more per 30 s at 512x288.
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "asm=0"}
        # Convert with BT.709 and say so in the stream, so browsers and ffmpeg agree on the colours.
        codec = stream.codec_context
        codec.colorspace, codec.color_primaries, codec.color_trc, codec.color_range = BT709_TAGS
        reformatter = VideoReformatter()  # one for all frames: it keeps its swscale context
        for index, frame in enumerate(frames):
            video_frame = reformatter.reformat(
                av.VideoFrame.from_ndarray(_as_uint8(frame), format="rgb24"),
                format="yuv420p",
                dst_colorspace="ITU709",
                dst_color_range="MPEG",
            )
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _encode_vp9(target: Path, frames: np.ndarray, rate: Fraction, crf: int, comment: str) -> None:
    """VP9 in WebM at constant quality (``crf``, with no bitrate cap), BT.709 like the MP4s, one thread (so the same
    frames give the same bytes)."""
    with av.open(str(target), "w", format="webm") as container:
        container.metadata[METADATA_TAG] = comment
        stream = container.add_stream("libvpx-vp9", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.options = {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4"}
        codec = stream.codec_context
        codec.colorspace, codec.color_primaries, codec.color_trc, codec.color_range = BT709_TAGS
        reformatter = VideoReformatter()
        for index, frame in enumerate(frames):
            video_frame = reformatter.reformat(av.VideoFrame.from_ndarray(_as_uint8(frame), format="rgb24"),
                                               format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _encode_gif(target: Path, frames: np.ndarray, rate: Fraction) -> None:
    """A looping GIF: one palette of up to 256 colours chosen (median cut) from the whole clip, so that colours
    hold still from frame to frame, each frame mapped to it without dithering; PyAV's GIF encoder writes it."""
    pixels = np.stack([_as_uint8(frame) for frame in frames])  # (F, H, W, 3)
    sample = pixels[np.unique(np.linspace(0, len(pixels) - 1, min(len(pixels), 64)).round().astype(int))]
    palette_image = Image.fromarray(sample.reshape(-1, sample.shape[2], 3)).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT)
    rgb = np.zeros((256, 3), np.uint8)
    used = np.asarray(palette_image.getpalette()[:768], np.uint8).reshape(-1, 3)
    rgb[:len(used)] = used
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)  # (256, 4) as PyAV's pal8 wants
    with av.open(str(target), "w", format="gif") as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = "pal8"
        for index, frame in enumerate(pixels):
            indices = np.asarray(Image.fromarray(frame).quantize(palette=palette_image, dither=Image.Dither.NONE))
            video_frame = av.VideoFrame.from_ndarray((indices, argb), format="pal8")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def export_to_video(video_frames: Any, output_video_path: str | os.PathLike | None = None, fps: float = 8.0, *,
                    metadata: dict | None = None) -> str:
    """Write the frames of one video, as a pipeline returns them in any output type, to an MP4, WebM or GIF (by the
    suffix; default a temporary .mp4) and return its path, as diffusers' ``export_to_video``: uint8 or float [0, 1]
    arrays (F, H, W, 3), a tensor (F, 3, H, W) or (F, H, W, 3), a list of such frames or of PIL images. No
    sidecar JSON is written; ``metadata`` goes into the file."""
    if output_video_path is None:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as file:
            output_video_path = file.name
    frames = _frames_of(video_frames)
    if frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:  # (F, 3, H, W), as "pt" gives
        frames = frames.transpose(0, 2, 3, 1)
    return str(write_video(output_video_path, frames, fps, metadata=metadata, sidecar=False))


def _frames_of(video_frames: Any) -> np.ndarray:
    """Frames as one numpy array, from an array, a tensor, or a list of frames or PIL images."""
    if hasattr(video_frames, "detach"):  # a torch tensor
        return video_frames.detach().float().cpu().numpy() if video_frames.is_floating_point() else \
            video_frames.detach().cpu().numpy()
    if isinstance(video_frames, (list, tuple)):
        if not video_frames:
            raise MediaError("no frames to write")
        return np.stack([np.asarray(frame.convert("RGB")) if isinstance(frame, Image.Image) else _frames_of(frame)
                         for frame in video_frames])
    return np.asarray(video_frames)


# ----------------------------------------------------------------------------- frames


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3): the centred crop of the target aspect ratio, resized.

    The crop box is fractional and handed to Pillow's resize, so the content stays centred to a
    fraction of a pixel. Area filter when shrinking, bicubic when enlarging.
    """
    _, source_height, source_width, _ = frames.shape
    crop_width = min(source_width, source_height * width / height)
    crop_height = min(source_height, source_width * height / width)
    left, top = (source_width - crop_width) / 2, (source_height - crop_height) / 2
    box = (left, top, left + crop_width, top + crop_height)
    shrinking = crop_width >= width and crop_height >= height
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((width, height), resample=resample, box=box))
    return out


def contact_sheet(frames: np.ndarray, columns: int = 8, count: int = 32, scale: int = 2) -> np.ndarray:
    """Evenly spaced frames tiled into one image with 2-pixel gutters, enlarged by ``scale``."""
    f, h, w, _ = frames.shape
    picks = np.unique(np.linspace(0, f - 1, min(count, f)).round().astype(int))
    rows = (len(picks) + columns - 1) // columns
    sheet = np.full((rows * (h + 2), columns * (w + 2), 3), 255, np.uint8)
    for k, idx in enumerate(picks):
        r, c = divmod(k, columns)
        sheet[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = frames[idx]
    return sheet.repeat(scale, axis=0).repeat(scale, axis=1)
