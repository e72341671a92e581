"""Strategy specs: a registered strategy and `SearchConfig` overrides in one string (paper §5.3).

`name` or `name/field=value,field=value` over `SearchConfig` fields, e.g.
`beam/beam_width=sqrt` or `lookahead/lookahead=3`; sweeps, the allocator and
reports name strategies this way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ttc_jax.search import base

FIXED = ("mesh",)  # set by the caller, not by a spec


def _value(text: str) -> Any:
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def parse(spec: str, config: base.SearchConfig) -> tuple[str, base.SearchConfig]:
  """`'beam/beam_width=4'` -> `('beam', config with beam_width=4)`; clear errors otherwise."""
  name, _, fields = spec.partition("/")
  if name not in base.registered():
    raise ValueError(f"search.strategies: unknown search strategy {name!r} in {spec!r}; "
                     f"registered: {base.registered()}.")
  valid = sorted(f.name for f in dataclasses.fields(base.SearchConfig) if f.name not in FIXED)
  overrides = {}
  for item in filter(None, fields.split(",")):
    key, eq, value = item.partition("=")
    if not eq or key not in valid:
      raise ValueError(f"search.strategies: {item!r} in {spec!r} is not field=value over "
                       f"SearchConfig fields {valid}.")
    overrides[key] = _value(value)
  return name, dataclasses.replace(config, **overrides)


def cells(strategies: Sequence[str], budgets: Sequence[int],
          config: base.SearchConfig) -> list[dict[str, Any]]:
  """The (strategy, budget) cells each strategy can run; the others are left out."""
  out = []
  for spec in strategies:
    name, scfg = parse(spec, config)
    for b in budgets:
      try:
        base.check_budget(name, b, scfg)
      except ValueError:
        continue  # e.g. beam search with N < M, or M = sqrt(N) for N not square
      out.append({"strategy": spec, "budget": b})
  return out
