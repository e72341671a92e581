"""Mistral: Llama's layout with a sliding attention window on every layer (docs/design.md,
"Checkpoints")."""

from __future__ import annotations

from typing import Any

from ttc_jax.models.convert import common

NAME = "Mistral"
MODEL_TYPES = {"mistral": ("MistralForCausalLM",)}


def config_fields(hf: dict) -> dict[str, Any]:
  return dict(**common.base_fields(hf), **common.rope_fields(hf),
              **common.sliding_fields(hf),
              mlp_activation=common.activation(hf, "hidden_act", {"silu": "silu"}))
