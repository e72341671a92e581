"""Statistics shared by the experiments, on top of scipy.stats.

  * `auroc`: area under the ROC curve (Mann-Whitney U / (n_pos * n_neg));
  * `within_group_auroc`: the same over (positive, negative) pairs of one group only, and
    `within_group_auroc_ci`, its bootstrap interval over groups;
  * `spearman`: Spearman rank correlation (average ranks for ties);
  * `bootstrap_mean_ci`: percentile bootstrap interval of a mean;
  * `percentile_interval`: the same percentiles of any bootstrap distribution.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import stats


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
  """Area under the ROC curve: the Mann-Whitney U of the positives over n_pos * n_neg.

  Ties count one half. `labels` are binary (bool or 0/1). NaN when only one class is present.
  """
  s = np.asarray(scores, np.float64).ravel()
  y = np.asarray(labels).ravel()
  if s.shape != y.shape:
    raise ValueError(f"auroc: {s.size} scores but {y.size} labels; pass one label per score.")
  if s.size == 0:
    raise ValueError("auroc: no scores given.")
  if np.isnan(s).any():
    raise ValueError("auroc: scores contain NaN; drop or fill them first.")
  if not np.isin(y, (0, 1)).all():
    raise ValueError(f"auroc: labels must be binary (bool or 0/1), got values {np.unique(y)[:5]}.")
  y = y.astype(bool)
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  u = stats.mannwhitneyu(s[y], s[~y], method="asymptotic").statistic
  return float(u / (n_pos * n_neg))


def within_group_auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
                       groups: Sequence[int] | np.ndarray) -> float:
  """AUROC over (positive, negative) pairs from the same group only, pooled over groups.

  With groups = questions this asks what search asks of a PRM (paper §5.2): among
  sibling steps of one question, does the correct one score higher? A plain AUROC
  also rewards telling easy questions from hard ones. NaN if no group has both classes.
  """
  wins, pairs = _group_wins(scores, labels, groups, "within_group_auroc")
  return float(wins.sum() / pairs.sum()) if pairs.sum() else float("nan")


def within_group_auroc_ci(scores: Sequence[float] | np.ndarray,
                          labels: Sequence[bool] | np.ndarray, groups: Sequence[int] | np.ndarray,
                          num_boot: int = 2000, *, rng: np.random.Generator,
                          confidence: float = 0.95) -> tuple[float, float]:
  """`(lo, hi)`: percentile bootstrap interval of `within_group_auroc`, resampling groups.

  Groups (questions) are drawn with replacement, each bringing all its pairs, so the
  interval reflects how many questions the figure rests on. NaN when no group has pairs.
  """
  wins, pairs = _group_wins(scores, labels, groups, "within_group_auroc_ci")
  if not pairs.sum():
    return float("nan"), float("nan")
  counts = rng.multinomial(len(pairs), np.full(len(pairs), 1.0 / len(pairs)), size=num_boot)
  drawn = counts @ pairs
  boot = (counts @ wins)[drawn > 0] / drawn[drawn > 0]  # resamples with pairs only
  if not boot.size:
    return float("nan"), float("nan")
  lo, hi = percentile_interval(boot, confidence)
  return float(lo), float(hi)


def _group_wins(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
                groups: Sequence[int] | np.ndarray, caller: str
                ) -> tuple[np.ndarray, np.ndarray]:
  """Per group: positive-over-negative wins (ties one half) and the number of such pairs."""
  s = np.asarray(scores, np.float64).ravel()
  y = np.asarray(labels).ravel().astype(bool)
  g = np.asarray(groups).ravel()
  if not s.shape == y.shape == g.shape:
    raise ValueError(f"{caller}: {s.size} scores, {y.size} labels and {g.size} groups; pass "
                     f"one label and one group per score.")
  keys = np.unique(g)
  wins, pairs = np.zeros(len(keys)), np.zeros(len(keys))
  for i, key in enumerate(keys):
    m = g == key
    n_pos, n_neg = int(y[m].sum()), int((~y[m]).sum())
    if n_pos and n_neg:
      wins[i] = auroc(s[m], y[m]) * n_pos * n_neg
      pairs[i] = n_pos * n_neg
  return wins, pairs


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
  """Spearman rank correlation: Pearson correlation of average ranks.

  NaN when either input is constant (or has fewer than two values, or holds a NaN).
  """
  x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
  if x.shape != y.shape:
    raise ValueError(f"spearman: x has {x.size} values but y has {y.size}; pass pairs.")
  if x.size < 2:
    return float("nan")
  # Not stats.spearmanr: its corrcoef differs from this formula in the last bits, which
  # can flip a 4-decimal rounding of the (often rational) correlation of tied levels.
  rx, ry = stats.rankdata(x), stats.rankdata(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
  return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, num_boot: int = 2000, *,
                      rng: np.random.Generator, confidence: float = 0.95) -> tuple[float, float]:
  """`(lo, hi)`: percentile bootstrap interval of the mean of `values`.

  Draws `num_boot` resamples with replacement in one `rng.integers(0, n, (num_boot, n))`
  call (so calls in sequence on one Generator advance it as that draw does), then takes
  numpy's linear-interpolation percentiles `50 (1 - confidence)` and `50 (1 + confidence)`
  of the resample means, rounded to 10 places so that 0.95 gives exactly 2.5 and 97.5
  (scipy's own interval uses `(1 - confidence) / 2` and another interpolation formula, and
  differs in the last bits). A single value gives `(value, value)`.
  """
  v = np.asarray(values, np.float64).ravel()
  if v.size == 0:
    raise ValueError("bootstrap_mean_ci: no values given.")
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"bootstrap_mean_ci: rng must be a numpy Generator, got {type(rng).__name__}.")
  if not 0 < confidence < 1:
    raise ValueError(f"bootstrap_mean_ci: confidence={confidence} must lie in (0, 1).")
  if v.size == 1:  # scipy needs two values; this is the same (empty) draw
    rng.integers(0, 1, (num_boot, 1))
    return float(v[0]), float(v[0])
  with warnings.catch_warnings():  # NaN values: scipy warns about its interval, unused here
    warnings.simplefilter("ignore", stats.DegenerateDataWarning)
    res = stats.bootstrap((v,), np.mean, n_resamples=num_boot, vectorized=True,
                          method="percentile", confidence_level=confidence, rng=rng)
  lo, hi = percentile_interval(res.bootstrap_distribution, confidence)
  return float(lo), float(hi)


def percentile_interval(samples: Sequence[float] | np.ndarray, confidence: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray]:
  """`(lo, hi)`: percentiles `50 (1 -+ confidence)` of `samples` along axis 0.

  numpy's linear interpolation, as `bootstrap_mean_ci`; the level is rounded to 10 places
  so that 0.95 gives exactly 2.5 and 97.5. `samples` is `[num_boot, ...]`.
  """
  x = np.asarray(samples, np.float64)
  if x.ndim == 0 or x.shape[0] == 0:
    raise ValueError(f"percentile_interval: samples has shape {x.shape}; pass [num_boot, ...].")
  if not 0 < confidence < 1:
    raise ValueError(f"percentile_interval: confidence={confidence} must lie in (0, 1).")
  lo_q = round(50 * (1 - confidence), 10)
  lo, hi = np.percentile(x, [lo_q, 100 - lo_q], axis=0)
  return lo, hi
