"""Figures in the paper's style, each a PNG plus the CSV of the numbers behind it.

Every function takes plain dicts (label -> x -> accuracy) and a `path` ending in `.png`,
writes the PNG and `path` with `.csv`, and returns both paths. Matplotlib draws with the
Agg canvas directly (no pyplot, no global backend change), so figures render headless and
from any thread. `write_report` gathers tables and figures into `report.md`.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ttc_jax.io import paths

HIGHLIGHTED_BUDGETS = (4, 16, 64, 256)  # paper's figures label these generation budgets
SECTION_KEYS = ("title", "text", "table", "images")

Curves = Mapping[Any, Mapping[Any, float]]


def accuracy_vs_budget(path: str, curves: Curves, title: str = "",
                       ylabel: str = "Accuracy") -> tuple[str, str]:
  """Accuracy vs generation budget per strategy, log2 x-axis (paper Figs. 3, 4, 6).

  `curves`: strategy -> budget N -> accuracy. CSV columns: strategy, budget, accuracy.
  """
  curves = _curves(curves, "curves", positive_x=True)
  fig, ax = _figure()
  for label, curve in curves.items():
    xs = sorted(curve)
    ax.plot(xs, [curve[x] for x in xs], marker="o", label=str(label))
  _budget_axis(ax, [x for c in curves.values() for x in c])
  _finish(ax, title, ylabel)
  rows = [(label, x, acc) for label, c in curves.items() for x, acc in sorted(c.items())]
  return _save(fig, path, ("strategy", "budget", "accuracy"), rows)


def difficulty_bars(path: str, accuracy: Curves, budget: int, title: str = "") -> tuple[str, str]:
  """Grouped bars, strategy x difficulty bin, at one budget (paper Figs. 3 right, 6 right).

  `accuracy`: strategy -> bin -> accuracy. CSV columns: strategy, bin, budget, accuracy.
  """
  accuracy = _curves(accuracy, "accuracy")
  bins = sorted({b for c in accuracy.values() for b in c})
  fig, ax = _figure()
  width = 0.8 / len(accuracy)
  for i, (label, per_bin) in enumerate(accuracy.items()):
    xs = [j + (i - (len(accuracy) - 1) / 2) * width for j, b in enumerate(bins) if b in per_bin]
    ax.bar(xs, [per_bin[b] for b in bins if b in per_bin], width, label=str(label))
  ax.set_xticks(range(len(bins)), [str(b) for b in bins])
  ax.set_xlabel("Difficulty level (1 = easiest)")
  _finish(ax, title or f"Accuracy by difficulty, generation budget {budget}", "Accuracy")
  rows = [(label, b, budget, acc) for label, c in accuracy.items() for b, acc in sorted(c.items())]
  return _save(fig, path, ("strategy", "bin", "budget", "accuracy"), rows)


def revision_ratios(path: str, curves: Curves, title: str = "") -> tuple[str, str]:
  """Accuracy vs sequential:parallel ratio, one curve per budget (paper Fig. 7).

  `curves`: generation budget -> ratio (revisions per chain / chains) -> accuracy.
  CSV columns: budget, ratio, accuracy.
  """
  curves = _curves(curves, "curves", positive_x=True)
  fig, ax = _figure()
  for budget, curve in curves.items():
    xs = sorted(curve)
    ax.plot(xs, [curve[x] for x in xs], marker="o", label=f"N = {budget}")
  ratios = sorted({x for c in curves.values() for x in c})
  ax.set_xscale("log", base=2)
  ax.set_xticks(ratios, [_ratio_label(r) for r in ratios])
  ax.minorticks_off()
  ax.set_xlabel("Sequential : parallel ratio")
  _finish(ax, title or "Revisions: sequential vs parallel", "Accuracy")
  rows = [(budget, x, acc) for budget, c in curves.items() for x, acc in sorted(c.items())]
  return _save(fig, path, ("budget", "ratio", "accuracy"), rows)


def compute_optimal_vs_bon(path: str, baseline: Mapping[int, float], oracle: Mapping[int, float],
                           predicted: Mapping[int, float] | None = None, title: str = "",
                           intervals: Mapping[str, Mapping[int, Sequence[float]]] | None = None
                           ) -> tuple[str, str]:
  """Compute-optimal (oracle and predicted bins) vs best-of-N weighted (paper Figs. 4, 8).

  Each curve maps budget N -> accuracy. `intervals` ("baseline", "oracle" or "predicted" ->
  N -> `(lo, hi)`, e.g. bootstrap intervals) are drawn as shaded bands. CSV columns:
  strategy, budget, accuracy, ci_lo, ci_hi (empty without an interval).
  """
  names = {"baseline": "best-of-N weighted", "oracle": "compute-optimal (oracle bins)",
           "predicted": "compute-optimal (predicted bins)"}
  curves = {names["baseline"]: baseline, names["oracle"]: oracle}
  if predicted is not None:
    curves[names["predicted"]] = predicted
  curves = _curves(curves, "curves", positive_x=True)
  bands = {}
  for key, band in (intervals or {}).items():
    if key not in names or names[key] not in curves:
      raise ValueError(f"intervals has key {key!r}; use those of the curves drawn: "
                       f"{[k for k in names if names[k] in curves]}.")
    bands[names[key]] = {x: (float(lo), float(hi)) for x, (lo, hi) in band.items()}
  fig, ax = _figure()
  styles = {names["baseline"]: dict(color="0.4", linestyle="--", marker="s")}
  for label, curve in curves.items():
    xs = sorted(curve)
    style = styles.get(label, dict(marker="o"))
    line = ax.plot(xs, [curve[x] for x in xs], label=label, **style)[0]
    band = sorted(x for x in bands.get(label, {}) if x in curve)
    if band:
      ax.fill_between(band, [bands[label][x][0] for x in band], [bands[label][x][1] for x in band],
                      color=line.get_color(), alpha=0.15, linewidth=0)
  _budget_axis(ax, [x for c in curves.values() for x in c])
  _finish(ax, title or "Compute-optimal scaling vs best-of-N", "Accuracy")
  rows = [(label, x, acc, *bands.get(label, {}).get(x, ("", "")))
          for label, c in curves.items() for x, acc in sorted(c.items())]
  return _save(fig, path, ("strategy", "budget", "accuracy", "ci_lo", "ci_hi"), rows)


def flops_matched_bars(path: str, large: Mapping[int, float],
                       small_by_r: Mapping[float, Mapping[int, float]],
                       large_label: str = "larger model (greedy)",
                       title: str = "") -> tuple[str, str]:
  """FLOPs-matched per bin: small model + test-time compute vs a larger model (paper Fig. 9).

  `large`: bin -> the larger model's pass@1 or greedy accuracy. `small_by_r`: R =
  D_inference / D_pretrain -> bin -> the small model's accuracy at the FLOPs-matched
  test-time budget for that R (`allocator.flops.matching_multiplier`). CSV columns: series,
  r, bin, accuracy, relative_improvement ((small - large) / large; empty for the larger
  model itself or where its accuracy is 0), the paper's plotted quantity.
  """
  if not small_by_r:
    raise ValueError("small_by_r is empty; pass R -> bin -> accuracy for at least one R "
                     "(the paper uses R = 0.16, 0.79, 22).")
  labels = {}
  for r in small_by_r:
    if not (_real(r) and r > 0):
      raise ValueError(f"small_by_r has R={r!r}; R = D_inference / D_pretrain must be a "
                       f"number > 0 (the paper uses 0.16, 0.79, 22).")
    labels[r] = f"small + test-time compute, R = {r:g}"
  series = _curves({large_label: large, **{labels[r]: c for r, c in small_by_r.items()}},
                   "series")
  fig, ax = _figure()
  bins = sorted({b for c in series.values() for b in c})
  width = 0.8 / len(series)
  for i, (label, per_bin) in enumerate(series.items()):
    xs = [j + (i - (len(series) - 1) / 2) * width for j, b in enumerate(bins) if b in per_bin]
    kw = dict(color="0.3", hatch="//") if label == large_label else {}
    ax.bar(xs, [per_bin[b] for b in bins if b in per_bin], width, label=label, **kw)
  ax.set_xticks(range(len(bins)), [str(b) for b in bins])
  ax.set_xlabel("Difficulty level (1 = easiest)")
  _finish(ax, title or "FLOPs-matched: test-time compute vs a larger model", "Accuracy")
  large = series[large_label]
  rows = [(large_label, "", b, acc, "") for b, acc in sorted(large.items())]
  for r, label in labels.items():
    for b, acc in sorted(series[label].items()):
      ref = large.get(b)
      rel = (acc - ref) / ref if ref else ""
      rows.append((label, r, b, acc, rel))
  return _save(fig, path, ("series", "r", "bin", "accuracy", "relative_improvement"), rows)


def write_report(workdir: str, sections: Sequence[Mapping[str, Any]],
                 title: str = "ttc_jax results") -> str:
  """Writes `<workdir>/report.md`: per section a heading, text, a markdown table and images.

  Each section is a dict with `title` (required), `text` (markdown), `table` (a list of
  row dicts; columns in first-seen key order) and `images` (paths, linked relative to
  `workdir`). Returns the report's path.
  """
  if not sections:
    raise ValueError("sections is empty; pass at least one dict with a 'title'.")
  lines = [f"# {title}", ""]
  for i, section in enumerate(sections):
    unknown = set(section) - set(SECTION_KEYS)
    if unknown or "title" not in section:
      raise ValueError(f"Section {i} has keys {sorted(section)}; it needs 'title' and may have "
                       f"{list(SECTION_KEYS[1:])} (unknown: {sorted(unknown)}).")
    lines += [f"## {section['title']}", ""]
    if section.get("text"):
      lines += [str(section["text"]).strip(), ""]
    if section.get("table"):
      lines += _markdown_table(section["table"], i) + [""]
    for image in section.get("images", ()):
      image = paths.as_path(image)
      rel = os.path.relpath(os.fspath(image), os.fspath(paths.as_path(workdir)))
      lines += [f"![{image.stem}]({rel.replace(os.sep, '/')})", ""]
  paths.as_path(workdir).mkdir(parents=True, exist_ok=True)
  path = paths.join(workdir, "report.md")
  paths.write_text(path, "\n".join(lines))
  return path


# ---- helpers ----

def _curves(curves: Curves, name: str, positive_x: bool = False) -> dict:
  """Validates label -> x -> finite y (x > 0 for log axes); returns a plain dict copy."""
  if not isinstance(curves, Mapping) or not curves:
    raise ValueError(f"{name} must be a non-empty dict of label -> {{x: accuracy}}; got "
                     f"{curves!r}.")
  out = {}
  for label, curve in curves.items():
    if not isinstance(curve, Mapping) or not curve:
      raise ValueError(f"{name}[{label!r}] must be a non-empty dict of x -> accuracy; got "
                       f"{curve!r}.")
    for x, y in curve.items():
      if positive_x and not (_real(x) and x > 0):
        raise ValueError(f"{name}[{label!r}] has x={x!r}; the log2 axis needs numbers > 0 "
                         f"(e.g. budgets 1, 4, 16, 64, 256).")
      if not _real(y) or not math.isfinite(y):
        raise ValueError(f"{name}[{label!r}][{x!r}] = {y!r}; accuracies must be finite "
                         f"numbers.")
    out[label] = {x: float(y) for x, y in curve.items()}
  return out


def _real(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _figure() -> tuple[Figure, Any]:
  fig = Figure(figsize=(6.4, 4.4), dpi=120)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot()


def _budget_axis(ax: Any, budgets: Sequence[float]) -> None:
  """Log2 generation-budget axis; labels on 4/16/64/256 and the ends (paper's style)."""
  ticks = sorted(set(budgets))
  ax.set_xscale("log", base=2)
  keep = set(HIGHLIGHTED_BUDGETS) | {ticks[0], ticks[-1]}
  ax.set_xticks(ticks, [f"{t:g}" if t in keep else "" for t in ticks])
  ax.minorticks_off()
  ax.set_xlabel("Generation budget")


def _ratio_label(r: float) -> str:
  return f"{r:g}" if r >= 1 else f"1/{1 / r:g}"


def _finish(ax: Any, title: str, ylabel: str) -> None:
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def _save(fig: Figure, path: str, header: Sequence[str],
          rows: Sequence[Sequence[Any]]) -> tuple[str, str]:
  path = os.fspath(path)
  if not path.endswith(".png"):
    raise ValueError(f"path={path!r} must end with '.png' (the CSV goes beside it).")
  paths.as_path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png")
  paths.write_bytes(path, png.getvalue())
  csv_path = path[:-len(".png")] + ".csv"
  text = io.StringIO(newline="")
  writer = csv.writer(text)
  writer.writerow(header)
  writer.writerows(rows)
  paths.write_text(csv_path, text.getvalue())
  return path, csv_path


def _markdown_table(rows: Sequence[Mapping[str, Any]], section: int) -> list[str]:
  if not all(isinstance(r, Mapping) for r in rows):
    raise ValueError(f"Section {section}: 'table' must be a list of row dicts.")
  columns = list(dict.fromkeys(k for r in rows for k in r))
  lines = ["| " + " | ".join(map(_cell, columns)) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
  return lines


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
      return f"{value:.3g}"
    return f"{value:.3f}"
  return str(value).replace("|", "\\|").replace("\n", " ")
