"""Compute-optimal test-time scaling (paper §3, eq. 1; 2-fold CV per difficulty bin as in §3.2).

At each generation budget N, the compute-optimal strategy picks, per difficulty bin, the
strategy (and hyperparameters) with the best accuracy at budget N, and applies it to that
bin's questions. The paper estimates the choice with 2-fold cross-validation inside each
bin: pick on one half of the bin's questions, score on the other half, and vice versa, so
every question is scored by a choice made without it. `bootstrap` resamples the questions
within their (bin, fold) cells and redoes all of it, for intervals of the accuracies and of
`samples_ratio_vs_bon`.

Inputs are plain arrays: `results[strategy][N]` is the `[Q]` per-question correctness (in
[0, 1], the mean over repeats) of a strategy at budget N, for the same Q questions, where N
counts generations as the paper does (e.g. lookahead's rollouts included); strategy keys
are free-form, e.g. "beam/beam_width=4" or "revisions/ratio=4".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from ttc_jax import stats

BASELINE = "best_of_n/selection=weighted"

Results = Mapping[str, Mapping[int, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Allocation:
  """The compute-optimal strategy at one budget N.

  Attributes:
    budget: the generation budget N.
    accuracy: 2-fold cross-validated compute-optimal accuracy over all questions.
    per_bin: bin -> its cross-validated accuracy.
    choices: bin -> `(picked on fold 0, picked on fold 1)`; each is scored on the other fold.
    in_sample_accuracy: the optimistic reference without cross-validation (the "oracle"
      selection): per bin, pick and score on the same questions. Not a fair estimate.
    in_sample_choices: bin -> the strategy picked on all of the bin's questions.
    baseline_accuracy: the baseline's accuracy at N (None when it was not run at N).
    strategies: the candidate strategies measured at N.
  """

  budget: int
  accuracy: float
  per_bin: dict[int, float]
  choices: dict[int, tuple[str, str]]
  in_sample_accuracy: float
  in_sample_choices: dict[int, str]
  baseline_accuracy: float | None
  strategies: tuple[str, ...]


def folds(bins: np.ndarray, seed: int = 0) -> np.ndarray:
  """`[Q]` fold (0 or 1) of each question: each bin split in two halves at random.

  Deterministic given `seed`; within every bin the two folds differ in size by at most one.
  """
  bins = _bins(bins)
  rng = np.random.default_rng(seed)
  fold = np.empty(bins.size, np.int64)
  for b in np.unique(bins):
    members = np.flatnonzero(bins == b)
    fold[rng.permutation(members)] = np.arange(members.size) % 2
  return fold


def compute_optimal(results: Results, bins: np.ndarray, baseline: str = BASELINE,
                    seed: int = 0, fold: np.ndarray | None = None) -> dict[int, Allocation]:
  """Per budget, the compute-optimal allocation over `bins` (paper §3 eq. 1, 2-fold CV).

  Every budget measured by any strategy gets an `Allocation`; at budget N the candidates are
  the strategies measured at N. Ties between candidates go to the baseline, then to the
  first key in sorted order. A fold with no questions (a bin of one question) cannot inform
  a choice, so the baseline (or the first candidate) is used for the other fold.

  Args:
    results: strategy -> budget N -> `[Q]` correctness in [0, 1].
    bins: `[Q]` difficulty level of each question (e.g. `difficulty.oracle_bins`).
    baseline: the strategy to compare against (best-of-N weighted in the paper).
    seed: seeds the fold split (`folds`) when `fold` is None.
    fold: `[Q]` fold (0 or 1) of each question; None for `folds(bins, seed)`.
  """
  bins = _bins(bins)
  _validate(results, bins.size, baseline)
  fold = _fold(fold, bins, seed)
  levels = [int(b) for b in np.unique(bins)]
  budgets = sorted({int(n) for per_budget in results.values() for n in per_budget})
  out = {}
  for n in budgets:
    strategies = tuple(s for s in _preference(results, baseline) if n in results[s])
    table = {s: np.asarray(results[s][n], np.float64) for s in strategies}
    correct = np.empty(bins.size)
    in_sample = np.empty(bins.size)
    per_bin, choices, in_sample_choices = {}, {}, {}
    for b in levels:
      members = bins == b
      picked = tuple(_best(table, members & (fold == f)) for f in (0, 1))
      for f in (0, 1):
        scored = members & (fold == 1 - f)
        correct[scored] = table[picked[f]][scored]
      choices[b] = picked
      per_bin[b] = float(correct[members].mean())
      in_sample_choices[b] = _best(table, members)
      in_sample[members] = table[in_sample_choices[b]][members]
    out[n] = Allocation(
        budget=n, accuracy=float(correct.mean()), per_bin=per_bin, choices=choices,
        in_sample_accuracy=float(in_sample.mean()), in_sample_choices=in_sample_choices,
        baseline_accuracy=float(table[baseline].mean()) if baseline in table else None,
        strategies=strategies)
  return out


def curves(allocations: Mapping[int, Allocation]) -> dict[str, dict[int, float]]:
  """Accuracy vs budget of the compute-optimal (CV), in-sample and baseline strategies."""
  out = {"compute_optimal": {}, "in_sample": {}, "baseline": {}}
  for n, a in sorted(allocations.items()):
    out["compute_optimal"][n] = a.accuracy
    out["in_sample"][n] = a.in_sample_accuracy
    if a.baseline_accuracy is not None:
      out["baseline"][n] = a.baseline_accuracy
  return out


def samples_ratio_vs_bon(optimal: Mapping[int, float], baseline: Mapping[int, float],
                         difficulty_samples: float = 0.0, interpolate: bool = False) -> dict:
  """How many times fewer samples compute-optimal needs to match best-of-N (paper §5, §6).

  The target is the baseline's accuracy at its largest budget B. The match is the smallest
  budget N at which `optimal` reaches the target, and the headline ratio is
  `B / (N + difficulty_samples)` (the paper's "4x fewer samples").

  Args:
    optimal: budget -> compute-optimal accuracy (e.g. `curves(...)["compute_optimal"]`).
    baseline: budget -> best-of-N accuracy.
    difficulty_samples: samples per question spent to estimate difficulty, added to the
      compute-optimal budget. 0 for oracle bins (the paper's convention, which ignores this
      cost); for predicted bins, the samples scored by the verifier to bin each question.
    interpolate: if True, the match is where the accuracy curve, linear in log2(N) between
      consecutive measured budgets, first reaches the target (a fractional N); if False, the
      first measured budget that reaches it. Never extrapolates below the smallest budget.

  Returns:
    A dict with `ratio` and `matched_budget` (None when the target is never reached),
    `effective_budget` (matched budget + difficulty_samples, or None), `target_accuracy`,
    `baseline_budget` (B), `best_accuracy` and `best_budget` (the best compute-optimal
    point, reported whether or not it matches), `difficulty_samples` and `interpolate`.
  """
  opt, base = _curve(optimal, "optimal"), _curve(baseline, "baseline")
  if difficulty_samples < 0 or not math.isfinite(difficulty_samples):
    raise ValueError(f"difficulty_samples={difficulty_samples!r} must be a finite number >= 0.")
  baseline_budget = max(base)
  target = base[baseline_budget]
  budgets = sorted(opt)
  best_budget = max(budgets, key=lambda n: (opt[n], -n))
  matched = None
  for i, n in enumerate(budgets):
    if opt[n] >= target:
      matched = float(n)
      if interpolate and i > 0:
        lo, a_lo = budgets[i - 1], opt[budgets[i - 1]]
        frac = (target - a_lo) / (opt[n] - a_lo)
        matched = float(2 ** (math.log2(lo) + frac * (math.log2(n) - math.log2(lo))))
      break
  effective = None if matched is None else matched + difficulty_samples
  return {"ratio": None if effective is None else baseline_budget / effective,
          "matched_budget": matched, "effective_budget": effective,
          "target_accuracy": target, "baseline_budget": baseline_budget,
          "best_accuracy": opt[best_budget], "best_budget": best_budget,
          "difficulty_samples": float(difficulty_samples), "interpolate": interpolate}


@dataclasses.dataclass(frozen=True)
class Bootstrap:
  """The compute-optimal result over questions resampled within their (bin, fold) cells.

  Attributes:
    ratios: `[num_boot]` `samples_ratio_vs_bon` of each resample; 0 where it never matched.
    ratio_ci: `(lo, hi)` percentile interval of `ratios`.
    never_matched_fraction: the fraction of resamples whose compute-optimal curve never
      reaches the (resampled) baseline's accuracy at its largest budget.
    accuracy_ci: budget -> `(lo, hi)` of the compute-optimal (2-fold CV) accuracy.
    baseline_accuracy_ci: budget -> `(lo, hi)` of the baseline's accuracy.
    confidence: the intervals' level, e.g. 0.95.
  """

  ratios: np.ndarray
  ratio_ci: tuple[float, float]
  never_matched_fraction: float
  accuracy_ci: dict[int, tuple[float, float]]
  baseline_accuracy_ci: dict[int, tuple[float, float]]
  confidence: float


def resample_counts(bins: np.ndarray, fold: np.ndarray, num_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
  """`[num_boot, Q]` how often each question is drawn: with replacement within each (bin, fold).

  Every resample keeps each cell's size, so a question never crosses folds and the bins
  keep their sizes (docs/design.md, "Compute-optimal"). Cells are drawn in sorted (bin,
  fold) order, so the counts are a function of the Generator's state.
  """
  counts = np.zeros((num_boot, bins.size), np.int64)
  rows = np.arange(num_boot)[:, None]
  for members in _cells(bins, fold):
    k = members.size
    if k:
      draws = rows * k + rng.integers(0, k, (num_boot, k))
      counts[:, members] = np.bincount(draws.ravel(), minlength=num_boot * k).reshape(-1, k)
  return counts


def bootstrap(results: Results, bins: np.ndarray, baseline: str = BASELINE, seed: int = 0, *,
              num_boot: int = 1000, difficulty_samples: float = 0.0, interpolate: bool = False,
              fold: np.ndarray | None = None, confidence: float = 0.95) -> Bootstrap:
  """Percentile intervals of `compute_optimal` and `samples_ratio_vs_bon` over questions.

  Each resample redraws every (bin, fold) cell's questions with replacement
  (`resample_counts`), redoes the 2-fold choice per bin and budget on the resampled folds,
  the compute-optimal and baseline curves, and the samples ratio (with `difficulty_samples`
  and `interpolate` as in `samples_ratio_vs_bon`); a resample that never matches counts as
  ratio 0. Vectorised over resamples: per cell, one `[num_boot, k] @ [k, columns]` product
  gives every (strategy, budget)'s resampled sum. Deterministic given `seed`, which seeds
  the fold split (when `fold` is None) and, as `default_rng([seed, 1])`, the resampling.
  """
  bins = _bins(bins)
  _validate(results, bins.size, baseline)
  if isinstance(num_boot, bool) or not isinstance(num_boot, (int, np.integer)) or num_boot < 1:
    raise ValueError(f"num_boot={num_boot!r} must be an int >= 1 (e.g. 1000).")
  fold = _fold(fold, bins, seed)
  counts = resample_counts(bins, fold, num_boot, np.random.default_rng([seed, 1]))
  optimal, base = _resampled_curves(results, bins, fold, counts, baseline)
  ratios = np.zeros(num_boot)
  for r in range(num_boot):
    match = samples_ratio_vs_bon({n: a[r] for n, a in optimal.items()},
                                 {n: a[r] for n, a in base.items()}, difficulty_samples,
                                 interpolate)
    ratios[r] = match["ratio"] or 0.0
  lo, hi = stats.percentile_interval(ratios, confidence)
  interval = lambda curve: {n: tuple(float(x) for x in stats.percentile_interval(a, confidence))
                            for n, a in curve.items()}
  return Bootstrap(ratios=ratios, ratio_ci=(float(lo), float(hi)),
                   never_matched_fraction=float(np.mean(ratios == 0)),
                   accuracy_ci=interval(optimal), baseline_accuracy_ci=interval(base),
                   confidence=confidence)


def _resampled_curves(results: Results, bins: np.ndarray, fold: np.ndarray, counts: np.ndarray,
                      baseline: str) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
  """Budget -> `[R]` compute-optimal (2-fold CV) and baseline accuracies of each resample.

  The same choice rule as `compute_optimal` (highest sum on the picking fold, ties to the
  preference order; an empty fold picks the first candidate), and the baseline's sum is
  added up in the same cell order, so a policy that picks the baseline everywhere equals it.
  """
  order = _preference(results, baseline)
  columns = [(s, n) for s in order for n in sorted(results[s])]
  where = {key: i for i, key in enumerate(columns)}
  table = np.stack([np.asarray(results[s][n], np.float64) for s, n in columns], 1)  # [Q, K]
  cells = _cells(bins, fold)
  weights = counts.astype(np.float64)
  sums = np.stack([weights[:, c] @ table[c] for c in cells])  # [cells, R, K]
  # Rounded so that float noise in equal sums cannot break a tie against the preference.
  keys = np.round(sums, 9)
  pairs = [(i + f, i + 1 - f) for i in range(0, len(cells), 2) for f in (0, 1)]  # (pick, score)
  optimal, base = {}, {}
  for n in sorted({n for s in order for n in results[s]}):
    cand = np.asarray([where[s, n] for s in order if n in results[s]])
    total = np.zeros(counts.shape[0])
    for pick, score in pairs:
      best = keys[pick][:, cand].argmax(1)
      total += np.take_along_axis(sums[score][:, cand], best[:, None], 1)[:, 0]
    optimal[n] = total / bins.size
    if n in results[baseline]:
      base[n] = sum(sums[score][:, where[baseline, n]] for _, score in pairs) / bins.size
  return optimal, base


def _best(table: Mapping[str, np.ndarray], mask: np.ndarray) -> str:
  """The strategy with the highest mean over `mask` (first in `table` order on ties)."""
  keys = list(table)
  if not mask.any():
    return keys[0]
  means = [table[s][mask].mean() for s in keys]
  return keys[int(np.argmax(means))]


def _cells(bins: np.ndarray, fold: np.ndarray) -> list[np.ndarray]:
  """The question indices of each (bin, fold) cell: sorted bins, fold 0 then 1."""
  return [np.flatnonzero((bins == b) & (fold == f)) for b in np.unique(bins) for f in (0, 1)]


def _fold(fold: np.ndarray | None, bins: np.ndarray, seed: int) -> np.ndarray:
  if fold is None:
    return folds(bins, seed)
  fold = np.asarray(fold)
  if fold.shape != bins.shape or not np.isin(fold, (0, 1)).all():
    raise ValueError(f"fold must be a [Q={bins.size}] array of 0/1 like folds(bins); got shape "
                     f"{fold.shape}, values {np.unique(fold)[:5].tolist()}.")
  return fold.astype(np.int64)


def _preference(results: Results, baseline: str) -> list[str]:
  return [baseline] + sorted(s for s in results if s != baseline)


def _bins(bins: np.ndarray) -> np.ndarray:
  bins = np.asarray(bins)
  if bins.ndim != 1 or bins.size == 0 or not np.issubdtype(bins.dtype, np.integer):
    raise ValueError(f"bins must be a non-empty 1-D int array [Q] of difficulty levels; got "
                     f"shape {bins.shape}, dtype {bins.dtype}.")
  return bins


def _validate(results: Results, q: int, baseline: str) -> None:
  if not results:
    raise ValueError("results is empty; pass strategy -> budget -> [Q] correctness.")
  if baseline not in results:
    raise ValueError(f"baseline={baseline!r} is not in results; strategies: {sorted(results)}.")
  for s, per_budget in results.items():
    if not per_budget:
      raise ValueError(f"Strategy {s!r} has no budgets.")
    for n, c in per_budget.items():
      if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Strategy {s!r}: budget {n!r} must be an int >= 1.")
      c = np.asarray(c, np.float64)
      if c.shape != (q,):
        raise ValueError(f"results[{s!r}][{n}] has shape {c.shape}; every strategy needs one "
                         f"correctness value per question, shape ({q},) like bins.")
      if not (np.isfinite(c).all() and (c >= 0).all() and (c <= 1).all()):
        raise ValueError(f"results[{s!r}][{n}] must hold correctness in [0, 1]; got min "
                         f"{np.nanmin(c)}, max {np.nanmax(c)} (or NaN).")


def _curve(curve: Mapping[int, float], name: str) -> dict[int, float]:
  if not curve:
    raise ValueError(f"The {name} curve is empty; pass budget -> accuracy.")
  out = {}
  for n, acc in curve.items():
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f"{name} curve: budget {n!r} must be an int >= 1.")
    if not math.isfinite(acc):
      raise ValueError(f"{name} curve: accuracy at budget {n} is {acc}; must be finite.")
    out[int(n)] = float(acc)
  return out
