"""YAML files map one-to-one onto typed dataclasses; defaults live in the dataclasses.

``load_config(path, TrainConfig)`` reads a YAML file and builds the dataclass tree, raising
:class:`uniret.errors.DataFormatError` that names the file and the dotted key for an unknown key or a
value of the wrong type. ``to_dict`` turns a config back into plain data for saving next to results.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from uniret.errors import DataFormatError

T = TypeVar("T")
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_scalar(value: Any, tp: Any, where: str, source: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 (PyYAML) reads 1e-4, without a dot, as a string
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise DataFormatError(f"got {value!r}", path=source, field=where, expected=f"a {tp.__name__}")
        return value
    return value


def _build(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for candidate in non_none:
            try:
                return _build(candidate, value, where, source)
            except DataFormatError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DataFormatError(f"got {value!r}", path=source, field=where, expected="a mapping")
        return from_dict(typing.cast(type, tp), value, source=source, prefix=where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise DataFormatError(f"got {value!r}", path=source, field=where, expected="a list")
        inner = args[0] if args else Any
        items = [_build(inner, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise DataFormatError(f"got {value!r}", path=source, field=where, expected="a mapping")
        inner = args[1] if len(args) == 2 else Any
        return {k: _build(inner, v, f"{where}.{k}", source) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise DataFormatError(f"got {value!r}", path=source, field=where,
                                  expected="one of " + ", ".join(repr(a) for a in args))
        return value
    return _check_scalar(value, tp, where, source)


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise with the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise DataFormatError("unknown key", path=source, field=where,
                                  expected="one of " + ", ".join(sorted(names)))
        kwargs[key] = _build(hints[key], value, where, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise DataFormatError(str(e), path=source, field=prefix or None) from None


def load_config(path: str | Path | None, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """``cls`` from a YAML file (None: from the defaults) with dotted ``overrides`` applied on top."""
    if path is None:
        data: dict[str, Any] = {}
        path = Path("<defaults>")
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise DataFormatError(f"invalid YAML: {getattr(e, 'problem', e)}", path=path,
                                  line=mark.line + 1 if mark else None) from None
        if not isinstance(data, dict):
            raise DataFormatError("the top level is not a mapping", path=path, expected="key: value pairs")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(cls, data, source=str(path))


def to_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def save_config(config: Any, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config (plus e.g. library versions) as YAML."""
    data = to_dict(config)
    if extra:
        data = {**data, **extra}
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
