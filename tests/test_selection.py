"""Selection rules on hand-written candidates."""

import pytest

from ttc_jax.search import selection


def test_majority_vote():
  assert selection.majority_vote([3, 5, 5, None, None, None]) == 5
  assert selection.majority_vote([7, 3, 3, 7]) == 7  # tie -> first seen
  assert selection.majority_vote([None, None]) is None


def test_weighted_best_of_n_sums_scores_per_answer():
  answers = [1, 2, 2, 3]
  scores = [0.9, 0.5, 0.5, 0.2]
  assert selection.weighted_best_of_n(answers, scores) == 2  # 1.0 beats 0.9
  assert selection.best_of_n(answers, scores) == 1           # naive: single best
  assert selection.weighted_best_of_n([None, 4], [5.0, 0.1]) == 4


def test_mismatched_lengths_are_a_clear_error():
  with pytest.raises(ValueError, match="one score per candidate"):
    selection.weighted_best_of_n([1, 2], [0.5])
