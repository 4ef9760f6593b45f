"""Prompt expansion: a short prompt becomes a caption in the style the model was trained on.

The embedded model learned from the world's own captions ("A wide shot of a stage of sand during the
day. A medium bouncy red ball is thrown to the right. The red ball bounces twice on the sand."). A
user's prompt ("a red ball bouncing on sand") names some of those facts in other words. Expansion
reads what the prompt names with ``parse_prompt`` (sky, ground, occluder, objects with colour, shape,
size, material, paint and action), fills what it leaves open with values drawn from the request's
seed, simulates that scene for the requested length, and lets the world's captioner describe it. The
expansion therefore only says things that happen in a world consistent with the prompt, in the exact
words of the training captions.

A prompt that names nothing the world knows is left as it is, with a warning (``undrawable``): a model trained
on the world draws only the world (``kinema world vocab`` lists its words).

**Input first.** Where the output keeps or starts from given frames (image to video, extend, connect, edit), the
input is described with kinema's analyzer (``seen_scene``: its sky, ground, occluder and objects) and the
expansion is built on that: the input's stage wins over the seed's choices, and each object the prompt names takes
what it leaves open (size, colour) from the input object it matches; objects of the input the prompt does not name
are kept. An edit is the exception where the prompt's own stage wins, since it asks for a change.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from kinema.world.caption import EXTRA_WORDS, VOCAB, caption_clip, find_phrases, parse_prompt
from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, SKY_COLORS
from kinema.world.physics import simulate
from kinema.world.scene import (
    ACTIONS,
    COLORS,
    GROUNDS,
    MATERIALS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    SKIES,
    STAGE_WIDTH,
    ObjectSpec,
    SceneSpec,
    ShotSpec,
    frames_for_seconds,
    initial_motion,
    start_x,
)

MOVING = tuple(a for a in ACTIONS if a != "rests")
BOUNCING = ("dropped", "tossed", "thrown_left", "thrown_right")  # the motions drawn for a prompt about bouncing
# An object whose size the prompt leaves open is drawn medium or large: a small one is a few pixels
# across at 64x64, which is what the default model renders least reliably.
FILL_SIZES = ("medium", "large")
MIN_CONTRAST = 150.0  # RGB distance between a filled-in sky or ground and a named object's colour
_BOUNCE = re.compile(r"\bbounc")
SEEN_FRAMES = 32  # frames of an input the analyzer reads (tens of ms each): the end the output continues from
log = logging.getLogger("kinema.inference")
# Words of a prompt that say nothing about what is drawn.
FUNCTION_WORDS = frozenset([
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "into", "onto", "over", "under", "with", "without",
    "from", "by", "for", "as", "is", "are", "was", "were", "be", "being", "been", "it", "its", "this", "that",
    "these", "those", "there", "here", "then", "than", "very", "some", "one", "two", "three", "four", "several",
    "while", "when", "where", "which", "who", "what", "up", "down", "off", "out", "away", "again", "keeps", "keep",
    "continues", "still", "also", "just", "slowly", "quickly",
])


def _contrasting(rng: np.random.Generator, names: tuple[str, ...], palette: dict, colors: list[str]) -> str:
    """A random sky or ground, among those far in colour from every named object colour (a red ball is
    not put against the dusk sky), when there are such."""
    def distance(name: str) -> float:
        return min((float(np.linalg.norm(np.subtract(palette[name], OBJECT_COLORS[c]))) for c in colors),
                   default=np.inf)

    far = [n for n in names if distance(n) >= MIN_CONTRAST] or list(names)
    return far[int(rng.integers(len(far)))]


def _objects_named(prompt: str) -> list[dict]:
    """parse_prompt's objects, plus shapes named without a colour ('a ball bouncing')."""
    parsed = parse_prompt(prompt)["objects"]
    if parsed:
        return parsed
    shapes = find_phrases("shape", " " + prompt.lower() + " ")
    return [{"color": None, "shape": shape, "size": None, "material": None, "paint": None, "action": None}
            for _, shape in shapes[:1]]


def names_the_world(prompt: str) -> bool:
    """Whether a prompt names an object, sky, ground or occluder of the simulated world."""
    parsed = parse_prompt(prompt)
    return bool(_objects_named(prompt)) or any(parsed[key] is not None for key in ("sky", "ground", "occluder"))


def world_words() -> frozenset[str]:
    """Every word of the world's vocabulary (``kinema world vocab``) and of the prompt words it reads."""
    words = {word for values in VOCAB.values() for phrases in values.values() for phrase in phrases
             for word in re.findall(r"[a-z]+", phrase)}
    words |= {word for values in EXTRA_WORDS.values() for word in values}
    return frozenset(words | {"left", "right", "rightward", "leftward", "bouncing", "rolling", "throw", "drop"})


def undrawable(prompt: str) -> str | None:
    """A one-line warning for a prompt that names nothing of the simulated world (a model trained on the world
    cannot draw it), naming the words it does not know; None for a prompt it can draw."""
    if names_the_world(prompt):
        return None
    known = world_words() | FUNCTION_WORDS
    unknown = list(dict.fromkeys(w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known))
    shown = ", ".join(unknown[:6]) + (", ..." if len(unknown) > 6 else "")
    words = f" ({shown} are not among its words)" if unknown else ""
    return (f"the prompt names nothing this model knows{words}: it draws only the simulated world's balls and "
            f"boxes on grass, sand, snow or stone; `kinema world vocab` lists its words")


def seen_scene(clips: list[np.ndarray], fps: float) -> dict[str, Any] | None:
    """What kinema's analyzer sees in input frames (each clip uint8 (F, H, W, 3)): the sky, ground and occluder
    seen most and the objects tracked longest, as ``parse_prompt`` gives them; None when it sees no stage."""
    from kinema.eval.analyzer import analyze_video

    skies: Counter = Counter()
    grounds: Counter = Counter()
    occluders: Counter = Counter()
    objects: Counter = Counter()  # (colour, shape) -> frames seen
    sizes: dict[tuple[str, str], Counter] = {}
    for clip in clips:
        analysis = analyze_video(np.asarray(clip), fps)
        for frame in analysis.frames:
            skies.update([frame.sky] if frame.sky else [])
            grounds.update([frame.ground] if frame.ground else [])
            occluders.update([frame.occluder] if frame.occluder else [])
            for detection in frame.objects:
                key = (detection.color, detection.shape)
                objects[key] += 1
                sizes.setdefault(key, Counter())[detection.size] += 1
    if not skies and not grounds:
        return None
    frames = sum(len(np.asarray(c)) if np.asarray(c).ndim == 4 else 1 for c in clips)
    seen = [key for key, count in objects.most_common() if count * 4 >= frames][:MAX_OBJECTS]  # in 1 of 4 frames
    return {
        "sky": skies.most_common(1)[0][0] if skies else None,
        "ground": grounds.most_common(1)[0][0] if grounds else None,
        "occluder": occluders.most_common(1)[0][0] if occluders and sum(occluders.values()) * 2 >= frames else None,
        "objects": [{"color": color, "shape": shape, "size": sizes[(color, shape)].most_common(1)[0][0],
                     "material": None, "paint": None, "action": None} for color, shape in seen],
    }


def input_clips(items: Sequence[Any], edited: Any = None) -> list[np.ndarray]:
    """The input frames an output continues from, for ``seen_scene``: of each known item
    (``kinema.inference.conditioning.ConditioningItem``) the frames nearest the generated ones (the last of an
    opening item, the first of a closing one), or the first frames of a video being edited."""
    if edited is not None:
        return [np.asarray(edited)[:SEEN_FRAMES]]
    clips = []
    share = SEEN_FRAMES // max(1, len(items))
    for item in items:
        frames = np.asarray(item.frames)
        frames = frames[None] if frames.ndim == 3 else frames
        clips.append(frames[-share:] if item.at == "start" else frames[:share])
    return clips


def _matching(want: dict, seen: list[dict]) -> dict | None:
    """The input object a named object is: the same colour and shape, else the same shape, else the same colour."""
    for same in (lambda o: (o["color"], o["shape"]) == (want["color"], want["shape"]),
                 lambda o: want["shape"] is not None and o["shape"] == want["shape"],
                 lambda o: want["color"] is not None and o["color"] == want["color"]):
        found = next((o for o in seen if same(o)), None)
        if found is not None:
            return found
    return None


def _with_seen(parsed: dict, named: list[dict], seen: dict, prompt_first: bool) -> tuple[dict, list[dict]]:
    """The prompt's stage and objects completed by what the input shows (``seen_scene``)."""
    stage = {key: (parsed[key] or seen[key]) if prompt_first else (seen[key] or parsed[key])
             for key in ("sky", "ground", "occluder")}
    left = list(seen["objects"])
    objects = []
    for want in named:
        found = _matching(want, left)
        if found is not None:
            left.remove(found)
            want = {**want, **{k: found[k] for k in ("color", "shape", "size") if want[k] is None}}
        objects.append(want)
    return {**parsed, **stage}, objects + left


def _filled_look(rng: np.random.Generator, want: dict, looks: set, bouncing: bool) -> tuple[str, str, str, str]:
    """(shape, colour, size, material) of an object the prompt names as ``want``, what it leaves open drawn from
    ``rng``: a colour not already taken by another object of that shape (``looks``, which gains this one), a
    medium or large size, and a bouncy material where the prompt speaks of bouncing."""
    shape = want["shape"] or SHAPES[int(rng.integers(len(SHAPES)))]
    color = want["color"]
    while color is None or (color, shape) in looks - {(want["color"], want["shape"])}:
        color = COLORS[int(rng.integers(len(COLORS)))]
    looks.add((color, shape))
    size = want["size"] or FILL_SIZES[int(rng.integers(len(FILL_SIZES)))]
    material = want["material"] or ("bouncy" if bouncing else tuple(MATERIALS)[int(rng.integers(len(MATERIALS)))])
    return shape, color, size, material


def _placed(rng: np.random.Generator, action: str, size: str, size_named: bool, taken: list[tuple[float, float]]
            ) -> tuple[str, float, float, float, float]:
    """(size, x, y, vx, vy) of an object starting ``action`` on a stage where ``taken`` holds the others' (x,
    radius); ``taken`` gains this one."""
    radius = SIZES[size]
    y, vx, vy = initial_motion(rng, action, radius)
    x = start_x(rng, action, radius, taken)
    taken.append((x, radius))
    return size, x, y, vx, vy


def expand_prompt(prompt: str, seed: int = 0, seconds: float = 4.0, fps: float = 8.0, seen: dict | None = None,
                  prompt_first: bool = False) -> str | None:
    """The training-style caption of a simulated scene that matches ``prompt`` (and ``seen``, what the input
    shows: ``seen_scene``; its stage wins unless ``prompt_first``); None if neither names an object, sky, ground
    or occluder of the world. The same prompt, input and seed give the same expansion."""
    parsed = parse_prompt(prompt)
    named = _objects_named(prompt)
    if seen is not None:
        parsed, named = _with_seen(parsed, named, seen, prompt_first)
    if not named and parsed["sky"] is None and parsed["ground"] is None and parsed["occluder"] is None:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x657870]))
    colors = [o["color"] for o in named if o["color"]]
    sky = parsed["sky"] or _contrasting(rng, SKIES, SKY_COLORS, colors)
    ground = parsed["ground"] or _contrasting(rng, GROUNDS, GROUND_COLORS, colors)
    if not named:
        named = [{"color": None, "shape": None, "size": None, "material": None, "paint": None, "action": None}]
    bouncing = bool(_BOUNCE.search(prompt.lower()))
    objects: list[ObjectSpec] = []
    taken: list[tuple[float, float]] = []
    looks = {(o["color"], o["shape"]) for o in named if o["color"] and o["shape"]}
    for i, want in enumerate(named[:MAX_OBJECTS]):
        shape, color, size, material = _filled_look(rng, want, looks, bouncing)
        action = want["action"]
        if action is None or action == "thrown_in":
            choices = BOUNCING if bouncing else MOVING
            action = choices[int(rng.integers(len(choices)))] if i == 0 else "rests"
        size, x, y, vx, vy = _placed(rng, action, size, bool(want["size"]), taken)
        objects.append(ObjectSpec(i, color, shape, size, material, bool(want["paint"]), action, x, y, vx, vy))
    frames = frames_for_seconds(seconds, fps)
    scene = SceneSpec(seed=int(seed), fps=float(fps), frames=frames, sky=sky, ground=ground,
                      occluder=parsed["occluder"], occluder_x=float(rng.uniform(3.0, STAGE_WIDTH - 3.0)),
                      objects=objects, shots=[ShotSpec(0, frames, "wide", 0)],
                      far_seed=int(rng.integers(1 << 30)))
    return caption_clip(scene, simulate(scene)).caption


def _same_object(a: dict, b: dict) -> bool:
    """Whether two mentions can name one object: no colour, shape or size of one contradicts the other's."""
    return all(a[key] is None or b[key] is None or a[key] == b[key] for key in ("color", "shape", "size"))


def expand_storyboard(board: Any, seed: int = 0, fps: float = 8.0) -> list[str] | None:
    """Each shot's caption in the shape of the training captions of multi-shot world clips: the scene's caption
    (stage and objects, the same words in every shot) followed by the shot's own ("A close-up of the red ball. The
    red ball is thrown to the left. ..."). None if neither the scene nor any shot names something of the world.

    The objects are those the scene prompt names, then those only a shot names; a shot's mention is the scene's
    object that it does not contradict. What every prompt leaves open (stage, size, colour, material) is drawn once
    from ``seed``, so every shot shows the same scene. Each shot is then simulated on its own for its seconds, its
    subject (the object its prompt names first) doing what the prompt says (else what the scene prompt says, else
    a motion drawn from the seed) and the others what the shot says of them or resting, and the world's captioner
    describes it, so a shot's caption says only what happens in such a shot."""
    texts = [board.scene, *(shot.prompt for shot in board.shots)]
    parsed = [parse_prompt(text) for text in texts]
    mentions = [_objects_named(text) for text in texts]
    if not any(mentions) and all(p[key] is None for p in parsed for key in ("sky", "ground", "occluder")):
        return None
    objects: list[dict] = []  # one per object of the scene, each mention merged into it
    for named in mentions:
        for want in named:
            match = next((o for o in objects if _same_object(o, want)), None)
            if match is None and len(objects) < MAX_OBJECTS:
                objects.append(dict(want, action=None))
            elif match is not None:
                match.update({k: v for k, v in want.items() if k != "action" and match[k] is None})
    objects = objects or [{"color": None, "shape": None, "size": None, "material": None, "paint": None}]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x73686f74]))
    bouncing = any(_BOUNCE.search(text.lower()) for text in texts)
    colors = [o["color"] for o in objects if o["color"]]
    sky = next((p["sky"] for p in parsed if p["sky"]), None) or _contrasting(rng, SKIES, SKY_COLORS, colors)
    ground = next((p["ground"] for p in parsed if p["ground"]), None) or _contrasting(rng, GROUNDS, GROUND_COLORS,
                                                                                      colors)
    occluder = next((p["occluder"] for p in parsed if p["occluder"]), None)
    looks: set = {(o["color"], o["shape"]) for o in objects if o["color"] and o["shape"]}
    filled = [_filled_look(rng, o, looks, bouncing) for o in objects]
    occluder_x, far_seed = float(rng.uniform(3.0, STAGE_WIDTH - 3.0)), int(rng.integers(1 << 30))

    def index_of(want: dict) -> int | None:  # the scene's object a mention names
        return next((n for n, o in enumerate(objects) if _same_object(o, want)), None)

    def acting(named: list[dict]) -> dict[int, str]:  # object index -> the action a prompt gives it
        out: dict[int, str] = {}
        for want in named:
            i = index_of(want)
            if i is not None and want["action"] not in (None, "thrown_in"):
                out.setdefault(i, want["action"])
        return out

    in_scene = acting(mentions[0])
    scene_caption, out = None, []
    for k, shot in enumerate(board.shots):
        named = mentions[k + 1]
        subject = (index_of(named[0]) if named else None) or 0
        actions = in_scene | acting(named)
        shot_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x73686f74, k]))
        if subject not in actions:
            choices = BOUNCING if bouncing else MOVING
            actions[subject] = choices[int(shot_rng.integers(len(choices)))]
        specs, taken = [], []
        for i, (shape, color, size, material) in enumerate(filled):
            action = actions.get(i, "rests")
            size, x, y, vx, vy = _placed(shot_rng, action, size, bool(objects[i]["size"]), taken)
            specs.append(ObjectSpec(i, color, shape, size, material, bool(objects[i]["paint"]), action, x, y, vx, vy))
        frames = frames_for_seconds(shot.seconds, fps)
        scene = SceneSpec(seed=int(seed), fps=float(fps), frames=frames, sky=sky, ground=ground, occluder=occluder,
                          occluder_x=occluder_x, objects=specs, shots=[ShotSpec(0, frames, shot.framing, subject)],
                          far_seed=far_seed)
        captions = caption_clip(scene, simulate(scene))
        scene_caption = scene_caption or captions.scene
        out.append(f"{scene_caption} {captions.shots[0]}")
    return out


def expand_prompts(call: Any, items: Sequence[Any] = (), edited: Any = None) -> tuple[list[str], list[str | None]]:
    """The text each prompt of a pipeline call (``KinemaPipeline.resolve_call``) is generated from, and its
    expansion (None where the prompt is used as given). Expands when ``call.expand``, on what the input shows (the
    call's known ``items`` and the video it ``edited``: ``input_clips``); warns once per prompt that names nothing
    of the world when the model draws the world. A storyboard gives its shots' texts (``expand_storyboard`` when
    ``call.expand``, else as written) and their expansion joined by " | "."""
    board = call.storyboard
    if board is not None:
        written = board.shot_texts()
        if call.world_prompts and not any(names_the_world(text) for text in written):
            log.warning("%s", undrawable(" ".join(written)))
        shots = expand_storyboard(board, seed=call.seed, fps=call.fps) if call.expand else None
        if shots is not None:
            log.info("expanded shots: %s", " | ".join(shots))
        return shots or written, [None if shots is None else " | ".join(shots)]
    if call.expand_with is not None:
        return extended_prompts(call)
    seen = None
    if call.expand:
        clips = input_clips(items, edited)
        seen = seen_scene(clips, call.fps) if clips else None
    texts: list[str] = []
    expanded: list[str | None] = []
    for prompt in call.prompts:
        result = None
        if call.expand:
            result = expand_prompt(prompt, seed=call.seed, seconds=max(call.num_frames - 1, 0) / call.fps,
                                   fps=call.fps, seen=seen, prompt_first=call.mode == "edit")
        if result is not None:
            log.info("expanded prompt: %s", result)
        elif call.world_prompts and (warning := undrawable(prompt)) is not None:
            log.warning("%s", warning)
        texts.append(result or prompt)
        expanded.append(result)
    return texts, expanded


def extended_prompts(call: Any) -> tuple[list[str], list[str | None]]:
    """Each prompt extended by the chat endpoint ``call.expand_with`` (``kinema.inference.chat``), or used as given
    (with a warning) where the endpoint fails."""
    from kinema.inference.chat import extend_prompt

    def warn(message: str) -> None:
        log.warning("%s", message.removeprefix("warning: "))

    expanded = [extend_prompt(prompt, call.expand_with, warn=warn) for prompt in call.prompts]
    for result in expanded:
        if result is not None:
            log.info("extended prompt: %s", result)
    return [result or prompt for prompt, result in zip(call.prompts, expanded)], expanded
