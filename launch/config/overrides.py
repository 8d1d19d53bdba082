"""A typed override machine for a tree of dataclasses: dotted keys (`sac.actor_lr`), values from
YAML or the command line, checked against the fields' type hints. Knows nothing of polytask's
config; launch/config/__init__.py applies it to the config tree."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import yaml

from launch.errors import UserError


def to_dict(cfg) -> dict:
    """Plain nested dict (tuples as lists) for YAML."""
    def plain(v):
        return list(v) if isinstance(v, tuple) else v
    return {f.name: (to_dict(getattr(cfg, f.name)) if dataclasses.is_dataclass(getattr(cfg, f.name))
                     else plain(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)}


# A decimal number as people type it: 1e-3, 3E-4, .5, 1_000, -2.5e+3 (YAML 1.1 reads some of these
# as strings: it wants a dot and a signed exponent).
_NUMBER = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?")


def _number(value):
    """A finite int/float written as text (see _NUMBER), else `value` unchanged."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip().replace("_", ""))
        if math.isfinite(number):
            return number
    return value


def _coerce(value, hint, key: str):
    """Check `value` (parsed from YAML) against a field's type; convert where lossless. Numbers
    written as text (`1e-3`, which YAML 1.1 leaves a string) are accepted for int and float
    fields; an int field takes a float only if it is whole (`1e6`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        *others, last = [a for a in args if a is not type(None)]
        for inner in others:  # the first type that takes the value (int | str: 3 -> 3, "auto" -> "auto")
            try:
                return _coerce(value, inner, key)
            except UserError:
                pass
        return _coerce(value, last, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key} expects a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float):
        value = _number(value)
    if hint is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"config key {key} expects {getattr(hint, '__name__', hint)}, got {value!r}")


def set_key(cfg, key: str, value) -> None:
    """Set a dotted key (e.g. sac.actor_lr) with type checking."""
    *path, name = key.split(".")
    node = cfg
    for part in path:
        child = getattr(node, part, None)
        if not dataclasses.is_dataclass(child):
            raise UserError(f"unknown config key {key}")
        node = child
    hints = typing.get_type_hints(type(node))
    if name not in hints or dataclasses.is_dataclass(getattr(node, name)):
        valid = ", ".join(f"{'.'.join(path + [n])}" for n in hints)
        raise UserError(f"unknown config key {key}; valid here: {valid}")
    setattr(node, name, _coerce(value, hints[name], key))


def merge(cfg, tree: dict, prefix: str = "") -> None:
    """Apply a nested dict (from YAML) onto the config, key by key."""
    if not isinstance(tree, dict):
        raise UserError(f"config {prefix or 'file'} must be a mapping, got {tree!r}")
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            merge(cfg, v, key + ".")
        else:
            set_key(cfg, key, v)


def read_yaml(path: str | Path) -> dict:
    try:
        tree = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config file {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(tree, dict):
        raise UserError(f"config file {path} must hold a mapping of sections, got {type(tree).__name__}")
    return tree


def parse_override(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"--set {key}: cannot parse value {raw!r}") from None
