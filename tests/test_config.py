"""Tests for kinema.config: typed YAML loading, overrides, round trips and parse_size."""

# The dataclasses below use postponed annotations on purpose: load_config must resolve them.
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from kinema.config import config_to_dict, load_config, parse_size, save_config
from kinema.errors import ConfigError, KinemaError


@dataclass
class ModelConfig:
    channels: int
    base_channels: int = 32
    sizes: list[int] = field(default_factory=lambda: [64])
    kernel: tuple[int, int] = (3, 3)
    strides: tuple[int, ...] = (1, 2)
    dropout: Optional[float] = None  # noqa: UP045 - checks the typing.Optional spelling too

    def __post_init__(self) -> None:
        if self.channels <= 0:
            raise ValueError(f"channels must be positive (got {self.channels})")


@dataclass
class TrainConfig:
    lr: float = 1e-3
    sampler: Literal["euler", "heun"] = "euler"
    name: str = "run"
    seed: int | None = None
    ema: bool = True
    loss_weights: dict[str, float] = field(default_factory=dict)


@dataclass
class RootConfig:
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    tags: list[str] = field(default_factory=list)


@dataclass
class AllDefaults:
    steps: int = 10
    fps: float = 8.0


VALID_YAML = """\
# a comment
model:
  channels: 16
  sizes: [64, 96]
  kernel: [5, 3]
  strides: [1, 2, 2]
  dropout: 0
train:
  lr: 1e-4
  sampler: heun
  seed: 7
  ema: no
  loss_weights: {mse: 1, lpips: 0.5}
tags: [tiny, cpu]
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(cls: type, source: object, overrides: list[str] | None = None) -> str:
    """Load and return the ConfigError message, checking that it is one line."""
    with pytest.raises(ConfigError) as caught:
        load_config(cls, source, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- loading


def test_valid_yaml_loads_with_types_converted(tmp_path: Path) -> None:
    config = load_config(RootConfig, write(tmp_path, VALID_YAML))

    assert config.model == ModelConfig(
        channels=16, base_channels=32, sizes=[64, 96], kernel=(5, 3), strides=(1, 2, 2), dropout=0.0
    )
    assert isinstance(config.model.kernel, tuple) and isinstance(config.model.strides, tuple)
    assert isinstance(config.model.dropout, float)  # an int is accepted for a float and converted
    # PyYAML alone would read 1e-4 as the string '1e-4'.
    assert config.train.lr == pytest.approx(1e-4) and isinstance(config.train.lr, float)
    assert config.train.sampler == "heun"
    assert config.train.seed == 7
    assert config.train.ema is False
    assert config.train.loss_weights == {"mse": 1.0, "lpips": 0.5}
    assert config.tags == ["tiny", "cpu"]


def test_dict_source_uses_defaults_and_is_not_mutated() -> None:
    source = {"model": {"channels": 4}}
    config = load_config(RootConfig, source, ["model.channels=8", "train.lr=0.5"])

    assert config.model.channels == 8
    assert config.model.sizes == [64]
    assert config.train == TrainConfig(lr=0.5)
    assert source == {"model": {"channels": 4}}


def test_empty_file_gives_all_defaults(tmp_path: Path) -> None:
    assert load_config(AllDefaults, write(tmp_path, "# nothing set\n")) == AllDefaults()


def test_path_given_as_str_is_named_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "steps: many\n")
    message = config_error(AllDefaults, str(path))
    assert message == f"config '{path}': key 'steps': expected int, got str 'many'"


# ----------------------------------------------------------------------------- key errors


def test_unknown_nested_key_suggests_close_match() -> None:
    message = config_error(RootConfig, {"model": {"channels": 4, "chanels": 8}})
    assert message == (
        "config: unknown key 'model.chanels' (did you mean 'channels'?; "
        "allowed: base_channels, channels, dropout, kernel, sizes, strides)"
    )


def test_unknown_top_level_key_without_close_match_lists_allowed() -> None:
    message = config_error(RootConfig, {"model": {"channels": 4}, "zzz": 1})
    assert message == "config: unknown key 'zzz' (allowed: model, tags, train)"


def test_missing_required_key_is_named() -> None:
    assert config_error(RootConfig, {"train": {}}) == "config: missing required key 'model'"
    assert config_error(RootConfig, {"model": {}}) == "config: missing required key 'model.channels'"


def test_nested_dataclass_needs_a_mapping() -> None:
    message = config_error(RootConfig, {"model": 3})
    assert message == "config: key 'model': expected a mapping of ModelConfig keys, got int 3"


# ----------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"lr": "fast"}}, "key 'train.lr': expected float, got str 'fast'"),
        ({"train": {"lr": True}}, "key 'train.lr': expected float, got bool True"),
        ({"train": {"ema": 1}}, "key 'train.ema': expected bool, got int 1"),
        ({"train": {"ema": "yes"}}, "key 'train.ema': expected bool, got str 'yes'"),
        ({"train": {"seed": 1.5}}, "key 'train.seed': expected int, got float 1.5"),
        ({"train": {"seed": False}}, "key 'train.seed': expected int, got bool False"),
        ({"train": {"name": 12}}, "key 'train.name': expected str, got int 12"),
        ({"train": {"name": None}}, "key 'train.name': expected str, got null"),
        (
            {"train": {"sampler": "hune"}},
            "key 'train.sampler': expected one of 'euler', 'heun', got str 'hune'",
        ),
        (
            {"train": {"loss_weights": {"mse": "x"}}},
            "key 'train.loss_weights.mse': expected float, got str 'x'",
        ),
        ({"train": {"loss_weights": [1.0]}}, "key 'train.loss_weights': expected dict[str, float], got list"),
        ({"model": {"sizes": [64, "a"]}}, "key 'model.sizes[1]': expected int, got str 'a'"),
        ({"model": {"sizes": 64}}, "key 'model.sizes': expected list[int], got int 64"),
        (
            {"model": {"kernel": [3, 3, 3]}},
            "key 'model.kernel': expected tuple[int, int] (2 items), got 3 items",
        ),
        ({"model": {"kernel": [3, "3"]}}, "key 'model.kernel[1]': expected int, got str '3'"),
        ({"model": {"strides": [1, 2.5]}}, "key 'model.strides[1]': expected int, got float 2.5"),
        ({"model": {"dropout": "none"}}, "key 'model.dropout': expected float, got str 'none'"),
        ({"tags": "tiny"}, "key 'tags': expected list[str], got str 'tiny'"),
    ],
)
def test_wrong_type_names_key_value_and_expectation(data: dict, expected: str) -> None:
    data = {
        "model": {"channels": 4, **data.get("model", {})},
        **{k: v for k, v in data.items() if k != "model"},
    }
    message = config_error(RootConfig, data)
    assert message.startswith(f"config: {expected}")


def test_literal_error_suggests_choice() -> None:
    message = config_error(RootConfig, {"model": {"channels": 4}, "train": {"sampler": "hune"}})
    assert message.endswith("(did you mean 'heun'?)")


def test_optional_fields_accept_null() -> None:
    config = load_config(RootConfig, {"model": {"channels": 4, "dropout": None}, "train": {"seed": None}})
    assert config.model.dropout is None
    assert config.train.seed is None


def test_post_init_value_error_gets_key_prefix() -> None:
    message = config_error(RootConfig, {"model": {"channels": -1}})
    assert message == "config: key 'model': channels must be positive (got -1)"


# ----------------------------------------------------------------------------- file errors


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  channels: 4\n  sizes: [64, 96\ntrain: {}\n")
    message = config_error(RootConfig, path)
    assert message.startswith(f"config '{path}': invalid YAML at line ")
    assert "line 4" in message


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  channels: 4\n  channels: 8\n")
    message = config_error(RootConfig, path)
    assert message == f"config '{path}': invalid YAML at line 3, column 3: found duplicate key 'channels'"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert config_error(RootConfig, path) == f"config '{path}': file not found"


def test_directory_is_rejected(tmp_path: Path) -> None:
    assert config_error(RootConfig, tmp_path) == f"config '{tmp_path}': is a directory, expected a YAML file"


@pytest.mark.parametrize(("text", "got"), [("- 1\n- 2\n", "list [1, 2]"), ("just text\n", "str 'just text'")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    path = write(tmp_path, text)
    assert (
        config_error(RootConfig, path) == f"config '{path}': top level must be a mapping of keys, got {got}"
    )


# ----------------------------------------------------------------------------- overrides


def test_overrides_apply_and_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  channels: 4\n")
    overrides = [
        "train.lr=1e-4",
        "model.sizes=[64,96]",
        "model.kernel=[5, 5]",
        "train.name=007",  # a str field keeps the text as written
        "train.sampler=heun",
        "train.seed=42",
        "train.ema=false",
        "train.loss_weights.mse=2",
        "tags=[a, b]",
    ]
    config = load_config(RootConfig, path, overrides)

    assert config.train.lr == 0.0001 and isinstance(config.train.lr, float)
    assert config.model.sizes == [64, 96]
    assert config.model.kernel == (5, 5)
    assert config.train.name == "007"
    assert config.train.sampler == "heun"
    assert config.train.seed == 42
    assert config.train.ema is False
    assert config.train.loss_weights == {"mse": 2.0}
    assert config.tags == ["a", "b"]


def test_later_override_wins_and_null_clears_optional() -> None:
    config = load_config(RootConfig, {"model": {"channels": 4}}, ["train.seed=1", "train.seed=2"])
    assert config.train.seed == 2
    config = load_config(RootConfig, {"model": {"channels": 4}, "train": {"seed": 5}}, ["train.seed=null"])
    assert config.train.seed is None


def test_override_can_supply_a_required_key(tmp_path: Path) -> None:
    config = load_config(RootConfig, write(tmp_path, ""), ["model.channels=12"])
    assert config.model.channels == 12


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=fast", "override 'train.lr=fast': key 'train.lr': expected float, got str 'fast'"),
        (
            "model.chanels=3",
            "override 'model.chanels=3': unknown key 'model.chanels' (did you mean 'channels'?; "
            "allowed: base_channels, channels, dropout, kernel, sizes, strides)",
        ),
        (
            "model.channels.x=3",
            "override 'model.channels.x=3': key 'model.channels' is int, so it has no sub-key 'x'",
        ),
        ("train.lr", "override 'train.lr': expected KEY=VALUE such as train.lr=1e-4"),
        ("=3", "override '=3': malformed key '', expected dotted names such as train.lr"),
        ("model..channels=3", "override 'model..channels=3': malformed key 'model..channels'"),
        ("model.sizes=[64,", "override 'model.sizes=[64,': value is not valid YAML"),
        (
            "model.sizes=[64, x]",
            "override 'model.sizes=[64, x]': key 'model.sizes[1]': expected int, got str 'x'",
        ),
        ("train.ema=1", "override 'train.ema=1': key 'train.ema': expected bool, got int 1"),
        (
            "train.sampler=rk4",
            "override 'train.sampler=rk4': key 'train.sampler': expected one of 'euler', 'heun'",
        ),
    ],
)
def test_bad_override_is_a_one_line_error(override: str, expected: str) -> None:
    message = config_error(RootConfig, {"model": {"channels": 4}}, [override])
    assert message.startswith(f"config: {expected}")


def test_override_value_error_from_post_init() -> None:
    message = config_error(RootConfig, {"model": {"channels": 4}}, ["model.channels=0"])
    assert message == "config: key 'model': channels must be positive (got 0)"


# ----------------------------------------------------------------------------- round trip


def test_config_to_dict_is_plain_data() -> None:
    config = RootConfig(model=ModelConfig(channels=4, kernel=(1, 2)), tags=["x"])
    data = config_to_dict(config)
    assert data["model"]["kernel"] == [1, 2]
    assert data["model"]["strides"] == [1, 2]
    assert data["train"] == {
        "lr": 1e-3,
        "sampler": "euler",
        "name": "run",
        "seed": None,
        "ema": True,
        "loss_weights": {},
    }
    assert data["tags"] == ["x"]


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    original = load_config(RootConfig, write(tmp_path, VALID_YAML), ["train.lr=3e-5", "train.name=yes"])
    assert original.train.name == "yes"  # not the YAML 1.1 boolean

    saved = save_config(original, tmp_path / "out" / "saved.yaml")

    assert saved == tmp_path / "out" / "saved.yaml"
    reloaded = load_config(RootConfig, saved)
    assert reloaded == original
    assert reloaded.train.lr == pytest.approx(3e-5)
    assert isinstance(reloaded.model.kernel, tuple)


def test_round_trip_of_tricky_strings_and_small_floats(tmp_path: Path) -> None:
    original = RootConfig(
        model=ModelConfig(channels=1, dropout=1e-20),
        train=TrainConfig(lr=1e-12, name="null"),
        tags=["yes", "1e-4", "no", "", "a: b"],
    )
    assert load_config(RootConfig, save_config(original, tmp_path / "tricky.yaml")) == original


# ----------------------------------------------------------------------------- parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("64x64", (64, 64)), ("96×64", (96, 64)), ("64X128", (64, 128)), (" 320 x 192 ", (320, 192))],
)
def test_parse_size_accepts_width_x_height(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


def test_parse_size_custom_limits() -> None:
    assert parse_size("30x20", multiple=10, max_side=30) == (30, 20)
    with pytest.raises(KinemaError, match="at most 30"):
        parse_size("40x20", multiple=10, max_side=30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("65x64", "size '65x64': width and height must be multiples of 8 (got 65x64)"),
        ("64x60", "size '64x60': width and height must be multiples of 8 (got 64x60)"),
        ("big", "size 'big': expected WIDTHxHEIGHT such as 64x64"),
        ("64", "size '64': expected WIDTHxHEIGHT such as 64x64"),
        ("64x64x3", "size '64x64x3': expected WIDTHxHEIGHT such as 64x64"),
        ("-8x8", "size '-8x8': expected WIDTHxHEIGHT such as 64x64"),
        ("0x64", "size '0x64': width and height must be positive (got 0x64)"),
        ("8192x64", "size '8192x64': width and height must be at most 4096 (got 8192x64)"),
        ("9" * 5000 + "x8", "width and height must be at most 4096"),
    ],
)
def test_parse_size_rejects_bad_sizes(text: str, message: str) -> None:
    with pytest.raises(KinemaError) as caught:
        parse_size(text)
    assert not isinstance(caught.value, ConfigError)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    from kinema.inference.suite import load_suite
    from kinema.train.distill import load_distill_config
    from kinema.train.dit import load_dit_config
    from kinema.train.vae import load_vae_config

    loader = {"vae": load_vae_config, "dit": load_dit_config, "eval": load_suite,
              "distill": load_distill_config}[path.parent.name]
    config = loader(path)
    assert config is not None
    if path.parent.name == "dit":
        from kinema.train.dit import build_dit

        assert build_dit(config.model).config.num_layers >= 1  # the model section names a buildable DiT


def test_the_probe_suite_is_held_out_from_the_other_suites_and_every_prompt_parses():
    from kinema.inference.suite import load_suite
    from kinema.world.caption import parse_prompt

    root = Path(__file__).parents[1]

    def prompts(name: str) -> set[str]:
        suite = load_suite(root / "configs" / "eval" / f"{name}.yaml")
        return {" ".join(str(item.prompt).lower().split()) for item in suite.items}

    probe = prompts("probe")
    assert len(probe) == 32
    for other in ("basic", "long", "storyboard", "readme"):
        assert not probe & prompts(other), other
    for prompt in probe:
        parsed = parse_prompt(prompt)
        assert parsed["objects"] and parsed["sky"] and parsed["ground"], prompt
        assert all(o["color"] and o["shape"] for o in parsed["objects"]), prompt
