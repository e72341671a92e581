"""What the family converters share: config fields, tensor names, the loader (docs/design.md,
"Checkpoints").

A family module (`llama`, `qwen`, `mistral`, `gemma`) turns an HF `config.json` dict
into `TransformerConfig` fields and rejects what it cannot convert exactly; the
tensor names follow from the config, and `load` places every tensor, cast to the
parameter dtype, straight into its mesh layout.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from ttc_jax.models import transformer
from ttc_jax.models.convert import safetensors_files
from ttc_jax.parallel import mesh as mesh_lib

# Buffers some older checkpoints store; recomputed from the config, so skipped.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def check(ok: bool, msg: str) -> None:
  if not ok:
    raise ValueError(msg)


def read_config(path: str, what: str = "written by save_pretrained") -> dict[str, Any]:
  """The `config.json` of checkpoint directory `path`; a one-line error naming it if absent."""
  cfg_file = os.path.join(path, "config.json")
  check(os.path.exists(cfg_file), f"No config.json in {path!r}; pass the directory {what}.")
  with open(cfg_file) as f:
    return json.load(f)


def base_fields(hf: dict) -> dict[str, Any]:
  """Sizes every family names the same way."""
  d, heads = hf["hidden_size"], hf["num_attention_heads"]
  return dict(vocab_size=hf["vocab_size"], d_model=d, num_layers=hf["num_hidden_layers"],
              num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
              head_dim=hf.get("head_dim") or d // heads, mlp_dim=hf["intermediate_size"],
              norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
              # transformers 4 leaves the key out when it is True (its base default)
              tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def activation(hf: dict, key: str, allowed: dict[str, str]) -> str:
  """Our `mlp_activation` for the HF activation named by `hf[key]`."""
  act = hf.get(key)
  check(act in allowed, f"{key}={act!r} is not supported for model_type="
        f"{hf.get('model_type')!r}; the gated MLP takes {sorted(allowed)}.")
  return allowed[act]


def _one_rope(params: dict, where: str) -> dict[str, Any]:
  kind = params.get("rope_type", params.get("type", "default"))
  out: dict[str, Any] = {}
  if kind == "linear":
    out = dict(rope_scaling="linear", rope_factor=float(params["factor"]))
  elif kind == "llama3":
    out = dict(rope_scaling="llama3", rope_factor=float(params["factor"]),
               rope_low_freq_factor=float(params["low_freq_factor"]),
               rope_high_freq_factor=float(params["high_freq_factor"]),
               rope_original_max_len=int(params["original_max_position_embeddings"]))
  else:
    check(kind == "default",
          f"RoPE scaling {kind!r} ({where}={params!r}) is not supported; the transformer "
          f"has plain, 'linear' and 'llama3' RoPE. Use a checkpoint with one of those.")
  return out


def rope_fields(hf: dict) -> dict[str, Any]:
  """RoPE theta and scaling from either config layout: transformers >= 5 `rope_parameters`
  (flat, or one entry per layer type as in Gemma 3), or `rope_theta` + `rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  local = None
  if "full_attention" in params or "sliding_attention" in params:
    local = params.get("sliding_attention")
    params = dict(params.get("full_attention") or {})
  scaling = hf.get("rope_scaling")
  if scaling and not params.get("rope_type", params.get("type")):
    params.update(scaling)
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
  out = dict(rope_theta=theta, **_one_rope(params, "rope_parameters"))
  if local is None and hf.get("rope_local_base_freq"):
    local = {"rope_type": "default", "rope_theta": hf["rope_local_base_freq"]}
  if local is not None:
    check(not _one_rope(local, "sliding_attention rope"),
          f"Sliding-window layers with scaled RoPE ({local!r}) are not supported.")
    out["local_rope_theta"] = float(local.get("rope_theta", theta))
  return out


def sliding_fields(hf: dict, default_types: Callable[[int], str] | None = None
                   ) -> dict[str, Any]:
  """`sliding_window` and `sliding_layers` from `layer_types` (or `default_types(layer)` for
  configs written before transformers had it); no window: neither field."""
  window = hf.get("sliding_window")
  n = hf["num_hidden_layers"]
  types = hf.get("layer_types")
  if types is None:
    types = [default_types(i) if default_types else "sliding_attention" for i in range(n)]
  check(len(types) == n and set(types) <= {"full_attention", "sliding_attention"},
        f"layer_types={types!r} must name full_attention or sliding_attention for each of "
        f"the {n} layers.")
  sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
  if not window or not sliding:
    return {}
  return dict(sliding_window=int(window), sliding_layers=() if len(sliding) == n else sliding)


def tensor_names(cfg: transformer.TransformerConfig) -> dict[tuple, tuple[str, bool]]:
  """Our state path -> (HF tensor name, transpose?). HF `nn.Linear` weights are `[out, in]`,
  ours `[in, out]` (`x @ W`); both use the half-rotation RoPE layout, so q/k need no
  permutation."""
  names = {("embed",): ("model.embed_tokens.weight", False),
           ("final_norm", "scale"): ("model.norm.weight", False)}
  if not cfg.tie_embeddings:
    names[("lm_head",)] = ("lm_head.weight", True)
  norms = (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"))
  if cfg.sandwich_norm:  # Gemma 2/3: post_attention_layernorm is the attention output's
    norms = (("attn_norm", "input_layernorm"), ("post_attn_norm", "post_attention_layernorm"),
             ("mlp_norm", "pre_feedforward_layernorm"),
             ("post_mlp_norm", "post_feedforward_layernorm"))
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}", ("blocks", i)
    for mine, theirs in norms:
      names[(*ours, mine, "scale")] = (f"{hf}.{theirs}.weight", False)
    for mine, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj")):
      names[(*ours, "attn", "w" + mine)] = (f"{hf}.self_attn.{theirs}.weight", True)
      if cfg.qkv_bias and mine != "o":
        names[(*ours, "attn", "b" + mine)] = (f"{hf}.self_attn.{theirs}.bias", False)
    if cfg.qk_norm:
      for mine in ("q", "k"):
        names[(*ours, "attn", f"{mine}_norm", "scale")] = (
            f"{hf}.self_attn.{mine}_norm.weight", False)
    for mine, theirs in (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")):
      names[(*ours, "mlp", mine)] = (f"{hf}.mlp.{theirs}.weight", True)
  return names


def _check_names(ckpt: safetensors_files.Checkpoint, cfg: transformer.TransformerConfig,
                 names: dict, family: str) -> None:
  wanted = {n for n, _ in names.values()}
  # A tied checkpoint may still store lm_head.weight (a copy of the embedding).
  extra = ckpt.names - wanted - ({"lm_head.weight"} if cfg.tie_embeddings else set())
  extra = sorted(n for n in extra if not n.endswith(IGNORED_SUFFIXES))
  biases = [n for n in extra if n.endswith(".bias")]
  check(not biases, f"Checkpoint has bias tensors ({biases[:4]}) that a {family} model of "
        f"this config.json has no place for; fix attention_bias / mlp_bias in config.json.")
  check(not extra, f"Checkpoint has {len(extra)} tensors the {family} mapping does not use "
        f"(e.g. {extra[:4]}); check the checkpoint is a plain {family} causal LM with "
        f"{cfg.num_layers} layers as config.json says.")
  missing = sorted(wanted - ckpt.names)
  check(not missing, f"Checkpoint is missing {len(missing)} tensors (e.g. {missing[:4]}); "
        f"re-save the full model, or fix num_hidden_layers / tie_word_embeddings / the "
        f"bias and norm flags in config.json.")


def _place(view: np.ndarray, var: nnx.Variable, dtype: np.dtype, mesh: Mesh | None
           ) -> jax.Array:
  """One parameter on its devices, cast shard by shard (no float32 copy of the tensor)."""
  if mesh is None:
    return jnp.asarray(np.asarray(view, dtype))
  names = var.get_metadata().get("out_sharding") or (None,) * view.ndim
  sharding = NamedSharding(mesh, mesh_lib.logical_to_spec(names, view.shape, mesh))
  return jax.make_array_from_callback(view.shape, sharding,
                                      lambda index: np.asarray(view[index], dtype))


def load(ckpt: safetensors_files.Checkpoint, cfg: transformer.TransformerConfig, family: str,
         mesh: Mesh | None = None) -> tuple[nnx.GraphDef, nnx.State]:
  """`(graphdef, state)` of `cfg` filled tensor by tensor from `ckpt`, on `mesh` if given."""
  names = tensor_names(cfg)
  _check_names(ckpt, cfg, names, family)
  graphdef, abstract = nnx.split(
      nnx.eval_shape(lambda: transformer.Transformer(cfg, nnx.Rngs(0))))
  dtype = np.dtype(jnp.dtype(cfg.param_dtype))
  flat = []
  for p, var in nnx.to_flat_state(abstract):
    name, transpose = names[p]
    view = ckpt.array(name)
    view = view.T if transpose else view
    want = tuple(var.get_value().shape)
    check(view.shape == want,
          f"Tensor {name!r} has shape {tuple(view.shape)}"
          f"{' (transposed)' if transpose else ''}, expected {want} for parameter "
          f"{'.'.join(map(str, p))} from config.json; the config does not match the "
          f"weights (check hidden_size, intermediate_size, num_attention_heads, "
          f"num_key_value_heads, head_dim, vocab_size).")
    flat.append((p, var.replace(_place(view, var, dtype, mesh))))
  return graphdef, nnx.from_flat_state(flat)
