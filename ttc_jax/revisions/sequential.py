"""Sequential revisions (paper §6): chains of attempts, each conditioned on the previous ones.

A budget of N generations is spent as N/s parallel chains of s attempts each
(s = 1 is all parallel, s = N all sequential). Attempt t of a chain is sampled
from the revision model given the question and the chain's last `max_previous`
attempts (older ones dropped; `trajectories.build_context` is the one format).
Every attempt counts as one generation, whether it ends at EOS or at
`max_attempt_tokens`, so a (N, s) pick uses exactly N samples per problem.

One pool of chains serves every ratio of a sweep (as the paper subsamples its
chains): `chain_plan` gives each chain a length such that for every (N, s)
there are at least N/s chains of length >= s, and `ratio_groups` splits the
long-enough chains into disjoint groups of N/s; accuracy is averaged over the
groups. `generate_chains` advances all problems x chains one attempt per round
with the jit sampler, batched and padded to a few fixed shapes.

Selection (paper §6.1): `select_hierarchical` takes the best attempt of each
chain by the ORM, then best-of-N weighted across chains; `majority_vote` over all
attempts of all chains.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ttc_jax.models import reward
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.revisions import trajectories
from ttc_jax.sampling.sampler import Sampler, pad_with_copies
from ttc_jax.search import selection
from ttc_jax.tasks.base import Example, Task
from ttc_jax.tokenizers.base import Tokenizer

Answer = Any


@dataclasses.dataclass
class Chains:
  """Every attempt of a pool of revision chains, one row per attempt.

  Attributes:
    problem, chain, step: `[N]` which problem and chain the attempt belongs to and
      its 0-based position in the chain.
    tokens: `[N, max_attempt_tokens]` generated tokens (EOS included, PAD after).
    lengths: `[N]` tokens generated for the attempt.
    texts: `[N]` decoded attempts (up to EOS).
    samples: `[P]` attempts generated per problem (= sum of the chain lengths).
    generated_tokens: `[P]` tokens generated per problem.
  """

  problem: np.ndarray
  chain: np.ndarray
  step: np.ndarray
  tokens: np.ndarray
  lengths: np.ndarray
  texts: list[str]
  samples: np.ndarray
  generated_tokens: np.ndarray


# ---- budgets ----

def check_ratio(budget: int, seq_length: int) -> int:
  """Parallel chains for budget N split into chains of `seq_length` s; raises unless s | N."""
  if isinstance(budget, bool) or int(budget) != budget or budget < 1:
    raise ValueError(f"budget={budget!r}: the number of generations N must be an int >= 1.")
  if isinstance(seq_length, bool) or int(seq_length) != seq_length or seq_length < 1:
    raise ValueError(f"seq_length={seq_length!r} must be an int >= 1 (1 is all parallel).")
  if budget % seq_length:
    divisors = [d for d in range(1, budget + 1) if budget % d == 0]
    raise ValueError(
        f"Sequential length s={seq_length} does not divide budget N={budget}: N generations "
        f"are spent as N/s parallel chains of s revisions each, so s must be one of {divisors}.")
  return budget // seq_length


def sweep_ratios(budgets: Sequence[int], seq_lengths: Sequence[int]) -> list[tuple[int, int]]:
  """The (N, s) pairs of a sweep: every s <= N; raises if one does not divide its budget."""
  if not budgets or not seq_lengths:
    raise ValueError("A revisions sweep needs at least one budget and one seq_length.")
  pairs = [(int(n), int(s)) for n in budgets for s in seq_lengths if s <= n]
  for n, s in pairs:
    check_ratio(n, s)
  for n in budgets:
    if not any(s <= n for s in seq_lengths):
      raise ValueError(f"No seq_length in {tuple(seq_lengths)} is <= budget {n}; add 1 "
                       "(all parallel).")
  return pairs


def chain_plan(budgets: Sequence[int], seq_lengths: Sequence[int]) -> tuple[int, ...]:
  """Length of each chain of a shared pool serving every (N, s) of the sweep, longest first."""
  lengths: list[int] = []
  for n, s in sweep_ratios(budgets, seq_lengths):
    p = n // s
    lengths += [0] * max(0, p - len(lengths))
    for j in range(p):
      lengths[j] = max(lengths[j], s)
  return tuple(sorted(lengths, reverse=True))


def ratio_groups(chain_lengths: Sequence[int], budget: int, seq_length: int) -> list[list[int]]:
  """Disjoint groups of N/s chains of length >= s; each group spends exactly N generations."""
  p = check_ratio(budget, seq_length)
  eligible = [c for c, n in enumerate(chain_lengths) if n >= seq_length]
  if len(eligible) < p:
    raise ValueError(f"(N={budget}, s={seq_length}) needs {p} chains of >= {seq_length} "
                     f"attempts but the pool has {len(eligible)}; build it with chain_plan.")
  return [eligible[g * p:(g + 1) * p] for g in range(len(eligible) // p)]


# ---- generation ----

def generate_chains(sampler: Sampler, params: Any, tokenizer: Tokenizer,
                    prompts: Sequence[str], chain_lengths: Sequence[int], rng: jax.Array, *,
                    max_attempt_tokens: int, max_previous: int = trajectories.MAX_PREVIOUS,
                    temperature: float = 1.0, batch_rows: int = 512,
                    separator: str = trajectories.ATTEMPT_SEPARATOR,
                    mesh: Mesh | None = None) -> Chains:
  """Samples `len(chain_lengths)` revision chains per prompt, chain c of `chain_lengths[c]` attempts.

  Round t samples attempt t of every chain longer than t, for all prompts at
  once, in batches of at most `batch_rows` contexts (sorted by length, padded
  with copies to a power of two). `prompts` are question prompts as text
  (`Example.prompt`). Raises ValueError before any compute on bad settings or
  when the longest possible context exceeds the sampler's window.
  """
  _check_chain_args(sampler, tokenizer, prompts, chain_lengths, max_attempt_tokens,
                    max_previous, temperature, batch_rows, separator)

  num_p, num_c = len(prompts), len(chain_lengths)
  history: list[list[list[str]]] = [[[] for _ in range(num_c)] for _ in range(num_p)]
  cols: dict[str, list] = {k: [] for k in ("problem", "chain", "step", "tokens", "lengths")}
  texts: list[str] = []
  samples = np.zeros((num_p,), np.int64)
  gen_tokens = np.zeros((num_p,), np.int64)
  for t in range(max(chain_lengths)):
    rows = [(p, c) for p in range(num_p) for c in range(num_c) if chain_lengths[c] > t]
    ctx = [trajectories.build_context(tokenizer, prompts[p], history[p][c], separator=separator,
                                      context_len=sampler.context_len,
                                      max_new_tokens=max_attempt_tokens,
                                      max_previous=max_previous) for p, c in rows]
    by_len = sorted(range(len(rows)), key=lambda i: len(ctx[i]))
    for b, lo in enumerate(range(0, len(by_len), batch_rows)):
      idx = by_len[lo:lo + batch_rows]
      batch = pad_with_copies([ctx[i] for i in idx], 1, mesh)
      top = max(len(x) for x in batch)
      max_len = min(sampler.context_len, sampler.bucket(top) + max_attempt_tokens)
      toks, lens = _sample_rows(sampler, params, batch,
                                jax.random.fold_in(jax.random.fold_in(rng, t), b), max_len=max_len,
                                max_new_tokens=max_attempt_tokens, temperature=temperature,
                                mesh=mesh)
      toks, lens = toks[:len(idx)], lens[:len(idx)]
      for k, i in enumerate(idx):
        p, c = rows[i]
        text = tokenizer.decode(toks[k, :lens[k]])
        history[p][c].append(text)
        texts.append(text)
        for name, v in (("problem", p), ("chain", c), ("step", t), ("lengths", int(lens[k]))):
          cols[name].append(v)
        cols["tokens"].append(np.pad(toks[k], (0, max_attempt_tokens - toks.shape[1]),
                                     constant_values=tokenizer.pad_id))
        samples[p] += 1
        gen_tokens[p] += int(lens[k])
  order = np.lexsort((cols["step"], cols["chain"], cols["problem"]))  # problem-major
  arr = {k: np.asarray(v)[order] for k, v in cols.items()}
  return Chains(problem=arr["problem"], chain=arr["chain"], step=arr["step"],
                tokens=arr["tokens"].astype(np.int32), lengths=arr["lengths"],
                texts=[texts[i] for i in order], samples=samples, generated_tokens=gen_tokens)


def _check_chain_args(sampler: Sampler, tokenizer: Tokenizer, prompts: Sequence[str],
                      chain_lengths: Sequence[int], max_attempt_tokens: int, max_previous: int,
                      temperature: float, batch_rows: int, separator: str) -> None:
  if not len(prompts):
    raise ValueError("generate_chains needs at least one prompt.")
  if not len(chain_lengths) or min(chain_lengths) < 1:
    raise ValueError(f"chain_lengths={tuple(chain_lengths)} must be non-empty, each >= 1.")
  if batch_rows < 1 or batch_rows & (batch_rows - 1):
    raise ValueError(f"batch_rows={batch_rows} must be a power of two.")
  if max_attempt_tokens < 2:
    raise ValueError(f"max_attempt_tokens={max_attempt_tokens} must be >= 2.")
  if temperature < 0:
    raise ValueError(f"temperature={temperature} must be >= 0 (0 is greedy).")
  longest = max(len(tokenizer.encode(p, bos=True)) for p in prompts)
  need = trajectories.worst_case_context(tokenizer, longest, max_attempt_tokens,
                                         min(max_previous, max(chain_lengths) - 1), separator)
  if need > sampler.context_len:
    raise ValueError(
        f"Revision contexts can reach {need} tokens ({longest}-token prompt + up to "
        f"{min(max_previous, max(chain_lengths) - 1)} previous attempts of {max_attempt_tokens} "
        f"tokens + the new one), longer than the model's window of {sampler.context_len}; raise "
        f"the revision model's context_len or lower max_attempt_tokens or max_previous.")


def _sample_rows(sampler: Sampler, params: Any, contexts: list[list[int]], key: jax.Array, *,
                 max_len: int, max_new_tokens: int, temperature: float,
                 mesh: Mesh | None) -> tuple[np.ndarray, np.ndarray]:
  """One attempt per context: the jitted prefill + decode, `(tokens [B, T], lengths [B])`.

  `contexts` are already padded to the batch the mesh takes, so no row is added or
  gathered away (an eager gather of the KV cache would cost more than the decode).
  """
  tokens, lengths = sampler.pad_prompts(contexts, max_len,
                                        batch_multiple=mesh.shape["data"] if mesh else 1)
  tokens, lengths = jnp.asarray(tokens), jnp.asarray(lengths)
  if mesh is not None:
    tokens, lengths = mesh_lib.shard_batch((tokens, lengths), mesh)
  state = sampler.prefill(params, tokens, lengths, max_len)
  _, out = sampler.decode(params, state, key, max_new_tokens=max_new_tokens, stop="eos",
                          temperature=temperature)
  return mesh_lib.to_host((out.tokens, out.lengths))


def orm_scores(graphdef: nnx.GraphDef, state: Any, tokenizer: Tokenizer,
               prompts: Sequence[str], problem: np.ndarray, tokens: np.ndarray,
               lengths: np.ndarray, batch_rows: int = 512) -> np.ndarray:
  """ORM score in [0, 1] of each attempt alone (BOS + prompt + attempt), read at its last token.

  The ORM is the base-LM-sample verifier (paper §6.1 selection); an attempt is
  scored without the previous attempts, as a standalone solution.
  """
  enc = [tokenizer.encode(p, bos=True) for p in prompts]
  total = np.asarray([len(enc[q]) + int(n) for q, n in zip(problem, lengths)])
  out = np.zeros((len(lengths),), np.float32)
  order = np.argsort(total, kind="stable")  # similar lengths share a batch and its width
  for lo in range(0, len(order), batch_rows):
    idx = order[lo:lo + batch_rows]
    idx = np.concatenate([idx, np.repeat(idx[-1:], batch_rows - len(idx))])
    width = -(-int(total[idx].max()) // 16) * 16
    rows = np.full((batch_rows, width), tokenizer.pad_id, np.int32)
    final = np.zeros((batch_rows, 1), np.int32)
    for r, i in enumerate(idx):
      e, n = enc[problem[i]], int(lengths[i])
      rows[r, :len(e)] = e
      rows[r, len(e):len(e) + n] = tokens[i, :n]
      final[r, 0] = len(e) + max(n, 1) - 1
    s = reward.step_scores(graphdef, state, jnp.asarray(rows), jnp.asarray(final))
    n_real = min(batch_rows, len(order) - lo)
    out[idx[:n_real]] = np.asarray(s)[:n_real, 0]
  return out


# ---- selection and measurements ----

def select_hierarchical(answers: Sequence[Sequence[Answer]],
                        scores: Sequence[Sequence[float]]) -> Answer:
  """Paper §6.1: the best-scoring attempt of each chain, then weighted best-of-N across chains."""
  picks, best = [], []
  for a, s in zip(answers, scores):
    pick = selection.best_of_n(a, s)
    picks.append(pick)
    best.append(max((x for x, y in zip(s, a) if y is not None), default=0.0))
  return selection.weighted_best_of_n(picks, best)


def select_majority(answers: Sequence[Sequence[Answer]],
                    scores: Sequence[Sequence[float]] | None = None) -> Answer:
  """Majority vote over every attempt of every chain."""
  del scores
  return selection.majority_vote([a for chain in answers for a in chain])


SELECTIONS: dict[str, Callable] = {"orm_hierarchical": select_hierarchical,
                                   "majority": select_majority}


@dataclasses.dataclass
class Grids:
  """A sweep's attempts as `[problem][chain][step]` nested lists (see `attempt_grids`)."""

  answers: list   # the task's answer of each attempt (None: none)
  scores: list    # its ORM score
  lengths: list   # its generated tokens
  correct: list   # bool: its answer is right
  attempts: list  # its token bytes (compares attempts verbatim)


def attempt_grids(arrays: dict[str, np.ndarray], chain_lengths: Sequence[int],
                  examples: Sequence[Example], task: Task, tokenizer: Tokenizer) -> Grids:
  """The revisions sweep's attempt rows as grids, answers read and graded by the task.

  `arrays` holds one row per attempt: `problem`, `chain`, `step`, `tokens`, `lengths` and
  `orm` (its ORM score); answers are parsed from the decoded tokens.
  """
  chains = Chains(problem=arrays["problem"], chain=arrays["chain"], step=arrays["step"],
                  tokens=arrays["tokens"], lengths=arrays["lengths"], texts=[],
                  samples=np.zeros(0), generated_tokens=np.zeros(0))
  answers = [task.extract_answer(tokenizer.decode(t[:n]))
             for t, n in zip(arrays["tokens"], arrays["lengths"])]
  num_p = len(examples)
  a_grid = as_grid(chains, answers, num_p, chain_lengths)
  return Grids(answers=a_grid,
               scores=as_grid(chains, np.asarray(arrays["orm"]).tolist(), num_p,
                              chain_lengths, 0.0),
               lengths=as_grid(chains, np.asarray(arrays["lengths"]).tolist(), num_p,
                               chain_lengths, 0),
               correct=[[[task.is_correct(a, examples[q]) for a in chain] for chain in a_grid[q]]
                        for q in range(num_p)],
               attempts=as_grid(chains, [t[:n].tobytes() for t, n in
                                         zip(arrays["tokens"], arrays["lengths"])],
                                num_p, chain_lengths))


def as_grid(chains: Chains, values: Sequence[Any], num_problems: int,
            chain_lengths: Sequence[int], fill: Any = None) -> list[list[list[Any]]]:
  """`values` (one per attempt row) as `[problem][chain][step]` nested lists."""
  grid = [[[fill] * n for n in chain_lengths] for _ in range(num_problems)]
  for p, c, t, v in zip(chains.problem, chains.chain, chains.step, values):
    grid[p][c][t] = v
  return grid


def ratio_accuracy(answers_grid, scores_grid, is_correct: Callable[[int, Answer], bool],
                   lengths_grid, chain_lengths: Sequence[int], budget: int, seq_length: int,
                   how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per problem: accuracy at (N, s) averaged over disjoint chain groups, samples, tokens.

  Each group is N/s chains cut to their first s attempts, so `samples` is exactly
  N per problem and `generated_tokens` the mean over groups of the tokens they used.
  `is_correct(q, answer)` grades a selected answer of problem q.
  """
  if how not in SELECTIONS:
    raise ValueError(f"Unknown selection {how!r}; choose one of {sorted(SELECTIONS)}.")
  groups = ratio_groups(chain_lengths, budget, seq_length)
  pick = SELECTIONS[how]
  num_p = len(answers_grid)
  acc = np.zeros((num_p,))
  samples = np.zeros((num_p,), np.int64)
  tokens = np.zeros((num_p,))
  for q in range(num_p):
    for g in groups:
      a = [answers_grid[q][c][:seq_length] for c in g]
      s = [scores_grid[q][c][:seq_length] for c in g]
      acc[q] += is_correct(q, pick(a, s))
      tokens[q] += sum(sum(lengths_grid[q][c][:seq_length]) for c in g)
    samples[q] = sum(len(answers_grid[q][c][:seq_length]) for c in groups[0])
  return acc / len(groups), samples, tokens / len(groups)
