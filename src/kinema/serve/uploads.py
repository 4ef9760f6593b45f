"""Uploaded images and videos: content-type, size and pixel checks before anything is decoded in full.

The request body as a whole is capped by the server (see ``kinema.serve.app``); here each file's
declared type must be an image (or video) type or the generic ``application/octet-stream``, its
header must name a format kinema reads, and its width x height (and, for a video, frames x width x
height) must be within limits before its pixels are decoded, so a small file that would decode
into gigabytes (a decompression bomb) is refused from its header.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from kinema.errors import KinemaError, MediaError
from kinema.frames import MAX_FRAMES
from kinema.media import read_image, read_video, video_info

IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
               "image/bmp": ".bmp"}
VIDEO_TYPES = {"video/mp4": ".mp4", "video/quicktime": ".mov", "video/webm": ".webm", "video/x-matroska": ".mkv",
               "image/gif": ".gif", "image/webp": ".webp", "image/png": ".png"}
GENERIC_TYPES = ("application/octet-stream", "")
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,(?P<data>.*)", re.DOTALL)


class UploadError(KinemaError):
    """A file that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, param: str, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def check_declared_type(content_type: str | None, field: str, kind: str) -> str:
    """The declared media type, lower case; UploadError 415 unless it fits ``kind`` (image or video)."""
    declared = (content_type or "").split(";")[0].strip().lower()
    allowed = IMAGE_TYPES if kind == "image" else VIDEO_TYPES
    if declared not in allowed and declared not in GENERIC_TYPES:
        what = "an image" if kind == "image" else "a video"
        accepted = ", ".join(t for t in allowed if t.startswith(kind))
        raise UploadError(f"{field}: content type '{declared[:60]}' is not {what} (send {accepted})", field, 415)
    return declared


def save_stream(source, target: Path, max_bytes: int, field: str) -> Path:
    """Copy a binary file object to ``target`` (temp name, then os.replace); UploadError 413 when too big."""
    temp = target.with_name(f".{target.name}.part")
    written = 0
    try:
        with open(temp, "wb") as out:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadError(f"{field}: the file is over the upload limit of {max_bytes:,} bytes", field, 413)
                out.write(chunk)
        if written == 0:
            raise UploadError(f"{field}: the file is empty", field)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def decode_data_url(url: str, target: Path, max_bytes: int, field: str) -> Path:
    """Write the bytes of a base64 ``data:`` URL to ``target``; URLs that would need fetching are refused."""
    match = DATA_URL.fullmatch(url.strip())
    if match is None:
        raise UploadError(f"{field}: only base64 data: URLs are accepted (this server fetches nothing); "
                          "or upload the file itself", field)
    if len(match["data"]) > max_bytes * 4 // 3 + 4:
        raise UploadError(f"{field}: the file is over the upload limit of {max_bytes:,} bytes", field, 413)
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(f"{field}: the data: URL is not valid base64", field) from None
    if not data:
        raise UploadError(f"{field}: the file is empty", field)
    target.write_bytes(data)
    return target


def check_image(path: Path, field: str, max_pixels: int) -> tuple[Path, np.ndarray]:
    """Read an uploaded image after checking its format and size from the header; renames it to its format."""
    try:
        with Image.open(path, formats=list(IMAGE_FORMATS)) as image:
            image_format, width, height = image.format, image.width, image.height
    except Image.DecompressionBombError:
        raise UploadError(f"{field}: the image is too large to decode safely", field, 413) from None
    except Exception:
        raise UploadError(f"{field}: not an image, or a corrupt one (send PNG, JPEG or WebP)", field) from None
    if image_format not in IMAGE_FORMATS:
        raise UploadError(f"{field}: {image_format} images are not accepted (send PNG, JPEG or WebP)", field, 415)
    if width * height > max_pixels:
        raise UploadError(f"{field}: {width}x{height} is {width * height:,} pixels; the limit is {max_pixels:,}",
                          field, 413)
    final = path.with_suffix(IMAGE_FORMATS[image_format])
    shutil.move(path, final)
    try:
        return final, read_image(final, max_pixels=max_pixels)
    except MediaError:
        raise UploadError(f"{field}: the image is truncated or corrupt", field) from None


def check_video(path: Path, field: str, max_pixels: int, max_video_pixels: int) -> tuple[np.ndarray, float]:
    """Decode an uploaded video within limits: width x height <= max_pixels, frames x width x height <=
    max_video_pixels (checked from the header first, and again while decoding)."""
    try:
        info = video_info(path)
    except MediaError:
        raise UploadError(f"{field}: not a video kinema can read, or a corrupt one (send MP4, WebM, MOV or GIF)",
                          field) from None
    width, height = int(info["width"] or 0), int(info["height"] or 0)
    if width * height > max_pixels:
        raise UploadError(f"{field}: {width}x{height} is {width * height:,} pixels a frame; the limit is "
                          f"{max_pixels:,}", field, 413)
    max_frames = min(MAX_FRAMES, max_video_pixels // max(1, width * height))  # MAX_FRAMES: what generation reads
    too_long = UploadError(f"{field}: a video of {width}x{height} may have at most {max_frames} frames here "
                           f"({max_video_pixels:,} pixels in all)", field, 413)
    if max_frames < 1 or (not info["frames_estimated"] and info["frames"] > max_frames):
        raise too_long
    try:
        frames, fps = read_video(path, max_frames=max_frames + 1, max_pixels=max_pixels)
    except MediaError:
        raise UploadError(f"{field}: the video is truncated or corrupt", field) from None
    if len(frames) > max_frames:
        raise too_long
    return frames, fps
