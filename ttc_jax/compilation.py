"""Counting XLA compilations, to check that warm runs trigger none (prompt buckets, search)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"
_counters: list["CompileCount"] = []
_registered = False


@dataclasses.dataclass
class CompileCount:
  count: int = 0


def _listener(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == _EVENT:
    for c in _counters:
      c.count += 1


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCount]:
  """`with count_compilations() as c: ...` then `c.count` backend compilations happened."""
  global _registered
  if not _registered:
    jax.monitoring.register_event_duration_secs_listener(_listener)
    _registered = True
  c = CompileCount()
  _counters.append(c)
  try:
    yield c
  finally:
    _counters.remove(c)
