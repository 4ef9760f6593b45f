"""Captions written from what actually happened, their vocabulary, and a parser that reads a
prompt back into the attributes it asks for.

A clip gets a scene caption (stage and objects), one caption per shot (its framing and what
happens in it) and a clip caption (everything). Wording is varied by the seed through
paraphrase templates and synonyms; every word the captions can use is in ``VOCAB``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kinema.world.physics import Trajectory
from kinema.world.scene import OCCLUDER_SIZE, STAGE_WIDTH, ObjectSpec, SceneSpec

# category -> canonical value -> synonyms (the first is the plain word)
VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "color": {c: (c,) for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black")},
    "shape": {"ball": ("ball", "sphere"), "box": ("box", "cube", "block")},
    "size": {"small": ("small", "little", "tiny"), "medium": ("medium", "medium-sized", "mid-sized"),
             "large": ("large", "big", "huge")},
    "material": {"bouncy": ("bouncy", "rubber", "springy"), "heavy": ("heavy", "dense", "weighty")},
    "paint": {"paint": ("paint-covered", "paint-soaked", "wet-paint")},
    "sky": {"day": ("on a sunny day", "in daylight", "during the day"),
            "dusk": ("at dusk", "at sunset", "in the evening"),
            "night": ("at night", "under a night sky", "in the dark of night")},
    "ground": {"grass": ("grass", "a lawn", "a grassy field"), "sand": ("sand", "a beach", "sandy ground"),
               "snow": ("snow", "a snowfield", "snowy ground"), "stone": ("stone", "a stone floor", "paving")},
    "occluder": {"wall": ("a wall", "a low wall"), "tree": ("a tree", "a tree trunk")},
    "framing": {"wide": ("wide shot", "long shot", "establishing shot"), "medium": ("medium shot", "mid shot"),
                "closeup": ("close-up", "close up", "closeup", "tight shot"),
                "pan": ("panning shot", "tracking pan", "pan")},
    "action": {
        "dropped": ("is dropped from high up", "falls from high up", "drops from above"),
        "thrown_right": ("is thrown to the right", "is hurled to the right", "flies off to the right"),
        "thrown_left": ("is thrown to the left", "is hurled to the left", "flies off to the left"),
        "rolls_right": ("rolls to the right", "rolls rightward", "slides to the right"),
        "rolls_left": ("rolls to the left", "rolls leftward", "slides to the left"),
        "tossed": ("is tossed upward", "is thrown straight up", "is tossed up"),
        "rests": ("rests on the ground", "sits still", "lies still"),
        "thrown_in": ("is thrown in", "flies in", "is tossed in"),
    },
    "event": {
        "bounce": ("bounces", "bounces on the ground", "hits the ground and bounces"),
        "wall": ("bounces off the edge of the stage",),
        "collision": ("collides with", "hits", "bumps into"),
        "behind": ("passes behind",),
        "mark": ("leaves a mark", "leaves paint marks"),
        "stopped": ("comes to rest", "stops"),
    },
}

# Prompt words people use that captions do not, mapped onto the vocabulary.
EXTRA_WORDS = {
    "shape": {"balls": "ball", "boxes": "box", "cubes": "box", "blocks": "box", "spheres": "ball"},
    "sky": {"sunny": "day", "daytime": "day", "daylight": "day", "sunset": "dusk", "evening": "dusk",
            "twilight": "dusk", "dusk": "dusk", "night": "night", "nighttime": "night", "dark": "night"},
    "ground": {"grass": "grass", "grassy": "grass", "lawn": "grass", "field": "grass", "sand": "sand",
               "sandy": "sand", "beach": "sand", "snow": "snow", "snowy": "snow", "snowfield": "snow",
               "stone": "stone", "stony": "stone", "paving": "stone", "pavement": "stone"},
}

NUMBER_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}


def vocab_text() -> str:
    """The vocabulary, one category per block, for ``kinema world vocab``."""
    lines = []
    for category, values in VOCAB.items():
        lines.append(f"{category}:")
        for value, words in values.items():
            lines.append(f"  {value:<13} {' | '.join(words)}")
    return "\n".join(lines)


@dataclass
class Captions:
    caption: str  # the whole clip
    scene: str  # stage and objects, shared by all shots
    shots: list[str]  # one per shot


class _Writer:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x636170]))

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def word(self, category: str, value: str) -> str:
        return self.pick(VOCAB[category][value])


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(w: _Writer, obj: ObjectSpec, full: bool = True) -> str:
    """'small bouncy red ball' (full) or 'red ball' (short, enough to identify it in a scene)."""
    noun = w.word("shape", obj.shape)
    if not full:
        return f"{obj.color} {noun}"
    parts = [w.word("size", obj.size), w.word("material", obj.material)]
    if obj.paint:
        parts.append(w.word("paint", "paint"))
    return " ".join([*parts, obj.color, noun])


def _behind_occluder(scene: SceneSpec, traj: Trajectory, i: int, start: int, end: int) -> bool:
    """The object passes behind the occluder at some frame in [start, end)."""
    if scene.occluder is None:
        return False
    width, height = OCCLUDER_SIZE[scene.occluder]
    r = scene.objects[i].radius
    x, y, present = traj.x[start:end, i], traj.y[start:end, i], traj.present[start:end, i]
    overlap_x = np.abs(x - scene.occluder_x) < 0.5 * width + r - 0.2
    overlap_y = y - r < height - 0.2
    return bool(np.any(present & overlap_x & overlap_y))


def _happenings(w: _Writer, scene: SceneSpec, traj: Trajectory, start: int, end: int, short: bool,
                subject: int | None = None) -> list[str]:
    """Sentences about what happens in frames [start, end), in time order.

    With a ``subject`` (shots that frame one object) only that object's story is told, since the
    others may be out of view.
    """
    objects = scene.objects
    sentences: list[tuple[int, str]] = []
    ground_word = VOCAB["ground"][scene.ground][0]

    def name(i: int) -> str:
        return "the " + object_phrase(w, objects[i], full=False)

    # Opening actions at frame 0 and kick events later.
    def shown(ids) -> bool:
        return subject is None or subject in ids

    for o in objects:
        if start == 0 and o.action != "thrown_in" and shown((o.id,)):
            sentences.append((0, f"{_article(object_phrase(w, o, full=not short))} {w.word('action', o.action)}"))
    for ev in traj.events:
        if not (start <= ev.frame < end) or (ev.frame == 0 and ev.kind != "thrown_in"):
            continue
        i = ev.objects[0]
        if not shown(ev.objects):
            continue
        if ev.kind == "thrown_in":
            side = "left" if objects[i].x < STAGE_WIDTH / 2 else "right"
            sentences.append((ev.frame, f"{_article(object_phrase(w, objects[i], full=not short))} "
                                        f"{w.word('action', 'thrown_in')} from the {side}"))
        elif ev.kind in VOCAB["action"] and ev.kind != "rests":
            later = w.pick(["then", "later", "next"])
            sentences.append((ev.frame, f"{later} {name(i)} {w.word('action', ev.kind)}"))
    # Per object summaries of bounces, collisions, occlusion, marks.
    for i in range(len(objects)):
        evs = [e for e in traj.events if start <= e.frame < end and i in e.objects and shown(e.objects)]
        bounces = [e for e in evs if e.kind == "bounce"]
        if bounces:
            count = len(bounces)
            times = NUMBER_WORDS.get(count, "several times")
            sentences.append((bounces[0].frame, f"{name(i)} bounces {times} on the {ground_word}"))
        walls = [e for e in evs if e.kind == "wall"]
        if walls:
            sentences.append((walls[0].frame, f"{name(i)} {w.word('event', 'wall')}"))
        partners: dict[int, int] = {}
        for e in evs:
            if e.kind == "collision" and e.objects[0] == i:
                partners.setdefault(e.objects[1], e.frame)
        for other, frame in partners.items():
            sentences.append((frame, f"{name(i)} {w.word('event', 'collision')} {name(other)}"))
        if shown((i,)) and _behind_occluder(scene, traj, i, start, end):
            occ = VOCAB["occluder"][scene.occluder][0].split()[-1] if scene.occluder == "wall" else "tree"
            frame = int(np.argmax(traj.present[start:end, i])) + start
            sentences.append((frame, f"{name(i)} passes behind the {occ}"))
        marks = [e for e in evs if e.kind == "mark"]
        if marks:
            sentences.append((marks[0].frame, f"{name(i)} leaves {objects[i].color} paint marks on the {ground_word}"))
    sentences.sort(key=lambda s: s[0])
    return [s for _, s in sentences]


def _scene_sentence(w: _Writer, scene: SceneSpec) -> str:
    ground = w.word("ground", scene.ground)
    sky = w.word("sky", scene.sky)
    text = w.pick([f"a stage of {ground} {sky}", f"{ground} {sky}", f"a scene on {ground} {sky}"])
    if scene.occluder:
        occ = w.word("occluder", scene.occluder)
        text += w.pick([f", with {occ} in front", f", {occ} standing in the foreground"])
    return text


def _join(sentences: list[str]) -> str:
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def caption_clip(scene: SceneSpec, traj: Trajectory) -> Captions:
    """Clip, scene and per-shot captions of a simulated clip."""
    w = _Writer(scene.seed)
    objects = scene.objects
    object_list = ", ".join(_article(object_phrase(w, o)) for o in objects)
    scene_caption = _join([f"{_scene_sentence(w, scene)}", f"the objects: {object_list}"])
    shot_captions = []
    for shot in scene.shots:
        framing = w.word("framing", shot.framing)
        subject = "the " + object_phrase(w, objects[shot.subject], full=False)
        if shot.framing in ("closeup", "pan"):
            link = "of" if shot.framing == "closeup" else "following"
            head = f"{_article(framing)} {link} {subject}"
        elif shot.framing == "medium":
            head = f"{_article(framing)} of {subject}"
        else:
            head = _article(framing)
        subject_only = None if shot.framing == "wide" else shot.subject
        body = _happenings(w, scene, traj, shot.start, shot.end, short=True, subject=subject_only)
        if not body:
            i = shot.subject
            moving = traj.present[shot.start:shot.end, i] & (
                np.hypot(traj.vx[shot.start:shot.end, i], traj.vy[shot.start:shot.end, i]) > 0.3)
            body = [f"{subject} keeps moving" if moving.any() else f"{subject} is still"]
        shot_captions.append(_join([head, *body]))
    if len(scene.shots) == 1:
        head = f"{_article(w.word('framing', scene.shots[0].framing))} of {_scene_sentence(w, scene)}"
        caption = _join([head, *_happenings(w, scene, traj, 0, scene.frames, short=False)])
    else:
        parts = [f"a video in {len(scene.shots)} shots of {_scene_sentence(w, scene)}",
                 f"the objects: {object_list}"]
        for k, text in enumerate(shot_captions):
            parts.append(f"shot {k + 1}: {text[0].lower() + text[1:-1]}")
        caption = _join(parts)
    return Captions(caption=caption, scene=scene_caption, shots=shot_captions)


# ------------------------------------------------------------------------------------------------
# Parsing prompts back into attributes


def _lookup(category: str) -> list[tuple[str, str]]:
    """(phrase, value) pairs, longest phrases first so that 'close up' wins over 'up'."""
    pairs = [(word, value) for value, words in VOCAB[category].items() for word in words]
    pairs += list(EXTRA_WORDS.get(category, {}).items())
    return sorted(pairs, key=lambda p: -len(p[0]))


def find_phrases(category: str, text: str) -> list[tuple[int, str]]:
    """Positions and values of every phrase of a category in text (non-overlapping)."""
    found: list[tuple[int, int, str]] = []
    for phrase, value in _lookup(category):
        for m in re.finditer(r"(?<![a-z-])" + re.escape(phrase) + r"(?![a-z-])", text):
            if not any(s <= m.start() < e or s < m.end() <= e for s, e, _ in found):
                found.append((m.start(), m.end(), value))
    return sorted((s, v) for s, _, v in found)


_ACTION_PATTERNS = [
    ("thrown_in", r"(thrown in|flies in|tossed in)\b"),
    ("thrown_right", r"(thrown|hurled|flies|flying|throw|tossed|launched)\b[^.,;]{0,20}\b(right|rightward)"),
    ("thrown_left", r"(thrown|hurled|flies|flying|throw|tossed|launched)\b[^.,;]{0,20}\b(left|leftward)"),
    ("rolls_right", r"(rolls|rolling|roll|slides|sliding)\b[^.,;]{0,20}\b(right|rightward)"),
    ("rolls_left", r"(rolls|rolling|roll|slides|sliding)\b[^.,;]{0,20}\b(left|leftward)"),
    ("tossed", r"(tossed|thrown|toss|throw)\s+(straight\s+)?up"),
    ("dropped", r"(dropped|drops|falls|falling|drop)\b"),
    ("rests", r"(rests|resting|sits still|lies still|still)\b"),
]


def parse_prompt(text: str) -> dict:
    """The attributes a prompt asks for, in the expectation format the metrics use.

    Unmentioned attributes are None. Objects are found as '[size] [material] [paint] colour shape'
    phrases; an object's action is read from the words that follow it up to the next object.
    """
    t = " " + text.lower().replace("’", "'") + " "
    sky = find_phrases("sky", t)
    ground = find_phrases("ground", t)
    occluder = find_phrases("occluder", t)
    framings = find_phrases("framing", t)
    shapes = find_phrases("shape", t)
    objects: list[dict] = []
    spans = []
    for k, (pos, shape) in enumerate(shapes):
        window = t[max(0, pos - 60):pos]
        window = re.split(r"[.,;:]| and | with | then ", window)[-1]
        colors = find_phrases("color", window)
        if not colors:
            continue
        sizes, materials = find_phrases("size", window), find_phrases("material", window)
        end = shapes[k + 1][0] if k + 1 < len(shapes) else len(t)
        spans.append((pos, end))
        objects.append({
            "color": colors[-1][1], "shape": shape,
            "size": sizes[-1][1] if sizes else None,
            "material": materials[-1][1] if materials else None,
            "paint": True if "paint" in window else None,
            "action": None,
        })
    # Merge repeated mentions of the same object ('the red ball ... the red ball bounces').
    merged: list[dict] = []
    merged_spans: list[list[tuple[int, int]]] = []
    for obj, span in zip(objects, spans):
        same = [m for m in merged if m["color"] == obj["color"] and m["shape"] == obj["shape"]]
        if same:
            target = same[0]
            for key in ("size", "material", "paint"):
                target[key] = target[key] if target[key] is not None else obj[key]
            merged_spans[merged.index(target)].append(span)
        else:
            merged.append(obj)
            merged_spans.append([span])
    for obj, obj_spans in zip(merged, merged_spans):
        # The first mention that says what the object does gives its action.
        for pos, end in obj_spans:
            clause = re.split(r"[.;]", t[pos:end])[0]
            action = next((a for a, pattern in _ACTION_PATTERNS if re.search(pattern, clause)), None)
            if action is not None:
                obj["action"] = action
                break
    return {
        "sky": sky[0][1] if sky else None,
        "ground": ground[0][1] if ground else None,
        "occluder": occluder[0][1] if occluder else None,
        "framings": [v for _, v in framings],
        "objects": merged,
    }
