"""Resumable outputs written as numbered `.npz` shards beside a manifest (PRM labels, revision data).

A job writes `manifest.json` (its settings) once, then each shard atomically
(temporary file, fsync, rename), so a killed job leaves only complete shards
and restarts with the missing ones; a manifest that differs from the job's
settings is a clear error instead of silently mixed data.
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable

import numpy as np
import tqdm

from ttc_jax.io import host
from ttc_jax.io import metrics
from ttc_jax.io import paths

MANIFEST = "manifest.json"


def shard_path(out_dir: str | os.PathLike, index: int) -> str:
  return paths.join(out_dir, f"shard-{index:05d}.npz")


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
  """Writes `path` atomically (`io.paths.write_bytes`)."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  paths.write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  with np.load(io.BytesIO(paths.as_path(path).read_bytes())) as f:
    return {k: f[k] for k in f.files}


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
  path = paths.join(out_dir, MANIFEST)
  return metrics.read_json(path) if paths.exists(path) else None


def complete(out_dir: str | os.PathLike) -> bool:
  """True iff `out_dir` has a manifest and every one of its shards."""
  manifest = read_manifest(out_dir)
  return manifest is not None and all(
      paths.exists(shard_path(out_dir, i)) for i in range(manifest["num_shards"]))


def load(out_dir: str | os.PathLike, what: str, rerun: str
         ) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
  """The manifest and every shard's arrays, in shard order.

  Raises ValueError naming the missing manifest or shards; `what` names the data
  ("PRM labels") and `rerun` the call that finishes it ("generate_labels").
  """
  manifest = read_manifest(out_dir)
  if manifest is None:
    raise ValueError(f"No {MANIFEST} in {os.fspath(out_dir)!r}; run {rerun} first.")
  n = manifest["num_shards"]
  missing = [i for i in range(n) if not paths.exists(shard_path(out_dir, i))]
  if missing:
    raise ValueError(f"The {what} in {os.fspath(out_dir)!r} are incomplete: shards {missing} "
                     f"of {n} are missing; rerun {rerun} to finish.")
  return manifest, [load_npz(shard_path(out_dir, i)) for i in range(n)]


def open_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any], what: str,
                  where: str = "directory") -> None:
  """Writes the manifest of a new job, or checks that `out_dir` holds this same `what` job.

  Also removes torn `*.tmp` files a killed run left behind. Errors tell the user to
  use a new `where` (how the caller names its output directory).
  """
  if host.is_main():
    for stale in paths.as_path(out_dir).glob("*.tmp"):
      stale.unlink()
  old = read_manifest(out_dir)
  if old is None:
    if list(paths.as_path(out_dir).glob("shard-*.npz")):
      raise ValueError(f"{os.fspath(out_dir)!r} has shard files but no {MANIFEST}, so they "
                       f"cannot be checked against this job; use a new {where} or delete it.")
    metrics.write_json(paths.join(out_dir, MANIFEST), manifest, sort_keys=True)
    return
  diff = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
  if diff:
    pretty = ", ".join(f"{k}: {a!r} on disk vs {b!r} now" for k, (a, b) in sorted(diff.items()))
    raise ValueError(f"{paths.join(out_dir, MANIFEST)} describes a different "
                     f"{what} job ({pretty}); use a new {where}, or delete the old one to "
                     "start over.")


def write_missing(out_dir: str | os.PathLike, manifest: dict[str, Any], what: str,
                  make_shard: Callable[[int], dict[str, np.ndarray]], *, where: str = "directory",
                  progress: bool = True) -> list[int]:
  """Opens (or checks) `out_dir`'s manifest, then writes every missing shard; returns their indices.

  `make_shard(i)` computes shard i (on every process; process 0 writes it atomically),
  so a killed job rerun with the same manifest finishes exactly the missing shards.
  """
  paths.as_path(out_dir).mkdir(parents=True, exist_ok=True)
  open_manifest(out_dir, manifest, what, where)
  n = manifest["num_shards"]
  # Every host computes every missing shard (its part of each batch): the same list on all.
  todo = host.agree([i for i in range(n) if not paths.exists(shard_path(out_dir, i))])
  with tqdm.tqdm(total=n, initial=n - len(todo), desc=what, unit="shard",
                 disable=not progress or not host.is_main(), leave=False) as bar:
    for i in todo:
      arrays = make_shard(i)
      if host.is_main():
        save_npz(shard_path(out_dir, i), arrays)
      bar.update(1)
  host.barrier(f"shards {os.fspath(out_dir)}")  # written before any host reads them
  return todo
