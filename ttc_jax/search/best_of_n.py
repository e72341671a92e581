"""Best-of-N (paper §5.1): N full solutions per problem, scored by the PRM, one picked.

Each prompt is prefilled once and broadcast to its N samples (stop at EOS). The
PRM scores every step of every sample in one full pass; a solution's score is
the verifier's aggregation of its step scores ('last' in the paper), and the
answer is picked by `config.selection`: weighted best-of-N (the paper's choice),
naive best-of-N or majority vote.

Counts: `samples` = N per problem; `generated_tokens` = the samples' lengths;
`verifier_tokens` = prompt + solution tokens of every sample (the full pass
encodes each sample's prompt; padding is not counted; an open PRM counts its own
format's rows, `Verifier.score_rows`); `budget_used` = N.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.search import base
from ttc_jax.tokenizers import base as tokenizers


@base.register("best_of_n")
def best_of_n(prompts: Sequence[Sequence[int]], policy: base.Policy, verifier: base.Verifier,
              budget: int, config: base.SearchConfig, rng: jax.Array) -> base.SearchResult:
  """N = `budget` independent solutions per problem, the answer picked by the verifier."""
  max_len = base.validate(prompts, policy, verifier, budget, config)
  sampler, tok, n = policy.sampler, policy.tokenizer, int(budget)
  padded = base.pad_problems(prompts, config.mesh)
  state, out = sampler.sample(policy.params, padded, rng, num_samples=n, max_len=max_len,
                              stop="eos", temperature=config.temperature, top_k=config.top_k,
                              top_p=config.top_p, mesh=config.mesh)
  rows, lengths, gen = mesh_lib.to_host((state.tokens, out.lengths, out.tokens))
  lengths = lengths.astype(np.int64)
  prompt_len = np.repeat([len(p) for p in padded], n).astype(np.int64)

  # Step ends by the rule PRM labels use; a fixed width (a step has >= 1 token) keeps the
  # verifier's compiled shape constant.
  ends = tokenizers.find_step_ends(rows, tok, policy.task.step_delimiter, prompt_len,
                                   max_steps=max_len)
  # The verifier's own rows (default: these; an open PRM's format, search/open_prm.py).
  vrows, vends, vcount = verifier.score_rows(rows, ends, prompt_len, lengths)
  inputs = (vrows, vends)
  if config.mesh is not None:
    inputs = mesh_lib.shard_batch(inputs, config.mesh)
  step_scores = mesh_lib.to_host(verifier.step_scores(*map(jnp.asarray, inputs)))
  num_steps = (ends >= 0).sum(1)

  q = len(prompts)
  result = base.SearchResult.empty(
      samples=np.full((q,), n), generated_tokens=lengths.reshape(-1, n).sum(1)[:q],
      verifier_tokens=np.asarray(vcount, np.int64).reshape(-1, n).sum(1)[:q],
      budget_used=np.full((q,), n))
  for i in range(q):
    sl = slice(i * n, (i + 1) * n)
    s = int(num_steps[sl].max(initial=0))
    per_step = np.where(ends[sl, :s] >= 0, step_scores[sl, :s], np.nan).astype(np.float32)
    result.add_problem(gen[sl, :int(lengths[sl].max(initial=0))], lengths[sl], per_step,
                       num_steps[sl], verifier, policy, config)
  return result
