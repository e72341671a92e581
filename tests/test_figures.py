"""Figures write a valid PNG and the CSV of exactly the numbers given; report.md links them."""

import csv
import os

import numpy as np
import pytest

from ttc_jax.pipeline import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(png, csv_path):
  with open(png, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  assert os.path.getsize(png) > 1000
  with open(csv_path, newline="") as f:
    return list(csv.reader(f))


def test_accuracy_vs_budget(tmp_path):
  curves = {"beam/beam_width=4": {4: 0.5, 16: 0.625, 64: 0.7, 256: 0.71},
            "best_of_n/selection=weighted": {1: 0.3, 4: np.float32(0.45), 256: 0.6}}
  png, csv_path = figures.accuracy_vs_budget(str(tmp_path / "sub" / "acc.png"), curves)
  assert csv_path == str(tmp_path / "sub" / "acc.csv")
  rows = _read(png, csv_path)
  assert rows[0] == ["strategy", "budget", "accuracy"]
  got = {(r[0], int(r[1])): float(r[2]) for r in rows[1:]}
  want = {(s, n): float(a) for s, c in curves.items() for n, a in c.items()}
  assert got == want


def test_budget_axis_labels_the_paper_budgets():
  fig, ax = figures._figure()
  figures._budget_axis(ax, [2 ** i for i in range(9)])
  labels = [t.get_text() for t in ax.get_xticklabels()]
  assert labels == ["1", "", "4", "", "16", "", "64", "", "256"]
  assert ax.get_xscale() == "log"


def test_difficulty_bars(tmp_path):
  acc = {"beam": {1: 0.9, 2: 0.7, 3: 0.5, 4: 0.3, 5: 0.1}, "best-of-N": {1: 0.95, 5: 0.05}}
  png, csv_path = figures.difficulty_bars(str(tmp_path / "bars.png"), acc, budget=64)
  rows = _read(png, csv_path)
  assert rows[0] == ["strategy", "bin", "budget", "accuracy"]
  assert len(rows) == 1 + 7
  assert ["best-of-N", "5", "64", "0.05"] in rows


def test_revision_ratios(tmp_path):
  curves = {64: {1 / 4: 0.5, 1: 0.55, 4: 0.6, 64: 0.52}, 16: {1: 0.4, 16: 0.42}}
  png, csv_path = figures.revision_ratios(str(tmp_path / "rev.png"), curves)
  rows = _read(png, csv_path)
  assert rows[0] == ["budget", "ratio", "accuracy"]
  got = {(int(r[0]), float(r[1])): float(r[2]) for r in rows[1:]}
  assert got == {(n, x): a for n, c in curves.items() for x, a in c.items()}
  assert figures._ratio_label(0.25) == "1/4" and figures._ratio_label(16) == "16"


def test_compute_optimal_vs_bon(tmp_path):
  base = {4: 0.5, 16: 0.6, 64: 0.7, 256: 0.8}
  oracle = {4: 0.6, 16: 0.75, 64: 0.82, 256: 0.85}
  png, csv_path = figures.compute_optimal_vs_bon(
      str(tmp_path / "co.png"), base, oracle, predicted={4: 0.55, 16: 0.7},
      intervals={"oracle": {16: (0.7, 0.8), 64: (0.78, 0.86)}})
  rows = _read(png, csv_path)
  assert rows[0] == ["strategy", "budget", "accuracy", "ci_lo", "ci_hi"]
  labels = [r[0] for r in rows[1:]]
  assert labels.count("best-of-N weighted") == 4
  assert labels.count("compute-optimal (oracle bins)") == 4
  assert labels.count("compute-optimal (predicted bins)") == 2
  assert ["compute-optimal (oracle bins)", "64", "0.82", "0.78", "0.86"] in rows
  assert ["compute-optimal (oracle bins)", "4", "0.6", "", ""] in rows
  assert ["best-of-N weighted", "16", "0.6", "", ""] in rows
  with pytest.raises(ValueError, match="intervals has key 'predicted'"):
    figures.compute_optimal_vs_bon(str(tmp_path / "co.png"), base, oracle,
                                   intervals={"predicted": {4: (0.5, 0.6)}})


def test_flops_matched_bars(tmp_path):
  large = {1: 0.8, 2: 0.5, 3: 0.0}
  small = {0.16: {1: 0.9, 2: 0.4, 3: 0.1}, 22: {1: 0.85, 2: 0.6, 3: 0.05}}
  png, csv_path = figures.flops_matched_bars(str(tmp_path / "flops.png"), large, small)
  rows = _read(png, csv_path)
  assert rows[0] == ["series", "r", "bin", "accuracy", "relative_improvement"]
  assert len(rows) == 1 + 9
  by_key = {(r[0], r[2]): r for r in rows[1:]}
  assert by_key[("larger model (greedy)", "2")][3:] == ["0.5", ""]
  row = by_key[("small + test-time compute, R = 0.16", "1")]
  assert float(row[1]) == 0.16 and float(row[4]) == pytest.approx((0.9 - 0.8) / 0.8)
  assert float(by_key[("small + test-time compute, R = 22", "2")][4]) == pytest.approx(0.2)
  assert by_key[("small + test-time compute, R = 22", "3")][4] == ""  # larger model at 0


def test_bad_input_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="must end with '.png'"):
    figures.accuracy_vs_budget(str(tmp_path / "acc.jpg"), {"a": {4: 0.5}})
  with pytest.raises(ValueError, match="non-empty dict"):
    figures.accuracy_vs_budget(str(tmp_path / "acc.png"), {})
  with pytest.raises(ValueError, match=r"x=0; the log2 axis"):
    figures.accuracy_vs_budget(str(tmp_path / "acc.png"), {"a": {0: 0.5}})
  with pytest.raises(ValueError, match=r"\['a'\]\[4\] = nan"):
    figures.accuracy_vs_budget(str(tmp_path / "acc.png"), {"a": {4: float("nan")}})
  with pytest.raises(ValueError, match="small_by_r is empty"):
    figures.flops_matched_bars(str(tmp_path / "f.png"), {1: 0.5}, {})
  assert not list(tmp_path.iterdir())  # nothing written on bad input


def test_write_report(tmp_path):
  png, _ = figures.accuracy_vs_budget(str(tmp_path / "figs" / "acc.png"), {"a": {4: 0.5}})
  path = figures.write_report(str(tmp_path), [
      {"title": "Compute-optimal", "text": "Ratio 4x.",
       "table": [{"budget": 4, "accuracy": 0.51234, "flops": 1.5e21},
                 {"budget": 16, "accuracy": 0.6, "note": "a|b"}],
       "images": [png]},
      {"title": "Empty section"}])
  assert path == str(tmp_path / "report.md")
  text = open(path).read()
  assert "## Compute-optimal" in text and "Ratio 4x." in text
  assert "| budget | accuracy | flops | note |" in text
  assert "| 4 | 0.512 | 1.5e+21 |  |" in text
  assert "| 16 | 0.600 |  | a\\|b |" in text
  assert "![acc](figs/acc.png)" in text
  with pytest.raises(ValueError, match="needs 'title'"):
    figures.write_report(str(tmp_path), [{"text": "no title"}])
  with pytest.raises(ValueError, match=r"unknown: \['tabel'\]"):
    figures.write_report(str(tmp_path), [{"title": "t", "tabel": []}])
