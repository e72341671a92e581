"""ttc_jax.stats against verbatim copies of the hand-written code it replaces (the references)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ttc_jax import stats

# ---- references: the previous implementations, verbatim ----


def ref_auroc(scores, labels) -> float:
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
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each tie group
  ranks = avg_rank[inverse]
  return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ref_within_group_auroc(scores, labels, groups) -> float:
  s = np.asarray(scores, np.float64).ravel()
  y = np.asarray(labels).ravel().astype(bool)
  g = np.asarray(groups).ravel()
  if not s.shape == y.shape == g.shape:
    raise ValueError(f"within_group_auroc: {s.size} scores, {y.size} labels and {g.size} "
                     f"groups; pass one label and one group per score.")
  wins = pairs = 0.0
  for key in np.unique(g):
    m = g == key
    n_pos, n_neg = int(y[m].sum()), int((~y[m]).sum())
    if n_pos and n_neg:
      a = ref_auroc(s[m], y[m])
      wins += a * n_pos * n_neg
      pairs += n_pos * n_neg
  return wins / pairs if pairs else float("nan")


def ref_spearman(x, y) -> float:
  rx, ry = ref_ranks(np.asarray(x, np.float64)), ref_ranks(np.asarray(y, np.float64))
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
  return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def ref_ranks(x):
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  starts = np.cumsum(counts) - counts
  return (starts + (counts - 1) / 2)[inverse]


def ref_bootstrap(per, num_boot, rng):
  boot = per[rng.integers(0, len(per), (num_boot, len(per)))].mean(1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return lo, hi


# ---- inputs ----


def _scores(rng, n, kind):
  if kind == "continuous":
    return rng.normal(size=n)
  if kind == "ties":  # few distinct values: most scores tied
    return rng.integers(0, 4, n) / 3.0
  return np.where(rng.random(n) < 0.5, 0.5, rng.normal(size=n))  # one big tie group


KINDS = ("continuous", "ties", "mixed")


def _same(a, b):
  """Bitwise equal (NaN equals NaN), hence equal after any rounding."""
  return (np.isnan(a) and np.isnan(b)) or (a == b and round(a, 4) == round(b, 4))


# ---- auroc ----


@pytest.mark.parametrize("kind", KINDS)
def test_auroc_equals_reference(kind):
  rng = np.random.default_rng(0)
  for n in (2, 3, 7, 50, 1000):
    for _ in range(20):
      s = _scores(rng, n, kind)
      y = rng.random(n) < rng.uniform(0.1, 0.9)
      if not 0 < y.sum() < n:
        y[:2] = True, False
      assert _same(stats.auroc(s, y), ref_auroc(s, y)), (n, kind)
      assert _same(stats.auroc(s, y.astype(int)), ref_auroc(s, y))  # 0/1 labels


def test_auroc_known_values_and_infinities():
  assert stats.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert stats.auroc([0.2, 0.5, 0.5, 0.9], [False, True, False, True]) == 0.875  # one tie
  assert stats.auroc([0.5] * 4, [0, 1, 0, 1]) == 0.5
  assert stats.auroc([0.9, 0.1], [0, 1]) == 0.0
  s, y = [np.inf, -np.inf, 1.0, np.inf, 0.0], [1, 0, 0, 1, 1]
  assert stats.auroc(s, y) == ref_auroc(s, y)


def test_auroc_single_class_is_nan_without_warnings():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert np.isnan(stats.auroc([0.1, 0.2, 0.3], [1, 1, 1]))
    assert np.isnan(stats.auroc([0.1, 0.2], [False, False]))
    assert np.isnan(stats.auroc([0.7], [True]))


@pytest.mark.parametrize("scores,labels", [
    ([0.1, 0.2, 0.3], [0, 1]),            # size mismatch
    ([], []),                             # empty
    ([0.1, np.nan, 0.3], [0, 1, 1]),      # NaN score
    ([0.1, 0.2, 0.3], [0, 1, 2]),         # non-binary labels
    ([0.1, 0.2], [0.5, 1.0]),             # non-binary labels (floats)
])
def test_auroc_errors_match_reference(scores, labels):
  with pytest.raises(ValueError) as want:
    ref_auroc(scores, labels)
  with pytest.raises(ValueError) as got:
    stats.auroc(scores, labels)
  assert str(got.value) == str(want.value)


# ---- within_group_auroc ----


@pytest.mark.parametrize("kind", KINDS)
def test_within_group_auroc_equals_reference(kind):
  rng = np.random.default_rng(1)
  for n, num_groups in ((5, 2), (40, 8), (300, 30), (1000, 5)):
    for _ in range(20):
      s = _scores(rng, n, kind)
      y = rng.random(n) < rng.uniform(0.1, 0.9)  # some groups end up with one class
      g = rng.integers(0, num_groups, n)
      assert _same(stats.within_group_auroc(s, y, g), ref_within_group_auroc(s, y, g))


def test_within_group_auroc_counts_only_pairs_inside_a_group():
  # Across groups the positives score lower (plain AUROC 0.5); inside each they win.
  s, y, g = [0.1, 0.0, 0.9, 0.8], [1, 0, 1, 0], [0, 0, 1, 1]
  assert stats.within_group_auroc(s, y, g) == 1.0
  assert stats.auroc(s, y) == 0.75
  # NaN scores matter only in groups with both classes, as in the reference.
  s = [0.1, 0.0, np.nan, np.nan]
  assert stats.within_group_auroc(s, [1, 0, 1, 1], g) == 1.0
  with pytest.raises(ValueError, match="scores contain NaN"):
    stats.within_group_auroc(s, [1, 0, 1, 0], g)


def test_within_group_auroc_nan_without_a_mixed_group():
  assert np.isnan(stats.within_group_auroc([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], [0, 0, 1, 1]))
  assert np.isnan(stats.within_group_auroc([], [], []))


def test_within_group_auroc_size_mismatch():
  args = [0.1, 0.2, 0.3], [0, 1, 1], [0, 0]
  with pytest.raises(ValueError) as want:
    ref_within_group_auroc(*args)
  with pytest.raises(ValueError) as got:
    stats.within_group_auroc(*args)
  assert str(got.value) == str(want.value)


# ---- spearman ----


@pytest.mark.parametrize("kind", KINDS + ("levels",))
def test_spearman_equals_reference(kind):
  rng = np.random.default_rng(2)
  for n in (2, 3, 10, 100, 500):
    for _ in range(30):
      if kind == "levels":  # difficulty levels 1..5, as `agreement` passes them
        x = rng.integers(1, 6, n)
        y = np.clip(x + rng.integers(-1, 2, n), 1, 5)
      else:
        x = _scores(rng, n, kind)
        y = x + _scores(rng, n, kind)
      assert _same(stats.spearman(x, y), ref_spearman(x, y)), (n, kind)


def test_rankdata_is_the_reference_ranks_plus_one():
  from scipy.stats import rankdata
  rng = np.random.default_rng(3)
  for kind in KINDS:
    x = _scores(rng, 200, kind)
    np.testing.assert_array_equal(rankdata(x) - 1, ref_ranks(x))


def test_spearman_edge_cases():
  assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
  assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
  for x, y in (([3, 3, 3], [1, 2, 3]), ([1, 2, 3], [5, 5, 5]), ([2.0], [7.0])):
    assert np.isnan(stats.spearman(x, y)) and np.isnan(ref_spearman(x, y))
  assert np.isnan(stats.spearman([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]))
  with pytest.raises(ValueError, match="spearman: x has 3 values but y has 2"):
    stats.spearman([1, 2, 3], [1, 2])


# ---- bootstrap_mean_ci ----


def test_bootstrap_reproduces_the_reference_sequence():
  # As step_gains does: one Generator, one interval per revision step.
  for seed in range(5):
    data = np.random.default_rng(100 + seed)
    steps = [data.integers(-1, 2, 37).astype(float),              # paired 0/1 differences
             data.integers(-4, 5, 64) / 4.0,                       # per-problem chain means
             data.normal(size=200)]
    ref_rng, rng = np.random.default_rng(seed), np.random.default_rng(seed)
    for per in steps:
      want = ref_bootstrap(per, 2000, ref_rng)
      got = stats.bootstrap_mean_ci(per, 2000, rng=rng)
      assert got == (float(want[0]), float(want[1]))
      assert [round(v, 4) for v in got] == [round(float(v), 4) for v in want]
    assert rng.bit_generator.state == ref_rng.bit_generator.state


def test_bootstrap_edge_cases_keep_the_sequence():
  ref_rng, rng = np.random.default_rng(7), np.random.default_rng(7)
  for per in (np.array([0.25]), np.zeros(10), np.array([1.0, np.nan, 0.0]), np.array([1.0, 0.0])):
    want = ref_bootstrap(per, 500, ref_rng)
    got = stats.bootstrap_mean_ci(per, 500, rng=rng)
    np.testing.assert_array_equal(got, want)
  assert rng.bit_generator.state == ref_rng.bit_generator.state


def test_bootstrap_other_confidence():
  per = np.random.default_rng(0).normal(size=30)
  boot = per[np.random.default_rng(1).integers(0, 30, (999, 30))].mean(1)
  want = tuple(np.percentile(boot, [5, 95]))
  assert stats.bootstrap_mean_ci(per, 999, rng=np.random.default_rng(1), confidence=0.9) == want


def test_bootstrap_errors():
  with pytest.raises(ValueError, match="no values"):
    stats.bootstrap_mean_ci([], rng=np.random.default_rng(0))
  with pytest.raises(TypeError, match="numpy Generator"):
    stats.bootstrap_mean_ci([1.0, 2.0], rng=0)
  with pytest.raises(ValueError, match="confidence"):
    stats.bootstrap_mean_ci([1.0, 2.0], rng=np.random.default_rng(0), confidence=95)


def test_within_group_auroc_ci_resamples_whole_groups():
  rng = np.random.default_rng(0)
  g = np.repeat(np.arange(40), 6)
  y = np.tile([1, 1, 1, 0, 0, 0], 40)
  # Half the groups rank perfectly, half backwards: 0.5 overall, a wide interval.
  s = np.where((g % 2 == 0), y, 1 - y) + 0.01 * rng.random(g.size)
  point = stats.within_group_auroc(s, y, g)
  lo, hi = stats.within_group_auroc_ci(s, y, g, 1000, rng=np.random.default_rng(1))
  assert lo < point < hi and hi - lo > 0.2
  # Every group alike: each resample gives the same AUROC, so the interval is that point.
  same = np.where(y == 1, 0.9, 0.1) + 0.0 * g
  assert stats.within_group_auroc_ci(same, y, g, 200, rng=np.random.default_rng(1)) == (1.0, 1.0)
  # Four times the groups, the same mix: a narrower interval.
  g4 = np.repeat(np.arange(160), 6)
  s4, y4 = np.where(g4 % 2 == 0, np.tile(y, 4), 1 - np.tile(y, 4)), np.tile(y, 4)
  lo4, hi4 = stats.within_group_auroc_ci(s4, y4, g4, 1000, rng=np.random.default_rng(1))
  assert hi4 - lo4 < 0.7 * (hi - lo)
  assert np.isnan(stats.within_group_auroc_ci([1, 2], [1, 0], [0, 1], rng=rng)).all()
