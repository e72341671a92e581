"""One resumable grid runner for every sweep (search budgets, revision ratios, allocator grids).

    rows = run_grid("workdir/search.jsonl", cells, run_cell, desc="search")

Each cell is a JSON-able dict (e.g. `{"strategy": "beam/beam_width=4", "budget": 16}`);
`run_cell(cell)` computes it and returns a JSON-able dict, written as one JSONL
row `{"cell": cell, **result}`. A restarted grid reads the file, skips the cells
it holds and runs the rest, so a run killed at any moment (SIGKILL included)
and restarted ends with every cell exactly once: a row is one `write` of one
line, flushed and fsynced, and a torn last line left by a kill mid-write is cut
off before anything is appended. Rows come back in the order of `cells`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import tqdm

from ttc_jax.io import host
from ttc_jax.io import paths

Cell = Mapping[str, Any]


def cell_key(cell: Cell) -> str:
  """The canonical text of a cell: equal cells have equal keys whatever their key order."""
  try:
    return json.dumps(cell, sort_keys=True)
  except TypeError as e:
    raise ValueError(f"Grid cell {cell!r} is not JSON-able ({e}); use str/int/float/bool "
                     f"values.") from None


def _repair(path: str) -> None:
  """Cuts a torn last line (no trailing newline) left by a writer killed mid-row."""
  if not paths.exists(path):
    return
  data = paths.as_path(path).read_bytes()
  if data and not data.endswith(b"\n"):
    paths.write_bytes(path, data[:data.rfind(b"\n") + 1])


def load_rows(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """`{cell_key: row}` of the complete rows in `path` (first row wins on a repeated cell)."""
  rows: dict[str, dict[str, Any]] = {}
  if not paths.exists(path):
    return rows
  with paths.open_file(path) as f:
    for n, line in enumerate(f, 1):
      if not line.endswith("\n"):
        break  # torn tail: recomputed
      try:
        row = json.loads(line)
        rows.setdefault(cell_key(row["cell"]), row)
      except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path}:{n} is not a grid row ({line[:80]!r}); the file is not a "
                         f"sweep's output, or was edited. Move it away to recompute.") from None
  return rows


def run_grid(path: str | os.PathLike, cells: Sequence[Cell],
             run_cell: Callable[[Cell], Mapping[str, Any]], desc: str = "sweep",
             ) -> list[dict[str, Any]]:
  """Runs every cell not yet in `path` (one JSONL row each) and returns all rows in cell order."""
  path = os.fspath(path)
  keys = [cell_key(c) for c in cells]
  if len(set(keys)) != len(keys):
    dup = next(k for k in keys if keys.count(k) > 1)
    raise ValueError(f"Grid cell {dup} is listed twice; each cell must be unique.")
  done = load_rows(path)
  # Every host runs the same cells (its part of each batch): process 0's list.
  todo = [(keys[i], cells[i]) for i in host.agree([i for i, k in enumerate(keys)
                                                   if k not in done])]
  writer = host.is_main()
  if writer:
    _repair(path)
  with tqdm.tqdm(total=len(cells), initial=len(cells) - len(todo), desc=desc,
                 unit="cell", leave=False, disable=not writer) as bar:
    for key, cell in todo:
      row = {"cell": dict(cell), **run_cell(cell)}
      line = json.dumps(row, sort_keys=True) + "\n"
      if writer:
        paths.append_text(path, line)
      done[key] = json.loads(line)
      bar.update(1)
  host.barrier(f"grid {path}")  # rows on disk before any host reads the file
  return [done[k] for k in keys]
