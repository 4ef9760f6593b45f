"""``kinema vae ...``: commands around the video VAE.

    kinema vae roundtrip IN -o OUT [--model DIR] [--chunk-frames N (default 64; 0 = whole clip)]

encodes a video and decodes it again, writes the reconstruction as an MP4 (or PNG for one frame) and
prints the PSNR against the input: the quickest look at what the VAE keeps and what it loses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from kinema.errors import KinemaError
from kinema.frames import LATENT_STRIDE

ROUNDTRIP_FRAMES = 1 + LATENT_STRIDE * 480  # read at most 4 minutes at 8 fps by default (the command says so)

vae_app = typer.Typer(no_args_is_help=True, help="The video VAE: encode and decode videos.")


@vae_app.callback()
def vae_group() -> None:
    """The video VAE: encode and decode videos."""  # a callback keeps `roundtrip` a named sub-command


def pad_video(frames: np.ndarray, temporal: int = 4, spatial: int = 8) -> tuple[np.ndarray, list[str]]:
    """Pad (F, H, W, 3) to 1 + temporal * k frames (repeating the last frame) and H, W to multiples of
    `spatial` (repeating the edge pixels). Returns the padded frames and what was done, in words."""
    frames_in, height, width = frames.shape[:3]
    frames_out = 1 + temporal * math.ceil((frames_in - 1) / temporal)
    height_out, width_out = spatial * math.ceil(height / spatial), spatial * math.ceil(width / spatial)
    notes = []
    if frames_out != frames_in:
        notes.append(f"padded {frames_in} -> {frames_out} frames by repeating the last frame (the VAE needs "
                     f"1 + {temporal}k)")
    if (height_out, width_out) != (height, width):
        notes.append(f"padded {width}x{height} -> {width_out}x{height_out} by repeating edge pixels "
                     f"(multiples of {spatial})")
    padding = ((0, frames_out - frames_in), (0, height_out - height), (0, width_out - width), (0, 0))
    return np.pad(frames, padding, mode="edge"), notes


def vae_folder(model: str | None) -> Path:
    """A VAE folder: ``model`` itself when it holds a VAE (config.json), else the vae/ of the model it names
    (``kinema.weights.find_model``; None: the default model)."""
    from kinema.weights import find_model

    if model is not None and (Path(model) / "config.json").is_file():
        return Path(model)
    return find_model(model) / "vae"


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays (inf when identical)."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


@vae_app.command("roundtrip")
def roundtrip(
    source: Annotated[Path, typer.Argument(help="Input video or image.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Reconstruction to write (.mp4, or .png).")],
    model: Annotated[str | None, typer.Option(
        help="A VAE folder (config.json + safetensors), or a model (a folder or a packaged name) whose vae/ to "
             "use (default: kinema-tiny).")] = None,
    chunk_frames: Annotated[int, typer.Option(
        help="Frames per chunk, a multiple of 4: memory stays flat in video length and the result is the same "
             "as one pass (and faster for long clips); 0 = the whole clip in one pass.")] = 64,
    max_frames: Annotated[int, typer.Option(help="Read at most this many frames.")] = ROUNDTRIP_FRAMES,
) -> None:
    """Encode and decode a video with the VAE; write the reconstruction and print its PSNR."""
    import torch

    from kinema.media import file_sha256, read_video, write_video
    from kinema.models.vae import WEIGHTS_NAME, VideoVAE, tensor_to_video, video_to_tensor

    if not 1 <= max_frames <= 100_000:
        raise KinemaError(f"max-frames must be between 1 and 100000 (got {max_frames})")
    folder = vae_folder(model)
    vae = VideoVAE.from_pretrained(folder).eval()
    step = vae.temporal_compression
    if chunk_frames < 0 or chunk_frames % step:  # checked before reading the video
        raise KinemaError(f"chunk-frames must be 0 (whole clip) or a positive multiple of {step}, got {chunk_frames}")
    chunk_frames = chunk_frames or None  # 0 -> whole clip
    frames, fps = read_video(source, max_frames=max_frames)
    count, height, width = frames.shape[:3]
    if count == max_frames:
        typer.echo(f"note: read the first {max_frames} frames only (--max-frames)")
    padded, notes = pad_video(frames, vae.temporal_compression, vae.spatial_compression)
    for note in notes:
        typer.echo(f"note: {note}; the output is cut back to the input's size")

    with torch.inference_mode():
        video = video_to_tensor(padded)                                # (1, 3, F', H', W') in [-1, 1]
        latents = vae.encode(video, chunk_frames=chunk_frames).mode()  # (1, C, 1 + k, H'/8, W'/8)
        reconstruction = vae.decode(latents, chunk_frames=chunk_frames)
    # Cut back to the input (rounded up to even sides, which H.264 yuv420p needs).
    out_height, out_width = height + height % 2, width + width % 2
    result = tensor_to_video(reconstruction)[0, :count, :out_height, :out_width]
    score = psnr(frames, result[:, :height, :width])

    metadata = {
        "mode": "vae_roundtrip", "source": str(source), "model": folder.resolve().name,
        "model_sha256": file_sha256(folder / WEIGHTS_NAME), "chunk_frames": chunk_frames,
        "latent_shape": list(latents.shape), "psnr_db": None if math.isinf(score) else round(score, 3),
    }
    write_video(output, result, fps, metadata=metadata)
    typer.echo(f"wrote {output}: {count} frame{'s' * (count != 1)}, {width}x{height}, "
               f"latents {tuple(latents.shape[1:])}")
    typer.echo(f"PSNR {score:.2f} dB")
