"""Final-answer selection over a set of candidate solutions (paper §5.1).

Three rules, shared by every search strategy:
  * `majority_vote`: the most common final answer;
  * `best_of_n`: the answer of the single highest-scoring candidate (naive);
  * `weighted_best_of_n`: sum the verifier scores of all candidates sharing a
    final answer and pick the answer with the largest sum (the paper's choice).
Candidates with no parsable answer (None) never win while another answer exists.
"""

from __future__ import annotations

import collections
from typing import Hashable, Sequence

Answer = Hashable | None


def majority_vote(answers: Sequence[Answer]) -> Answer:
  """The most common non-None answer; ties go to the answer seen first. None if no answer."""
  return weighted_best_of_n(answers, [1.0] * len(answers))


def best_of_n(answers: Sequence[Answer], scores: Sequence[float]) -> Answer:
  """The answer of the highest-scoring candidate that has an answer (first on ties)."""
  _check(answers, scores)
  best, best_score = None, float("-inf")
  for a, s in zip(answers, scores):
    if a is not None and s > best_score:
      best, best_score = a, s
  return best


def weighted_best_of_n(answers: Sequence[Answer], scores: Sequence[float]) -> Answer:
  """The answer whose candidates' scores sum highest (first seen on ties)."""
  _check(answers, scores)
  totals: dict[Hashable, float] = collections.defaultdict(float)
  for a, s in zip(answers, scores):
    if a is not None:
      totals[a] += float(s)
  if not totals:
    return None
  top = max(totals.values())
  return next(a for a in answers if a is not None and totals[a] == top)


def _check(answers: Sequence[Answer], scores: Sequence[float]) -> None:
  if len(answers) != len(scores):
    raise ValueError(f"Got {len(answers)} answers but {len(scores)} scores; pass one score "
                     "per candidate.")
