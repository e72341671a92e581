"""Reward models (paper §5.1): the LM trunk plus a scalar head, one logit per token.

A PRM reads the logit at every step end (the step delimiter, or EOS for the
final answer step) as the probability that the solution prefix leads to a
correct answer; an ORM reads it at the final token. Both share this module and
differ only in the loss (`prm_loss`, `orm_loss`) and in where they are read.

As with the policy LM, the NNX module lives at the edges: `create` / `from_lm`
split it once into `(graphdef, state)` and everything else is a pure function
of the state:

  graphdef, state = from_lm(lm_state, cfg)          # PRM initialised from the base LM
  ends = tokenizers.base.find_step_ends(tokens, tokenizer, delimiter, prompt_len)
  scores = step_scores(graphdef, state, tokens, ends)
  final = aggregate(scores, num_steps, "last")      # paper: score of the last step

Incremental scoring for search (docs/design.md, "Verifier"): `prefill` encodes the
prompts once into a KV cache, then `extend` encodes only each row's new step at
its current position, so scoring a solution step by step costs only its new
tokens. `ScoreState.gather` keeps surviving beams.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.tree_util import keystr
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from ttc_jax.models import transformer

PyTree = Any
AGGREGATIONS = ("last", "min", "prod")
_param = transformer._param  # pylint: disable=protected-access  (logical-axis-annotated Param)


class RewardModel(nnx.Module):
  """Transformer trunk + linear head `[d_model] -> 1`. `__call__ -> (logits [B,T] f32, cache)`."""

  def __init__(self, cfg: transformer.TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.trunk = transformer.Transformer(cfg, rngs)
    if not cfg.tie_embeddings:
      del self.trunk.lm_head  # the scalar head replaces it; only `trunk.hidden` is used
    # Value-head init as in common RLHF reward models: std 1/sqrt(d_model + 1).
    std = 1.0 / np.sqrt(cfg.d_model + 1)
    self.head_w = _param(std * jax.random.normal(rngs.params(), (cfg.d_model,), jnp.float32),
                         ("embed",))
    self.head_b = _param(jnp.zeros((), jnp.float32), ())

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               cache: transformer.Cache | None = None) -> tuple[jax.Array, Any]:
    h, cache = self.trunk.hidden(tokens, positions, cache)
    logits = h.astype(jnp.float32) @ self.head_w[...] + self.head_b[...]
    return logits, cache


@struct.dataclass
class ScoreState:
  """A batch of partially scored solutions: KV cache and where each row stands."""

  cache: Any            # trunk KV cache, batch-major leaves, `max_len` slots
  positions: jax.Array  # [B] int32: next slot to write (= tokens encoded so far)
  logit: jax.Array      # [B] float32: reward logit at each row's last encoded token
  overflow: jax.Array   # [B] bool: a padded write ran past `max_len`; logits are NaN from then on
  max_len: int = struct.field(pytree_node=False)  # cache slots per row

  def gather(self, idx: jax.Array) -> "ScoreState":
    """Rows `idx` of every leaf: broadcast a prompt to its samples, keep surviving beams."""
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), self)


# ---- construction and state checks ----

def create(cfg: transformer.TransformerConfig, seed: int = 0) -> tuple[nnx.GraphDef, nnx.State]:
  """A randomly initialised reward model, split into `(graphdef, state)`."""
  return nnx.split(RewardModel(cfg, nnx.Rngs(seed)))


def _flat(tree: PyTree) -> dict[str, jax.Array]:
  """`{'trunk/blocks/0/attn/wq': array}` for an nnx.State or nested dict of arrays."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [keystr((k,), simple=True) for k in path]
    if names and names[-1] == "value":  # nnx.Variable's array
      names = names[:-1]
    out["/".join(names)] = leaf
  return out


@functools.lru_cache(maxsize=None)
def _expected_shapes(cfg: transformer.TransformerConfig) -> dict[str, tuple[int, ...]]:
  abstract = nnx.state(nnx.eval_shape(lambda: RewardModel(cfg, nnx.Rngs(0))))
  return {k: tuple(v.shape) for k, v in _flat(abstract).items()}


def _mismatch(what: str, cfg: transformer.TransformerConfig, expected: dict, actual: dict,
              prefix: str = "") -> str | None:
  for name, shape in expected.items():
    if name not in actual:
      return (f"{what} has no array '{prefix}{name}' that TransformerConfig expects "
              f"(shape {shape}); it was saved from a different architecture.")
    got = tuple(np.shape(actual[name]))
    if got != shape:
      return (f"{what} array '{prefix}{name}' has shape {got} but the config expects "
              f"{shape} ({cfg}); build the TransformerConfig the checkpoint was trained "
              f"with (vocab_size, d_model, heads, mlp_dim, num_layers must match).")
  return None


def validate_state(cfg: transformer.TransformerConfig, state: PyTree) -> None:
  """Raises ValueError naming both shapes if `state` does not fit a reward model of `cfg`."""
  expected, actual = _expected_shapes(cfg), _flat(state)
  msg = _mismatch("Reward state", cfg, expected, actual)
  if msg is None and set(actual) - set(expected):
    msg = (f"Reward state has arrays {sorted(set(actual) - set(expected))} that a reward "
           f"model of this config lacks (num_layers={cfg.num_layers}); use the config "
           f"the checkpoint was trained with.")
  if msg:
    raise ValueError(msg)


def from_lm(lm_state: PyTree, cfg: transformer.TransformerConfig,
            seed: int = 0) -> tuple[nnx.GraphDef, nnx.State]:
  """A reward model whose trunk is a copy of the base LM's (paper §5.1: PRM finetuned from the LM).

  The head is freshly initialised from `seed`; the LM head is dropped.
  """
  graphdef, state = create(cfg, seed)
  trunk = {k[len("trunk/"):]: v for k, v in _expected_shapes(cfg).items()
           if k.startswith("trunk/")}
  lm = _flat(lm_state)
  msg = _mismatch("Base LM state", cfg, trunk, lm)
  if msg:
    raise ValueError(msg)

  def copy(path, leaf):
    name = keystr(path, simple=True, separator="/")
    name = name[:-len("/value")] if name.endswith("/value") else name
    if name.startswith("trunk/"):
      return jnp.asarray(lm[name[len("trunk/"):]], leaf.dtype)
    return leaf

  return graphdef, jax.tree_util.tree_map_with_path(copy, state)


def _merge(graphdef: nnx.GraphDef, state: PyTree) -> RewardModel:
  try:
    model = nnx.merge(graphdef, state)
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(f"The state does not fit the graphdef ({e}); pass the graphdef and state "
                     f"of the same reward model (reward.create / reward.from_lm).") from e
  if not isinstance(model, RewardModel):
    raise ValueError(f"graphdef describes a {type(model).__name__}, not a RewardModel; "
                     f"build it with reward.create or reward.from_lm.")
  validate_state(model.cfg, state)
  return model


# ---- pure functions over (graphdef, state) ----

def apply(graphdef: nnx.GraphDef, state: PyTree, tokens: jax.Array,
          positions: jax.Array | None = None, cache: Any = None) -> tuple[jax.Array, Any]:
  """Per-token reward logits `[B, T]` float32 and the updated cache (None without one)."""
  return _merge(graphdef, state)(tokens, positions, cache)


def _at(logits: jax.Array, idx: jax.Array) -> jax.Array:
  """`logits[b, idx[b, s]]` for `idx` [B, S]; -1 entries read index 0 (mask them)."""
  return jnp.take_along_axis(logits, jnp.maximum(idx, 0), axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def step_scores(graphdef: nnx.GraphDef, state: PyTree, tokens: jax.Array,
                step_ends: jax.Array) -> jax.Array:
  """PRM scores `[B, S]` in [0, 1]: sigmoid of the logit at each step end; 0 where padded (-1)."""
  logits, _ = apply(graphdef, state, tokens)
  return jnp.where(step_ends >= 0, jax.nn.sigmoid(_at(logits, step_ends)), 0.0)


def aggregate(scores: np.ndarray, num_steps: np.ndarray, how: str = "last", xp=np) -> np.ndarray:
  """One score `[B]` per solution from its first `num_steps` step scores (paper §5.1 uses 'last').

  'min' and 'prod' are the alternatives the paper compares against. Rows with no
  scored step get 0; NaN (unscored) entries count as 0. With `xp=np` (default) it
  runs on the host, so candidate counts that vary between calls compile nothing;
  with `xp=jnp` the same rule runs inside jit (tree search scores its beams there).
  """
  if how not in AGGREGATIONS:
    raise ValueError(f"Unknown step aggregation how={how!r}; choose one of {AGGREGATIONS}.")
  num_steps = xp.asarray(num_steps).astype(xp.int32)
  scores = xp.nan_to_num(xp.asarray(scores, xp.float32).reshape(num_steps.shape[0], -1))
  if not scores.shape[1]:
    return xp.zeros((num_steps.shape[0],), xp.float32)
  valid = xp.arange(scores.shape[1])[None, :] < num_steps[:, None]
  if how == "last":
    out = xp.take_along_axis(scores, xp.maximum(num_steps - 1, 0)[:, None], axis=1)[:, 0]
  elif how == "min":
    out = xp.where(valid, scores, 1.0).min(axis=1, initial=1.0)
  else:
    out = xp.where(valid, scores, 1.0).prod(axis=1)
  return xp.where(num_steps > 0, out, 0.0).astype(xp.float32)


# ---- incremental scoring (docs/design.md, "Verifier") ----

@functools.partial(jax.jit, static_argnames=("graphdef", "max_len"))
def prefill(graphdef: nnx.GraphDef, state: PyTree, tokens: jax.Array, lengths: jax.Array,
            max_len: int) -> ScoreState:
  """Encodes right-padded prefixes `[B, P]` (true lengths `[B]`) into a cache of `max_len` slots.

  `max_len` must cover each row's final length plus the padding of its last
  `extend` (new tokens are written as a block of `new_tokens.shape[1]` slots).
  """
  b, p = tokens.shape
  if p > max_len:
    raise ValueError(f"prefill tokens have {p} columns but the cache has max_len={max_len} "
                     f"slots; raise max_len.")
  model = _merge(graphdef, state)
  positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  logits, cache = model(tokens, positions, model.cfg.init_cache(b, max_len))
  lengths = lengths.astype(jnp.int32)
  last = _at(logits, (lengths - 1)[:, None])[:, 0]
  return ScoreState(cache=cache, positions=lengths, logit=jnp.where(lengths > 0, last, 0.0),
                    overflow=jnp.zeros((b,), bool), max_len=max_len)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def extend(graphdef: nnx.GraphDef, state: PyTree, score_state: ScoreState,
           new_tokens: jax.Array, new_lengths: jax.Array) -> tuple[ScoreState, jax.Array]:
  """Encodes each row's new tokens at its current position; returns the logit at its last new token.

  `new_tokens` [B, T] is right-padded, `new_lengths` [B] its true lengths (0
  leaves a row unchanged). Padding is written past the row's end and
  overwritten by the next call, so only `B * T` tokens are encoded. A row whose
  block would run past the cache's `max_len` is marked `overflow` and scores NaN.
  """
  t = new_tokens.shape[1]
  max_len = score_state.max_len
  if t > max_len:
    raise ValueError(f"extend got {t} new-token columns but the cache has only {max_len} "
                     f"slots; raise prefill's max_len.")
  pos = score_state.positions[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
  logits, cache = apply(graphdef, state, new_tokens, pos, score_state.cache)
  new_lengths = new_lengths.astype(jnp.int32)
  last = _at(logits, jnp.maximum(new_lengths - 1, 0)[:, None])[:, 0]
  overflow = score_state.overflow | (score_state.positions + t > max_len)
  logit = jnp.where(new_lengths > 0, last, score_state.logit)
  logit = jnp.where(overflow, jnp.nan, logit)
  new = ScoreState(cache=cache, positions=score_state.positions + new_lengths, logit=logit,
                   overflow=overflow, max_len=max_len)
  return new, logit


# ---- losses (shared trainer interface: loss_fn(params, batch) -> (loss, metrics)) ----

def _bce_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array):
  labels = labels.astype(jnp.float32)
  mask = mask.astype(jnp.float32)
  denom = jnp.maximum(mask.sum(), 1.0)
  loss = (optax.sigmoid_binary_cross_entropy(logits, labels) * mask).sum() / denom
  probs = jax.nn.sigmoid(logits)
  agree = ((probs > 0.5) == (labels > 0.5)).astype(jnp.float32)
  return loss, {"loss": loss, "accuracy": (agree * mask).sum() / denom,
                "mae": (jnp.abs(probs - labels) * mask).sum() / denom}


def prm_loss(apply_fn: Callable[[PyTree, jax.Array], jax.Array], ranking_weight: float = 0.0):
  """Binary cross-entropy with soft Monte-Carlo labels at every step end (paper §5.1).

  `apply_fn(params, tokens) -> logits [B, T]`; the batch holds `tokens` [B, T],
  `step_ends` [B, S] (-1 padded), `labels` [B, S] in [0, 1] and `label_mask` [B, S].
  With `ranking_weight` > 0 the batch also holds `question` [B] and the loss adds
  `ranking_weight` times `pairwise_sibling_loss`: search ranks the candidates of one
  question, which the BCE alone does not ask for (docs/design.md, "Verifier").
  """
  def loss_fn(params: PyTree, batch: dict[str, jax.Array]):
    logits = apply_fn(params, batch["tokens"]).astype(jnp.float32)
    ends = batch["step_ends"]
    mask = batch["label_mask"].astype(jnp.float32) * (ends >= 0)
    at = _at(logits, ends)
    loss, metrics = _bce_metrics(at, batch["labels"], mask)
    if ranking_weight:
      rank = pairwise_sibling_loss(at, batch["labels"], mask, batch["question"])
      loss = loss + ranking_weight * rank
      metrics = {**metrics, "bce": metrics["loss"], "ranking_loss": rank, "loss": loss}
    return loss, metrics
  return loss_fn


def pairwise_sibling_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                          question: jax.Array) -> jax.Array:
  """Pairwise logistic loss between steps at the same depth of solutions to one question.

  For every two labelled steps (same question `[B]`, same step index) whose soft labels
  differ, `-log sigmoid(s_hi - s_lo)` weighted by the label gap, averaged by the total gap;
  0 when the batch has no such pair. `logits`, `labels`, `mask` are `[B, S]`.
  """
  labels = labels.astype(jnp.float32)
  mask = mask.astype(jnp.float32)
  gap = labels[:, None, :] - labels[None, :, :]                          # [B, B, S]
  same = (question[:, None] == question[None, :])[:, :, None]
  weight = jnp.where(same & (gap > 0), gap, 0.0) * mask[:, None, :] * mask[None, :, :]
  pair = jax.nn.softplus(-(logits[:, None, :] - logits[None, :, :]))
  return (weight * pair).sum() / jnp.maximum(weight.sum(), 1e-6)


def orm_loss(apply_fn: Callable[[PyTree, jax.Array], jax.Array]):
  """Binary cross-entropy on answer correctness at the final token (ORM, paper §6.1).

  The batch holds `tokens` [B, T], `final_pos` [B] (index of the final token,
  usually EOS) and `label` [B] in [0, 1].
  """
  def loss_fn(params: PyTree, batch: dict[str, jax.Array]):
    logits = apply_fn(params, batch["tokens"]).astype(jnp.float32)
    final = _at(logits, batch["final_pos"][:, None])[:, 0]
    return _bce_metrics(final, batch["label"], jnp.ones_like(final))
  return loss_fn
