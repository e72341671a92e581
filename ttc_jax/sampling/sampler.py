"""Pure-functional, jit-compiled sampler with a KV cache that stops at step boundaries.

The sampler never sees a model object: it takes `apply_fn(params, tokens,
positions, cache) -> (logits, cache)` and `init_cache(batch, max_len)`, so tests
can drive it with stub logits and search can drive it with any LM. A `Sampler`
is a frozen dataclass passed static to jit; temperature and top-p are traced,
top-k, stop mode and lengths are static.

Decoding is split in two jitted pure functions that search composes:
  * `prefill`: encodes right-padded prompts once, returns a `DecodeState`;
  * `decode`: runs a `lax.while_loop` from a `DecodeState` until every row hits
    its stop token (step delimiter or EOS), the row's `max_len`, or
    `max_new_tokens`. The returned state holds the cache *including* the last
    token, and next-token logits, so a later `decode` continues without
    re-encoding (search expands beams step by step this way, paper §3.2).
`sample` wraps both for the common case, with prompt-length and batch buckets so
a run compiles a handful of shapes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh

from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.tokenizers.base import Tokenizer

STOP_MODES = ("step", "eos", "none")
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)


@struct.dataclass
class DecodeState:
  """Everything needed to continue decoding a batch of rows."""

  tokens: jax.Array     # [B, max_len] int32, prompt + generated, PAD elsewhere
  positions: jax.Array  # [B] int32: next position to write (= current length)
  logits: jax.Array     # [B, V] float32 next-token logits
  cache: Any            # model KV cache, batch-major leaves
  done: jax.Array       # [B] bool: row has stopped (EOS / full) and must not grow

  def gather(self, idx: jax.Array) -> "DecodeState":
    """Rows `idx` of every leaf: broadcast prompts to samples, keep surviving beams."""
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), self)


@struct.dataclass
class Samples:
  """One `decode` call's new tokens per row (PAD after each row's end)."""

  tokens: jax.Array    # [B, max_new_tokens] int32
  lengths: jax.Array   # [B] int32, tokens generated in this call
  stopped: jax.Array   # [B] bool, ended on its stop token (not on a length limit)
  # [B, max_new_tokens] float32 model log-prob of each token (of the unscaled logits; 0
  # after a row's end) with `logprobs=True`; None otherwise (a vocabulary-wide
  # log-softmax per token that no search or evaluation reads).
  logprobs: jax.Array | None = None


def sample_logits(rng: jax.Array, logits: jax.Array, temperature: jax.Array,
                  top_k: int, top_p: jax.Array) -> jax.Array:
  """Draws one token per row; temperature 0 is greedy. `top_k=0` disables top-k.

  Greedy and nucleus filtering sit behind `lax.cond`, so a greedy or `top_p=1`
  call pays for neither the vocabulary sort nor the draw; the draw is by inverse
  CDF with one uniform per row. `rng` is one key, or one key per row (`[B]`, see
  `row_keys`): then a row's draw depends on its own key only, not on its batch.
  """
  logits = logits.astype(jnp.float32)
  neg = jnp.finfo(jnp.float32).min

  def nucleus(x):
    # Keep the smallest prefix of the sorted distribution with mass >= top_p.
    srt = jnp.sort(x, axis=-1)[..., ::-1]
    p = jax.nn.softmax(srt, axis=-1)
    drop = (jnp.cumsum(p, axis=-1) - p) >= top_p
    thresh = jnp.min(jnp.where(drop, jnp.inf, srt), axis=-1, keepdims=True)
    return jnp.where(x < thresh, neg, x)

  def draw(x):
    x = x / jnp.maximum(temperature, 1e-6)
    if top_k:
      kth = jax.lax.top_k(x, top_k)[0][..., -1:]
      x = jnp.where(x < kth, neg, x)
    x = jax.lax.cond(top_p < 1.0, nucleus, lambda y: y, x)
    cdf = jnp.cumsum(jax.nn.softmax(x, axis=-1), axis=-1)
    if per_row_keys(rng):
      u = jax.vmap(lambda k: jax.random.uniform(k, (1,), jnp.float32))(rng)
    else:
      u = jax.random.uniform(rng, cdf.shape[:-1] + (1,), jnp.float32)
    return jnp.argmax(cdf > u * cdf[..., -1:], axis=-1)

  greedy = lambda x: jnp.argmax(x, axis=-1)
  return jax.lax.cond(temperature <= 0, greedy, draw, logits).astype(jnp.int32)


def per_row_keys(rng: jax.Array) -> bool:
  """Whether `rng` is a batch of typed keys, one per row (`jax.random.key` arrays of rank 1)."""
  return jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1


def row_keys(rng: jax.Array, rows: jax.Array) -> jax.Array:
  """One key per row, `rng` folded with each row's id: draws that do not depend on the batch
  layout, so a row samples the same tokens wherever it sits (tree search compacts rows)."""
  return jax.vmap(jax.random.fold_in, (None, 0))(rng, rows)


def pad_with_copies(rows: list, size: int, mesh: Mesh | None = None) -> list:
  """Pads `rows` with copies of its last row to a power of two >= `size` (and the mesh's data).

  Real copies stop like real rows (the sampler's 1-token dummies might not and
  would stretch the decode loop), and a fixed size fixes the compiled shape.
  """
  multiple = mesh.shape["data"] if mesh is not None else 1
  b = max(multiple, 1 << (max(size, len(rows)) - 1).bit_length())
  b = -(-b // multiple) * multiple
  return list(rows) + [rows[-1]] * (b - len(rows))


@dataclasses.dataclass(frozen=True)
class Sampler:
  """Static sampling setup; hashable, so it is a static argument of jit.

  Attributes:
    apply_fn: pure `(params, tokens [B,T], positions [B,T], cache) -> (logits [B,T,V], cache)`.
    init_cache: `(batch, max_len) -> cache` of zeros.
    eos_id, pad_id: special token ids.
    step_ids: the ids that end a step (`Tokenizer.step_ids` of the task's delimiter).
    context_len: the model's context window; `max_len` may not exceed it.
    buckets: prompt-length buckets (prompts are right-padded to the next one).
  """

  apply_fn: Callable
  init_cache: Callable
  eos_id: int
  step_ids: tuple[int, ...]
  pad_id: int
  context_len: int
  buckets: tuple[int, ...] = DEFAULT_BUCKETS

  @classmethod
  def for_transformer(cls, graphdef, cfg, tokenizer: Tokenizer, step_delimiter: str,
                      buckets=DEFAULT_BUCKETS) -> "Sampler":
    """A sampler over `models.transformer` that stops steps at `step_delimiter`."""
    from ttc_jax.models import transformer  # pylint: disable=g-import-not-at-top
    return cls(apply_fn=functools.partial(transformer.apply, graphdef),
               init_cache=cfg.init_cache, eos_id=tokenizer.eos_id,
               step_ids=tokenizer.step_ids(step_delimiter), pad_id=tokenizer.pad_id,
               context_len=cfg.max_len, buckets=tuple(buckets))

  # ---- host-side helpers (validation and padding happen here, before jit) ----

  def check_tokenizer(self, tokenizer: Tokenizer, step_delimiter: str | None = None) -> None:
    """Raises ValueError unless this sampler's special (and step) ids are `tokenizer`'s."""
    ids = (self.eos_id, self.pad_id)
    want = (tokenizer.eos_id, tokenizer.pad_id)
    if step_delimiter is not None:
      ids, want = ids + (self.step_ids,), want + (tokenizer.step_ids(step_delimiter),)
    if ids != want:
      raise ValueError(f"Sampler ids (eos, pad[, step]) = {ids} differ from the tokenizer's "
                       f"{want}; build the sampler with this tokenizer and step delimiter.")

  def bucket(self, length: int) -> int:
    for b in self.buckets:
      if b >= length:
        return b
    step = self.buckets[-1]
    return -(-length // step) * step

  def pad_prompts(self, prompts: Sequence[Sequence[int]], max_len: int,
                  batch_multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads prompts to a length bucket and the batch to a power of two.

    Returns `(tokens [B', P], lengths [B'])`; rows past `len(prompts)` are
    1-token dummies the caller drops.
    """
    if not len(prompts):
      raise ValueError("sample() needs at least one prompt.")
    if max_len > self.context_len:
      raise ValueError(f"max_len={max_len} exceeds the model's context window "
                       f"({self.context_len} tokens); lower max_len.")
    lengths = np.array([len(p) for p in prompts], np.int32)
    if lengths.min() < 1:
      raise ValueError("Every prompt needs at least one token (e.g. BOS).")
    if lengths.max() >= max_len:
      i = int(lengths.argmax())
      raise ValueError(
          f"Prompt {i} has {lengths[i]} tokens, which leaves no room to generate "
          f"within max_len={max_len} (context window {self.context_len}); shorten "
          f"the prompt or raise max_len.")
    p = min(self.bucket(int(lengths.max())), max_len)
    n = len(prompts)
    b = max(batch_multiple, 1 << (n - 1).bit_length())
    b = -(-b // batch_multiple) * batch_multiple
    toks = np.full((b, p), self.pad_id, np.int32)
    for i, pr in enumerate(prompts):
      toks[i, :len(pr)] = pr
    lens = np.ones((b,), np.int32)
    lens[:n] = lengths
    return toks, lens

  # ---- jitted pure functions ----

  @functools.partial(jax.jit, static_argnames=("self", "max_len"))
  def prefill(self, params, tokens: jax.Array, lengths: jax.Array, max_len: int) -> DecodeState:
    """Encodes right-padded prompts `[B, P]` into a fresh cache of `max_len` slots."""
    b, p = tokens.shape
    cache = self.init_cache(b, max_len)
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    logits, cache = self.apply_fn(params, tokens, positions, cache)
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    valid = jnp.arange(p)[None, :] < lengths[:, None]
    buf = jnp.full((b, max_len), self.pad_id, jnp.int32)
    buf = buf.at[:, :p].set(jnp.where(valid, tokens, self.pad_id))
    return DecodeState(tokens=buf, positions=lengths.astype(jnp.int32),
                       logits=last.astype(jnp.float32), cache=cache,
                       done=jnp.zeros((b,), bool))

  @functools.partial(jax.jit, static_argnames=("self", "max_new_tokens", "stop", "top_k",
                                                "logprobs"))
  def decode(self, params, state: DecodeState, rng: jax.Array, *, max_new_tokens: int,
             stop: str = "step", temperature: float | jax.Array = 1.0, top_k: int = 0,
             top_p: float | jax.Array = 1.0, logprobs: bool = False
             ) -> tuple[DecodeState, Samples]:
    """Generates up to `max_new_tokens` per row; rows stop independently.

    `stop='step'` ends a row at the step delimiter or EOS, `'eos'` at EOS only,
    `'none'` only at the length limits. Rows already `done` are left unchanged.
    `logprobs=True` also returns each token's log-prob. `rng` is one key or one per row
    (`row_keys`; token i of a row then draws from its key folded with i).
    """
    if stop not in STOP_MODES:
      raise ValueError(f"stop={stop!r}; choose one of {STOP_MODES}.")
    b, max_len = state.tokens.shape
    temperature = jnp.asarray(temperature, jnp.float32)
    top_p = jnp.asarray(top_p, jnp.float32)
    out_tok = jnp.full((b, max_new_tokens), self.pad_id, jnp.int32)
    out_lp = jnp.zeros((b, max_new_tokens if logprobs else 0), jnp.float32)
    idle = state.done | (state.positions >= max_len)
    per_row = per_row_keys(rng)
    if per_row and rng.shape != (b,):
      raise ValueError(f"decode got {rng.shape[0]} row keys for {b} rows; pass one key, or one "
                       f"per row (sampler.row_keys).")

    def cond(c):
      i, _, halted, *_ = c
      return (i < max_new_tokens) & ~jnp.all(halted)

    def body(c):
      i, st, halted, stopped, out_tok, out_lp, rng = c
      if per_row:
        key = jax.vmap(jax.random.fold_in, (0, None))(rng, i)
      else:
        rng, key = jax.random.split(rng)
      tok = sample_logits(key, st.logits, temperature, top_k, top_p)
      active = ~halted
      tok = jnp.where(active, tok, self.pad_id)
      out_tok = out_tok.at[:, i].set(tok)
      if logprobs:
        lp = jnp.take_along_axis(jax.nn.log_softmax(st.logits), tok[:, None], axis=1)[:, 0]
        out_lp = out_lp.at[:, i].set(jnp.where(active, lp, 0.0))
      # Halted rows write PAD into their next free slot, which stays masked.
      pos = jnp.minimum(st.positions, max_len - 1)
      rows = jnp.arange(b)
      tokens = st.tokens.at[rows, pos].set(jnp.where(active, tok, st.tokens[rows, pos]))
      logits, cache = self.apply_fn(params, tok[:, None], pos[:, None], st.cache)
      new_pos = st.positions + active.astype(jnp.int32)
      hit = tok == self.eos_id
      if stop == "step":
        hit = hit | jnp.isin(tok, jnp.asarray(self.step_ids, jnp.int32))
      if stop == "none":
        hit = jnp.zeros_like(hit)
      stopped = stopped | (active & hit)
      halted = halted | (active & hit) | (new_pos >= max_len)
      st = DecodeState(tokens=tokens, positions=new_pos,
                       logits=jnp.where(active[:, None], logits[:, 0], st.logits),
                       cache=cache, done=st.done | (active & (tok == self.eos_id)) |
                       (new_pos >= max_len))
      return i + 1, st, halted, stopped, out_tok, out_lp, rng

    init = (jnp.int32(0), state, idle, jnp.zeros((b,), bool), out_tok, out_lp, rng)
    _, st, _, stopped, out_tok, out_lp, _ = jax.lax.while_loop(cond, body, init)
    lengths = st.positions - state.positions
    return st, Samples(tokens=out_tok, lengths=lengths, stopped=stopped,
                       logprobs=out_lp if logprobs else None)

  # ---- convenience ----

  def sample(self, params, prompts: Sequence[Sequence[int]], rng: jax.Array, *,
             num_samples: int = 1, max_len: int | None = None, max_new_tokens: int | None = None,
             stop: str = "eos", temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, mesh: Mesh | None = None, logprobs: bool = False
             ) -> tuple[DecodeState, Samples]:
    """Samples `num_samples` continuations of each prompt.

    Each prompt is prefilled once and its cache broadcast to its samples; rows
    come out prompt-major (`row = prompt * num_samples + sample`), with the
    dummy rows of batch padding removed (no copy when there are none). With a
    `mesh`, prompts (and so their samples) are sharded over its `data` axis;
    `params` should already be placed with `parallel.mesh.shard_params`.
    """
    if stop not in STOP_MODES:
      raise ValueError(f"stop={stop!r}; choose one of {STOP_MODES}.")
    if num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    max_len = max_len or self.context_len
    toks, lens = self.pad_prompts(prompts, max_len,
                                  batch_multiple=mesh.shape["data"] if mesh else 1)
    toks, lens = jnp.asarray(toks), jnp.asarray(lens)
    if mesh is not None:
      toks, lens = mesh_lib.shard_batch((toks, lens), mesh)
    max_new_tokens = max_new_tokens or max_len - 1
    state = self.prefill(params, toks, lens, max_len)
    state = state.gather(jnp.repeat(jnp.arange(toks.shape[0]), num_samples))
    state, samples = self.decode(params, state, rng, max_new_tokens=max_new_tokens,
                                 stop=stop, temperature=temperature, top_k=top_k, top_p=top_p,
                                 logprobs=logprobs)
    rows = len(prompts) * num_samples
    if rows == state.tokens.shape[0]:  # no padding rows: the cache stays where it is
      return state, samples
    keep = jnp.arange(rows)
    return state.gather(keep), jax.tree.map(lambda x: x[keep], samples)
