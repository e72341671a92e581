"""Resumable grid runner: killed with SIGKILL and restarted, no row is lost or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ttc_jax.io import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A grid of 40 cells, each taking 50 ms; records every cell it computes in a side log.
_SCRIPT = """
import json, sys, time
from ttc_jax.io import sweep
path, log = sys.argv[1], sys.argv[2]
def run(cell):
  with open(log, "a") as f:
    f.write(json.dumps(cell) + "\\n")
  time.sleep(0.05)
  return {"value": cell["a"] * 100 + cell["b"]}
cells = [{"a": a, "b": b} for a in range(8) for b in range(5)]
sweep.run_grid(path, cells, run)
"""


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_sigkilled_grid_resumes_with_no_row_lost_or_duplicated(tmp_path):
  path, log = tmp_path / "grid.jsonl", tmp_path / "computed.log"
  script = tmp_path / "grid.py"
  script.write_text(_SCRIPT)
  cmd = [sys.executable, str(script), str(path), str(log)]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 10):
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = len(_rows(path))
  assert 10 <= killed_at < 40, "the kill should land mid-grid"
  # A torn line, as a kill in the middle of a write leaves it.
  with open(path, "a") as f:
    f.write('{"cell": {"a": 7, "b"')
  before = len(log.read_text().splitlines())
  assert before in (killed_at, killed_at + 1)  # plus the cell the kill cut short
  assert subprocess.run(cmd, env=env, stderr=subprocess.DEVNULL).returncode == 0
  rows = _rows(path)
  cells = [(r["cell"]["a"], r["cell"]["b"]) for r in rows]
  assert sorted(cells) == [(a, b) for a in range(8) for b in range(5)]  # each exactly once
  assert all(r["value"] == r["cell"]["a"] * 100 + r["cell"]["b"] for r in rows)
  # The restart computed exactly the cells that had no complete row.
  restarted = [json.loads(l) for l in log.read_text().splitlines()[before:]]
  assert len(restarted) == 40 - killed_at
  assert {(c["a"], c["b"]) for c in restarted}.isdisjoint(cells[:killed_at])


def test_rows_come_back_in_cell_order_and_done_cells_are_skipped(tmp_path):
  path = tmp_path / "g.jsonl"
  calls = []
  run = lambda c: calls.append(c["n"]) or {"sq": c["n"] ** 2}
  sweep.run_grid(path, [{"n": 3}, {"n": 1}], run)
  rows = sweep.run_grid(path, [{"n": 1}, {"n": 2}, {"n": 3}], run)
  assert [r["sq"] for r in rows] == [1, 4, 9]
  assert calls == [3, 1, 2]  # 1 and 3 were not recomputed
  assert len(_rows(path)) == 3


def test_bad_grids_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="listed twice"):
    sweep.run_grid(tmp_path / "a.jsonl", [{"n": 1}, {"n": 1}], lambda c: {})
  with pytest.raises(ValueError, match="not JSON-able"):
    sweep.run_grid(tmp_path / "b.jsonl", [{"n": object()}], lambda c: {})
  bad = tmp_path / "c.jsonl"
  bad.write_text('{"no_cell": 1}\n')
  with pytest.raises(ValueError, match="not a grid row"):
    sweep.run_grid(bad, [{"n": 1}], lambda c: {})
