"""Storyboards: several shots, each with its own seconds, framing and prompt, in one video.

A storyboard is a list of shots (seconds, framing, prompt) plus a scene prompt shared by all of
them. Cuts land on latent-frame boundaries (video frames 1 + 4k), and each latent frame
cross-attends to "scene + framing + shot prompt", the same shape as the training captions of
multi-shot world clips (``kinema.frames.shot_text``). ``kinema.inference.longvideo`` makes the video,
window by window; here a storyboard is read, checked and planned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinema.errors import KinemaError
from kinema.frames import LATENT_STRIDE, MAX_PROMPT_CHARS, MAX_SECONDS, MAX_SHOTS, shot_text

# User spellings of the world's framings -> the world's names.
FRAMING_NAMES = {"wide": "wide", "medium": "medium", "mid": "medium", "close-up": "closeup", "closeup": "closeup",
                 "close up": "closeup", "pan": "pan"}


@dataclass(frozen=True)
class Shot:
    seconds: float
    framing: str  # one of the world's framings: wide, medium, closeup, pan
    prompt: str


@dataclass(frozen=True)
class Storyboard:
    """Shots in order plus the scene prompt that every shot shares."""

    shots: tuple[Shot, ...]
    scene: str = ""

    @property
    def seconds(self) -> float:
        return sum(shot.seconds for shot in self.shots)

    def to_dict(self) -> dict:
        return {"scene": self.scene,
                "shots": [{"seconds": s.seconds, "framing": s.framing, "prompt": s.prompt} for s in self.shots]}

    def shot_texts(self) -> list[str]:
        """The caption each shot's latent frames attend to: scene + framing + shot prompt."""
        return [shot_text(self.scene, shot.framing, shot.prompt) for shot in self.shots]

    def frame_plan(self, fps: float) -> tuple[int, list[int]]:
        """(total video frames, first frame of each shot). Frame 0 opens shot 1; every later cut falls on a
        frame 1 + 4k, so each shot owns whole latent frames. Shot lengths are rounded to whole latent frames
        from the running total, so rounding never accumulates."""
        boundaries = [0]  # latent frames after frame 0 at the end of each shot, from the running total
        elapsed = 0.0
        for n, shot in enumerate(self.shots, start=1):
            elapsed += shot.seconds
            boundaries.append(int(math.floor(elapsed * fps / LATENT_STRIDE + 0.5)))
            if boundaries[-1] <= boundaries[-2]:
                raise KinemaError(f"shot {n} ({shot.seconds:g} s) is shorter than one latent frame "
                                  f"({LATENT_STRIDE / fps:g} s at {fps:g} fps)")
        starts = [0] + [1 + LATENT_STRIDE * b for b in boundaries[1:-1]]
        frames = 1 + LATENT_STRIDE * boundaries[-1]
        return frames, starts


def _framing(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in FRAMING_NAMES:
        raise KinemaError(f"{where}: framing {value!r} is not one of wide, medium, close-up, pan")
    return FRAMING_NAMES[value.strip().lower()]


def _prompt(value: Any, where: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise KinemaError(f"{where}: needs a non-empty prompt")
    if len(value) > MAX_PROMPT_CHARS:
        raise KinemaError(f"{where}: prompt has {len(value)} characters; the limit is {MAX_PROMPT_CHARS}")
    return value.strip()


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise KinemaError(f"{where}: seconds must be a number (got {value!r})")
    if value <= 0:
        raise KinemaError(f"{where}: seconds must be > 0 (got {value:g})")
    return float(value)


def storyboard_from_dict(data: Any, source: str = "storyboard", max_seconds: float = MAX_SECONDS) -> Storyboard:
    """Validate a mapping ``{scene: TEXT, shots: [{seconds, framing, prompt}, ...]}``; one-line errors."""
    if not isinstance(data, dict):
        raise KinemaError(f"{source}: must be a mapping with 'shots' (and optionally 'scene')")
    unknown = set(data) - {"scene", "shots"}
    if unknown:
        raise KinemaError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: scene, shots)")
    scene = _prompt(data.get("scene"), f"{source}: scene", required=False)
    shots_data = data.get("shots")
    if not isinstance(shots_data, list) or not shots_data:
        raise KinemaError(f"{source}: 'shots' must be a non-empty list")
    if len(shots_data) > MAX_SHOTS:
        raise KinemaError(f"{source}: {len(shots_data)} shots; the limit is {MAX_SHOTS}")
    shots = []
    for n, item in enumerate(shots_data, start=1):
        where = f"{source}: shot {n}"
        if not isinstance(item, dict):
            raise KinemaError(f"{where}: must be a mapping with seconds, framing and prompt")
        unknown = set(item) - {"seconds", "framing", "prompt"}
        if unknown:
            raise KinemaError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                              "(allowed: seconds, framing, prompt)")
        if "prompt" not in item:
            raise KinemaError(f"{where}: missing 'prompt'")
        if "seconds" not in item:
            raise KinemaError(f"{where}: missing 'seconds'")
        shots.append(Shot(_seconds(item["seconds"], where), _framing(item.get("framing", "wide"), where),
                          _prompt(item["prompt"], where)))
    board = Storyboard(tuple(shots), scene)
    if board.seconds > max_seconds:
        raise KinemaError(f"{source}: the shots add up to {board.seconds:g} s; the limit is {max_seconds:g} s")
    return board


def load_storyboard(path: str | Path, max_seconds: float = MAX_SECONDS) -> Storyboard:
    """A storyboard file: YAML or JSON (chosen by the suffix; other suffixes are read as YAML)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"storyboard '{path}' does not exist")
    if path.stat().st_size > 1 << 20:
        raise KinemaError(f"storyboard '{path}' is larger than 1 MiB")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError:
        raise KinemaError(f"storyboard '{path}' is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise KinemaError(f"storyboard '{path}': not valid JSON ({e.msg} at line {e.lineno})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KinemaError(f"storyboard '{path}': not valid YAML{where}") from None
    return storyboard_from_dict(data, source=f"storyboard '{path}'", max_seconds=max_seconds)


def parse_shot_flag(text: str) -> Shot:
    """``SECONDS:FRAMING:PROMPT`` (the prompt may itself contain colons)."""
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise KinemaError(f"--shot '{text}': expected SECONDS:FRAMING:PROMPT")
    try:
        seconds = float(parts[0])
    except ValueError:
        raise KinemaError(f"--shot '{text}': seconds '{parts[0]}' is not a number") from None
    where = f"--shot '{text}'"
    return Shot(_seconds(seconds, where), _framing(parts[1], where), _prompt(parts[2], where))


def storyboard_from_flags(shots: list[str], scene: str | None = None,
                          max_seconds: float = MAX_SECONDS) -> Storyboard:
    board = Storyboard(tuple(parse_shot_flag(s) for s in shots),
                       _prompt(scene, "scene", required=False))
    if len(board.shots) > MAX_SHOTS:
        raise KinemaError(f"{len(board.shots)} shots; the limit is {MAX_SHOTS}")
    if board.seconds > max_seconds:
        raise KinemaError(f"the shots add up to {board.seconds:g} s; the limit is {max_seconds:g} s")
    return board
