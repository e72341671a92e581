"""Metrics and results on disk: JSON lines appended by process 0, and `summary.json`."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax


def ensure_writable_dir(path: str | os.PathLike, purpose: str) -> str:
  """Creates `path` and proves it writable before any compute is spent; returns it absolute."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_test.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(
        f"Cannot write to workdir {path!r} ({e.strerror or e}); {purpose} Pass a writable "
        f"one, e.g. --config.workdir=/path/you/own.") from None
  return path


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


def read_json(path: str | os.PathLike) -> Any:
  with open(path) as f:
    return json.load(f)


def write_json(path: str | os.PathLike, value: Any, *, sort_keys: bool = False) -> None:
  """Writes `value` to `path` atomically (tmp file + rename; process 0 only).

  A stage's output file therefore either exists whole or not at all, which is what
  "skipped when complete" checks.
  """
  if jax.process_index() != 0:
    return
  tmp = f"{os.fspath(path)}.tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=sort_keys)
  os.replace(tmp, path)


def update_summary(workdir: str | os.PathLike, **entries: Any) -> dict[str, Any]:
  """Merges `entries` into `<workdir>/summary.json` atomically (process 0 only)."""
  path = os.path.join(workdir, "summary.json")
  summary = read_json(path) if os.path.exists(path) else {}
  summary.update(entries)
  write_json(path, summary, sort_keys=True)
  return summary


def rounded(x: float | None) -> float | None:
  """4 decimals (6 significant digits from 1e6 on), or None where undefined (None, NaN, inf).

  The one rounding rule of every result file: an AUROC over one class is NaN, and
  JSON has no NaN.
  """
  if x is None or not math.isfinite(x):
    return None
  return round(float(x), 4) if abs(x) < 1e6 else float(f"{x:.6g}")
