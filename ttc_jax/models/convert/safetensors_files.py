"""Memory-mapped reads of a `save_pretrained` safetensors checkpoint (docs/design.md, "Checkpoints").

A tensor is a read-only `np.memmap` view into its file, so a loader slices out
only the part one device needs and casts only that part: loading never holds a
float32 copy of the model on the host. numpy has no bfloat16, so BF16 tensors
are viewed as `ml_dtypes.bfloat16`.
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "F64": np.float64}


def _header(fname: str) -> tuple[int, dict]:
  with open(fname, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    return 8 + n, json.loads(f.read(n))


class Checkpoint:
  """The tensors of a checkpoint directory: `names`, `shape(name)`, `array(name)`."""

  def __init__(self, path: str):
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
      absent = [f for f in files if not os.path.exists(os.path.join(path, f))]
      if absent:
        raise ValueError(f"Shards {absent} listed in {index!r} are missing; copy every "
                         f"model-*.safetensors file of the checkpoint.")
    elif os.path.exists(single):
      files = ["model.safetensors"]
    else:
      raise ValueError(
          f"No model.safetensors or model.safetensors.index.json in {path!r}. Save the "
          f"model with save_pretrained(path, safe_serialization=True) (PyTorch .bin "
          f"checkpoints are not read).")
    self._meta: dict[str, tuple[str, int, dict]] = {}
    for f in files:
      fname = os.path.join(path, f)
      offset, header = _header(fname)
      for name, meta in header.items():
        if name != "__metadata__":
          self._meta[name] = (fname, offset, meta)

  @property
  def names(self) -> set[str]:
    return set(self._meta)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._meta[name][2]["shape"])

  def array(self, name: str) -> np.ndarray:
    """A read-only memmap of tensor `name` in its stored dtype."""
    fname, offset, meta = self._meta[name]
    if meta["dtype"] not in _DTYPES:
      raise ValueError(f"Tensor {name!r} has dtype {meta['dtype']}; only floating-point "
                       f"checkpoints ({sorted(_DTYPES)}) convert.")
    start, end = meta["data_offsets"]
    shape = tuple(meta["shape"])
    if end == start:
      return np.zeros(shape, _DTYPES[meta["dtype"]])
    return np.memmap(fname, _DTYPES[meta["dtype"]], "r", offset + start, shape)
