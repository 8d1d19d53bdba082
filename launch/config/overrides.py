"""A typed override machine for a tree of dataclasses: dotted keys (`sac.actor_lr`), values from
YAML or the command line, checked against the fields' type hints (set_key) and against the
constraints declared in the fields' metadata (check_fields). Knows nothing of polytask's config;
launch/config/__init__.py applies it to the config tree.

A field's metadata may say (plain data, so that any package can declare it without importing this):
    "choices": ("a", "b")   the valid values, or a zero-arg callable returning them (a registry,
                            read when the value is checked: entries added later count)
    "empty": "meaning"      "" (or an empty list) is valid too, and means this
    "min" / "max": x        inclusive bounds; "above" / "below": x exclusive ("above": 0 = positive)
    "nonempty": True        a list must not be empty
    "note": "0: off"        said after the bound in the message
    "name": "backend"       what the message calls the key (default: the dotted key)
On a list, choices and bounds apply to every item."""

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


# ---- constraints declared next to the fields (see the module docstring) -------------------------

def leaves(cfg, prefix: str = ""):
    """(dotted key, dataclasses.Field, value) of every field of a dataclass tree that is not a section."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def choices(meta) -> tuple:
    """A field's valid values, read now (a registry may have grown since it was declared)."""
    valid = meta["choices"]
    return tuple(valid() if callable(valid) else valid)


def _within(meta, x) -> bool:
    return (x >= meta.get("min", x) and x <= meta.get("max", x)
            and ("above" not in meta or x > meta["above"]) and ("below" not in meta or x < meta["below"]))


def _bound(meta) -> str:
    """The bounds in words: `positive`, `>= 0`, `in (0, 1]`; "" if none."""
    lo = ("[", meta["min"]) if "min" in meta else ("(", meta["above"]) if "above" in meta else None
    hi = (meta["max"], "]") if "max" in meta else (meta["below"], ")") if "below" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return "positive" if lo == ("(", 0) else f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f"{'<=' if hi[1] == ']' else '<'} {hi[0]}"
    return ""


def check_value(key: str, value, meta) -> None:
    """Refuse `value` of the field `key` in one line if it breaks the field's declared constraints."""
    name = meta.get("name", key)
    if value is None or ("empty" in meta and value in ("", ())):
        return
    aside = "; ".join(x for x in (meta.get("note"), f"or empty: {meta['empty']}" if "empty" in meta else None) if x)
    aside = f" ({aside})" if aside else ""
    items = value if isinstance(value, tuple) else None
    if "choices" in meta:
        valid = choices(meta)
        if items is not None and set(items) - set(valid):
            raise UserError(f"{name} must name some of {', '.join(valid)}, got {list(items)}")
        if items is None and value not in valid:
            raise UserError(f"unknown {name} {value!r}; valid: {', '.join(valid)}{aside}")
    bound = _bound(meta)
    if items is not None and (not all(_within(meta, v) for v in items) or (meta.get("nonempty") and not items)):
        what = f"{'non-empty ' if meta.get('nonempty') else ''}list of " + \
            ("positive numbers" if bound == "positive" else f"numbers {bound}" if bound else "values")
        raise UserError(f"{name} must be a {what}{aside}, got {list(items)}")
    if items is None and bound and not _within(meta, value):
        raise UserError(f"{name} must be {bound}{aside}, got {value}")


def check_fields(cfg) -> None:
    """Every field against its declared constraints: the first one broken is one UserError line."""
    for key, f, value in leaves(cfg):
        if f.metadata:
            check_value(key, value, f.metadata)
