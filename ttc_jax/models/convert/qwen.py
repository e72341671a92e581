"""Qwen2 / Qwen2.5 (q/k/v bias) and Qwen3 (q/k RMSNorm, no bias) (docs/design.md,
"Checkpoints")."""

from __future__ import annotations

from typing import Any

from ttc_jax.models.convert import common

NAME = "Qwen"
MODEL_TYPES = {"qwen2": ("Qwen2ForCausalLM",), "qwen3": ("Qwen3ForCausalLM",)}


def config_fields(hf: dict) -> dict[str, Any]:
  qwen3 = hf["model_type"] == "qwen3"
  if qwen3:
    common.check(not hf.get("attention_bias", False),
                 "attention_bias=True: a Qwen3 o_proj bias has no place in the transformer; "
                 "use a checkpoint with attention_bias=False.")
  # Configs older than `layer_types`: the window is on layers >= max_window_layers.
  window_from = hf.get("max_window_layers", 0) if hf.get("use_sliding_window") else None
  types = lambda i: ("sliding_attention" if window_from is not None and i >= window_from
                     else "full_attention")
  return dict(**common.base_fields(hf), **common.rope_fields(hf),
              **common.sliding_fields(hf, types), qkv_bias=not qwen3, qk_norm=qwen3,
              mlp_activation=common.activation(hf, "hidden_act", {"silu": "silu"}))
