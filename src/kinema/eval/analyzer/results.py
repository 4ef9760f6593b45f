"""What the analyzer reports: detections per frame, tracks and shot summaries of a whole video."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class ObjectDetection:
    """One object in one frame. Pixel coordinates: column right, row down, pixel i covers [i, i+1)."""

    color: str
    shape: str  # ball | box
    size: str  # small | medium | large, at the frame's scale (see FrameAnalysis.scale_known)
    radius_px: float  # radius or half side
    col: float  # coverage-weighted centroid
    row: float
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 of pixels at least half covered
    area: float  # visible coverage, px
    fill: float  # area / (width x height) of the coverage extents: pi/4 for a disc, 1 for a square
    touches_border: bool
    occluded: bool  # touches the occluder, so part of it may be hidden
    near_occluder: bool
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mean colour of its nearly pure pixels
    track: int = -1

    @property
    def clean(self) -> bool:
        """Fully in frame and clear of the occluder: every measurement is trustworthy."""
        return not (self.touches_border or self.occluded)


@dataclass
class MarkDetection:
    """A paint mark: an object-coloured blob in the ground band, below the surface."""

    color: str
    x0: float  # horizontal extent, px
    x1: float
    col: float
    row: float
    area: float


@dataclass
class FrameAnalysis:
    index: int
    sky: str | None
    ground: str | None  # None when no ground band is visible
    ground_row: float | None  # row of the ground surface (sub-pixel)
    occluder: str | None  # wall | tree | None
    occluder_bbox: tuple[float, float, float, float] | None
    scale: float  # pixels per metre
    scale_known: bool  # measured from the image (posts, occluder); else the wide framing is assumed
    objects: list[ObjectDetection] = field(default_factory=list)
    marks: list[MarkDetection] = field(default_factory=list)
    sky_rgb: tuple[float, float, float] | None = None  # median colour of the sky pixels
    ground_rgb: tuple[float, float, float] | None = None  # median colour of the ground band
    posts: list[float] = field(default_factory=list)  # centre columns of the stage posts in view
    camera_shift: tuple[float, float] = (0.0, 0.0)  # background motion from the previous frame, px
    background_jump: float = 0.0  # grey-level change of the background once that motion is undone


@dataclass
class Track:
    """One object followed through the video. ``frames`` and the per-frame lists are aligned."""

    id: int
    color: str
    shape: str  # the majority over clean detections
    size: str
    frames: list[int] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)  # shot index of each frame
    col: list[float] = field(default_factory=list)
    row: list[float] = field(default_factory=list)
    radius_px: list[float] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.color, self.shape


@dataclass
class ShotSummary:
    index: int
    start: int  # first frame
    end: int  # one past the last frame
    sky: str | None
    ground: str | None
    occluder: str | None
    scale: float
    scale_known: bool
    static: bool  # the background does not move: the camera holds still
    objects: list[tuple[str, str]] = field(default_factory=list)  # (colour, shape) seen in the shot
    tracks: list[int] = field(default_factory=list)


@dataclass
class VideoAnalysis:
    fps: float
    width: int
    height: int
    frames: list[FrameAnalysis]
    cuts: list[int]  # frames where a new shot starts (never 0)
    shots: list[ShotSummary]
    tracks: list[Track]

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def shot_of(self, frame: int) -> int:
        """Index of the shot that holds ``frame``."""
        return int(np.searchsorted(np.array(self.cuts, dtype=np.int64), frame, side="right"))

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        out = asdict(self)
        out["num_frames"] = self.num_frames
        return _jsonable(out)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
