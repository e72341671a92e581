"""The main job's "search" stage: accuracy vs generation budget for every strategy (paper §5.3).

One grid cell per (strategy, budget), run through `sweep.run_grid`, so the
stage is resumable cell by cell and any registered strategy (`search.base.
register`) can be swept by naming it. A strategy is named by a spec string,
`name` or `name/field=value,field=value` over `SearchConfig` fields, e.g.
`beam/beam_width=sqrt` or `lookahead/lookahead=3`.

Each cell runs the strategy on the same test questions, many problems per call:
problems are cut into chunks whose rows (problems x budget) stay near
`rows_per_batch`, the last chunk padded with copies of its last problem, so
every call of a cell runs one compiled shape. A row keeps per-question results
(correct, candidate accuracy, mean candidate score, exact counts) for the
allocator, beside the accuracy per difficulty level.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from typing import Any, Sequence

import jax
import numpy as np

from ttc_jax.data import arithmetic
from ttc_jax.experiments import sweep
from ttc_jax.search import base

_FIXED = ("answer_fn", "mesh")  # set by the job, not by a spec


@dataclasses.dataclass(frozen=True)
class SearchSweepConfig:
  """Settings of the search stage (config section `search`)."""

  num_questions: int = 200
  budgets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
  strategies: tuple[str, ...] = ("best_of_n", "beam/beam_width=4", "beam/beam_width=sqrt",
                                 "lookahead/lookahead=1", "dvts/beam_width=4")
  rows_per_batch: int = 1024
  temperature: float = 1.0
  max_step_tokens: int = 16
  max_rounds: int = 40

  def __post_init__(self):
    if self.num_questions < 1:
      raise ValueError(f"search.num_questions={self.num_questions} must be >= 1.")
    if not self.budgets or any(not isinstance(b, int) or b < 1 for b in self.budgets):
      raise ValueError(f"search.budgets={self.budgets!r} must be ints >= 1 (e.g. 1, 2, 4 … 256).")
    if self.rows_per_batch < 1:
      raise ValueError(f"search.rows_per_batch={self.rows_per_batch} must be >= 1.")
    if not self.strategies:
      raise ValueError("search.strategies is empty; name at least one, e.g. 'best_of_n'.")
    for spec in self.strategies:
      parse_strategy(spec, self.search_config())  # unknown names and fields fail here

  def search_config(self, **overrides: Any) -> base.SearchConfig:
    return base.SearchConfig(temperature=self.temperature, max_step_tokens=self.max_step_tokens,
                             max_rounds=self.max_rounds, **overrides)


def _value(text: str) -> Any:
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def parse_strategy(spec: str, config: base.SearchConfig) -> tuple[str, base.SearchConfig]:
  """`'beam/beam_width=4'` -> `('beam', config with beam_width=4)`; clear errors otherwise."""
  name, _, fields = spec.partition("/")
  if name not in base.registered():
    raise ValueError(f"search.strategies: unknown search strategy {name!r} in {spec!r}; "
                     f"registered: {base.registered()}.")
  valid = sorted(f.name for f in dataclasses.fields(base.SearchConfig) if f.name not in _FIXED)
  overrides = {}
  for item in filter(None, fields.split(",")):
    key, eq, value = item.partition("=")
    if not eq or key not in valid:
      raise ValueError(f"search.strategies: {item!r} in {spec!r} is not field=value over "
                       f"SearchConfig fields {valid}.")
    overrides[key] = _value(value)
  return name, dataclasses.replace(config, **overrides)


def cells(cfg: SearchSweepConfig) -> list[dict[str, Any]]:
  """The (strategy, budget) cells each strategy can run; the others are left out."""
  out = []
  for spec in cfg.strategies:
    name, scfg = parse_strategy(spec, cfg.search_config())
    for b in cfg.budgets:
      try:
        base.check_budget(name, b, scfg)
      except ValueError:
        continue  # e.g. beam search with N < M, or M = sqrt(N) for N not square
      out.append({"strategy": spec, "budget": b})
  return out


def run_cell(cell: dict[str, Any], problems: Sequence[arithmetic.Problem], policy: base.Policy,
             verifier: base.Verifier, cfg: SearchSweepConfig, mesh, seed: int) -> dict[str, Any]:
  """One strategy at one budget over every problem; per-question results and counts."""
  name, scfg = parse_strategy(cell["strategy"], cfg.search_config(mesh=mesh))
  search, budget = base.get(name), int(cell["budget"])
  tok = policy.tokenizer
  chunk = max(1, cfg.rows_per_batch // budget)
  rng = jax.random.fold_in(jax.random.key(seed), zlib.crc32(sweep.cell_key(cell).encode()))
  fields = ("correct", "candidate_accuracy", "mean_score", "samples", "generated_tokens",
            "verifier_tokens", "budget_used")
  out: dict[str, list] = {k: [] for k in fields}
  start = time.time()
  for i in range(0, len(problems), chunk):
    part = list(problems[i:i + chunk])
    prompts = [tok.encode(p.prompt, bos=True) for p in part]
    prompts += [prompts[-1]] * (chunk - len(prompts))  # one compiled shape per cell
    res = search(prompts, policy, verifier, budget, scfg, jax.random.fold_in(rng, i))
    for q, p in enumerate(part):
      out["correct"].append(int(res.selected[q] == p.answer))
      out["candidate_accuracy"].append(round(float(np.mean([a == p.answer
                                                            for a in res.answers[q]])), 4))
      out["mean_score"].append(round(float(np.mean(res.scores[q])), 4))
      for k in fields[3:]:
        out[k].append(int(getattr(res, k)[q]))
  levels = np.asarray([p.level for p in problems])
  correct = np.asarray(out["correct"], float)
  return {"accuracy": round(float(correct.mean()), 4),
          "by_level": {str(int(lv)): round(float(correct[levels == lv].mean()), 4)
                       for lv in np.unique(levels)},
          "question": [p.question for p in problems], "level": levels.tolist(), **out,
          "wall_s": round(time.time() - start, 2)}


def summarize(rows: list[dict[str, Any]], baseline: str = "best_of_n") -> dict[str, Any]:
  """`{spec: {budget: {'all', level…, 'harder_half', 'easier_half'}}}` plus the halves' split.

  The harder half is the half of the questions whose baseline candidates at its
  largest budget are least often correct (an oracle pass@1 estimate from N samples).
  """
  base_rows = [r for r in rows if r["cell"]["strategy"] == baseline]
  hard = None
  if base_rows:
    ref = max(base_rows, key=lambda r: r["cell"]["budget"])
    pass1 = np.asarray(ref["candidate_accuracy"])
    hard = np.zeros(len(pass1), bool)
    hard[np.argsort(pass1, kind="stable")[:len(pass1) // 2]] = True  # ties: question order
  table: dict[str, Any] = {}
  for r in rows:
    entry = {"all": r["accuracy"], **r["by_level"]}
    if hard is not None:
      c = np.asarray(r["correct"], float)
      entry["harder_half"] = round(float(c[hard].mean()), 4)
      entry["easier_half"] = round(float(c[~hard].mean()), 4)
    table.setdefault(r["cell"]["strategy"], {})[str(r["cell"]["budget"])] = entry
  return table


def format_table(table: dict[str, Any], column: str = "all") -> str:
  budgets = sorted({int(b) for t in table.values() for b in t})
  width = max(len(s) for s in table) + 2
  lines = [f"{'strategy':<{width}}" + "".join(f"{b:>7}" for b in budgets)]
  for spec, t in table.items():
    lines.append(f"{spec:<{width}}" + "".join(
        f"{t[str(b)][column]:7.3f}" if str(b) in t and column in t[str(b)] else f"{'-':>7}"
        for b in budgets))
  return "\n".join(lines)
