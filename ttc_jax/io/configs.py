"""Frozen config dataclasses from `ml_collections` sections: one check for unknown and missing keys."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any], name: str,
                 subsections: tuple[str, ...] = (), **extra: Any) -> T:
  """`cls(**section, **extra)`, naming unknown keys (with the valid ones) and missing ones.

  `name` is the section's path in the config (e.g. 'prm.labels'), used in the errors;
  `subsections` are keys of the section the caller has taken out (listed as valid).
  Values that are lists become tuples, so the dataclass stays hashable.
  """
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
  return cls(**values, **extra)
