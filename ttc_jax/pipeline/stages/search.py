"""Stage "search": accuracy vs generation budget of every strategy on test questions (paper §5.3).

One grid cell per (strategy, budget), run through `io.sweep.run_grid`, so the
stage is resumable cell by cell and any registered strategy (`search.base.
register`) can be swept by naming it in `config.search.strategies` (a spec,
`search.specs`). Each cell runs the strategy on the same test questions, many
problems per call: problems are cut into chunks whose rows (problems x budget)
stay near `rows_per_batch`, the last chunk padded with copies of its last
problem, so every call of a cell runs one compiled shape. A row keeps
per-question results (correct, candidate accuracy, mean candidate score, exact
counts) for the allocator, beside the accuracy per difficulty level.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Sequence

import jax
import numpy as np

from ttc_jax.io import metrics
from ttc_jax.io import sweep
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import state
from ttc_jax.search import base
from ttc_jax.search import specs
from ttc_jax.tasks import base as tasks

COUNTS = ("samples", "generated_tokens", "verifier_tokens", "budget_used")


def run(r: state.Run, data: state.Data, lm: state.LM,
        verifiers: state.Verifiers) -> dict[str, Any]:
  """Every (strategy, budget) cell not yet in `search.jsonl`; the accuracy table."""
  cfg = r.settings.search
  examples = common.search_examples(r, data)
  policy = base.Policy(lm.sampler, lm.params, r.tokenizer, r.task)
  verifier = verifiers.prm
  setup = common.search_setup(r, examples)
  cells = [{**c, "setup": setup}
           for c in specs.cells(cfg.strategies, cfg.budgets, cfg.search_config())]
  sweep.run_grid(r.path(artifacts.SEARCH), cells,
                 lambda c: run_cell(r, c, examples, policy, verifier), desc="search")
  rows = common.search_rows(r, examples)  # this grid's and earlier grids' cells of this setup
  table = summarize(rows)
  metrics.update_summary(r.workdir, search=table)
  r.log("search", f"{len(rows)} cells on {len(examples)} test questions; accuracy:")
  print(format_table(table), flush=True)
  if any("harder_half" in t for s in table.values() for t in s.values()):
    print("harder half:\n" + format_table(table, "harder_half"), flush=True)
  return table


def run_cell(r: state.Run, cell: dict[str, Any], examples: Sequence[tasks.Example],
             policy: base.Policy, verifier: base.Verifier) -> dict[str, Any]:
  """One strategy at one budget over every problem; per-question results and counts."""
  cfg = r.settings.search
  name, scfg = specs.parse(cell["strategy"], cfg.search_config(mesh=r.mesh))
  search, budget = base.get(name), int(cell["budget"])
  chunk = max(1, cfg.rows_per_batch // budget)
  rng = jax.random.fold_in(jax.random.key(r.seed + 4),
                           zlib.crc32(sweep.cell_key(cell).encode()))
  out: dict[str, list] = {k: [] for k in ("correct", "candidate_accuracy", "mean_score",
                                          *COUNTS)}
  start = time.time()
  for i in range(0, len(examples), chunk):
    part = list(examples[i:i + chunk])
    prompts = [r.tokenizer.encode(e.prompt, bos=True) for e in part]
    prompts += [prompts[-1]] * (chunk - len(prompts))  # one compiled shape per cell
    res = search(prompts, policy, verifier, budget, scfg, jax.random.fold_in(rng, i))
    for q, e in enumerate(part):
      out["correct"].append(int(r.task.is_correct(res.selected[q], e)))
      out["candidate_accuracy"].append(round(float(np.mean([r.task.is_correct(a, e)
                                                            for a in res.answers[q]])), 4))
      out["mean_score"].append(round(float(np.mean(res.scores[q])), 4))
      for k in COUNTS:
        out[k].append(int(getattr(res, k)[q]))
  levels = np.asarray([e.level for e in examples])
  correct = np.asarray(out["correct"], float)
  return {"accuracy": round(float(correct.mean()), 4),
          "by_level": {str(int(lv)): round(float(correct[levels == lv].mean()), 4)
                       for lv in np.unique(levels)},
          "question": [e.question for e in examples], "level": levels.tolist(), **out,
          "wall_s": round(time.time() - start, 2)}


def summarize(rows: list[dict[str, Any]], baseline: str = "best_of_n") -> dict[str, Any]:
  """`{spec: {budget: {'all', level…, 'harder_half', 'easier_half'}}}`.

  The harder half is the half of the questions whose baseline candidates at its
  largest budget are least often correct (an oracle pass@1 estimate from N samples).
  """
  base_rows = [row for row in rows if row["cell"]["strategy"] == baseline]
  hard = None
  if base_rows:
    ref = max(base_rows, key=lambda row: row["cell"]["budget"])
    pass1 = np.asarray(ref["candidate_accuracy"])
    hard = np.zeros(len(pass1), bool)
    hard[np.argsort(pass1, kind="stable")[:len(pass1) // 2]] = True  # ties: question order
  table: dict[str, Any] = {}
  for row in rows:
    entry = {"all": row["accuracy"], **row["by_level"]}
    if hard is not None:
      c = np.asarray(row["correct"], float)
      entry["harder_half"] = round(float(c[hard].mean()), 4)
      entry["easier_half"] = round(float(c[~hard].mean()), 4)
    table.setdefault(row["cell"]["strategy"], {})[str(row["cell"]["budget"])] = entry
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
