"""Metrics and results on disk: JSON lines appended by process 0, and `summary.json`."""

from __future__ import annotations

import json
import os
from typing import Any

import jax


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
  """Appends one JSON row (process 0 only) and flushes it to disk."""
  if jax.process_index() != 0:
    return
  with open(path, "a") as f:
    f.write(json.dumps(row, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Rows of a JSONL file; a torn last line (killed writer) is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def update_summary(workdir: str | os.PathLike, **entries: Any) -> dict[str, Any]:
  """Merges `entries` into `<workdir>/summary.json` atomically (process 0 only)."""
  path = os.path.join(workdir, "summary.json")
  summary = {}
  if os.path.exists(path):
    with open(path) as f:
      summary = json.load(f)
  summary.update(entries)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return summary
