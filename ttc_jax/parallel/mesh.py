"""One device mesh `('data', 'model')` and the logical-axis rule table.

Problems (and their samples/beams) shard over `data`; parameters shard over
`model` by the logical axis names every parameter carries (see
`models/transformer.py`). The same code runs on one CPU, 8 simulated CPU
devices in tests, one GPU, or a TPU pod (after `jax.distributed.initialize()`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "model")
# logical axis name -> mesh axis (None: replicated).
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("mlp", "model"),
)


def make_mesh(data: int | None = None, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `('data', 'model')` mesh; `data=None` uses every device left after `model`."""
  devices = list(devices if devices is not None else jax.devices())
  if model < 1 or len(devices) % model:
    raise ValueError(f"model={model} must divide the {len(devices)} available devices.")
  data = data or len(devices) // model
  if data * model > len(devices):
    raise ValueError(f"Mesh data={data} x model={model} needs {data * model} devices, "
                     f"only {len(devices)} available; lower data or model.")
  return jax.make_mesh((data, model), AXES, devices=devices[:data * model],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, str | None]] = LOGICAL_RULES) -> P:
  """Maps logical names to mesh axes; a dim the mesh axis does not divide stays replicated."""
  table = dict(rules)
  out = []
  for name, dim in zip(names, shape):
    axis = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise ValueError(f"Logical axis {name!r} has no rule; known: {sorted(table)}.")
    if axis is not None and dim % mesh.shape[axis]:
      axis = None
    out.append(axis)
  return P(*out)


def param_shardings(state: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, str | None]] = LOGICAL_RULES) -> Any:
  """A tree like `state` with a `NamedSharding` for every parameter."""
  def one(v):
    if isinstance(v, nnx.Variable):
      names = v.get_metadata().get("out_sharding") or (None,) * v.value.ndim
      return v.replace(NamedSharding(mesh, logical_to_spec(names, v.value.shape, mesh, rules)))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def put(tree: Any, shardings: Any) -> Any:
  """`jax.device_put(tree, shardings)`, also onto a mesh that spans several hosts.

  Every host holds the same values (e.g. params made from one seed); on a pod each
  host transfers only the shards of its own devices.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def one(x, sharding):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # already global: reshards
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: one(x, shardings), tree)
  return jax.tree.map(one, tree, shardings)


def shard_params(state: Any, mesh: Mesh) -> Any:
  """Places parameters on the mesh by their logical axis names."""
  return put(state, param_shardings(state, mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over `data`, the rest replicated."""
  return NamedSharding(mesh, P("data"))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` (the same global batch on every host) with its leading
  dimension over `data`; on a pod each host transfers only the rows of its own devices."""
  n = mesh.shape["data"]
  for x in jax.tree.leaves(tree):
    if np.shape(x)[0] % n:
      raise ValueError(f"Batch dimension {np.shape(x)[0]} is not divisible by the mesh's "
                       f"data axis ({n}); pad the batch to a multiple of {n}.")
  return put(tree, batch_sharding(mesh))


def to_host(tree: Any) -> Any:
  """Every leaf as a numpy array on every process.

  One process: `np.asarray`. On a multi-host pod the rows of a `data`-sharded
  array live on several hosts, so they are all-gathered first.
  """
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
