"""Difficulty bins, compute-optimal allocation and the FLOPs exchange on synthetic data."""

import math

import numpy as np
import pytest

from ttc_jax.allocator import compute_optimal as co
from ttc_jax.allocator import difficulty, flops

# ---- difficulty ----


def test_oracle_bins_are_equal_quantiles_easiest_first():
  # Question i is correct on 10 - i of 10 samples: pass@1 falls with i, no ties.
  correct = np.arange(10)[::-1, None] >= np.arange(10)[None, :]
  assert correct.mean(1).tolist() == [1.0, .9, .8, .7, .6, .5, .4, .3, .2, .1]
  np.testing.assert_array_equal(difficulty.oracle_bins(correct),
                                [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
  np.testing.assert_array_equal(difficulty.oracle_bins(correct[::-1]),
                                [5, 5, 4, 4, 3, 3, 2, 2, 1, 1])
  # Seven questions in five bins: sizes differ by at most one.
  sizes = np.bincount(difficulty.quantile_bins(np.arange(7.0)), minlength=6)[1:]
  assert sorted(sizes) == [1, 1, 1, 2, 2]


def test_ties_share_a_bin_and_bins_stay_balanced():
  # 200 always-solved, 100 distinct, 200 never-solved questions, shuffled.
  rng = np.random.default_rng(0)
  easiness = np.r_[np.ones(200), np.linspace(0.9, 0.1, 100), np.zeros(200)]
  perm = rng.permutation(easiness.size)
  bins = difficulty.quantile_bins(easiness[perm])
  assert set(bins[easiness[perm] == 1]) == {1}
  assert set(bins[easiness[perm] == 0]) == {5}
  assert np.bincount(bins, minlength=6)[1:].tolist() == [200, 33, 34, 33, 200]
  # Fewer distinct values than bins: groups sit at their quantiles' levels.
  np.testing.assert_array_equal(difficulty.quantile_bins([1, 1, 1, 0, 0, 0]),
                                [2, 2, 2, 4, 4, 4])
  np.testing.assert_array_equal(difficulty.quantile_bins(np.zeros(4)), [3, 3, 3, 3])
  # On random coarse values: ties never split, easier never at a higher level, and as
  # many non-empty levels as there are distinct values (up to 5).
  for _ in range(50):
    values = rng.integers(0, rng.integers(1, 9), size=rng.integers(1, 60)) / 4
    bins = difficulty.quantile_bins(values)
    for v in np.unique(values):
      assert len(set(bins[values == v])) == 1
    assert (np.diff(bins[np.argsort(-values, kind="stable")]) >= 0).all()
    assert len(np.unique(bins)) == min(len(np.unique(values)), 5)


def test_predicted_bins_use_mean_score():
  scores = np.array([[0.9, 0.7], [0.1, 0.1], [0.5, 0.6], [0.2, 0.4], [1.0, 1.0]])
  np.testing.assert_array_equal(difficulty.predicted_bins(scores), [2, 5, 3, 4, 1])
  with pytest.raises(ValueError, match="finite"):
    difficulty.predicted_bins(np.array([[0.5, np.nan]]))


def test_bad_inputs_are_clear_errors():
  with pytest.raises(ValueError, match="num_bins=0"):
    difficulty.oracle_bins(np.ones((3, 2), bool), num_bins=0)
  with pytest.raises(ValueError, match=r"2-D array \[questions, samples\]"):
    difficulty.oracle_bins(np.ones(3, bool))
  with pytest.raises(ValueError, match="booleans"):
    difficulty.oracle_bins(np.array([[0.5, 1.0]]))


def test_agreement():
  a = np.array([1, 2, 3, 4, 5, 1])
  b = np.array([1, 3, 3, 2, 5, 2])
  out = difficulty.agreement(a, b)
  assert out["num_questions"] == 6
  assert out["exact"] == pytest.approx(3 / 6)
  assert out["within_one"] == pytest.approx(5 / 6)
  assert out["confusion"].shape == (5, 5) and out["confusion"].sum() == 6
  assert out["confusion"][0, 0] == 1 and out["confusion"][0, 1] == 1
  assert out["confusion"][3, 1] == 1
  # Spearman with ties, checked against the rank-Pearson definition by hand.
  assert difficulty.agreement(a, a)["spearman"] == pytest.approx(1.0)
  assert difficulty.agreement(a, 6 - a)["spearman"] == pytest.approx(-1.0)
  ra = np.array([0.5, 2, 3, 4, 5, 0.5])      # average ranks of a
  rb = np.array([0, 3.5, 3.5, 1.5, 5, 1.5])  # average ranks of b
  assert out["spearman"] == pytest.approx(np.corrcoef(ra, rb)[0, 1])
  assert math.isnan(difficulty.agreement(a, np.ones(6, int))["spearman"])
  with pytest.raises(ValueError, match="same length"):
    difficulty.agreement(a, b[:3])


# ---- compute-optimal ----


def _two_regime_results():
  """A wins on easy questions (bin 1), B on hard ones (bin 2); the baseline is middling."""
  q = 40
  bins = np.repeat([1, 2], q // 2)
  easy = bins == 1

  def acc(e, h):
    return np.where(easy, e, h)

  results = {
      co.BASELINE: {4: acc(0.6, 0.5), 16: acc(0.7, 0.55)},
      "beam/beam_width=4": {4: acc(1.0, 0.2), 16: acc(1.0, 0.3)},
      "lookahead/k=1": {4: acc(0.3, 0.9), 16: acc(0.35, 0.95)},
  }
  return results, bins


def test_compute_optimal_picks_per_bin_and_beats_every_strategy():
  results, bins = _two_regime_results()
  alloc = co.compute_optimal(results, bins, seed=3)
  assert sorted(alloc) == [4, 16]
  a4 = alloc[4]
  assert a4.choices == {1: ("beam/beam_width=4",) * 2, 2: ("lookahead/k=1",) * 2}
  assert a4.in_sample_choices == {1: "beam/beam_width=4", 2: "lookahead/k=1"}
  assert a4.accuracy == pytest.approx((1.0 + 0.9) / 2)
  assert a4.per_bin == pytest.approx({1: 1.0, 2: 0.9})
  assert a4.baseline_accuracy == pytest.approx(0.55)
  for s, per_budget in results.items():
    assert a4.accuracy > per_budget[4].mean(), s
  assert alloc[16].accuracy == pytest.approx((1.0 + 0.95) / 2)
  curve = co.curves(alloc)
  assert curve["baseline"] == pytest.approx({4: 0.55, 16: 0.625})
  assert curve["compute_optimal"] == pytest.approx({4: 0.95, 16: 0.975})


def test_cross_validation_scores_on_the_other_fold():
  # One bin of two questions, one per fold: A solves only q0, B only q1. In-sample picks
  # either and gets 0.5; each fold's pick fails on the other fold, so CV accuracy is 0.
  results = {co.BASELINE: {1: np.array([0.0, 0.0])},
             "a": {1: np.array([1.0, 0.0])}, "b": {1: np.array([0.0, 1.0])}}
  alloc = co.compute_optimal(results, np.array([1, 1]))[1]
  assert alloc.accuracy == 0.0
  assert alloc.in_sample_accuracy == 0.5
  assert set(alloc.choices[1]) == {"a", "b"}


def test_ties_and_missing_budgets_prefer_the_baseline():
  same = np.full(6, 0.5)
  results = {"z": {2: same, 8: same}, co.BASELINE: {2: same}, "a": {2: same}}
  alloc = co.compute_optimal(results, np.array([1, 1, 1, 2, 2, 2]))
  assert alloc[2].choices == {1: (co.BASELINE,) * 2, 2: (co.BASELINE,) * 2}
  assert alloc[8].strategies == ("z",) and alloc[8].baseline_accuracy is None


def test_folds_are_disjoint_covering_balanced_and_seeded():
  bins = np.repeat([1, 2, 3, 4, 5], [7, 8, 1, 0, 20])
  f = co.folds(bins, seed=0)
  assert set(np.unique(f)) <= {0, 1} and f.shape == bins.shape  # each question in one fold
  for b in np.unique(bins):
    sizes = np.bincount(f[bins == b], minlength=2)
    assert abs(sizes[0] - sizes[1]) <= 1
  np.testing.assert_array_equal(f, co.folds(bins, seed=0))
  assert not np.array_equal(f, co.folds(bins, seed=1))


def test_compute_optimal_rejects_bad_input():
  results, bins = _two_regime_results()
  with pytest.raises(ValueError, match="baseline='nope' is not in results"):
    co.compute_optimal(results, bins, baseline="nope")
  with pytest.raises(ValueError, match=r"shape \(40,\)"):
    co.compute_optimal(results, bins[:10])
  bad = dict(results, extra={4: np.full(40, 1.5)})
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    co.compute_optimal(bad, bins)


BON = {4: 0.50, 16: 0.60, 64: 0.70, 256: 0.80}


def test_samples_ratio_first_matching_budget():
  optimal = {4: 0.60, 16: 0.75, 64: 0.82, 256: 0.85}
  out = co.samples_ratio_vs_bon(optimal, BON)
  assert out["target_accuracy"] == 0.80 and out["baseline_budget"] == 256
  assert out["matched_budget"] == 64 and out["ratio"] == pytest.approx(4.0)
  assert out["best_accuracy"] == 0.85 and out["best_budget"] == 256
  # Difficulty estimation costs 16 samples per question on the compute-optimal side.
  out = co.samples_ratio_vs_bon(optimal, BON, difficulty_samples=16)
  assert out["effective_budget"] == 80 and out["ratio"] == pytest.approx(256 / 80)


def test_samples_ratio_interpolates_in_log2_budget():
  optimal = {4: 0.60, 16: 0.75, 64: 0.82, 256: 0.85}
  out = co.samples_ratio_vs_bon(optimal, BON, interpolate=True)
  n = 2 ** (4 + (0.80 - 0.75) / (0.82 - 0.75) * 2)  # between log2 16 = 4 and log2 64 = 6
  assert out["matched_budget"] == pytest.approx(n)
  assert out["ratio"] == pytest.approx(256 / n)
  # Already above target at the smallest budget: no extrapolation below it.
  out = co.samples_ratio_vs_bon({4: 0.9, 16: 0.95}, BON, interpolate=True)
  assert out["matched_budget"] == 4 and out["ratio"] == 64


def test_samples_ratio_never_matches():
  out = co.samples_ratio_vs_bon({4: 0.55, 16: 0.79, 64: 0.70}, BON, interpolate=True)
  assert out["ratio"] is None and out["matched_budget"] is None
  assert out["effective_budget"] is None
  assert out["best_accuracy"] == 0.79 and out["best_budget"] == 16
  with pytest.raises(ValueError, match="difficulty_samples=-1"):
    co.samples_ratio_vs_bon(BON, BON, difficulty_samples=-1)



def test_compute_optimal_takes_an_explicit_fold():
  # Bin 1: "a" solves q0 only, "b" q1 only. Whichever fold holds q0 picks "a", scored on q1.
  results = {co.BASELINE: {1: np.zeros(2)}, "a": {1: np.array([1.0, 0.0])},
             "b": {1: np.array([0.0, 1.0])}}
  bins = np.array([1, 1])
  assert co.compute_optimal(results, bins, fold=np.array([0, 1]))[1].choices == {1: ("a", "b")}
  assert co.compute_optimal(results, bins, fold=np.array([1, 0]))[1].choices == {1: ("b", "a")}
  two, b2 = _two_regime_results()
  assert co.compute_optimal(two, b2, seed=3) == co.compute_optimal(two, b2, fold=co.folds(b2, 3))
  with pytest.raises(ValueError, match=r"fold must be a \[Q=2\] array of 0/1"):
    co.compute_optimal(results, bins, fold=np.array([0, 2]))


# ---- bootstrap over questions ----


def _noisy_results(q_per_bin=40, seed=0):
  """Five bins of Bernoulli questions; three strategies scaling with N, each best somewhere."""
  rng = np.random.default_rng(seed)
  bins = np.repeat(np.arange(1, 6), q_per_bin)
  easy = np.linspace(0.9, 0.1, 5)[bins - 1]
  skill = {co.BASELINE: np.zeros(5), "beam/beam_width=4": np.array([.1, .1, 0, -.1, -.1]),
           "lookahead/k=1": np.array([-.1, -.1, 0, .1, .1])}
  results = {s: {n: (rng.random(bins.size) < np.clip(easy + k[bins - 1] + .03 * np.log2(n), 0, 1)
                     ).astype(float) for n in (1, 4, 16, 64)} for s, k in skill.items()}
  return results, bins


def test_resampling_stays_within_bin_and_fold_cells():
  bins = np.repeat([1, 2, 3], [7, 1, 12])
  fold = co.folds(bins, seed=0)
  counts = co.resample_counts(bins, fold, 200, np.random.default_rng(0))
  assert counts.shape == (200, bins.size) and counts.min() >= 0
  for b in (1, 2, 3):
    for f in (0, 1):
      cell = (bins == b) & (fold == f)
      assert (counts[:, cell].sum(1) == cell.sum()).all(), (b, f)  # cell and bin sizes kept
  assert (counts != 1).any()  # it does resample
  np.testing.assert_array_equal(counts, co.resample_counts(bins, fold, 200,
                                                           np.random.default_rng(0)))


def test_resampled_curves_without_resampling_equal_compute_optimal():
  results, bins = _noisy_results()
  fold = co.folds(bins, seed=2)
  optimal, base = co._resampled_curves(results, bins, fold, np.ones((1, bins.size), int),
                                       co.BASELINE)
  for n, a in co.compute_optimal(results, bins, seed=2).items():
    assert optimal[n][0] == pytest.approx(a.accuracy, abs=1e-12)
    assert base[n][0] == pytest.approx(a.baseline_accuracy, abs=1e-12)


def test_bootstrap_contains_the_point_estimate_and_is_seeded():
  results, bins = _noisy_results()
  curve = co.curves(co.compute_optimal(results, bins, seed=1))
  point = co.samples_ratio_vs_bon(curve["compute_optimal"], curve["baseline"], 4)["ratio"]
  boot = co.bootstrap(results, bins, seed=1, num_boot=300, difficulty_samples=4)
  assert boot.ratios.shape == (300,) and 0 <= boot.never_matched_fraction < 1
  assert boot.ratio_ci[0] <= point <= boot.ratio_ci[1]
  assert boot.ratio_ci[0] < boot.ratio_ci[1]
  for n, acc in curve["compute_optimal"].items():
    assert boot.accuracy_ci[n][0] <= acc <= boot.accuracy_ci[n][1], n
    assert boot.baseline_accuracy_ci[n][0] <= curve["baseline"][n] <= \
        boot.baseline_accuracy_ci[n][1], n
  again = co.bootstrap(results, bins, seed=1, num_boot=300, difficulty_samples=4)
  np.testing.assert_array_equal(boot.ratios, again.ratios)
  assert boot.accuracy_ci == again.accuracy_ci
  other = co.bootstrap(results, bins, seed=2, num_boot=300, difficulty_samples=4)
  assert other.accuracy_ci != boot.accuracy_ci
  with pytest.raises(ValueError, match="num_boot=0 must be an int >= 1"):
    co.bootstrap(results, bins, num_boot=0)


def test_bootstrap_widens_with_fewer_questions():
  width = lambda b: np.mean([hi - lo for lo, hi in b.accuracy_ci.values()])
  many = co.bootstrap(*_noisy_results(q_per_bin=80), num_boot=300)
  few = co.bootstrap(*_noisy_results(q_per_bin=10), num_boot=300)
  assert width(few) > 1.5 * width(many)  # ~ sqrt(8) wider in theory


def test_bootstrap_collapses_when_every_question_is_the_same():
  q = 30
  const = lambda *acc: {n: np.full(q, a) for n, a in zip((1, 4, 16), acc)}
  results = {co.BASELINE: const(0.2, 0.5, 0.8), "a": const(0.3, 0.85, 0.9),
             "b": const(0.1, 0.2, 0.3)}
  bins = np.repeat([1, 2, 3], 10)
  boot = co.bootstrap(results, bins, num_boot=50, difficulty_samples=1, interpolate=True)
  point = co.samples_ratio_vs_bon({1: 0.3, 4: 0.85, 16: 0.9}, {1: 0.2, 4: 0.5, 16: 0.8}, 1,
                                  interpolate=True)["ratio"]
  assert boot.ratio_ci == pytest.approx((point, point)) and boot.never_matched_fraction == 0
  for ci, want in ((boot.accuracy_ci, (.3, .85, .9)), (boot.baseline_accuracy_ci, (.2, .5, .8))):
    assert sorted(ci) == [1, 4, 16]
    np.testing.assert_allclose([ci[n] for n in (1, 4, 16)], np.repeat(want, 2).reshape(3, 2))


def test_never_matched_fraction_is_one_when_cross_validation_cannot_reach_the_baseline():
  # In each bin the baseline solves exactly fold 0's questions and "x" fold 1's: each fold
  # picks the strategy that fails the other fold, in every resample (cells are kept).
  bins = np.repeat([1, 2], 10)
  fold = np.tile([0, 1], 10)
  results = {co.BASELINE: {4: (fold == 0) * 1.0, 16: (fold == 0) * 1.0},
             "x": {4: (fold == 1) * 1.0, 16: (fold == 1) * 1.0}}
  assert co.compute_optimal(results, bins, fold=fold)[16].accuracy == 0.0
  boot = co.bootstrap(results, bins, num_boot=100, fold=fold)
  assert boot.never_matched_fraction == 1.0 and boot.ratio_ci == (0.0, 0.0)
  assert (boot.ratios == 0).all()
  assert boot.baseline_accuracy_ci[16] == (0.5, 0.5)

# ---- FLOPs exchange ----


def test_flops_formulas_by_hand():
  assert flops.pretrain_flops(1e9, 2e12) == 6 * 1e9 * 2e12
  assert flops.inference_flops(1e9, 5e10) == 1e20
  assert flops.inference_flops(1e9, 5e10, count_verifier=True) == 2e20
  assert flops.total_flops(10, 100, 50) == 6000 + 1000
  # M = 14: k = 14 + 3·13 / R.
  assert flops.matching_multiplier(14, 0.16) == pytest.approx(14 + 243.75)
  assert flops.matching_multiplier(14, 0.79) == pytest.approx(14 + 39 / 0.79)
  assert flops.matching_multiplier(14, 22) == pytest.approx(14 + 39 / 22)
  assert flops.matching_multiplier(14, 22, count_verifier=True) == pytest.approx(
      (14 + 39 / 22) / 2)
  assert flops.matching_multiplier(1, 0.5) == 1.0  # same model: no extra compute
  for verifier in (False, True):
    k = flops.matching_multiplier(14, 0.79, verifier)
    assert flops.equivalent_param_ratio(k, 0.79, verifier) == pytest.approx(14)
  # A verifier 5x the policy (a 7B PRM beside a 1.5B policy) leaves k / 6, not k / 2.
  assert flops.inference_flops(1e9, 5e10, count_verifier=True, n_verifier=5e9) == 6e20
  assert flops.matching_multiplier(14, 22, True, verifier_ratio=5) == pytest.approx(
      (14 + 39 / 22) / 6)
  for v in (0.5, 1.0, 5.0):
    k = flops.matching_multiplier(14, 0.79, True, v)
    assert flops.equivalent_param_ratio(k, 0.79, True, v) == pytest.approx(14)
  with pytest.raises(ValueError, match="verifier_ratio=0"):
    flops.matching_multiplier(14, 0.79, True, 0)
  with pytest.raises(ValueError, match="param_ratio=0.5"):
    flops.matching_multiplier(0.5, 1.0)
  with pytest.raises(ValueError, match="r=0"):
    flops.matching_multiplier(14, 0)


def test_exchange_table_matches_total_flops():
  rows = flops.exchange_table(n_small=1e9, n_large=14e9, d_pretrain=1e12)
  assert [(r["variant"], r["r"]) for r in rows] == [
      ("policy", 0.16), ("policy", 0.79), ("policy", 22.0),
      ("policy+verifier", 0.16), ("policy+verifier", 0.79), ("policy+verifier", 22.0)]
  first = rows[0]
  assert first["param_ratio"] == pytest.approx(14)
  assert first["multiplier"] == pytest.approx(257.75)
  assert first["d_inference"] == pytest.approx(0.16e12)
  assert first["inference_tokens"] == pytest.approx(257.75 * 0.16e12)
  # By hand: 6·1e9·1e12 + 2·1e9·(257.75·0.16e12) = 14·(6e21 + 2·1e9·0.16e12).
  assert first["small_flops"] == pytest.approx(6e21 + 2e9 * 257.75 * 0.16e12)
  assert first["large_flops"] == pytest.approx(14 * (6e21 + 2e9 * 0.16e12))
  for row in rows:
    assert row["small_flops"] == pytest.approx(row["large_flops"])
  assert [r["verifier_ratio"] for r in rows] == [0, 0, 0, 1, 1, 1]
  with pytest.raises(ValueError, match="n_small=0"):
    flops.exchange_table(0, 1, 1)


def test_exchange_table_charges_the_verifiers_own_size():
  """Issue 18 item 4: a PRM 3x the policy's size costs 3x the policy's FLOPs per scored token."""
  same = flops.exchange_table(n_small=1e9, n_large=14e9, d_pretrain=1e12)
  big = flops.exchange_table(n_small=1e9, n_large=14e9, d_pretrain=1e12, n_verifier=3e9)
  for s, b in zip(same, big):
    if s["variant"] == "policy":
      assert b == s
      continue
    assert b["verifier_ratio"] == pytest.approx(3)
    assert b["multiplier"] == pytest.approx(s["multiplier"] * 2 / 4)
    # The small model's spend, its verifier at its own size, equals the larger model's.
    k, d = b["multiplier"], b["d_inference"]
    assert b["small_flops"] == pytest.approx(6e9 * 1e12 + 2 * (1e9 + 3e9) * k * d)
    assert b["small_flops"] == pytest.approx(b["large_flops"])


def test_measured_inference_flops():
  out = flops.measured_inference_flops([100, 0], [300, 10], n_policy=1e6, n_verifier=2e6)
  np.testing.assert_allclose(out, [2e6 * 100 + 4e6 * 300, 4e6 * 10])
  with pytest.raises(ValueError, match="same shape"):
    flops.measured_inference_flops([1, 2], [1], 1, 1)
