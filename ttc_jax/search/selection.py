"""Final-answer selection over a set of candidate solutions (paper §5.1).

Majority voting here; verifier-weighted best-of-N joins it with the search issue.
"""

from __future__ import annotations

import collections
from typing import Hashable, Sequence


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
  """The most common non-None answer; ties go to the answer seen first. None if no answer."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  best = max(counts.values())
  return next(a for a in answers if a is not None and counts[a] == best)
