"""Small fixtures shared by tests, benchmarks and notebooks: a tiny model, a stub LM, a task."""

from __future__ import annotations

import jax.numpy as jnp

from ttc_jax.models import transformer
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tokenizers.char import CharTokenizer


def tiny_transformer(seed: int = 0, max_len: int = 64, **overrides):
  """`(cfg, graphdef, state, tokenizer, sampler)` for a random ~50k-parameter model.

  The tokenizer is the chain-arithmetic alphabet's; steps end at its newline.
  """
  tok = CharTokenizer(chain_arithmetic.ALPHABET)
  kw = dict(vocab_size=tok.vocab_size, d_model=32, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=max_len)
  kw.update(overrides)
  cfg = transformer.TransformerConfig(**kw)
  graphdef, state = transformer.create(cfg, seed)
  return cfg, graphdef, state, tok, Sampler.for_transformer(graphdef, cfg, tok, "\n")


def _stub_apply(params, tokens, positions, cache):
  del positions
  b, t = tokens.shape
  return jnp.broadcast_to(params["logits"], (b, t, params["logits"].shape[-1])), cache


def _stub_cache(batch: int, max_len: int):
  return jnp.zeros((batch, max_len), jnp.float32)


def stub_sampler(eos_id: int = 2, step_id: int = 3, context_len: int = 64) -> Sampler:
  """A sampler over a stub LM whose next-token logits are always `params['logits']`."""
  return Sampler(apply_fn=_stub_apply, init_cache=_stub_cache, eos_id=eos_id,
                 step_ids=(step_id,), pad_id=0, context_len=context_len)


def chain_task() -> chain_arithmetic.ChainArithmetic:
  """The chain-arithmetic task without data (answers and step checks only)."""
  return chain_arithmetic.ChainArithmetic(levels=[(2, 1)], num_per_level={}, seed=0)
