"""Metrics and results on disk: JSON lines appended by process 0, and `summary.json`."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax

from ttc_jax.io import paths


def ensure_writable_dir(path: str | os.PathLike, purpose: str) -> str:
  """Creates `path` and proves it writable before any compute is spent; returns it absolute."""
  path = paths.as_path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_test.{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    reason = (e.strerror or str(e) or type(e).__name__).splitlines()[0]
    raise PermissionError(
        f"Cannot write to workdir {os.fspath(path)!r} ({reason}); {purpose} Pass a writable "
        f"one, e.g. --config.workdir=/path/you/own or gs://a-bucket-you-can-write/run.") from None
  return os.fspath(path)


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
  """Appends one JSON row (process 0 only) and flushes it to disk."""
  if jax.process_index() != 0:
    return
  paths.append_text(path, json.dumps(row, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Rows of a JSONL file; a torn last line (killed writer) is skipped."""
  path = paths.as_path(path)
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(paths.as_path(path).read_text())


def write_json(path: str | os.PathLike, value: Any, *, sort_keys: bool = False) -> None:
  """Writes `value` to `path` atomically (process 0 only).

  A stage's output file therefore either exists whole or not at all, which is what
  "skipped when complete" checks.
  """
  if jax.process_index() != 0:
    return
  paths.write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys))


def update_summary(workdir: str | os.PathLike, **entries: Any) -> dict[str, Any]:
  """Merges `entries` into `<workdir>/summary.json` atomically (process 0 only)."""
  path = paths.join(workdir, "summary.json")
  summary = read_json(path) if paths.exists(path) else {}
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
