"""Resumable outputs written as numbered `.npz` shards beside a manifest (PRM labels, revision data).

A job writes `manifest.json` (its settings) once, then each shard atomically
(temporary file, fsync, rename), so a killed job leaves only complete shards
and restarts with the missing ones; a manifest that differs from the job's
settings is a clear error instead of silently mixed data.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import jax
import numpy as np

MANIFEST = "manifest.json"


def shard_path(out_dir: str | os.PathLike, index: int) -> str:
  return os.path.join(out_dir, f"shard-{index:05d}.npz")


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes `path` atomically: a temporary file, fsync, then `os.replace`."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
  path = os.path.join(out_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def open_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any], what: str,
                  where: str = "directory") -> None:
  """Writes the manifest of a new job, or checks that `out_dir` holds this same `what` job.

  Also removes torn `*.tmp` files a killed run left behind. Errors tell the user to
  use a new `where` (how the caller names its output directory).
  """
  for stale in glob.glob(os.path.join(out_dir, "*.tmp")):
    os.remove(stale)
  old = read_manifest(out_dir)
  if old is None:
    if glob.glob(os.path.join(out_dir, "shard-*.npz")):
      raise ValueError(f"{os.fspath(out_dir)!r} has shard files but no {MANIFEST}, so they "
                       f"cannot be checked against this job; use a new {where} or delete it.")
    if jax.process_index() == 0:
      path = os.path.join(out_dir, MANIFEST)
      with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
      os.replace(path + ".tmp", path)
    return
  diff = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
  if diff:
    pretty = ", ".join(f"{k}: {a!r} on disk vs {b!r} now" for k, (a, b) in sorted(diff.items()))
    raise ValueError(f"{os.path.join(os.fspath(out_dir), MANIFEST)} describes a different "
                     f"{what} job ({pretty}); use a new {where}, or delete the old one to "
                     "start over.")
