"""Diverse verifier tree search, DVTS (Beeching, Tunstall & Rush 2024, extending paper §5.2).

Beam search with budget N and width M, split into N/M independent subtrees of
M rows each. Every subtree starts from M sampled first steps; each round it
keeps only its best step by PRM score and expands it with M next steps (greedy
in the verifier), until its best beam has ended or `max_rounds`. Subtrees never
compete, so the N/M final candidates (the best beam of each subtree) stay
diverse where global beam search collapses onto a few prefixes; the answer is
picked over them by `config.selection` (weighted best-of-N by default).

Budget: every round spends at most N generations (M per open subtree); a
subtree whose best beam has ended is closed and spends nothing more. Counts are
as in `beam.py`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.search import base
from ttc_jax.search import beam


def subtree_pool(m: int, alive: jax.Array, finished: jax.Array,
                 scores: jax.Array) -> tuple[jax.Array, ...]:
  """One problem's next pool: each subtree of M rows keeps its best beam (first on ties).

  If that beam has ended the subtree closes (one finished row, the rest idle);
  otherwise the beam fills the subtree's M rows, all expanding.
  """
  n = alive.shape[0]
  sub = lambda x: x.reshape(n // m, m)
  best = jnp.argmax(jnp.where(sub(alive), sub(scores), -jnp.inf), axis=1)  # [S]
  done = jnp.take_along_axis(sub(finished), best[:, None], axis=1)         # [S, 1]
  first = (jnp.arange(m) == 0)[None, :]
  src = (jnp.arange(n // m) * m + best)[:, None] + jnp.zeros((1, m), jnp.int32)
  new_alive = jnp.where(done, first, True)
  new_finished = done & first
  return (src.reshape(-1), new_alive.reshape(-1), new_finished.reshape(-1),
          (new_alive & ~new_finished).reshape(-1))


def subtree_finals(m: int, alive: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Host-side: the best alive row of each subtree, one final candidate per subtree."""
  s = np.where(alive, scores, -np.inf).reshape(-1, m)
  return np.arange(0, len(alive), m) + np.argmax(s, axis=1)


@base.register("dvts", check=beam.check)  # M | N and N >= M, like beam search
def dvts(prompts: Sequence[Sequence[int]], policy: base.Policy, verifier: base.Verifier,
         budget: int, config: base.SearchConfig, rng: jax.Array) -> base.SearchResult:
  """DVTS with budget N = `budget` in N / M subtrees of width M = `config.beam_width`."""
  max_len = base.validate(prompts, policy, verifier, budget, config)
  tree = beam.Tree(n=int(budget), m=base.beam_width(budget, config), pool=subtree_pool,
                   finals=subtree_finals)
  return beam.tree_search(prompts, policy, verifier, tree, config, rng, max_len)
