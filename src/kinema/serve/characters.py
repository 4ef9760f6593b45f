"""Characters: a named subject taken from an uploaded clip, which prompts can then name.

What this does, and no more: kinema's analyzer (``kinema.eval.analyzer``) finds the objects of the
simulated world in the clip; the object seen in the most frames becomes the character, described
in the words the model was trained on ("a small red ball"). A prompt that names the character (its
name, or ``@name``, with or without a leading "a"/"the") has the name replaced by that description
before it is encoded, and the job records the expansion. Generation is conditioned on the text
only: the reference frame kept with the character is stored for inspection, not fed to the model.
A clip in which the analyzer finds no object of the world gives no character.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from kinema.errors import KinemaError
from kinema.media import write_image
from kinema.serve.store import Character

MAX_ANALYZED_FRAMES = 64  # the analyzer costs tens of ms a frame; the subject shows early
NAME = re.compile(r"[A-Za-z][A-Za-z0-9 _-]{0,39}")
REFERENCE_NAME = "reference.png"


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not NAME.fullmatch(name):
        raise KinemaError(f"name '{name[:60]}': 1 to 40 letters, digits, spaces, '_' or '-', starting with a letter")
    return name


def extract_subject(frames: np.ndarray, fps: float) -> tuple[dict, int]:
    """The main subject of a clip (colour, shape, size, frames seen) and the frame that shows it best."""
    from kinema.eval.analyzer import analyze_video

    analysis = analyze_video(frames[:MAX_ANALYZED_FRAMES], fps)
    if not analysis.tracks:
        raise KinemaError("video: no subject found; the analyzer recognises the simulated world's objects "
                          "(coloured balls and boxes) and saw none in this clip")
    track = max(analysis.tracks, key=lambda t: (len(t.frames), float(np.mean(t.radius_px))))
    sizes = Counter(o.size for f in analysis.frames for o in f.objects if o.track == track.id)
    size = sizes.most_common(1)[0][0] if sizes else track.size
    clean = [i for i, ok in enumerate(track.clean) if ok] or list(range(len(track.frames)))
    best = max(clean, key=lambda i: track.radius_px[i])
    subject = {"color": track.color, "shape": track.shape, "size": size, "frames_seen": len(track.frames),
               "frames_analyzed": analysis.num_frames, "reference_frame": int(track.frames[best])}
    return subject, int(track.frames[best])


def describe(subject: dict) -> str:
    return f"a {subject['size']} {subject['color']} {subject['shape']}"


def make_character(character_id: str, name: str, frames: np.ndarray, fps: float, folder: Path,
                   created_at: int) -> Character:
    """Analyse the clip and write the reference frame to ``folder``; KinemaError when no subject is found."""
    subject, frame = extract_subject(frames, fps)
    write_image(folder / REFERENCE_NAME, frames[frame], metadata={"character": name, **subject}, sidecar=False)
    return Character(character_id, name, created_at, describe(subject), subject, REFERENCE_NAME)


def expand(prompt: str, characters: list[Character]) -> tuple[str, list[str]]:
    """Replace every character named in ``prompt`` by its description; (prompt, ids of the characters used)."""
    used = []
    for character in sorted(characters, key=lambda c: -len(c.name)):  # "Red Rex" before "Rex"
        pattern = re.compile(rf"(?<![\w@-])(?:(?:a|an|the)\s+)?@?{re.escape(character.name)}(?![\w-])", re.IGNORECASE)
        prompt, count = pattern.subn(character.description, prompt)
        if count:
            used.append(character.id)
    return prompt, used
