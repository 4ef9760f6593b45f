"""The frame rule, the output length of every mode, and the limits every layer shares: each defined once.

The causal VAE encodes frame 0 on its own and every later group of ``LATENT_STRIDE`` frames into one latent
frame, so a clip has 1 + 4k frames and 1 + k latent frames; cuts fall on frames 1 + 4k. A seamless loop is
the one exception: it has 4k frames, and its latent sequence carries two extra frames that close the loop.
A video too long for one transformer pass is made window by window (``kinema.inference.longvideo``);
``is_windowed`` decides when.

This module imports nothing of kinema, so the world, the models, inference, eval, the server and the CLI
can all read the same numbers from it.
"""

from __future__ import annotations

from collections.abc import Sequence

LATENT_STRIDE = 4  # video frames per latent frame after the first

# Limits on a request, checked before anything is allocated.
MAX_SECONDS = 600.0
MAX_FRAMES = 1 + LATENT_STRIDE * 1024  # 4097: the longest clip read or made in one piece
MAX_SIDE = 1024  # pixels a side, for generated and simulated video alike
MAX_FPS = 60.0
MAX_PROMPT_CHARS = 2000
MAX_SHOTS = 64  # shots in a storyboard

# What a request gets when it does not say.
DEFAULT_SECONDS = 4.0
DEFAULT_SIZE = "64x64"
DEFAULT_MODEL = "kinema-tiny"  # the packaged model (``kinema.weights``)

# How a shot caption opens, in the words of the world's captions (``kinema.world.caption`` writes them and
# ``parse_prompt`` reads them): storyboards write them, the shot metrics read them.
FRAMING_TEXT = {"wide": "A wide shot.", "medium": "A medium shot.", "closeup": "A close-up.",
                "pan": "A tracking pan."}

MODES = ("t2v", "image", "i2v", "extend_forward", "extend_backward", "loop", "connect", "edit")
# Modes whose video may be longer than one pass: made window by window, each continuing the frames before.
WINDOWED_MODES = ("t2v", "i2v", "extend_forward")


def frames_for_seconds(seconds: float, fps: float) -> int:
    """Frame count 1 + 4k closest to ``seconds`` of video (at least 1)."""
    k = max(0, int(round(seconds * fps / LATENT_STRIDE)))
    return 1 + LATENT_STRIDE * k


def is_latent_length(frames: int) -> bool:
    """Whether ``frames`` is 1 + 4k: a whole number of latent frames."""
    return frames >= 1 and (frames - 1) % LATENT_STRIDE == 0


def latent_length(frames: int) -> int:
    """The longest 1 + 4k not above ``frames``: what is kept of an input video (its first frames)."""
    return 1 + LATENT_STRIDE * ((frames - 1) // LATENT_STRIDE)


def added_frames(seconds: float, fps: float) -> int:
    """Frames an extension or a connection adds for ``seconds``: whole latent frames, at least one."""
    return LATENT_STRIDE * max(1, round(seconds * fps / LATENT_STRIDE))


def loop_frames(seconds: float, fps: float) -> int:
    """Frames of a seamless loop of ``seconds``: a multiple of 4, at least 8."""
    return max(8, LATENT_STRIDE * round(seconds * fps / LATENT_STRIDE))


def output_frames(mode: str, seconds: float, fps: float, input_frames: Sequence[int] = ()) -> int:
    """Video frames a generation makes. Modes that keep input video (extend, connect, edit) count the whole
    result from ``input_frames``, the frame counts of their input videos: each is cut to 1 + 4k, and
    ``seconds`` is what an extension or a connection adds."""
    if mode == "image":
        return 1
    if mode == "loop":
        return loop_frames(seconds, fps)
    if mode in ("extend_forward", "extend_backward"):
        return latent_length(input_frames[0]) + added_frames(seconds, fps)
    if mode == "connect":  # the first video, the frames between, and the last video after its frame 0
        return latent_length(input_frames[0]) + added_frames(seconds, fps) + latent_length(input_frames[1]) - 1
    if mode == "edit":
        return latent_length(input_frames[0])
    return frames_for_seconds(seconds, fps)


def latent_count(frames: int, mode: str = "t2v", stride: int = LATENT_STRIDE) -> int:
    """Latent frames of a video of ``frames``: 1 + (frames - 1) / stride; a loop of 4k frames carries two more,
    the ones that lead back into its start."""
    if mode == "loop":
        return frames // stride + 2
    return 1 + (frames - 1) // stride


def is_windowed(mode: str, latent_frames: int, window: int, storyboard: bool = False) -> bool:
    """Whether a video is made window by window: a storyboard always (each shot attends to its own caption), a
    mode of ``WINDOWED_MODES`` when its latent frames do not fit one window."""
    return storyboard or (mode in WINDOWED_MODES and latent_frames > window)


def shot_of_latent_frames(shot_starts: Sequence[int], latent_frames: int, stride: int = LATENT_STRIDE) -> list[int]:
    """Which shot each latent frame belongs to: latent 0 is frame 0; latent j >= 1 covers frames
    1 + stride (j - 1) .. stride j. ``shot_starts``: the first video frame of each shot."""
    index = []
    for j in range(latent_frames):
        first_frame = 0 if j == 0 else 1 + stride * (j - 1)
        index.append(max(k for k, start in enumerate(shot_starts) if start <= first_frame))
    return index


def latent_shot_starts(shot_starts: Sequence[int], stride: int = LATENT_STRIDE) -> list[int]:
    """The latent frame that opens each shot (cuts on video frames 1 + stride k)."""
    return [0 if s == 0 else 1 + (s - 1) // stride for s in shot_starts]


def shot_text(scene: str, framing: str | None, prompt: str) -> str:
    """The caption a storyboard shot's latent frames attend to: scene + framing + shot prompt, the shape of the
    training captions of multi-shot world clips."""
    parts = [scene.strip(), FRAMING_TEXT.get(framing or "", ""), prompt.strip()]
    return " ".join(p for p in parts if p)
