"""``kinema world``: make datasets of simulated clips, print the caption vocabulary, look at a clip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kinema.errors import KinemaError

world_app = typer.Typer(no_args_is_help=True, help="The simulated world: make datasets, print the vocabulary, look.")


def parse_range(text: str, name: str, lo: int, hi: int) -> tuple[int, int]:
    """'2' -> (2, 2); '1-3' -> (1, 3), within [lo, hi]."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise KinemaError(f"{name} '{text}': expected a number or a range such as 1-3") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not (lo <= parts[0] <= parts[1] <= hi):
        raise KinemaError(f"{name} '{text}': expected values from {lo} to {hi}, low before high")
    return parts[0], parts[1]


def scene_options(seconds: float, fps: float, shots: str, framings: str, objects: str,
                   occluder_probability: float, paint_probability: float):
    from kinema.frames import MAX_FPS, MAX_SECONDS
    from kinema.world.scene import FRAMINGS, SceneOptions

    if not (0 < seconds <= MAX_SECONDS):
        raise KinemaError(f"seconds must be > 0 and <= {MAX_SECONDS:g} (got {seconds:g})")
    if not (0 < fps <= MAX_FPS):
        raise KinemaError(f"fps must be > 0 and <= {MAX_FPS:g} (got {fps:g})")
    for name, p in (("occluder-probability", occluder_probability), ("paint-probability", paint_probability)):
        if not (0.0 <= p <= 1.0):
            raise KinemaError(f"{name} must be between 0 and 1 (got {p:g})")
    framing_list = tuple(f.strip() for f in framings.split(",") if f.strip())
    bad = [f for f in framing_list if f not in FRAMINGS]
    if bad or not framing_list:
        raise KinemaError(f"framings '{framings}': choose from {', '.join(FRAMINGS)}")
    return SceneOptions(seconds=seconds, fps=fps, shots=parse_range(shots, "shots", 1, 64), framings=framing_list,
                        objects=parse_range(objects, "objects", 1, 3), occluder_probability=occluder_probability,
                        paint_probability=paint_probability)


Seconds = Annotated[float, typer.Option(help="Length of each clip in seconds.")]
Size = Annotated[str, typer.Option(help="WIDTHxHEIGHT, multiples of 8.")]
Fps = Annotated[float, typer.Option(help="Frames per second.")]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same clips, bit for bit.")]
Shots = Annotated[str, typer.Option(help="Shots per clip: a number or a range such as 1-4.")]
Framings = Annotated[str, typer.Option(help="Comma-separated framings allowed for shots after the first.")]
Objects = Annotated[str, typer.Option(help="Objects per scene at the start: a number or a range within 1-3.")]
OccluderP = Annotated[float, typer.Option(help="Probability that a wall or tree stands in front.")]
PaintP = Annotated[float, typer.Option(help="Probability that an object is paint-covered.")]

@world_app.command("make")
def world_make(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    clips: Annotated[int, typer.Option(help="Number of clips.")] = 8,
    seconds: Seconds = 4.0,
    size: Size = "64x64",
    fps: Fps = 8.0,
    seed: Seed = 0,
    shots: Shots = "1",
    framings: Framings = "wide,medium,closeup,pan",
    objects: Objects = "1-3",
    occluder_probability: OccluderP = 0.5,
    paint_probability: PaintP = 0.3,
) -> None:
    """Write N simulated clips (MP4), their ground truth and DIR/manifest.jsonl."""
    from tqdm import tqdm

    from kinema.config import parse_size
    from kinema.frames import MAX_SIDE
    from kinema.world.dataset import make_dataset

    if clips < 1 or clips > 1_000_000:
        raise KinemaError(f"clips must be between 1 and 1000000 (got {clips})")
    width, height = parse_size(size, max_side=MAX_SIDE)
    options = scene_options(seconds, fps, shots, framings, objects, occluder_probability, paint_probability)
    with tqdm(total=clips, unit="clip", desc="world make", disable=None) as bar:
        manifest = make_dataset(out, clips, options, (width, height), seed, progress=lambda n: bar.update(1))
    typer.echo(f"wrote {clips} clips and {manifest}")


@world_app.command("vocab")
def world_vocab() -> None:
    """Print every word the captions use, by category, with its synonyms."""
    from kinema.world.caption import vocab_text

    typer.echo(vocab_text())


@world_app.command("show")
def world_show(
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG contact sheet to write.")] = Path("world.png"),
    video: Annotated[Path | None, typer.Option(help="Show this video instead of a new simulated clip.")] = None,
    seconds: Seconds = 4.0,
    size: Size = "64x64",
    fps: Fps = 8.0,
    seed: Seed = 0,
    shots: Shots = "1",
    framings: Framings = "wide,medium,closeup,pan",
    objects: Objects = "1-3",
    occluder_probability: OccluderP = 0.5,
    paint_probability: PaintP = 0.3,
    columns: Annotated[int, typer.Option(help="Frames per row.")] = 8,
    count: Annotated[int, typer.Option(help="Frames shown, evenly spaced.")] = 32,
    scale: Annotated[int, typer.Option(help="Enlargement factor.")] = 2,
) -> None:
    """Render a contact sheet PNG of a simulated clip (printing its captions), or of any video."""
    from kinema.config import parse_size
    from kinema.frames import MAX_SIDE
    from kinema.media import contact_sheet, read_video, write_image
    from kinema.world.dataset import make_clip
    from kinema.world.scene import sample_scene

    if not (1 <= columns <= 64 and 1 <= count <= 1024 and 1 <= scale <= 16):
        raise KinemaError("columns must be 1-64, count 1-1024 and scale 1-16")
    if video is not None:
        frames, _ = read_video(video)
    else:
        width, height = parse_size(size, max_side=MAX_SIDE)
        options = scene_options(seconds, fps, shots, framings, objects, occluder_probability, paint_probability)
        clip = make_clip(sample_scene(seed, options), width, height)
        frames = clip.frames
        typer.echo(clip.captions.caption)
        for shot, text in zip(clip.scene.shots, clip.captions.shots):
            typer.echo(f"  frames {shot.start}-{shot.end - 1} [{shot.framing}]: {text}")
    write_image(output, contact_sheet(frames, columns=columns, count=count, scale=scale), sidecar=False)
    typer.echo(f"wrote {output}")
