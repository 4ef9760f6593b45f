"""Prompt expansion: the caption it writes keeps everything the prompt names, in the training style."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kinema.inference.expand import expand_prompt
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
