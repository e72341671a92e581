"""Llama 2 and Llama 3.x (`llama3` RoPE scaling, tied embeddings in 3.2) (docs/design.md,
"Checkpoints")."""

from __future__ import annotations

from typing import Any

from ttc_jax.models.convert import common

NAME = "Llama"
MODEL_TYPES = {"llama": ("LlamaForCausalLM",)}


def config_fields(hf: dict) -> dict[str, Any]:
  for key in ("attention_bias", "mlp_bias"):
    common.check(not hf.get(key, False),
                 f"{key}=True: Llama biases (o_proj and MLP too) have no place in the "
                 f"transformer; use a checkpoint with {key}=False.")
  return dict(**common.base_fields(hf), **common.rope_fields(hf),
              mlp_activation=common.activation(hf, "hidden_act", {"silu": "silu"}))
