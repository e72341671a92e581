"""Llama-style decoder LM in Flax NNX: RMSNorm, RoPE, SwiGLU, grouped-query attention.

The defaults are Llama's; the other fields of `TransformerConfig` are exactly the
options the converted families need (docs/design.md, "Checkpoints"): Llama 3 RoPE
scaling, Qwen2's q/k/v bias, Qwen3's and Gemma 3's q/k norm, Gemma's (1 + w) norms,
sandwich norms, GeGLU, embedding scale and soft-capping, and sliding-window layers
(Mistral, Gemma 2/3).

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
import numpy as np
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
  dtype: str = "float32"  # activation dtype
  param_dtype: str = "float32"  # parameter dtype (bfloat16 for real checkpoints on accelerators)
  # RoPE scaling of the full-attention layers: "none", "linear" (positions / factor) or
  # "llama3" (Llama 3.1/3.2: low frequencies / factor, a smooth band between).
  rope_scaling: str = "none"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  local_rope_theta: float = 0.0  # theta of sliding-window layers, unscaled (Gemma 3); 0: as full
  qkv_bias: bool = False  # q/k/v projections have a bias (Qwen2)
  qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3, Gemma 3)
  norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + w): 1.0 is Gemma's (1 + w)
  sandwich_norm: bool = False  # a norm on the attention and MLP outputs too (Gemma 2/3)
  mlp_activation: str = "silu"  # gated MLP: "silu" (SwiGLU) or "gelu_tanh" (GeGLU, Gemma)
  embed_scale: bool = False  # embeddings times sqrt(d_model) (Gemma)
  query_scale: float = 0.0  # attention scores times this; 0: 1/sqrt(head_dim)
  attn_softcap: float = 0.0  # scores -> c * tanh(scores / c) (Gemma 2); 0: off
  final_softcap: float = 0.0  # the same on the output logits (Gemma 2)
  sliding_window: int = 0  # a query sees keys less than this many positions back; 0: off
  sliding_layers: tuple[int, ...] = ()  # layers with the window; () with a window: all

  def __post_init__(self):
    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "mlp_dim", "max_len"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TransformerConfig.{field}={value!r} must be an int >= 1.")
    if not self.rope_theta > 0 or not self.norm_eps > 0:
      raise ValueError(f"rope_theta={self.rope_theta!r} and norm_eps={self.norm_eps!r} must be "
                       f"> 0.")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{field}={getattr(self, field)!r}; choose float32, bfloat16 or "
                         f"float16.")
    if self.rope_scaling not in ("none", "linear", "llama3"):
      raise ValueError(f"rope_scaling={self.rope_scaling!r}; choose none, linear or llama3.")
    if not self.rope_factor > 0 or not (0 < self.rope_low_freq_factor
                                        < self.rope_high_freq_factor):
      raise ValueError(f"rope_factor={self.rope_factor!r} must be > 0 and 0 < "
                       f"rope_low_freq_factor < rope_high_freq_factor, got "
                       f"{self.rope_low_freq_factor!r}, {self.rope_high_freq_factor!r}.")
    if self.mlp_activation not in ("silu", "gelu_tanh"):
      raise ValueError(f"mlp_activation={self.mlp_activation!r}; choose silu or gelu_tanh.")
    for field in ("local_rope_theta", "query_scale", "attn_softcap", "final_softcap",
                  "sliding_window"):
      if getattr(self, field) < 0:
        raise ValueError(f"{field}={getattr(self, field)!r} must be >= 0 (0 turns it off).")
    bad = [i for i in self.sliding_layers if not 0 <= i < self.num_layers]
    if bad or (self.sliding_layers and not self.sliding_window):
      raise ValueError(f"sliding_layers={self.sliding_layers!r} must be layer indices below "
                       f"num_layers={self.num_layers}, with sliding_window > 0.")
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
    per_layer += (h + 2 * kv) * hd * self.qkv_bias + 2 * hd * self.qk_norm
    per_layer += 2 * d * self.sandwich_norm
    head = 0 if self.tie_embeddings else d * v
    return v * d + self.num_layers * per_layer + d + head

  def is_sliding(self, layer: int) -> bool:
    """Whether `layer` attends through the sliding window."""
    return bool(self.sliding_window) and (not self.sliding_layers
                                          or layer in self.sliding_layers)

  def init_cache(self, batch: int, max_len: int | None = None) -> Cache:
    shape = (batch, self.num_kv_heads, max_len or self.max_len, self.head_dim)
    zeros = jnp.zeros(shape, jnp.dtype(self.dtype))
    return tuple({"k": zeros, "v": zeros} for _ in range(self.num_layers))


def _param(value: jax.Array, names: tuple[str, ...], dtype: str = "float32") -> nnx.Param:
  """A parameter annotated with logical axis names (mapped to the mesh in parallel/mesh.py)."""
  return nnx.Param(value.astype(dtype), out_sharding=names, eager_sharding=False)


def _dense(rngs: nnx.Rngs, shape: tuple[int, ...], names: tuple[str, ...],
           dtype: str = "float32") -> nnx.Param:
  return _param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32), names, dtype)


class RMSNorm(nnx.Module):
  """`(offset + w) * x / rms(x)`, computed in float32 (offset 1 is Gemma's zero-centred w)."""

  def __init__(self, dim: int, eps: float, offset: float = 0.0, dtype: str = "float32",
               axis_name: str = "embed"):
    self.scale = _param(jnp.full((dim,), 1.0 - offset), (axis_name,), dtype)
    self.eps = eps
    self.offset = offset

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return ((self.offset + self.scale[...].astype(jnp.float32)) * y).astype(x.dtype)


def inv_frequencies(cfg: TransformerConfig, layer: int) -> jax.Array:
  """RoPE inverse frequencies `[head_dim / 2]` of `layer`, scaling applied (float32)."""
  d = cfg.head_dim
  local = cfg.is_sliding(layer) and cfg.local_rope_theta > 0
  theta = cfg.local_rope_theta if local else cfg.rope_theta
  inv = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  if local or cfg.rope_scaling == "none":
    return inv
  if cfg.rope_scaling == "linear":
    return inv / cfg.rope_factor
  # llama3: wavelengths longer than original_max_len / low_freq_factor are divided by the
  # factor, shorter than original_max_len / high_freq_factor kept, the band between blended.
  old, lo, hi = cfg.rope_original_max_len, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  wavelen = 2 * jnp.pi / inv
  scaled = jnp.where(wavelen > old / lo, inv / cfg.rope_factor, inv)
  smooth = (old / wavelen - lo) / (hi - lo)
  blended = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
  medium = (wavelen >= old / hi) & (wavelen <= old / lo)
  return jnp.where(medium, blended, scaled)


def rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotary embedding, half-rotation layout (as in Llama / HF transformers)."""
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

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs, layer: int = 0):
    self.cfg = cfg
    self.layer = layer
    d, h, kv, hd, pd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.param_dtype
    self.wq = _dense(rngs, (d, h * hd), ("embed", "heads"), pd)
    self.wk = _dense(rngs, (d, kv * hd), ("embed", "kv_heads"), pd)
    self.wv = _dense(rngs, (d, kv * hd), ("embed", "kv_heads"), pd)
    self.wo = _dense(rngs, (h * hd, d), ("heads", "embed"), pd)
    if cfg.qkv_bias:
      self.bq = _param(jnp.zeros((h * hd,)), ("heads",), pd)
      self.bk = _param(jnp.zeros((kv * hd,)), ("kv_heads",), pd)
      self.bv = _param(jnp.zeros((kv * hd,)), ("kv_heads",), pd)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(hd, cfg.norm_eps, cfg.norm_offset, pd, axis_name=None)
      self.k_norm = RMSNorm(hd, cfg.norm_eps, cfg.norm_offset, pd, axis_name=None)

  def _project(self, x, name, heads):
    y = x @ getattr(self, "w" + name)[...].astype(x.dtype)
    if self.cfg.qkv_bias:
      y = y + getattr(self, "b" + name)[...].astype(x.dtype)
    return y.reshape(*x.shape[:2], heads, self.cfg.head_dim)

  def __call__(self, x, positions, layer_cache):
    cfg = self.cfg
    b, t, _ = x.shape
    dt = x.dtype
    q = self._project(x, "q", cfg.num_heads)
    k = self._project(x, "k", cfg.num_kv_heads)
    v = self._project(x, "v", cfg.num_kv_heads)
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    inv_freq = inv_frequencies(cfg, self.layer)
    q = rope(q, positions, inv_freq)
    k = rope(k, positions, inv_freq).transpose(0, 2, 1, 3)  # [B, K, T, D]
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
    if cfg.query_scale:
      scores = scores * jnp.float32(cfg.query_scale)
    else:
      scores = scores / jnp.sqrt(jnp.float32(cfg.head_dim))
    if cfg.attn_softcap:
      scores = cfg.attn_softcap * jnp.tanh(scores / cfg.attn_softcap)
    mask = key_pos[:, None, :] <= positions[:, :, None]  # [B, T, S]
    if cfg.is_sliding(self.layer):
      mask &= key_pos[:, None, :] > positions[:, :, None] - cfg.sliding_window
    mask = jnp.tile(mask, (1, g, 1))[:, None]  # [B, 1, G*T, S]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dt)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, values.astype(dt))
    out = out.reshape(b, cfg.num_kv_heads, g, t, cfg.head_dim).transpose(0, 3, 1, 2, 4)
    out = out.reshape(b, t, cfg.num_heads * cfg.head_dim)
    return out @ self.wo[...].astype(dt), new_cache


class MLP(nnx.Module):
  """Gated feed-forward: SwiGLU, or GeGLU with `mlp_activation='gelu_tanh'`."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, f, pd = cfg.d_model, cfg.mlp_dim, cfg.param_dtype
    self.activation = cfg.mlp_activation
    self.w_gate = _dense(rngs, (d, f), ("embed", "mlp"), pd)
    self.w_up = _dense(rngs, (d, f), ("embed", "mlp"), pd)
    self.w_down = _dense(rngs, (f, d), ("mlp", "embed"), pd)

  def __call__(self, x):
    dt = x.dtype
    gate = x @ self.w_gate[...].astype(dt)
    gate = (jax.nn.silu(gate) if self.activation == "silu"
            else jax.nn.gelu(gate, approximate=True))
    return (gate * (x @ self.w_up[...].astype(dt))) @ self.w_down[...].astype(dt)


class Block(nnx.Module):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs, layer: int = 0):
    norm = lambda: RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_offset, cfg.param_dtype)
    self.attn_norm = norm()
    self.attn = Attention(cfg, rngs, layer)
    self.mlp_norm = norm()
    self.mlp = MLP(cfg, rngs)
    self.sandwich = cfg.sandwich_norm
    if cfg.sandwich_norm:
      self.post_attn_norm = norm()
      self.post_mlp_norm = norm()

  def __call__(self, x, positions, layer_cache):
    h, layer_cache = self.attn(self.attn_norm(x), positions, layer_cache)
    x = x + (self.post_attn_norm(h) if self.sandwich else h)
    h = self.mlp(self.mlp_norm(x))
    return x + (self.post_mlp_norm(h) if self.sandwich else h), layer_cache


class Transformer(nnx.Module):
  """Decoder-only LM. `__call__(tokens, positions, cache) -> (logits, cache)`."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = cfg.param_dtype
    self.embed = _dense(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd)
    self.blocks = nnx.List([Block(cfg, rngs, i) for i in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_offset, pd)
    if not cfg.tie_embeddings:
      self.lm_head = _dense(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), pd)

  def hidden(self, tokens: jax.Array, positions: jax.Array | None = None,
             cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
    """Final-norm hidden states `[B, T, d_model]` (the trunk used by reward heads)."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    dt = jnp.dtype(self.cfg.dtype)
    x = self.embed[...].astype(dt)[tokens]
    if self.cfg.embed_scale:
      # sqrt(d_model) rounded to the parameters' dtype, as Gemma's reference does
      x = x * jnp.asarray(np.sqrt(self.cfg.d_model), self.cfg.param_dtype).astype(dt)
    new_cache = []
    for i, block in enumerate(self.blocks):
      x, lc = block(x, positions, None if cache is None else cache[i])
      new_cache.append(lc)
    return self.final_norm(x), (None if cache is None else tuple(new_cache))

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               cache: Cache | None = None) -> tuple[jax.Array, Cache | None]:
    x, cache = self.hidden(tokens, positions, cache)
    w = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    logits = (x @ w.astype(x.dtype)).astype(jnp.float32)
    if self.cfg.final_softcap:
      logits = self.cfg.final_softcap * jnp.tanh(logits / self.cfg.final_softcap)
    return logits, cache


def create(cfg: TransformerConfig, seed: int = 0) -> tuple[nnx.GraphDef, nnx.State]:
  """Builds the model and splits it once into `(graphdef, state)`."""
  return nnx.split(Transformer(cfg, nnx.Rngs(seed)))


def apply(graphdef: nnx.GraphDef, state: Any, tokens: jax.Array,
          positions: jax.Array | None = None, cache: Cache | None = None):
  """Pure forward pass: `(logits [B,T,V] float32, new cache or None)`."""
  return nnx.merge(graphdef, state)(tokens, positions, cache)
