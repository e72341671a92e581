"""Multi-host file I/O: one writer, barriers, and decisions every host shares (docs/design.md, "Sharding").

On a pod every host runs the same program. Files are written by process 0 alone;
`barrier` makes every host wait until they are written before any host reads them;
`agree` hands every host process 0's answer to a question about the workdir (is this
stage finished? which shards are missing?), so all hosts take the same branch even if
their views of a shared filesystem lag. On one process all of these are no-ops.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_main() -> bool:
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def agree(value: Any) -> Any:
  """Process 0's `value` (bools, ints or int arrays/lists) on every process."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if isinstance(value, (bool, np.bool_)):
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))
  if isinstance(value, (int, np.integer)):
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int64)))
  arr = np.asarray(value, np.int64)
  n = int(multihost_utils.broadcast_one_to_all(np.asarray(arr.size, np.int64)))
  padded = np.zeros((max(n, 1),), np.int64)
  padded[:min(n, arr.size)] = arr.ravel()[:n]
  out = np.asarray(multihost_utils.broadcast_one_to_all(padded))[:n]
  return out.tolist() if isinstance(value, list) else out
