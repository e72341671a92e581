"""Frozen config dataclasses from `ml_collections` sections: one check for unknown and missing keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any], name: str,
                 subsections: tuple[str, ...] = (), **extra: Any) -> T:
  """`cls(**section, **extra)`, naming unknown keys (with the valid ones) and missing ones.

  `name` is the section's path in the config (e.g. 'prm.labels'), used in the errors;
  `subsections` are keys of the section the caller has taken out (listed as valid).
  Values that are lists become tuples, so the dataclass stays hashable.
  """
  if not hasattr(section, "keys"):
    raise ValueError(f"config.{name}={short_repr(section)} must be a section of keys (a "
                     f"ConfigDict or dict), not a {type(section).__name__}.")
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(section).items()}
  valid = [f.name for f in dataclasses.fields(cls) if f.name not in extra] + list(subsections)
  unknown = sorted(set(values) - set(valid) | set(values) & set(subsections))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.{name}; valid keys: {sorted(valid)}.")
  missing = [f.name for f in dataclasses.fields(cls)
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
             and f.name not in values and f.name not in extra]
  if missing:
    raise ValueError(f"config.{name} is missing required key(s) {missing}.")
  hints = typing.get_type_hints(cls)
  for key, value in values.items():
    if not _fits(value, hints.get(key, Any)):
      raise ValueError(f"config.{name}.{key}={short_repr(value)} has type "
                       f"{type(value).__name__}; it must be {_describe(hints[key])}.")
  return cls(**values, **extra)


def _fits(value: Any, hint: Any) -> bool:
  """Whether `value` fits the annotation `hint` (ints count as floats; bools only as bools)."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any:
    return True
  if origin in (typing.Union, types.UnionType):
    return any(_fits(value, a) for a in args)
  if hint is type(None):
    return value is None
  if origin is tuple:
    return isinstance(value, tuple) and all(
        _fits(v, args[0] if len(args) == 2 and args[1] is Ellipsis else a)
        for v, a in zip(value, args if args[-1:] != (Ellipsis,) else [args[0]] * len(value)))
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(hint, type):
    return isinstance(value, hint)
  return True


def _describe(hint: Any) -> str:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return " or ".join(_describe(a) for a in args)
  if origin is tuple:
    return f"a tuple of {_describe(args[0])}" if args else "a tuple"
  return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def short_repr(value: Any, limit: int = 60) -> str:
  """`repr(value)` on one line, cut to `limit` characters (error messages stay one line)."""
  text = " ".join(repr(value).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."
