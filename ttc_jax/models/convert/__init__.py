"""Hugging Face `transformers` checkpoints -> `models/transformer.py` (docs/design.md,
"Checkpoints").

One module per family turns `config.json` into a `TransformerConfig`; the tensors
are read from `model.safetensors` (or a sharded index) through memory maps, so
loading needs neither torch nor a network, and go one by one, cast to
`param_dtype`, into their mesh layout when a mesh is given.

  cfg, graphdef, state = convert.load_hf("/path/to/checkpoint", max_len=2048,
                                         param_dtype="bfloat16", mesh=mesh)
  logits, _ = transformer.apply(graphdef, state, tokens)
"""

from __future__ import annotations

import os

from flax import nnx
from jax.sharding import Mesh

from ttc_jax.models import transformer
from ttc_jax.models.convert import common, gemma, llama, mistral, qwen, safetensors_files

FAMILIES = (llama, qwen, mistral, gemma)
_BY_TYPE = {t: f for f in FAMILIES for t in f.MODEL_TYPES}
MODEL_TYPES = tuple(_BY_TYPE)


def config_from_hf(hf_config: dict, max_len: int | None = None, dtype: str = "float32",
                   param_dtype: str = "float32") -> transformer.TransformerConfig:
  """Our `TransformerConfig` for an HF `config.json` dict of a supported family.

  `max_len` (KV-cache / context length) defaults to `max_position_embeddings`;
  `dtype` is the activation dtype, `param_dtype` the parameters'.
  """
  hf = hf_config
  model_type = hf.get("model_type")
  common.check(model_type in _BY_TYPE,
               f"model_type={model_type!r} is not supported; the converters read "
               f"{list(MODEL_TYPES)} checkpoints.")
  family = _BY_TYPE[model_type]
  known = family.MODEL_TYPES[model_type]
  archs = hf.get("architectures") or list(known)
  common.check(all(a in known for a in archs),
               f"architectures={archs} is not supported for model_type={model_type!r}; "
               f"only {list(known)} converts. Save the model as a {known[0]}.")
  max_len = max_len or hf.get("max_position_embeddings", 2048)
  common.check(max_len > 0, f"max_len must be positive, got {max_len}.")
  return transformer.TransformerConfig(**family.config_fields(hf), max_len=max_len,
                                       dtype=dtype, param_dtype=param_dtype)


def load_hf(path: str | os.PathLike, max_len: int | None = None, dtype: str = "float32",
            param_dtype: str = "float32", mesh: Mesh | None = None
            ) -> tuple[transformer.TransformerConfig, nnx.GraphDef, nnx.State]:
  """`(cfg, graphdef, state)` for the checkpoint directory `path` (written by
  `save_pretrained`).

  Parameters keep their logical-axis metadata; with `mesh`, each is already placed
  by those names (as `parallel.mesh.shard_params` would place a fresh model).
  """
  path = os.fspath(path)
  hf = common.read_config(path)
  cfg = config_from_hf(hf, max_len=max_len, dtype=dtype, param_dtype=param_dtype)
  ckpt = safetensors_files.Checkpoint(path)
  graphdef, state = common.load(ckpt, cfg, _BY_TYPE[hf["model_type"]].NAME, mesh)
  return cfg, graphdef, state
