"""Llama-style decoder LM in Flax NNX: RMSNorm, RoPE, SwiGLU, grouped-query attention.

The module is used at the edges only: split it once with `nnx.split` and call the
pure `apply(graphdef, state, tokens, positions, cache)` everywhere downstream
(sampler, search, reward models), so jit sees pytrees, not objects.

KV cache convention: one `{'k','v'}` dict per layer, each `[batch, kv_heads,
max_len, head_dim]` (heads before slots, so attention reads it without a
transpose), and *slot == absolute position*. A token at position p is
written to slot p and attends to slots <= p. Rows of a batch may sit at
different positions (right-padded prompts, beams of different lengths); a slot
past a row's last written position holds stale values that the causal mask
hides until a new token overwrites it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Cache = tuple  # tuple[dict[str, jax.Array], ...], one dict per layer


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 384
  max_len: int = 128
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  dtype: str = "float32"  # activation dtype; parameters stay float32

  def __post_init__(self):
    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "mlp_dim", "max_len"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TransformerConfig.{field}={value!r} must be an int >= 1.")
    if not self.rope_theta > 0 or not self.norm_eps > 0:
      raise ValueError(f"rope_theta={self.rope_theta!r} and norm_eps={self.norm_eps!r} must be "
                       f"> 0.")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"dtype={self.dtype!r}; choose float32, bfloat16 or float16.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads}) for grouped-query attention.")
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}.")

  @property
  def num_params(self) -> int:
    """Parameter count N used in FLOPs accounting (embeddings included)."""
    d, h, kv, hd, f, v = (self.d_model, self.num_heads, self.num_kv_heads,
                          self.head_dim, self.mlp_dim, self.vocab_size)
    per_layer = d * hd * (h + 2 * kv) + h * hd * d + 3 * d * f + 2 * d
    head = 0 if self.tie_embeddings else d * v
    return v * d + self.num_layers * per_layer + d + head

  def init_cache(self, batch: int, max_len: int | None = None) -> Cache:
    shape = (batch, self.num_kv_heads, max_len or self.max_len, self.head_dim)
    zeros = jnp.zeros(shape, jnp.dtype(self.dtype))
    return tuple({"k": zeros, "v": zeros} for _ in range(self.num_layers))


def _param(value: jax.Array, names: tuple[str, ...]) -> nnx.Param:
  """A parameter annotated with logical axis names (mapped to the mesh in parallel/mesh.py)."""
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


def _dense(rngs: nnx.Rngs, shape: tuple[int, int], names: tuple[str, str]) -> nnx.Param:
  return _param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32), names)


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, eps: float):
    self.scale = _param(jnp.ones((dim,), jnp.float32), ("embed",))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (self.scale[...] * y).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, half-rotation layout (as in Llama / HF transformers)."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  ang = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, d/2]
  cos = jnp.cos(ang)[:, :, None, :]
  sin = jnp.sin(ang)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _write(cache_arr: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
  """Writes new[b] ([K, T, D]) into cache_arr[b] ([K, S, D]) at slots start[b]..start[b]+T-1."""
  def one(c, n, s):
    return jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), s, axis=1)
  return jax.vmap(one)(cache_arr, new, start)


class Attention(nnx.Module):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, kv, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.wq = _dense(rngs, (d, h * hd), ("embed", "heads"))
    self.wk = _dense(rngs, (d, kv * hd), ("embed", "kv_heads"))
    self.wv = _dense(rngs, (d, kv * hd), ("embed", "kv_heads"))
    self.wo = _dense(rngs, (h * hd, d), ("heads", "embed"))

  def __call__(self, x, positions, layer_cache):
    cfg = self.cfg
    b, t, _ = x.shape
    dt = x.dtype
    q = (x @ self.wq[...].astype(dt)).reshape(b, t, cfg.num_heads, cfg.head_dim)
    k = (x @ self.wk[...].astype(dt)).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    v = (x @ self.wv[...].astype(dt)).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    q = rope(q, positions, cfg.rope_theta)
    k = rope(k, positions, cfg.rope_theta).transpose(0, 2, 1, 3)  # [B, K, T, D]
    v = v.transpose(0, 2, 1, 3)
    if layer_cache is None:
      keys, values, key_pos = k, v, positions
      new_cache = None
    else:
      start = positions[:, 0]
      keys = _write(layer_cache["k"], k, start)
      values = _write(layer_cache["v"], v, start)
      key_pos = jnp.broadcast_to(jnp.arange(keys.shape[2]), (b, keys.shape[2]))
      new_cache = {"k": keys, "v": values}
    g = cfg.num_heads // cfg.num_kv_heads
    # Query heads of one KV group as rows: [B, K, G*T, D], row index g*T + t.
    q = q.reshape(b, t, cfg.num_kv_heads, g, cfg.head_dim).transpose(0, 2, 3, 1, 4)
    q = q.reshape(b, cfg.num_kv_heads, g * t, cfg.head_dim)
    scores = jnp.einsum("bkqd,bksd->bkqs", q, keys.astype(dt)).astype(jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(cfg.head_dim))
    mask = key_pos[:, None, :] <= positions[:, :, None]  # [B, T, S]
    mask = jnp.tile(mask, (1, g, 1))[:, None]  # [B, 1, G*T, S]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dt)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, values.astype(dt))
    out = out.reshape(b, cfg.num_kv_heads, g, t, cfg.head_dim).transpose(0, 3, 1, 2, 4)
    out = out.reshape(b, t, cfg.num_heads * cfg.head_dim)
    return out @ self.wo[...].astype(dt), new_cache


class MLP(nnx.Module):
  """SwiGLU feed-forward."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.w_gate = _dense(rngs, (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"))
    self.w_up = _dense(rngs, (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"))
    self.w_down = _dense(rngs, (cfg.mlp_dim, cfg.d_model), ("mlp", "embed"))

  def __call__(self, x):
    dt = x.dtype
    h = jax.nn.silu(x @ self.w_gate[...].astype(dt)) * (x @ self.w_up[...].astype(dt))
    return h @ self.w_down[...].astype(dt)


class Block(nnx.Module):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x, positions, layer_cache):
    h, layer_cache = self.attn(self.attn_norm(x), positions, layer_cache)
    x = x + h
    return x + self.mlp(self.mlp_norm(x)), layer_cache


class Transformer(nnx.Module):
  """Decoder-only LM. `__call__(tokens, positions, cache) -> (logits, cache)`."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = _dense(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    if not cfg.tie_embeddings:
      self.lm_head = _dense(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"))

  def hidden(self, tokens: jax.Array, positions: jax.Array | None = None,
             cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
    """Final-norm hidden states `[B, T, d_model]` (the trunk used by reward heads)."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = self.embed[...].astype(jnp.dtype(self.cfg.dtype))[tokens]
    new_cache = []
    for i, block in enumerate(self.blocks):
      x, lc = block(x, positions, None if cache is None else cache[i])
      new_cache.append(lc)
    return self.final_norm(x), (None if cache is None else tuple(new_cache))

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
    x, cache = self.hidden(tokens, positions, cache)
    w = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    return (x @ w.astype(x.dtype)).astype(jnp.float32), cache


def create(cfg: TransformerConfig, seed: int = 0) -> tuple[nnx.GraphDef, nnx.State]:
  """Builds the model and splits it once into `(graphdef, state)`."""
  return nnx.split(Transformer(cfg, nnx.Rngs(seed)))


def apply(graphdef: nnx.GraphDef, state: Any, tokens: jax.Array,
          positions: jax.Array | None = None, cache: Cache | None = None):
  """Pure forward pass: `(logits [B,T,V] float32, new cache or None)`."""
  return nnx.merge(graphdef, state)(tokens, positions, cache)
