"""Dataclass configs: YAML (or a dict) in, checked dataclass instances out.

``load_config(cls, source, overrides)`` builds an instance of the dataclass ``cls`` from a YAML
file or a dict, applies CLI-style ``key.sub=value`` overrides and checks every value against the
field's type hint. Every problem is a one-line ``ConfigError`` that names the dotted key, the bad
value and what was expected, for example::

    config 'configs/vae/tiny.yaml': unknown key 'model.chanels' (did you mean 'channels'?; allowed: ...)
    config 'configs/vae/tiny.yaml': key 'train.lr': expected float, got str 'fast'

Supported field types: ``int``, ``float`` (an int is accepted), ``bool`` (real booleans only),
``str``, ``Path``, ``X | None``, unions, ``list[X]``, ``tuple[X, ...]``, fixed tuples such as
``tuple[int, int]``, ``dict[str, X]``, ``Literal[...]``, ``Any`` and nested dataclasses (a
mapping). A ``__post_init__`` that raises ``ValueError`` becomes a ``ConfigError`` prefixed with
the key of the dataclass that failed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from kinema.errors import ConfigError, KinemaError

__all__ = ["config_to_dict", "load_config", "parse_size", "read_json_object", "save_config"]

T = TypeVar("T")

_NoneType = type(None)
_MAX_SHOWN = 60  # characters of a bad value quoted in an error message


class _Problem(Exception):
    """A config problem without the 'config <source>' prefix; load_config adds it."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2) and rejects duplicate keys.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``lr: 1e-4``
    would silently become the string '1e-4'.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; SafeConstructor reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings _Loader would read as floats, such as '1e-4'."""


_YAML12_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
for _resolver_owner in (_Loader, _Dumper):
    _resolver_owner.add_implicit_resolver(
        "tag:yaml.org,2002:float", _YAML12_EXPONENT_FLOAT, list("-+0123456789.")
    )


# ----------------------------------------------------------------------------- public API


def load_config(
    cls: type[T], source: str | Path | Mapping[str, Any], overrides: Iterable[str] | None = None
) -> T:
    """Build the dataclass ``cls`` from a YAML file path or a dict, then apply ``key.sub=value`` overrides.

    Raises ``ConfigError`` (one line) for unknown or missing keys, wrong types, bad YAML, a missing
    file, a malformed override, or a ``ValueError`` from a ``__post_init__``.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key=value' strings, not one string")
    label, raw = _read_source(source)
    try:
        for text in overrides or ():
            _apply_override(cls, raw, text)
        return _build(cls, raw, "")
    except _Problem as problem:
        raise ConfigError(f"{label}: {problem}") from None


def config_to_dict(obj: Any) -> dict[str, Any]:
    """Turn a config dataclass into plain YAML-safe data: nested dicts, tuples as lists, paths as str."""
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(obj).__name__}")
    return {field.name: _plain(getattr(obj, field.name)) for field in dataclasses.fields(obj) if field.init}


def save_config(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as YAML to ``path`` (parents created) and return the path.

    ``load_config(type(obj), save_config(obj, path)) == obj``.
    """
    path = Path(path)
    text = yaml.dump(config_to_dict(obj), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write config '{path}': {error.strerror or error}") from None
    return path


_SIZE_PATTERN = re.compile(r"^\s*([0-9]+)\s*[x×]\s*([0-9]+)\s*$", re.IGNORECASE)


def parse_size(text: str, *, multiple: int = 8, max_side: int = 4096) -> tuple[int, int]:
    """Parse 'WIDTHxHEIGHT' (also 'W×H', 'WXH') into ``(width, height)``.

    Both sides must be positive, multiples of ``multiple`` and at most ``max_side``; otherwise a
    one-line ``KinemaError`` names the size and the rule it broke.
    """
    shown = _short(text) if isinstance(text, str) else repr(text)
    match = _SIZE_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise KinemaError(f"size {shown}: expected WIDTHxHEIGHT such as 64x64")
    digits = match.group(1), match.group(2)
    if any(len(side.lstrip("0")) > len(str(max_side)) for side in digits):
        raise KinemaError(f"size {shown}: width and height must be at most {max_side}")
    width, height = int(digits[0]), int(digits[1])
    got = f"(got {width}x{height})"
    if width <= 0 or height <= 0:
        raise KinemaError(f"size {shown}: width and height must be positive {got}")
    if width > max_side or height > max_side:
        raise KinemaError(f"size {shown}: width and height must be at most {max_side} {got}")
    if width % multiple or height % multiple:
        raise KinemaError(f"size {shown}: width and height must be multiples of {multiple} {got}")
    return width, height


# ----------------------------------------------------------------------------- reading


def _read_source(source: str | Path | Mapping[str, Any]) -> tuple[str, dict]:
    """Return (label for error messages, a fresh mutable top-level mapping)."""
    if isinstance(source, Mapping):
        return "config", copy.deepcopy(dict(source))
    if not isinstance(source, (str, PurePath)):
        raise TypeError(f"config source must be a path or a dict, got {type(source).__name__}")
    label = f"config '{source}'"
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{label}: file not found")
    if path.is_dir():
        raise ConfigError(f"{label}: is a directory, expected a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a UTF-8 text file") from None
    except OSError as error:
        raise ConfigError(f"{label}: cannot read file: {error.strerror or error}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise ConfigError(f"{label}: invalid YAML{_yaml_where(error)}") from None
    if data is None:  # an empty file or only comments: every field takes its default
        return label, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: top level must be a mapping of keys, got {_show(data)}")
    return label, data


def _yaml_where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None)
    return f"{where}: {problem}" if problem else where


# ----------------------------------------------------------------------------- checking


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {field.name: field for field in dataclasses.fields(cls) if field.init}


def _build(cls: type[T], value: Any, path: str) -> T:
    """Check the mapping ``value`` against the dataclass ``cls`` and construct it."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise _Problem(f"{_at(path)}expected a mapping of {cls.__name__} keys, got {_show(value)}")
    fields = _init_fields(cls)
    for key in value:
        if key not in fields:
            raise _Problem(_unknown_key(path, key, fields))
    missing = [
        _join(path, name)
        for name, field in fields.items()
        if name not in value
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        keys = ", ".join(f"'{key}'" for key in missing)
        raise _Problem(f"missing required key{'s' if len(missing) > 1 else ''} {keys}")
    hints = _hints(cls)
    kwargs = {name: _convert(value[name], hints[name], _join(path, name)) for name in fields if name in value}
    try:
        return cls(**kwargs)
    except (ValueError, KinemaError) as error:  # raised by the dataclass's own __post_init__ checks
        raise _Problem(f"{_at(path)}{error}") from None


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Return ``value`` checked against (and, for floats, tuples and paths, converted to) type ``tp``."""
    if tp is Any or tp is object:
        return value
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return _convert_union(value, tp, args, path)
    if origin is Literal:
        return _convert_literal(value, args, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, PurePath)):
            return Path(value)
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            item_type = args[0] if args else Any
            return [_convert(item, item_type, f"{path}[{i}]") for i, item in enumerate(value)]
    elif tp is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return _convert_tuple(value, tp, args, path)
    elif tp is dict or origin is dict:
        if isinstance(value, Mapping):
            key_type, item_type = args if args else (Any, Any)
            converted = {}
            for key, item in value.items():
                if key_type is str and not isinstance(key, str):
                    raise _Problem(f"{_at(path)}keys must be str, got {_show(key)}")
                converted[_convert(key, key_type, path)] = _convert(item, item_type, _join(path, str(key)))
            return converted
    else:
        raise TypeError(f"unsupported config field type {tp!r} for key '{path}'")
    raise _Problem(f"{_at(path)}expected {_type_name(tp)}, got {_show(value)}")


def _convert_union(value: Any, tp: Any, args: tuple, path: str) -> Any:
    if value is None and _NoneType in args:
        return None
    members = [arg for arg in args if arg is not _NoneType]
    if len(members) == 1 and value is not None:
        return _convert(value, members[0], path)  # Optional[X]: X's own, more precise, message
    for member in members:
        try:
            return _convert(value, member, path)
        except _Problem:
            continue
    raise _Problem(f"{_at(path)}expected {_type_name(tp)}, got {_show(value)}")


def _convert_literal(value: Any, choices: tuple, path: str) -> Any:
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return choice
    allowed = ", ".join(repr(choice) for choice in choices)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise _Problem(f"{_at(path)}expected one of {allowed}, got {_show(value)}{hint}")


def _convert_tuple(value: list | tuple, tp: Any, args: tuple, path: str) -> tuple:
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(item, args[0], f"{path}[{i}]") for i, item in enumerate(value))
    if args == ((),):  # tuple[()]
        args = ()
    if len(value) != len(args):
        expected = f"expected {_type_name(tp)} ({len(args)} items)"
        raise _Problem(f"{_at(path)}{expected}, got {len(value)} items {_short(value)}")
    pairs = enumerate(zip(value, args, strict=True))
    return tuple(_convert(item, item_type, f"{path}[{i}]") for i, (item, item_type) in pairs)


# ----------------------------------------------------------------------------- overrides


def _apply_override(cls: type, raw: dict, text: Any) -> None:
    """Set one ``key.sub=value`` override into the raw mapping, checking the key and the value's type."""
    if not isinstance(text, str) or "=" not in text:
        raise _Problem(f"override {_short(text)}: expected KEY=VALUE such as train.lr=1e-4")
    key, _, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    where = f"override {_short(text)}: "
    if not key or not all(parts) or any(part != part.strip() for part in parts):
        raise _Problem(f"{where}malformed key {key!r}, expected dotted names such as train.lr")

    tp: Any = cls
    node: dict = raw
    path = ""
    for depth, part in enumerate(parts):
        container = _without_none(tp)
        if isinstance(container, type) and dataclasses.is_dataclass(container):
            fields = _init_fields(container)
            if part not in fields:
                raise _Problem(where + _unknown_key(path, part, fields))
            tp = _hints(container)[part]
        else:  # a dict[str, X] field: any key is allowed
            tp = get_args(container)[1] if get_args(container) else Any
        path = _join(path, part)
        if depth == len(parts) - 1:
            break
        if not _has_sub_keys(tp):
            raise _Problem(
                f"{where}key '{path}' is {_type_name(tp)}, so it has no sub-key '{parts[depth + 1]}'"
            )
        child = node.get(part)
        if child is None:
            child = {}
        elif dataclasses.is_dataclass(child) and not isinstance(child, type):
            child = config_to_dict(child)
        elif isinstance(child, Mapping):
            child = dict(child)
        else:
            raise _Problem(f"{where}key '{path}': expected a mapping, got {_show(child)}")
        node[part] = child
        node = child

    value = _parse_override_value(value_text, tp, where)
    try:
        _convert(value, tp, path)
    except _Problem as problem:
        raise _Problem(f"{where}{problem}") from None
    node[parts[-1]] = value


def _parse_override_value(text: str, tp: Any, where: str) -> Any:
    """Parse an override value as YAML; for text fields, fall back to the raw text (name=007 is '007')."""
    wants_text = _wants_text(tp)
    try:
        value = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as error:
        if wants_text:
            return text
        raise _Problem(f"{where}value is not valid YAML{_yaml_where(error)}") from None
    if wants_text and not isinstance(value, str) and not (value is None and _allows_none(tp)):
        return text
    return value


def _without_none(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        members = [arg for arg in get_args(tp) if arg is not _NoneType]
        if len(members) == 1:
            return members[0]
    return tp


def _has_sub_keys(tp: Any) -> bool:
    tp = _without_none(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return True
    return tp is dict or get_origin(tp) is dict


def _allows_none(tp: Any) -> bool:
    return tp is Any or (get_origin(tp) in (Union, types.UnionType) and _NoneType in get_args(tp))


def _wants_text(tp: Any) -> bool:
    tp = _without_none(tp)
    if tp is str:
        return True
    return get_origin(tp) is Literal and all(isinstance(choice, str) for choice in get_args(tp))


# ----------------------------------------------------------------------------- messages


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _at(path: str) -> str:
    return f"key '{path}': " if path else ""


def _unknown_key(path: str, key: Any, fields: Mapping[str, Any]) -> str:
    allowed = sorted(fields)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean '{close[0]}'?; " if close else ""
    listing = f"allowed: {', '.join(allowed)}" if allowed else "no keys allowed"
    return f"unknown key '{_join(path, str(key))}' ({hint}{listing})"


def _type_name(tp: Any) -> str:
    if tp is _NoneType:
        return "null"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {_short(value)}"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


# The diffusers pipelines whose model folders kinema loads as Wan folders (model_index.json's _class_name).
WAN_PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path`` (a model folder's config.json, a shard index); a one-line KinemaError that
    starts with ``what`` when it is missing, unreadable, or not an object."""
    if not path.is_file():
        raise KinemaError(f"{what}: {path.name} is missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KinemaError(f"{what}: {path.name} is not valid JSON ({' '.join(str(error).split())[:240]})") from None
    if not isinstance(value, dict):
        raise KinemaError(f"{what}: {path.name} must hold a JSON object")
    return value
