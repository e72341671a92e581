"""Gemma 2 and Gemma 3 text models (docs/design.md, "Checkpoints").

Both scale the embeddings by sqrt(d_model), use (1 + w) RMSNorms before and after
attention and the MLP, GeGLU (tanh gelu), a query scale of
`query_pre_attn_scalar ** -0.5`, and alternate sliding-window and global layers.
Gemma 2 soft-caps attention scores and logits; Gemma 3 norms q and k and gives
its sliding layers their own RoPE theta.
"""

from __future__ import annotations

from typing import Any

from ttc_jax.models.convert import common

NAME = "Gemma"
MODEL_TYPES = {"gemma2": ("Gemma2ForCausalLM",), "gemma3_text": ("Gemma3ForCausalLM",)}


def config_fields(hf: dict) -> dict[str, Any]:
  gemma3 = hf["model_type"] == "gemma3_text"
  common.check(not hf.get("attention_bias", False),
               "attention_bias=True is not supported for Gemma; use attention_bias=False.")
  # Configs older than `layer_types`: Gemma 2 alternates (even layers slide), Gemma 3 has
  # one global layer every `sliding_window_pattern`.
  if gemma3:
    every = hf.get("sliding_window_pattern") or 6
    types = lambda i: "full_attention" if (i + 1) % every == 0 else "sliding_attention"
  else:
    types = lambda i: "sliding_attention" if i % 2 == 0 else "full_attention"
  return dict(
      **common.base_fields(hf), **common.rope_fields(hf), **common.sliding_fields(hf, types),
      mlp_activation=common.activation(hf, "hidden_activation",
                                       {"gelu_pytorch_tanh": "gelu_tanh"}),
      norm_offset=1.0, sandwich_norm=True, embed_scale=True, qk_norm=gemma3,
      query_scale=float(hf.get("query_pre_attn_scalar") or hf["head_dim"]) ** -0.5,
      attn_softcap=float(hf.get("attn_logit_softcapping") or 0.0),
      final_softcap=float(hf.get("final_logit_softcapping") or 0.0))
