"""PRM-guided beam search over solution steps (paper §5.2), and the tree-search engine it shares.

With budget N and beam width M, per problem: sample N first steps, score each
with the PRM, keep the top N/M, expand each with M next steps, and repeat until
every beam has ended or `max_rounds` steps (40 in the paper); the final pick is
weighted best-of-N over the final beams. A beam's score is the verifier's
aggregation of its step scores ('last': the PRM's prediction at its newest step).

`tree_search` is the engine: lookahead search (`lookahead.py`) scores each step
at the end of a greedy rollout, and DVTS (`dvts.py`) selects parents within
independent subtrees; both are this loop with another `Tree`.

Everything is incremental: each prompt is prefilled once (policy KV cache and
PRM cache) and broadcast to its N rows. A round is three jitted calls: the
policy decodes one step per expanding row from the kept `DecodeState`
(expand), the PRM encodes only that step from the kept `ScoreState` (score),
and one update records scores and counts, picks the next pool and gathers the
parents' caches into their children's rows (select), never re-encoding. All
problems share one batch of N * num_problems rows (problem-major, a problem's
rows contiguous); with a mesh the rows shard over `data` with each problem's
beams on one device, and the gather is batched over problems, so it moves no
rows between devices. With `config.compact_rows`, expand and score run on the
expanding rows only, compacted within each device's rows (docs/design.md, "Tree
search without idle rows"); each row draws from its own key, so compaction changes
no token drawn.

Budget (docs/design.md, "Budget fairness"): a *generation* is one row decoding one
step; every round spends at most N generations per problem. A beam that ends
(EOS or the length limit) stays in the pool as a final candidate, is never
expanded, and keeps its row: with F finished beams the round keeps
P = min((N - F) // M, active beams) parents and decodes P * M children, so the
N - F - P * M leftover rows stay idle (their share is not re-spent on other
beams). When P = 0 (fewer than M rows left) the active beams stop growing and
join the final pool as they are. The pool never holds more than N beams.

Counts: `samples` = generations (row-steps decoded, discarded beams included);
`generated_tokens` = tokens those generations produced; `verifier_tokens` = the
verifier's prompt (encoded once per problem) plus every token it encoded after it:
each generated token once (and an open PRM's format tokens, `search/open_prm.py`),
read off its positions; block padding not counted: the PRM's block is cut to the
round's longest step, see `step_block`; `budget_used` = the most generations of any
one round.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ttc_jax.models import reward
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling import sampler as sampler_lib
from ttc_jax.search import base

# pool(m, alive, finished, scores) for one problem's rows [N] -> (src, alive, finished, expand).
PoolFn = Callable[[int, jax.Array, jax.Array, jax.Array], tuple[jax.Array, ...]]
# finals(m, alive, scores) on the host -> the rows of one problem's final pool.
FinalsFn = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Tree:
  """The static shape of a tree search; hashable, so it is a static argument of jit.

  Attributes:
    n: rows per problem (beam search: the budget N).
    m: beam width M (children per parent).
    pool: the rule that picks each round's parents: `beam_pool` (global top N/M) or
      `dvts.subtree_pool` (the best of each subtree of M rows).
    finals: the rule that picks the final candidates (`all_alive`, `dvts.subtree_finals`).
    lookahead: k greedy rollout steps whose end scores each new step (0: the step itself).
  """

  n: int
  m: int
  pool: "PoolFn"
  finals: "FinalsFn"
  lookahead: int = 0


@struct.dataclass
class Book:
  """Per-row search bookkeeping, on device, gathered with the rows every round."""

  alive: jax.Array      # [B] bool: the row holds a beam of the pool
  finished: jax.Array   # [B] bool: that beam has ended (EOS / length limit)
  expand: jax.Array     # [B] bool: the row decodes a step this round
  hist: jax.Array       # [B, R] float32 per-step scores, NaN padded
  num_steps: jax.Array  # [B] int32 steps scored so far


@struct.dataclass
class Counts:
  """Per-problem compute spent, on device (see the module docstring)."""

  samples: jax.Array
  generated: jax.Array
  verified: jax.Array
  budget_used: jax.Array


@struct.dataclass
class Round:
  """What one round's expanding rows produced, per row (0 for rows that did not expand)."""

  logit: jax.Array         # [B] the verifier's logit for the new step (lookahead: rollout end)
  lengths: jax.Array       # [B] tokens of the new step
  ended: jax.Array         # [B] the beam ended (EOS / length limit)
  extra_gens: jax.Array    # [B] lookahead rollout steps
  extra_tokens: jax.Array  # [B] lookahead rollout tokens
  before: jax.Array        # [B] the verifier's position before the round ...
  after: jax.Array         # [B] ... and after its last extend


# ---- pool rules (one problem's N rows; vmapped over problems) ----

def _sorted_pool(alive, finished, scores):
  """Row order: finished beams, then active beams by score (descending), then idle rows.

  Stable, so ties keep row order.
  """
  group = jnp.where(alive & finished, 0, jnp.where(alive, 1, 2))
  key = jnp.where(group == 1, -scores, 0.0)
  return jnp.lexsort((key, group))


def beam_pool(m: int, alive, finished, scores):
  """Beam search (paper §5.2): finished beams keep their rows; the top P active beams get M each."""
  n = alive.shape[0]
  order = _sorted_pool(alive, finished, scores)
  num_fin = (alive & finished).sum()
  num_act = (alive & ~finished).sum()
  k = jnp.minimum((n - num_fin) // m, num_act)
  slot = jnp.arange(n)
  parent = order[jnp.minimum(num_fin + (slot - num_fin) // m, n - 1)]
  src = jnp.where(slot < num_fin, order[slot], jnp.where(slot < num_fin + k * m, parent, order[0]))
  new_alive = slot < num_fin + k * m
  new_finished = slot < num_fin
  grow = k > 0  # else nothing can grow: keep the pool as it is
  return (jnp.where(grow, src, slot), jnp.where(grow, new_alive, alive),
          jnp.where(grow, new_finished, finished), jnp.where(grow, new_alive & ~new_finished,
                                                             False))


def all_alive(m: int, alive: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Host-side: beam search's final pool is every alive row of the problem."""
  del m, scores
  return np.flatnonzero(alive)


# ---- jitted pieces of a round ----

def _rows(x: jax.Array, n: int) -> jax.Array:
  return x.reshape(x.shape[0] // n, n, *x.shape[1:])


def take_rows(tree: Any, idx: jax.Array) -> Any:
  """Rows `idx[g, j]` of group g of every batch-major leaf, `[G * K, ...]` for `idx` `[G, K]`.

  The batch splits into G equal, contiguous groups (problems, or a device's rows), and
  the take is batched over groups (vmap): with rows sharded by group, none crosses devices.
  """
  take = jax.vmap(lambda x, i: jnp.take(x, i, axis=0))
  return jax.tree.map(lambda x: take(_rows(x, x.shape[0] // idx.shape[0]), idx).reshape(
      -1, *x.shape[1:]), tree)


def put_rows(tree: Any, part: Any, idx: jax.Array, valid: jax.Array) -> Any:
  """The inverse of `take_rows`: row j of group g of `part` back into row `idx[g, j]` of
  `tree`, where `valid[g, j]`; the rest of `tree` is unchanged."""
  def put(x, y):
    n = x.shape[0] // idx.shape[0]
    at = jnp.where(valid, idx, n)  # out of range: dropped
    return jax.vmap(lambda a, i, b: a.at[i].set(b, mode="drop"))(
        _rows(x, n), at, _rows(y, idx.shape[1])).reshape(x.shape)
  return jax.tree.map(put, tree, part)


# ---- row compaction (docs/design.md, "Tree search without idle rows") ----

COMPACT_UNITS = 8  # a round runs a multiple of 1/8 of each group's rows


def most_expanding(expand: jax.Array, groups: int) -> int:
  """The most rows any group expands in the next round (0: the search is over). A global
  reduction, so every host of a pod gets the same figure."""
  return int(_most_per_group(expand, groups))


@functools.partial(jax.jit, static_argnames=("groups",))
def _most_per_group(expand: jax.Array, groups: int) -> jax.Array:
  return expand.reshape(groups, -1).sum(1).max()


def compact_size(most: int, per_group: int) -> int:
  """Rows per group a round decodes when at most `most` of a group's `per_group` rows
  expand: rounded up to a multiple of 1/COMPACT_UNITS of the group, so a run compiles at
  most that many shapes."""
  unit = max(1, per_group // COMPACT_UNITS)
  return min(per_group, max(unit, -(-most // unit) * unit))


@functools.partial(jax.jit, static_argnames=("groups", "size"))
def active_rows(expand: jax.Array, *, groups: int, size: int) -> tuple[jax.Array, jax.Array]:
  """`(idx, valid)` `[G, size]`: each group's expanding rows first (in row order), then
  filler (`valid` False) that `take_rows` copies and `put_rows` drops."""
  ex = expand.reshape(groups, -1)
  idx = jax.vmap(lambda e: jnp.nonzero(e, size=size, fill_value=0)[0])(ex)
  valid = jnp.arange(size)[None, :] < ex.sum(1, keepdims=True)
  return idx.astype(jnp.int32), valid


@functools.partial(jax.jit, static_argnames=("tree", "aggregation", "select"))
def _update(book: Book, counts: Counts, state, score_state, out: Round, *, tree: Tree,
            aggregation: str, select: bool):
  """Records a round (scores, counts, finished beams); with `select`, picks and gathers the next pool.

  `out.before`/`out.after`: each row's verifier position before the round and after its
  last extend (the rollout's end with lookahead): the tokens the verifier encoded.
  """
  n = tree.n
  per_problem = lambda x: _rows(x, n).sum(1)
  gens = book.expand.astype(jnp.int32) + out.extra_gens
  counts = Counts(samples=counts.samples + per_problem(gens),
                  generated=counts.generated + per_problem(out.lengths + out.extra_tokens),
                  verified=counts.verified + per_problem(out.after - out.before),
                  budget_used=jnp.maximum(counts.budget_used, per_problem(gens)))
  rows = jnp.arange(book.hist.shape[0])
  step = jnp.minimum(book.num_steps, book.hist.shape[1] - 1)
  hist = book.hist.at[rows, step].set(jnp.where(book.expand, jax.nn.sigmoid(out.logit),
                                                book.hist[rows, step]))
  book = book.replace(hist=hist, num_steps=book.num_steps + book.expand,
                      finished=book.finished | (book.expand & out.ended))
  if not select:
    return book, counts, state, score_state
  scores = reward.aggregate(book.hist, book.num_steps, aggregation, xp=jnp)
  src, alive, finished, expand = jax.vmap(functools.partial(tree.pool, tree.m))(
      _rows(book.alive, n), _rows(book.finished, n), _rows(scores, n))
  hist, num_steps, state, score_state = take_rows(  # row src[q, j] of problem q into row j
      (book.hist, book.num_steps, state, score_state), src)
  book = Book(alive=alive.reshape(-1), finished=finished.reshape(-1), expand=expand.reshape(-1),
              hist=hist, num_steps=num_steps)
  return book, counts, state, score_state


def step_block(new_tokens: jax.Array, lengths: jax.Array, cap: int) -> jax.Array:
  """`new_tokens` cut to the round's longest step rounded up to a multiple of 4 (<= `cap`).

  The PRM then encodes that many slots per row instead of `cap`; the rounding
  bounds the compiled widths to cap / 4.
  """
  width = min(cap, max(4, -(-int(lengths.max()) // 4) * 4))
  return new_tokens[:, :width]


@functools.partial(jax.jit, static_argnames=("n",))
def _broadcast(tree: Any, n: int) -> Any:
  """Each problem's row repeated for its n rows (problem-major)."""
  return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)


# ---- the engine ----

def tree_search(prompts: Sequence[Sequence[int]], policy: base.Policy, verifier: base.Verifier,
                tree: Tree, config: base.SearchConfig, rng: jax.Array,
                max_len: int) -> base.SearchResult:
  """Runs a validated tree search (see the module docstring) on every problem at once."""
  padded = base.pad_problems(prompts, config.mesh)
  n, sampler = tree.n, policy.sampler
  toks, lens = sampler.pad_prompts(padded, max_len)
  toks, lens = toks[:len(padded)], lens[:len(padded)]
  # The verifier's own prompt rows (default: the policy's) and cache slots: the PRM writes
  # each step as a block of up to max_step_tokens slots past the row's end.
  vtoks, vlens, slots = verifier.search_prompts(padded, toks, lens, max_len,
                                                config.max_step_tokens,
                                                config.max_rounds + tree.lookahead)
  if config.mesh is not None:
    toks, lens, vtoks, vlens = mesh_lib.shard_batch((toks, lens, vtoks, vlens), config.mesh)
  toks, lens, vtoks, vlens = map(jnp.asarray, (toks, lens, vtoks, vlens))
  state = _broadcast(sampler.prefill(policy.params, toks, lens, max_len), n)
  score_state = _broadcast(verifier.prefill(vtoks, vlens, slots), n)

  b = n * len(padded)
  book = Book(alive=jnp.ones((b,), bool), finished=jnp.zeros((b,), bool),
              expand=jnp.ones((b,), bool),
              hist=jnp.full((b, config.max_rounds), jnp.nan, jnp.float32),
              num_steps=jnp.zeros((b,), jnp.int32))
  zeros = jnp.zeros((len(padded),), jnp.int32)
  counts = Counts(samples=zeros, generated=zeros, verified=vlens.astype(jnp.int32),
                  budget_used=zeros)
  if config.mesh is not None:
    book, counts = mesh_lib.shard_batch((book, counts), config.mesh)
  decode = functools.partial(sampler.decode, policy.params, max_new_tokens=config.max_step_tokens,
                             stop="step", top_k=config.top_k)
  # Rows compact within groups that never span devices: a device's rows, or all of them.
  groups = config.mesh.shape["data"] if config.mesh is not None else 1
  per_group = b // groups
  row_ids = jnp.arange(b, dtype=jnp.int32)
  most = per_group  # the first round expands every row

  for r in range(config.max_rounds):
    key = jax.random.fold_in(rng, r)
    size = compact_size(most, per_group) if config.compact_rows else per_group
    if size == per_group:  # some group expands (nearly) all its rows: no smaller shape fits
      state, score_state, out = _expand(decode, verifier, tree, config, state, score_state,
                                        book.expand, _row_keys(key, row_ids))
    else:  # only the expanding rows (and filler up to `size`) decode and are scored
      idx, valid = active_rows(book.expand, groups=groups, size=size)
      st, sc, ids = _take((state, score_state, row_ids), idx)
      st, sc, out = _expand(decode, verifier, tree, config, st, sc, valid.reshape(-1),
                            _row_keys(key, ids))
      state, score_state, out = _put_back(state, score_state, st, sc, out, idx, valid)
    last = r + 1 == config.max_rounds
    book, counts, state, score_state = _update(
        book, counts, state, score_state, out, tree=tree, aggregation=verifier.aggregation,
        select=not last)
    if last:
      break
    most = most_expanding(book.expand, groups)  # the next round's size, or 0: done
    if not most:
      break

  return _result(tree, state, book, counts, prompts, policy, verifier, config)


def _expand(decode: Callable, verifier: base.Verifier, tree: Tree, config: base.SearchConfig,
            state, score_state, expand: jax.Array, keys: jax.Array):
  """One round on the rows in `expand`: decode a step, score it (after a rollout with
  lookahead). Returns the new policy and verifier states and the `Round`."""
  state, out = decode(state.replace(done=~expand), keys, temperature=config.temperature,
                      top_p=config.top_p)
  before = score_state.positions
  score_state, logit = verifier.extend(
      score_state, step_block(out.tokens, out.lengths, config.max_step_tokens), out.lengths)
  after = score_state.positions
  extra_gens = extra_tokens = jnp.zeros_like(out.lengths)
  if tree.lookahead:
    logit, extra_gens, extra_tokens, after = rollout(
        decode, verifier, state, score_state, expand, tree.lookahead, keys,
        config.max_step_tokens)
  return state, score_state, Round(logit=logit, lengths=out.lengths, ended=state.done,
                                   extra_gens=extra_gens, extra_tokens=extra_tokens,
                                   before=before, after=after)


_row_keys = jax.jit(sampler_lib.row_keys)
_take = jax.jit(take_rows)


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _put_back(state, score_state, st, sc, out: Round, idx: jax.Array, valid: jax.Array):
  """The compacted rows' states back into the full ones, and their `Round` spread out."""
  full = jax.tree.map(lambda x: jnp.zeros(state.positions.shape + x.shape[1:], x.dtype), out)
  return put_rows((state, score_state, full), (st, sc, out), idx, valid)


def rollout(decode: Callable, verifier: base.Verifier, state, score_state, expand: jax.Array,
            k: int, keys: jax.Array, max_step_tokens: int
            ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Lookahead (paper §5.2): greedy k-step rollouts of the rows in `expand` that have not ended.

  Returns the PRM logit at each rollout's end (the step's own logit where no
  rollout ran), and per row the rollout steps, tokens generated and the verifier's position at
  the rollout's end. `keys`: one per row (greedy, so they only fix the compiled form).
  """
  st = state.replace(done=state.done | ~expand)
  sc = score_state
  gens = tokens = jnp.zeros(expand.shape, jnp.int32)
  for j in range(k):
    gens = gens + (~st.done).astype(jnp.int32)
    st, out = decode(st, keys, temperature=0.0, top_p=1.0)
    sc, _ = verifier.extend(sc, step_block(out.tokens, out.lengths, max_step_tokens),
                            out.lengths)
    tokens = tokens + out.lengths
  return sc.logit, gens, tokens, sc.positions


def _result(tree: Tree, state, book: Book, counts: Counts, prompts, policy: base.Policy,
            verifier, config: base.SearchConfig) -> base.SearchResult:
  """The final pool of each (real, not padding) problem and the selected answers."""
  n, num_problems = tree.n, len(prompts)
  rows, positions, book, counts = mesh_lib.to_host((state.tokens, state.positions, book, counts))
  alive, hist = book.alive, book.hist
  num_steps = book.num_steps.astype(np.int64)
  scores = reward.aggregate(hist, num_steps, verifier.aggregation)
  host = lambda x: x[:num_problems]
  result = base.SearchResult.empty(host(counts.samples), host(counts.generated),
                                   host(counts.verified), host(counts.budget_used))
  for q, prompt in enumerate(prompts):
    sl = slice(q * n, (q + 1) * n)
    keep = q * n + tree.finals(tree.m, alive[sl], scores[sl])
    start = len(prompt)
    lengths = positions[keep] - start
    gen = np.full((len(keep), int(lengths.max(initial=0))), policy.tokenizer.pad_id, np.int32)
    for i, (row, length) in enumerate(zip(rows[keep], lengths)):
      gen[i, :length] = row[start:start + length]
    per_step = hist[keep, :int(num_steps[keep].max(initial=0))]
    result.add_problem(gen, lengths, per_step, num_steps[keep], verifier, policy, config)
  return result


def check(budget: int, config: base.SearchConfig) -> None:
  """Beam search needs M | N and N >= M (paper §5.2)."""
  base.beam_width(budget, config)


@base.register("beam", check=check)
def beam_search(prompts: Sequence[Sequence[int]], policy: base.Policy, verifier: base.Verifier,
                budget: int, config: base.SearchConfig, rng: jax.Array) -> base.SearchResult:
  """Beam search with budget N = `budget` and width M = `config.beam_width` (paper §5.2)."""
  max_len = base.validate(prompts, policy, verifier, budget, config)
  tree = Tree(n=int(budget), m=base.beam_width(budget, config), pool=beam_pool,
              finals=all_alive)
  return tree_search(prompts, policy, verifier, tree, config, rng, max_len)
