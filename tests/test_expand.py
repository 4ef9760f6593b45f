"""Prompt expansion: the caption it writes keeps everything the prompt names, in the training style."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kinema.inference.expand import expand_prompt, expand_storyboard
from kinema.inference.storyboard import Shot, Storyboard, storyboard_from_dict
from kinema.world.caption import parse_prompt

ROOT = Path(__file__).resolve().parents[1]


def suite_prompts() -> list[str]:
    data = yaml.safe_load((ROOT / "configs" / "eval" / "basic.yaml").read_text())
    return [p if isinstance(p, str) else p["prompt"] for p in data["prompts"]]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_expansion_keeps_what_every_suite_prompt_names(seed):
    prompts = suite_prompts()
    assert len(prompts) >= 50
    for prompt in prompts:
        asked = parse_prompt(prompt)
        expanded = expand_prompt(prompt, seed=seed)
        assert expanded is not None, prompt
        got = parse_prompt(expanded)
        for key in ("sky", "ground", "occluder"):
            if asked[key] is not None:
                assert got[key] == asked[key], (prompt, expanded, key)
        for want in asked["objects"]:
            same = [o for o in got["objects"] if (o["color"], o["shape"]) == (want["color"], want["shape"])]
            assert same, (prompt, expanded)
            for key in ("size", "material", "action"):
                if want[key] is not None and not (key == "action" and want[key] == "thrown_in"):
                    assert same[0][key] == want[key], (prompt, expanded, key)
        assert got["sky"] and got["ground"], "unnamed sky and ground are filled in"


def test_the_expansion_is_seeded_and_fills_in_what_is_open():
    prompt = "a ball bouncing"
    assert expand_prompt(prompt, seed=3) == expand_prompt(prompt, seed=3)
    variants = {expand_prompt(prompt, seed=s) for s in range(6)}
    assert len(variants) >= 4
    for text in variants:
        parsed = parse_prompt(text)
        assert len(parsed["objects"]) == 1 and parsed["objects"][0]["shape"] == "ball"
        assert "bounce" in text, "a bouncing prompt gets a scene in which the ball bounces"


def test_prompts_naming_nothing_of_the_world_stay_as_they_are():
    assert expand_prompt("a cat playing the piano") is None
    assert expand_prompt("") is None


def test_a_longer_clip_gets_a_caption_of_what_happens_in_it():
    short = expand_prompt("a red ball is dropped on the sand", seed=0, seconds=1.0)
    long = expand_prompt("a red ball is dropped on the sand", seed=0, seconds=8.0)
    assert short != long and long.count("bounce") >= 1


def test_filled_in_skies_and_grounds_contrast_with_the_named_colours():
    import numpy as np

    from kinema.world.palette import GROUND_COLORS, OBJECT_COLORS, SKY_COLORS

    for color, rgb in OBJECT_COLORS.items():
        for seed in range(8):
            parsed = parse_prompt(expand_prompt(f"a {color} ball", seed=seed))
            for name, palette in ((parsed["sky"], SKY_COLORS), (parsed["ground"], GROUND_COLORS)):
                far = [n for n in palette if np.linalg.norm(np.subtract(palette[n], rgb)) >= 150]
                assert not far or name in far, (color, seed, name)
    assert parse_prompt(expand_prompt("a red ball at dusk"))["sky"] == "dusk", "what the prompt names is kept"


SEEN = {"sky": "night", "ground": "sand", "occluder": None,
        "objects": [{"color": "red", "shape": "ball", "size": "large", "material": None, "paint": None,
                     "action": None}]}


@pytest.mark.parametrize("seed", range(6))
def test_an_extension_is_expanded_on_the_inputs_stage_and_subject(seed):
    """What the analyzer saw in the input (SEEN) wins over the seed's choices; the named ball is the input's."""
    expanded = expand_prompt("the red ball keeps bouncing", seed=seed, seen=SEEN)
    got = parse_prompt(expanded)
    assert (got["sky"], got["ground"]) == ("night", "sand"), expanded
    assert [(o["color"], o["shape"], o["size"]) for o in got["objects"]][:1] == [("red", "ball", "large")], expanded
    # the input's stage wins over the prompt's for an extension; the prompt's wins for an edit
    assert parse_prompt(expand_prompt("a red ball on the snow", seed=seed, seen=SEEN))["ground"] == "sand"
    assert parse_prompt(expand_prompt("a red ball on the snow", seed=seed, seen=SEEN, prompt_first=True))[
        "ground"] == "snow"


def test_objects_of_the_input_the_prompt_does_not_name_are_kept():
    got = parse_prompt(expand_prompt("a blue box slides to the left", seed=1, seen=SEEN))
    looks = {(o["color"], o["shape"]) for o in got["objects"]}
    assert {("blue", "box"), ("red", "ball")} <= looks
    assert expand_prompt("keep going", seed=1, seen=SEEN) is not None  # the input alone names the scene
    assert expand_prompt("keep going", seed=1) is None


def test_the_input_frames_read_are_those_next_to_the_generated_ones():
    import numpy as np

    from kinema.inference.conditioning import ConditioningItem
    from kinema.inference.expand import SEEN_FRAMES, input_clips

    first = np.arange(100)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    last = first + 1
    opening, closing = input_clips([ConditioningItem(first), ConditioningItem(last, "end")])
    assert opening[0, 0, 0, 0] == 100 - SEEN_FRAMES // 2 and len(opening) == SEEN_FRAMES // 2  # its end
    assert closing[0, 0, 0, 0] == 1 and len(closing) == SEEN_FRAMES // 2  # its start
    image, = input_clips([ConditioningItem(first[0])])
    assert image.shape == (1, 2, 2, 3)
    edited, = input_clips([], edited=first)
    assert edited[0, 0, 0, 0] == 0 and len(edited) == SEEN_FRAMES


def test_a_prompt_that_names_nothing_of_the_world_gets_one_warning_naming_its_words():
    from kinema.inference.expand import undrawable

    warning = undrawable("a cat playing the piano in a jazz club")
    assert warning is not None and "cat, playing, piano, jazz, club" in warning and "kinema world vocab" in warning
    assert "\n" not in warning
    for prompt in ("a red ball bounces", "a ball", "at night on the snow", "a wall"):
        assert undrawable(prompt) is None, prompt


def split_scene(text: str) -> tuple[str, str]:
    """A storyboard shot's caption as (the scene's caption, the shot's own)."""
    end = text.index(". ", text.index("The objects: ")) + 1
    return text[:end], text[end + 1:]


@pytest.mark.parametrize("seed", [0, 1])
def test_every_storyboard_of_the_suite_expands_to_shots_that_keep_what_they_name(seed):
    data = yaml.safe_load((ROOT / "configs" / "eval" / "storyboard.yaml").read_text())
    boards = [storyboard_from_dict(p["storyboard"]) for p in data["prompts"]]
    assert len(boards) >= 10
    for board in boards:
        texts = expand_storyboard(board, seed=seed)
        assert texts is not None and len(texts) == len(board.shots), board
        scenes = {split_scene(text)[0] for text in texts}
        assert len(scenes) == 1, texts  # one scene, in the same words, in every shot
        scene_asked = parse_prompt(board.scene)
        for shot, text in zip(board.shots, texts):
            asked, got = parse_prompt(f"{board.scene} {shot.prompt}"), parse_prompt(text)
            for key in ("sky", "ground", "occluder"):
                if asked[key] is not None:
                    assert got[key] == asked[key], (board, text, key)
            assert parse_prompt(split_scene(text)[1])["framings"] == [shot.framing], text
            named = parse_prompt(shot.prompt)["objects"] or scene_asked["objects"]
            if not named:
                continue
            want = named[0]  # the shot's subject: its caption is about it and does what the shot asks
            same = [o for o in got["objects"] if all(want[k] is None or o[k] == want[k] for k in ("color", "shape"))]
            assert same, (shot, text)
            if shot.framing != "wide":
                head = split_scene(text)[1].split(". ")[0]
                assert want["color"] is None or want["color"] in head, (shot, text)
            if want["action"] not in (None, "thrown_in"):
                assert want["action"] in {o["action"] for o in same}, (shot, text)


def test_a_storyboard_expansion_is_seeded_and_keeps_objects_apart():
    board = Storyboard((Shot(2.0, "wide", "a red ball and a blue ball"), Shot(2.0, "closeup", "the blue ball bounces")),
                       "At night on snow.")
    texts = expand_storyboard(board, seed=3)
    assert texts == expand_storyboard(board, seed=3)
    assert any(expand_storyboard(board, seed=s) != texts for s in range(4, 8))
    scene, close_up = split_scene(texts[1])
    looks = {(o["color"], o["shape"]) for o in parse_prompt(scene)["objects"]}
    assert parse_prompt(scene)["sky"] == "night" and looks == {("red", "ball"), ("blue", "ball")}, scene
    head = close_up.split(". ")[0]
    assert parse_prompt(head)["framings"] == ["closeup"] and "blue" in head and "red" not in head, close_up
    nothing = Storyboard((Shot(2.0, "wide", "a quiet afternoon"),), "somewhere else")
    assert expand_storyboard(nothing) is None
