"""What revisions do to correctness (paper §6.1): per-step pass@1, its gains, flips, repeats.

Every function takes grids `[problem][chain][step]` of per-attempt values (e.g.
`sequential.Grids.correct`), so the measurements stay apart from how chains are made.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ttc_jax import stats


def step_accuracy(correct_grid) -> list[float]:
  """pass@1 at revision step i: mean correctness of attempt i over every chain that has one."""
  depth = max(len(c) for chains in correct_grid for c in chains)
  return [float(np.mean([c[i] for chains in correct_grid for c in chains if len(c) > i]))
          for i in range(depth)]


def flip_rates(correct_grid) -> dict[str, float | int]:
  """How revisions change correctness between consecutive attempts of a chain.

  `correct_to_incorrect`: of attempts that are correct and get revised, the
  fraction whose revision is incorrect (paper §6.1: about 38%);
  `incorrect_to_correct`: the same for incorrect attempts.
  """
  pairs = [(c[i], c[i + 1]) for chains in correct_grid for c in chains for i in range(len(c) - 1)]
  right = [b for a, b in pairs if a]
  wrong = [b for a, b in pairs if not a]
  return {"correct_to_incorrect": _rate([not v for v in right]),
          "incorrect_to_correct": _rate(wrong),
          "num_correct_revised": len(right), "num_incorrect_revised": len(wrong)}


def independent_flip_rates(correct_grid) -> dict[str, float | None]:
  """The flip rates of a sampler that ignores its previous attempts: the no-revision baseline.

  Each problem's attempts are taken as independent draws with its step-0 pass@1
  `p` (over all its chains), so revising a correct attempt gives an incorrect one
  with probability `1 - p`, an incorrect one a correct one with probability `p`;
  averaged over the very pairs `flip_rates` counts. A revision model that reads
  its context usefully flips fewer correct and more incorrect attempts than this.
  """
  to_wrong, to_right = [], []
  for chains in correct_grid:
    p = float(np.mean([c[0] for c in chains if len(c)]))
    for c in chains:
      for a in c[:-1]:
        if a:
          to_wrong.append(1.0 - p)
        else:
          to_right.append(p)
  return {"correct_to_incorrect": _rate(to_wrong), "incorrect_to_correct": _rate(to_right)}


def repeat_rates(attempt_grid, correct_grid) -> dict[str, float | None]:
  """How often a revision repeats the previous attempt verbatim, after a right and a wrong one.

  `attempt_grid` holds comparable values per attempt (its text or token bytes).
  A revision model that can tell its right attempts from its wrong ones keeps the
  former (`after_correct` near 1) and rewrites the latter (`after_incorrect` near 0).
  """
  after = {True: [], False: []}
  for texts, oks in zip(attempt_grid, correct_grid):
    for t, c in zip(texts, oks):
      for i in range(len(t) - 1):
        after[bool(c[i])].append(t[i + 1] == t[i])
  return {"after_correct": _rate(after[True]), "after_incorrect": _rate(after[False])}


def step_gains(correct_grid, steps: Sequence[int], num_boot: int = 2000,
               seed: int = 0) -> dict[str, dict[str, Any]]:
  """pass@1 at revision step i minus step 0, with a 95% bootstrap interval over problems.

  Paired: per problem, the mean over its chains that reach step i of
  `correct[i] - correct[0]`; then the mean over problems, resampled with
  replacement `num_boot` times for the interval. Steps no chain reaches are left out.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for i in steps:
    per = [np.mean([float(c[i]) - float(c[0]) for c in chains if len(c) > i])
           for chains in correct_grid if any(len(c) > i for c in chains)]
    if not per:
      continue
    per = np.asarray(per)
    lo, hi = stats.bootstrap_mean_ci(per, num_boot=num_boot, rng=rng)
    out[str(i)] = {"mean": round(float(per.mean()), 4),
                   "ci95": [round(float(lo), 4), round(float(hi), 4)], "problems": len(per)}
  return out


def _rate(values: Sequence[float]) -> float | None:
  """Mean of `values` rounded to 4 places; None when there is nothing to average."""
  return round(float(np.mean(values)), 4) if len(values) else None
