"""Question difficulty bins (paper §3.2 and §5: five levels by quantiles of difficulty).

Level 1 is the easiest fifth of the questions and level 5 the hardest, as in the paper:

  * `oracle_bins`: quantiles of each question's pass@1 over many samples (the paper uses
    2048), which needs the ground-truth answers;
  * `predicted_bins`: quantiles of each question's mean final verifier score over its
    samples, which needs no ground truth (the paper's "model-predicted difficulty").

`quantile_bins` does the binning for both and never splits tied questions; `agreement`
compares two binnings (e.g. predicted against oracle).
"""

from __future__ import annotations

import numpy as np

from ttc_jax import stats


def oracle_bins(correct: np.ndarray, num_bins: int = 5) -> np.ndarray:
  """`[Q]` levels in 1..num_bins from `[Q, S]` per-sample correctness (paper §3.2).

  A question's difficulty is its pass@1, the fraction of its S samples that are correct;
  level 1 holds the highest pass@1. Ties are handled as in `quantile_bins`.
  """
  correct = _matrix(correct, "correct")
  if correct.dtype != bool and not np.isin(correct, (0, 1)).all():
    raise ValueError("correct must hold booleans (or 0/1), one per (question, sample); got "
                     f"values such as {correct[~np.isin(correct, (0, 1))][:3].tolist()}.")
  return quantile_bins(correct.astype(np.float64).mean(axis=1), num_bins)


def predicted_bins(final_scores: np.ndarray, num_bins: int = 5) -> np.ndarray:
  """`[Q]` levels in 1..num_bins from `[Q, S]` final verifier scores (paper §5, predicted).

  A question's predicted easiness is the mean final PRM score of its S samples; level 1
  holds the highest mean. No ground truth is used. Ties are handled as in `quantile_bins`.
  """
  final_scores = _matrix(final_scores, "final_scores").astype(np.float64)
  if not np.isfinite(final_scores).all():
    raise ValueError("final_scores must be finite; found NaN or inf (score every sample, or "
                     "drop the question).")
  return quantile_bins(final_scores.mean(axis=1), num_bins)


def quantile_bins(easiness: np.ndarray, num_bins: int = 5) -> np.ndarray:
  """`[Q]` levels in 1..num_bins by quantiles of `easiness` (higher = easier = lower level).

  Bins are as equal-sized as possible subject to one rule on ties: questions with the same
  value always share a level (an arbitrary split, e.g. by question index, would make the
  levels depend on the data's order). Boundaries therefore fall only between distinct
  values; among all such partitions into `num_bins` consecutive levels we take the one with
  (1) the smallest sum of squared deviations of the level sizes from Q / num_bins (which
  never leaves a level empty while another holds two tie groups: splitting it is cheaper),
  then (2) boundaries closest (least squares) to the ideal quantile positions
  j·Q / num_bins. Without ties this is the usual quantile split (sizes differ by at
  most one); a large tie group (e.g. many questions with pass@1 = 1 from few samples) makes
  its level larger and its neighbours smaller, and with fewer distinct values than levels
  the groups land at the levels of their quantiles (two equal halves -> levels 2 and 4).
  """
  num_bins = _num_bins(num_bins)
  easiness = np.asarray(easiness, dtype=np.float64)
  if easiness.ndim != 1 or easiness.size == 0:
    raise ValueError(f"easiness must be a non-empty 1-D array [Q]; got shape {easiness.shape}.")
  if not np.isfinite(easiness).all():
    raise ValueError("easiness must be finite; found NaN or inf.")
  # Tie groups in easiest-first order; a level boundary may sit at any group edge.
  _, group, counts = np.unique(-easiness, return_inverse=True, return_counts=True)
  edges = np.concatenate([[0], np.cumsum(counts)])
  cuts = _balanced_cuts(edges, num_bins)
  return (1 + np.searchsorted(cuts, edges[:-1], side="right"))[group].astype(np.int64)


def _balanced_cuts(edges: np.ndarray, num_bins: int) -> np.ndarray:
  """The `num_bins - 1` boundary positions (taken from `edges`) of the best partition.

  Dynamic programming over the group edges with a lexicographic cost (exact integers held
  in float64): (1) sum of (K·size - Q)², (2) sum of (K·cut_j - j·Q)², then the earliest edge.
  """
  k, q = num_bins, int(edges[-1])
  pos = edges.astype(np.float64)

  def size_cost(size: np.ndarray) -> np.ndarray:
    return (k * size - q) ** 2

  # State after j levels: cost of splitting positions [0, pos[g]) into j levels.
  primary, secondary = size_cost(pos), np.zeros_like(pos)
  back = []
  for j in range(1, k):  # place cut j (start of level j+1) at pos[h], h <= g
    new_p, new_s = np.empty_like(pos), np.empty_like(pos)
    arg = np.empty(pos.size, np.int64)
    for g in range(pos.size):
      tot_p = primary[:g + 1] + size_cost(pos[g] - pos[:g + 1])
      tot_s = secondary[:g + 1] + (k * pos[:g + 1] - j * q) ** 2
      tot_s = np.where(tot_p == tot_p.min(), tot_s, np.inf)
      arg[g] = np.argmin(tot_s)
      new_p[g], new_s[g] = tot_p[arg[g]], tot_s[arg[g]]
    primary, secondary = new_p, new_s
    back.append(arg)
  cuts, g = [], pos.size - 1
  for arg in reversed(back):
    g = arg[g]
    cuts.append(edges[g])
  return np.asarray(cuts[::-1], np.int64)


def agreement(a: np.ndarray, b: np.ndarray, num_bins: int | None = None) -> dict:
  """How well two binnings of the same questions agree (e.g. predicted vs oracle, paper §5).

  Returns a dict with `num_questions`, `exact` (fraction in the same level), `within_one`
  (fraction at most one level apart), `spearman` (rank correlation of the levels, average
  ranks for ties; NaN when either binning is constant) and `confusion`, a `[num_bins,
  num_bins]` int array counting questions at level i+1 in `a` (rows) and j+1 in `b` (cols).
  `num_bins` defaults to the largest level seen.
  """
  a, b = np.asarray(a), np.asarray(b)
  if a.ndim != 1 or a.shape != b.shape or a.size == 0:
    raise ValueError(f"a and b must be non-empty 1-D level arrays of the same length; got "
                     f"shapes {a.shape} and {b.shape}.")
  for name, x in (("a", a), ("b", b)):
    if not np.issubdtype(x.dtype, np.integer) or x.min() < 1:
      raise ValueError(f"{name} must hold integer levels >= 1; got dtype {x.dtype}, "
                       f"min {x.min()}.")
  k = int(max(a.max(), b.max())) if num_bins is None else _num_bins(num_bins)
  if max(a.max(), b.max()) > k:
    raise ValueError(f"Levels go up to {max(a.max(), b.max())} but num_bins={k}.")
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (a - 1, b - 1), 1)
  gap = np.abs(a.astype(np.int64) - b)
  return {"num_questions": int(a.size), "exact": float(np.mean(gap == 0)),
          "within_one": float(np.mean(gap <= 1)), "spearman": stats.spearman(a, b),
          "confusion": confusion}


def _matrix(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"{name} must be a non-empty 2-D array [questions, samples]; got shape "
                     f"{x.shape}.")
  return x


def _num_bins(num_bins: int) -> int:
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f"num_bins={num_bins!r} must be an int >= 1 (the paper uses 5).")
  return int(num_bins)
