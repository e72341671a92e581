"""Loads a Hugging Face `transformers` Llama checkpoint into `models/transformer.py`.

Reads `config.json` plus `model.safetensors` (or a sharded
`model.safetensors.index.json`) with the `safetensors` numpy API, so loading
needs neither torch nor a network. HF `nn.Linear` weights are `[out, in]`; ours
are `[in, out]` (`x @ W`), so every projection is transposed. Both use the
half-rotation RoPE layout, so q/k need no permutation.

  cfg, graphdef, state = load_hf_llama("/path/to/checkpoint", max_len=1024)
  logits, _ = transformer.apply(graphdef, state, tokens)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open

from ttc_jax.models import transformer

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
# Buffers some older checkpoints store; recomputed from the config, so skipped.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _check(ok: bool, msg: str) -> None:
  if not ok:
    raise ValueError(msg)


def _rope_theta(hf: dict) -> float:
  """`rope_theta` from either config layout (transformers >= 5 `rope_parameters`, or older)."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling")
  rope_type = params.get("rope_type", params.get("type", "default"))
  _check(not scaling and rope_type == "default",
         f"RoPE scaling is not supported (rope_scaling={scaling!r}, "
         f"rope_parameters={params or None!r}); only plain RoPE "
         f"(rope_type='default') converts. Use a checkpoint without rope scaling, "
         f"or add the scaled frequencies to transformer.rope first.")
  return float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def config_from_hf(hf_config: dict, max_len: int | None = None,
                   dtype: str = "float32") -> transformer.TransformerConfig:
  """Our `TransformerConfig` for an HF Llama `config.json` dict.

  `max_len` (KV-cache / context length) defaults to `max_position_embeddings`;
  `dtype` is the activation dtype (parameters stay float32).
  """
  hf = hf_config
  model_type = hf.get("model_type")
  _check(model_type == "llama",
         f"model_type={model_type!r} is not supported; only 'llama' checkpoints "
         f"(LlamaForCausalLM) convert. Convert a Llama-architecture model instead.")
  archs = hf.get("architectures") or list(SUPPORTED_ARCHITECTURES)
  _check(all(a in SUPPORTED_ARCHITECTURES for a in archs),
         f"architectures={archs} is not supported; only {list(SUPPORTED_ARCHITECTURES)} "
         f"converts. Save the model as a LlamaForCausalLM.")
  for key in ("attention_bias", "mlp_bias"):
    _check(not hf.get(key, False),
           f"{key}=True: our Transformer has no bias terms, so this checkpoint cannot "
           f"be converted exactly. Use a checkpoint with {key}=False.")
  act = hf.get("hidden_act", "silu")
  _check(act == "silu",
         f"hidden_act={act!r} is not supported; the MLP is SwiGLU (hidden_act='silu').")
  d = hf["hidden_size"]
  heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or d // heads
  max_pos = hf.get("max_position_embeddings", 2048)
  max_len = max_len or max_pos
  _check(max_len > 0, f"max_len must be positive, got {max_len}.")
  return transformer.TransformerConfig(
      vocab_size=hf["vocab_size"], d_model=d, num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=head_dim, mlp_dim=hf["intermediate_size"], max_len=max_len,
      rope_theta=_rope_theta(hf), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), dtype=dtype)


def _tensor_files(path: str) -> dict[str, str]:
  """Tensor name -> safetensors file holding it."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = {k: os.path.join(path, v) for k, v in json.load(f)["weight_map"].items()}
    absent = sorted({os.path.basename(v) for v in files.values() if not os.path.exists(v)})
    _check(not absent, f"Shards {absent} listed in {index!r} are missing; copy every "
           f"model-*.safetensors file of the checkpoint.")
    return files
  if os.path.exists(single):
    with safe_open(single, framework="np") as f:
      return {k: single for k in f.keys()}
  raise ValueError(
      f"No model.safetensors or model.safetensors.index.json in {path!r}. Save the "
      f"model with save_pretrained(path, safe_serialization=True) (PyTorch .bin "
      f"checkpoints are not read).")


def _read_bf16(fname: str, name: str) -> np.ndarray:
  """numpy has no bfloat16, so `safe_open(..., 'np')` refuses it; read the raw bytes."""
  with open(fname, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    meta = json.loads(f.read(n))[name]
    start, end = meta["data_offsets"]
    f.seek(8 + n + start)
    buf = f.read(end - start)
  return np.frombuffer(buf, ml_dtypes.bfloat16).reshape(meta["shape"])


def _reader(files: dict[str, str], stack: contextlib.ExitStack
            ) -> Callable[[str], np.ndarray]:
  """`get(name) -> float32 array`, opening each shard once (closed with `stack`)."""
  handles: dict[str, Any] = {}

  def get(name: str) -> np.ndarray:
    fname = files[name]
    if fname not in handles:
      handles[fname] = stack.enter_context(safe_open(fname, framework="np"))
    h = handles[fname]
    if h.get_slice(name).get_dtype() == "BF16":
      return _read_bf16(fname, name).astype(np.float32)
    return h.get_tensor(name).astype(np.float32)

  return get


def _hf_names(cfg: transformer.TransformerConfig) -> dict[tuple, tuple[str, bool]]:
  """Our state path -> (HF tensor name, transpose?)."""
  names = {("embed",): ("model.embed_tokens.weight", False),
           ("final_norm", "scale"): ("model.norm.weight", False)}
  if not cfg.tie_embeddings:
    names[("lm_head",)] = ("lm_head.weight", True)
  for i in range(cfg.num_layers):
    hf = f"model.layers.{i}"
    names[("blocks", i, "attn_norm", "scale")] = (f"{hf}.input_layernorm.weight", False)
    names[("blocks", i, "mlp_norm", "scale")] = (f"{hf}.post_attention_layernorm.weight", False)
    for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
      names[("blocks", i, "attn", ours)] = (f"{hf}.self_attn.{theirs}.weight", True)
    for ours, theirs in (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")):
      names[("blocks", i, "mlp", ours)] = (f"{hf}.mlp.{theirs}.weight", True)
  return names


def load_hf_llama(path: str | os.PathLike, max_len: int | None = None,
                  dtype: str = "float32"
                  ) -> tuple[transformer.TransformerConfig, nnx.GraphDef, nnx.State]:
  """`(cfg, graphdef, state)` for the HF Llama checkpoint directory `path`.

  Parameters are float32 and keep their logical-axis metadata, so
  `parallel.mesh.shard_params` places them as it does a freshly created model.
  """
  path = os.fspath(path)
  cfg_file = os.path.join(path, "config.json")
  _check(os.path.exists(cfg_file),
         f"No config.json in {path!r}; pass the directory written by save_pretrained.")
  with open(cfg_file) as f:
    cfg = config_from_hf(json.load(f), max_len=max_len, dtype=dtype)
  files = _tensor_files(path)
  names = _hf_names(cfg)

  wanted = {n for n, _ in names.values()}
  # A tied checkpoint may still store lm_head.weight (a copy of the embedding).
  extra = set(files) - wanted - ({"lm_head.weight"} if cfg.tie_embeddings else set())
  extra = sorted(n for n in extra if not n.endswith(_IGNORED_SUFFIXES))
  _check(not any(n.endswith(".bias") for n in extra),
         f"Checkpoint has bias tensors ({[n for n in extra if n.endswith('.bias')][:4]}) "
         f"but our Transformer has no biases; use a bias-free Llama checkpoint.")
  _check(not extra,
         f"Checkpoint has {len(extra)} tensors the Llama mapping does not use "
         f"(e.g. {extra[:4]}); check the checkpoint is a plain LlamaForCausalLM "
         f"with {cfg.num_layers} layers as config.json says.")
  missing = sorted(wanted - set(files))
  _check(not missing,
         f"Checkpoint is missing {len(missing)} tensors (e.g. {missing[:4]}); re-save "
         f"the full model, or fix num_hidden_layers / tie_word_embeddings in config.json.")

  # Build the module abstractly (no random init), then fill in the arrays.
  graphdef, abstract = nnx.split(
      nnx.eval_shape(lambda: transformer.Transformer(cfg, nnx.Rngs(0))))
  flat = []
  with contextlib.ExitStack() as stack:
    get = _reader(files, stack)
    for p, var in nnx.to_flat_state(abstract):
      name, transpose = names[p]
      arr = get(name)
      if transpose:
        arr = arr.T
      want = tuple(var.get_value().shape)
      _check(arr.shape == want,
             f"Tensor {name!r} has shape {tuple(arr.shape)}"
             f"{' (transposed)' if transpose else ''}, expected {want} for parameter "
             f"{'.'.join(map(str, p))} from config.json; the config does not match the "
             f"weights (check hidden_size, intermediate_size, num_attention_heads, "
             f"num_key_value_heads, head_dim, vocab_size).")
      flat.append((p, var.replace(jnp.asarray(arr))))
  return cfg, graphdef, nnx.from_flat_state(flat)
