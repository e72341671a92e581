"""Lookahead search (paper §5.2): beam search that scores a step by looking k steps ahead.

Each newly sampled step is rolled out greedily (temperature 0) for up to k more
steps, and the PRM's prediction at the end of that rollout scores the step;
the rollout is then dropped (the pure `DecodeState` / `ScoreState` of the step
itself are kept) and beam search selects as usual. A rollout that reaches the
end of the solution stops there; a step that ends the solution is scored as
is. With k = 0 this is beam search.

Budget: a rollout step is a generation too, so each round costs up to
N·(k+1) generations (paper: "cost N × (k + 1)"). Given a generation budget B,
the search runs N = B / (k+1) beams, so it spends at most B per round, like
beam search at budget B; `samples`, `generated_tokens` and `verifier_tokens`
include every rollout step.
"""

from __future__ import annotations

from typing import Sequence

import jax

from ttc_jax.search import base
from ttc_jax.search import beam


def num_beams(budget: int, config: base.SearchConfig) -> int:
  """N = B / (k+1) rows for a generation budget B; raises unless it divides and fits M."""
  k = config.lookahead
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f"lookahead={k!r} must be an int >= 0 (paper: k in {{1, 3}}; 0 is beam "
                     f"search).")
  base.validate_budget(budget)
  if budget % (k + 1):
    raise ValueError(f"lookahead search with k={k} spends N·(k+1) generations per round, so "
                     f"the budget B={budget} must be a multiple of k+1={k + 1} "
                     f"(e.g. B={budget - budget % (k + 1) or k + 1}).")
  n = budget // (k + 1)
  try:
    base.beam_width(n, config)
  except ValueError as e:
    raise ValueError(f"lookahead search with k={k} runs N = B/(k+1) = {n} beams for budget "
                     f"B={budget}: {e}") from None
  return n


def check(budget: int, config: base.SearchConfig) -> None:
  num_beams(budget, config)


@base.register("lookahead", check=check)
def lookahead_search(prompts: Sequence[Sequence[int]], policy: base.Policy,
                     verifier: base.Verifier, budget: int, config: base.SearchConfig,
                     rng: jax.Array) -> base.SearchResult:
  """Lookahead search with k = `config.lookahead` at generation budget B = `budget`."""
  max_len = base.validate(prompts, policy, verifier, budget, config)
  n = num_beams(budget, config)
  tree = beam.Tree(n=n, m=base.beam_width(n, config), pool=beam.beam_pool,
                   finals=beam.all_alive, lookahead=config.lookahead)
  return beam.tree_search(prompts, policy, verifier, tree, config, rng, max_len)
