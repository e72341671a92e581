"""PRM-guided beam search over solution steps (paper §5.2).

With budget N and beam width M, per problem: sample N first steps, score each
with the PRM, keep the top N/M, expand each with M next steps, and repeat until
every beam has ended or `max_rounds` steps (40 in the paper); the final pick is
weighted best-of-N over the final beams. A beam's score is the verifier's
aggregation of its step scores ('last': the PRM's prediction at its newest step).

Everything is incremental: each prompt is prefilled once (policy KV cache and
PRM cache) and broadcast to its N rows; a round decodes one step per row from
the kept `DecodeState` and the PRM encodes only the new step from the kept
`ScoreState` (`gather` keeps the parents' rows; nothing is re-encoded). All
problems share one batch of N * num_problems rows, so every round runs the same
compiled shapes.

Budget (DESIGN.md "Budget fairness"): a *generation* is one row decoding one
step; every round spends at most N generations per problem. A beam that ends
(EOS or the length limit) stays in the pool as a final candidate, is never
expanded, and keeps its row: with F finished beams the round keeps
P = min((N - F) // M, active beams) parents and decodes P * M children, so the
N - F - P * M leftover rows stay idle (their share is not re-spent on other
beams). When P = 0 (fewer than M rows left) the active beams stop growing and
join the final pool as they are. The pool never holds more than N beams.

Counts: `samples` = generations (row-steps decoded, discarded beams included);
`generated_tokens` = tokens those generations produced; `verifier_tokens` = the
prompt (encoded once per problem) plus every generated token (each encoded once
by the PRM; block padding not counted).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax.models import reward
from ttc_jax.search import base


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _next_pool(n: int, m: int, alive: np.ndarray, finished: np.ndarray,
               scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """One problem's N slots for the next round: `(source rows, alive, finished, expand)`.

  Finished beams keep a slot; the top P active beams (stable on ties) fill M slots
  each; the rest of the slots are idle copies (not alive, never decoded).
  """
  fin = np.flatnonzero(alive & finished)
  act = np.flatnonzero(alive & ~finished)
  k = min((n - len(fin)) // m, len(act))
  if k == 0:  # nothing can grow: keep the pool as it is
    return np.arange(n), alive, finished, np.zeros((n,), bool)
  parents = act[np.argsort(-scores[act], kind="stable")[:k]]
  idle = n - len(fin) - k * m
  src = np.concatenate([fin, np.repeat(parents, m), np.full((idle,), fin[0] if len(fin)
                                                            else parents[0])])
  new_alive = np.arange(n) < len(fin) + k * m
  new_finished = np.arange(n) < len(fin)
  return src, new_alive, new_finished, new_alive & ~new_finished


@base.register("beam")
def beam_search(prompts: Sequence[Sequence[int]], policy: base.Policy, verifier: base.Verifier,
                budget: int, config: base.SearchConfig, rng: jax.Array) -> base.SearchResult:
  """Beam search with budget N = `budget` and width M = `config.beam_width` (paper §5.2)."""
  max_len = base.validate(prompts, policy, verifier, budget, config)
  m = base.beam_width(budget, config)
  n, num_problems = int(budget), len(prompts)
  b = n * num_problems
  sampler, tok = policy.sampler, policy.tokenizer

  toks, lens = sampler.pad_prompts(prompts, max_len)
  toks, lens = jnp.asarray(toks), jnp.asarray(lens)
  rows = jnp.asarray(np.repeat(np.arange(num_problems), n))  # problem-major: row = q * N + j
  state = sampler.prefill(policy.params, toks, lens, max_len).gather(rows)
  # The PRM writes each step as a block of max_step_tokens slots past the row's end.
  score_state = verifier.prefill(toks, lens, max_len + config.max_step_tokens).gather(rows)

  prompt_len = np.array([len(p) for p in prompts], np.int64)
  samples = np.zeros((num_problems,), np.int64)
  generated = np.zeros((num_problems,), np.int64)
  verified = prompt_len.copy()
  alive = np.ones((b,), bool)
  finished = np.zeros((b,), bool)
  expand = np.ones((b,), bool)
  hist = np.full((b, config.max_rounds), np.nan, np.float32)  # per-step scores
  num_steps = np.zeros((b,), np.int64)

  for r in range(config.max_rounds):
    state = state.replace(done=jnp.asarray(~expand))
    state, out = sampler.decode(policy.params, state, jax.random.fold_in(rng, r),
                                max_new_tokens=config.max_step_tokens, stop="step",
                                temperature=config.temperature, top_k=config.top_k,
                                top_p=config.top_p)
    score_state, logit = verifier.extend(score_state, out.tokens, out.lengths)
    lengths = np.asarray(out.lengths).astype(np.int64)
    assert not lengths[~expand].any(), "a row outside the beam generated tokens"
    samples += expand.reshape(num_problems, n).sum(1)  # <= N: one row per slot
    generated += lengths.reshape(num_problems, n).sum(1)
    verified += lengths.reshape(num_problems, n).sum(1)
    hist[expand, num_steps[expand]] = _sigmoid(np.asarray(logit)[expand])
    num_steps += expand
    finished |= expand & np.asarray(state.done)
    if r + 1 == config.max_rounds:
      break

    scores = reward.aggregate(hist, num_steps, verifier.aggregation)
    pools = [_next_pool(n, m, alive[q * n:(q + 1) * n], finished[q * n:(q + 1) * n],
                        scores[q * n:(q + 1) * n]) for q in range(num_problems)]
    expand = np.concatenate([e for *_, e in pools])
    if not expand.any():
      break
    idx = np.concatenate([s + q * n for q, (s, *_) in enumerate(pools)])
    alive = np.concatenate([a for _, a, _, _ in pools])
    finished = np.concatenate([f for _, _, f, _ in pools])
    state, score_state = state.gather(jnp.asarray(idx)), score_state.gather(jnp.asarray(idx))
    hist, num_steps = hist[idx], num_steps[idx]

  return _result(state, hist, num_steps, alive, prompt_len, n, tok, verifier, config,
                 samples, generated, verified)


def _result(state, hist, num_steps, alive, prompt_len, n, tok, verifier, config, samples,
            generated, verified) -> base.SearchResult:
  """The final pool of each problem (its alive rows) and the selected answers."""
  rows, positions = np.asarray(state.tokens), np.asarray(state.positions)
  result = base.SearchResult(tokens=[], lengths=[], texts=[], answers=[], step_scores=[], scores=[],
                             selected=[], samples=samples, generated_tokens=generated,
                             verifier_tokens=verified)
  for q, start in enumerate(prompt_len):
    keep = q * n + np.flatnonzero(alive[q * n:(q + 1) * n])
    lengths = positions[keep] - start
    width = int(lengths.max(initial=0))
    gen = np.full((len(keep), width), tok.pad_id, np.int32)
    for i, (row, length) in enumerate(zip(rows[keep], lengths)):
      gen[i, :length] = row[start:start + length]
    steps = int(num_steps[keep].max(initial=0))
    per_step = hist[keep, :steps]
    result.add_problem(gen, lengths, per_step, num_steps[keep], verifier, tok, config)
  return result
