"""Typed configs from YAML recipes plus ``key=value`` overrides.

A run config is a tree of dataclasses (one per component, STYLE.md §2). A recipe is a YAML
file whose nested mappings mirror that tree; the command line overrides any leaf with
dotted keys, e.g. ``mmlora train recipes/asr_tiny.yaml train.lr=3e-4 train.max_steps=50``.

    cfg = load_config(RunConfig, "recipes/asr_tiny.yaml", ["train.lr=3e-4"])
    dump_config(cfg, "outputs/run/config.yaml")    # the resolved config, loadable again

Rules:

* Values are checked and coerced to the dataclass field types: ``int``, ``float`` (ints and
  numeric strings such as YAML's ``1e-3`` are accepted), ``bool``, ``str``, ``Path``,
  ``Literal[...]``, ``Enum``, ``X | None``, unions, ``list[X]``, ``tuple[X, ...]``,
  ``dict[str, X]`` and nested dataclasses. ``Any`` passes through.
* An override value is the text after the first ``=``. For a ``str`` field it is taken as is
  (``name=007`` gives ``"007"``); otherwise it is read as YAML (``[1,2]``, ``null``, ``true``).
* A recipe may start from other recipes: ``_base_: other.yaml`` (or a list), paths relative to
  the file; the file's own keys are merged over its bases, mappings merged key by key.
* Every error is a :class:`ConfigError` naming the file or override, the dotted field path and
  the reason; an unknown key also lists the close matches among the known fields.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

import yaml

T = TypeVar("T")

__all__ = ["ConfigError", "from_dict", "to_dict", "load_yaml", "apply_overrides", "load_config",
           "dump_config"]

BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A recipe or override that does not fit the config dataclasses (message says where)."""


class _Raw(str):
    """An override's value text; remembers the override it came from for error messages."""

    origin: str = ""

    def __new__(cls, text: str, origin: str):
        obj = super().__new__(cls, text)
        obj.origin = origin
        return obj


# ----------------------------------------------------------------------------- YAML files


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe (a YAML mapping), resolving ``_base_`` includes; returns plain dicts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    real = path.resolve()
    if real in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, real))
        raise ConfigError(f"{path}: _base_ include cycle: {chain}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names")
    merged: dict = {}
    for b in bases:
        merged = _deep_merge(merged, load_yaml(path.parent / b, (*_seen, real)))
    return _deep_merge(merged, data)


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- overrides


def apply_overrides(data: Mapping, overrides: Sequence[str], cls: type | None = None) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` override set (creating mappings on
    the way). With ``cls`` the key path is checked against the dataclass fields at once, so an
    unknown key is reported with the override text and close matches."""
    out = _deep_merge({}, data)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value (e.g. train.lr=1e-4)")
        key, value = ov.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"override {ov!r}: empty key or empty part in {key!r}")
        if cls is not None:
            _check_path(cls, parts, ov)
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                if nxt is not None and not dataclasses.is_dataclass(nxt):
                    raise ConfigError(f"override {ov!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
                nxt = _deep_merge({}, to_dict(nxt)) if dataclasses.is_dataclass(nxt) else {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = _Raw(value.strip(), f"override {ov!r}")
    return out


def _check_path(cls: type, parts: list[str], ov: str) -> None:
    tp: Any = cls
    for i, p in enumerate(parts):
        tp = _strip_optional(tp)
        if dataclasses.is_dataclass(tp):
            fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
            if p not in fields:
                where = ".".join(parts[:i]) or tp.__name__
                raise ConfigError(f"override {ov!r}: unknown key {p!r} in {where}{_suggest(p, fields)}")
            tp = typing.get_type_hints(tp)[p]
        elif typing.get_origin(tp) in (dict, Mapping) or tp is dict:
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
        elif tp is Any:
            return
        else:
            raise ConfigError(f"override {ov!r}: {'.'.join(parts[:i])} is a value, not a section")


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if close:
        return f" (did you mean {', '.join(map(repr, close))}?)"
    return f" (known: {', '.join(sorted(known))})"


# ----------------------------------------------------------------------------- dict -> dataclass


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                data: Mapping | None = None) -> T:
    """Build ``cls`` from a YAML recipe (or a mapping ``data``) plus overrides."""
    source = str(path) if path is not None else "<config>"
    raw = load_yaml(path) if path is not None else dict(data or {})
    raw = apply_overrides(raw, overrides, cls)
    try:
        return from_dict(cls, raw, source=source)
    except ConfigError as e:
        if overrides and "override" not in str(e):
            raise ConfigError(f"{e} (overrides given: {' '.join(overrides)})") from None
        raise


def from_dict(cls: type[T], data: Mapping | T, *, source: str = "<dict>") -> T:
    """Build the dataclass ``cls`` (recursively) from a mapping, coercing leaf values to the
    field types. Raises :class:`ConfigError` naming ``source`` and the dotted field path."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return _coerce(data, cls, "", source)


def _where(path: str, value: Any, source: str) -> str:
    return f"{source}: {'field ' + repr(path) if path else 'config'}"


def _with_origin(value: Any, source: str) -> str:
    """Add the override a raw value came from to the error location (once)."""
    if isinstance(value, _Raw) and value.origin not in source:
        return value.origin if source in ("<config>", "<dict>") else f"{source}, {value.origin}"
    return source


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, path: str, source: str) -> Any:  # noqa: C901 (one dispatch table)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    source = _with_origin(value, source)
    if tp is Any or tp is object:  # free-form (e.g. an encoder's dict): override text parsed as YAML at any depth
        if isinstance(value, _Raw):
            return yaml.safe_load(value)
        if isinstance(value, Mapping):
            return {k: _coerce(v, Any, f"{path}.{k}", source) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(_coerce(v, Any, f"{path}[{i}]", source) for i, v in enumerate(value))
        return value
    if origin in (Union, types.UnionType):
        if isinstance(value, _Raw) and str(value).lower() in ("null", "none", "~") and type(None) in args:
            return None
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        # a raw string goes to a str member only when nothing more specific accepts it
        members.sort(key=lambda a: a is str)
        for a in members:
            try:
                return _coerce(value, a, path, source)
            except ConfigError:
                pass
        raise ConfigError(f"{_where(path, value, source)}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, _Raw):
            value = _load_raw(value, tp, path, source)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path, value, source)}: expected a mapping for {tp.__name__}, "
                              f"got {type(value).__name__} {value!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        kwargs = {}
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if k not in fields:
                raise ConfigError(f"{_where(sub, v, source)}: unknown key {k!r} for {tp.__name__}"
                                  f"{_suggest(str(k), fields)}")
            kwargs[k] = _coerce(v, hints[k], sub, source)
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            names = ", ".join(repr(f"{path}.{m}" if path else m) for m in missing)
            raise ConfigError(f"{source}: missing required field(s) {names} of {tp.__name__}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {'section ' + repr(path) if path else tp.__name__}: {e}") from None
    if isinstance(value, _Raw) and tp is not str and tp is not Path:
        if not (isinstance(tp, type) and issubclass(tp, enum.Enum)) and origin is not Literal:
            value = _load_raw(value, tp, path, source)
    if origin is Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{_where(path, value, source)}: {value!r} is not one of {list(args)}")
    if origin in (list, Sequence) or tp is list:
        (item,) = args or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{_where(path, value, source)}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(path, value, source)}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{_where(path, value, source)}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args or
                                                                                          [Any] * len(value))))
    if origin in (dict, Mapping) or tp is dict:
        kt, vt = args if len(args) == 2 else (Any, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path, value, source)}: expected a mapping, got {value!r}")
        return {_coerce(k, kt, path, source): _coerce(v, vt, f"{path}.{k}", source) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for m in tp:
            if value == m or value == m.value or value == m.name or str(m.value) == str(value):
                return m
        raise ConfigError(f"{_where(path, value, source)}: {value!r} is not one of {[m.value for m in tp]}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(path, value, source)}: expected true or false, got {value!r}")
    if tp in (int, float):
        # ints and floats (an int field takes a whole float such as 1e3), or their text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if tp is float or isinstance(value, int) or value.is_integer():
                return tp(value)
        elif isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
        kind = "an integer" if tp is int else "a number"
        raise ConfigError(f"{_where(path, value, source)}: expected {kind}, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(f"{_where(path, value, source)}: expected a string, got {type(value).__name__} "
                          f"{value!r} (quote it in YAML)")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{_where(path, value, source)}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{_where(path, value, source)}: cannot read {value!r} as {_type_name(tp)}")


def _load_raw(value: _Raw, tp: Any, path: str, source: str) -> Any:
    try:
        return yaml.safe_load(str(value)) if str(value) else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{_where(path, value, source)}: cannot read {str(value)!r} as {_type_name(tp)}: "
                          f"{e}") from None


# ----------------------------------------------------------------------------- dataclass -> YAML


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) from a config tree: tuples become lists, paths and
    enums their text/value, so that ``yaml.safe_dump`` accepts it."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, (int, float, bool)) else k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, _Raw):
        return str(obj)
    return obj


def dump_config(obj: Any, path: str | Path | None = None) -> str:
    """The config as YAML text (written to ``path`` when given); ``load_config`` reads it back."""
    text = yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text
