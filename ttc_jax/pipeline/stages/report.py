"""Stage "report": the paper's figures and `report.md`, written in this one place.

Reads what the search, revisions, larger-model and allocator stages wrote and
draws accuracy vs budget (paper Fig. 3), accuracy per difficulty bin,
compute-optimal vs best-of-N (Fig. 4), FLOPs-matched comparisons (Fig. 9) and
revisions (Figs. 6, 7), each with the CSV behind it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ttc_jax.allocator import tables
from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import figures
from ttc_jax.pipeline import state

GAIN_TABLE_STEPS = 6  # revision steps shown in the report's per-step table
PAIRED_MAX_BUDGET = 16  # the paired search-vs-best-of-N table shows budgets up to this (§5)


def run(r: state.Run, data: state.Data) -> str:
  """The paper-style figures in `<workdir>/figures/` and `report.md`; returns the report's path.

  Needs the larger model's and the allocator's outputs; adds the revisions sections when
  `revisions.json` exists.
  """
  diff = artifacts.require(r.workdir, artifacts.DIFFICULTY)
  opt = artifacts.require(r.workdir, artifacts.COMPUTE_OPTIMAL)
  fl = artifacts.require(r.workdir, artifacts.FLOPS)
  large = artifacts.require(r.workdir, artifacts.LARGER_MODEL)
  # Every host reads (the reads decide together); process 0 alone draws and writes.
  questions, strategy, _ = common.strategy_tables(r, data, ("correct",))
  with_revisions = host.agree(paths.exists(r.path(artifacts.REVISIONS)))
  if not host.is_main():
    return r.path(artifacts.REPORT)
  results = strategy["correct"]
  fig = lambda name: r.path(artifacts.FIGURES, name + ".png")
  sections = [_setup_section(r, large, diff, len(questions)), *_search_sections(
      results, diff, fig), _compute_optimal_section(opt, fig), *_paired_section(opt),
      *_flops_sections(fl, fig)]
  if with_revisions:
    rev = metrics.read_json(r.path(artifacts.REVISIONS))
    sections += [_revisions_section(rev, fig("revision_ratios")), _revision_steps_section(rev)]
  return figures.write_report(r.workdir, sections, "ttc_jax: scaling test-time compute")


def _search_sections(results: dict[str, tables.Table], diff: Mapping[str, Any],
                     fig: Callable[[str], str]) -> list[dict[str, Any]]:
  """Accuracy vs budget per strategy, and per oracle difficulty bin."""
  curves = {s: {n: float(np.mean(c)) for n, c in per.items()} for s, per in results.items()}
  img = figures.accuracy_vs_budget(fig("accuracy_vs_budget"), curves,
                                   "Search strategies vs generation budget")[0]
  budgets = sorted({n for per in results.values() for n in per})
  sections = []
  sections.append({"title": "Accuracy vs generation budget (paper §5.3, Fig. 3)",
                   "table": [{"strategy": s, **{str(n): metrics.rounded(curves[s].get(n))
                                                for n in budgets}} for s in curves],
                   "images": [img]})

  bins = np.asarray(diff["oracle_bins"])
  n_bar = max(budgets, key=lambda n: (sum(n in per for per in results.values()), n))
  bars = {s: {int(b): float(per[n_bar][bins == b].mean()) for b in np.unique(bins)}
          for s, per in results.items() if n_bar in per}
  img = figures.difficulty_bars(fig("difficulty_bars"), bars, n_bar,
                                f"Accuracy by oracle difficulty bin, budget {n_bar}")[0]
  a = diff["agreement"]
  sections.append({
      "title": "Difficulty bins (paper §3.2, §5)",
      "text": f"Oracle bins: quantiles of pass@1 over {diff['difficulty_samples']} base-LM "
              f"samples per question; predicted bins: quantiles of the mean final PRM score of "
              f"the first {diff['predicted_samples']} (no ground truth). Agreement of predicted "
              f"with oracle: exact {a['exact']:.3f}, within one level {a['within_one']:.3f}, "
              f"Spearman {a['spearman']}. Bin sizes (oracle) {diff['bin_sizes']['oracle']}, "
              f"(predicted) {diff['bin_sizes']['predicted']}.",
      "table": [{"strategy": s, **{f"bin {b}": acc for b, acc in per.items()}}
                for s, per in bars.items()],
      "images": [img]})
  return sections


def _compute_optimal_section(opt: Mapping[str, Any], fig: Callable[[str], str]) -> dict[str, Any]:
  base, orc, pred = (tables.unkeyed(opt["baseline_accuracy"]),
                     tables.unkeyed(opt["oracle"]["accuracy"]),
                     tables.unkeyed(opt["predicted"]["accuracy"]))
  intervals = {label: {int(n): ci for n, ci in ci_by_n.items()} for label, ci_by_n in (
      ("baseline", opt.get("baseline_accuracy_ci")), ("oracle", opt["oracle"].get("accuracy_ci")),
      ("predicted", opt["predicted"].get("accuracy_ci"))) if ci_by_n}
  img = figures.compute_optimal_vs_bon(fig("compute_optimal_vs_bon"), base, orc, pred,
                                       intervals=intervals)[0]
  return {
      "title": "Compute-optimal vs best-of-N (paper §5, Fig. 4)",
      "text": _headline_text(opt),
      "table": [{"budget": n, "best-of-N weighted": base.get(n), "oracle bins": orc.get(n),
                 "predicted bins": pred.get(n),
                 "choices (oracle, per bin)": "; ".join(
                     f"{b}: {c[0]}" + ("" if c[0] == c[1] else f" / {c[1]}")
                     for b, c in opt["oracle"]["choices"][str(n)].items())}
                for n in sorted(orc)],
      "images": [img]}


def _flops_sections(fl: Mapping[str, Any], fig: Callable[[str], str]) -> list[dict[str, Any]]:
  images = []
  for variant, by_r in fl["per_bin"]["small_matched"].items():
    small = {float(r): tables.unkeyed(v["small"]) for r, v in by_r.items()}
    suffix = "" if variant == "policy" else "_with_verifier"
    images.append(figures.flops_matched_bars(
        fig("flops_matched" + suffix), tables.unkeyed(fl["per_bin"]["large_greedy"]), small,
        title=f"FLOPs-matched vs a {fl['param_ratio']:.1f}x larger model ({variant})")[0])
  return [{
      "title": "FLOPs exchange (paper §7, Fig. 9)",
      "text": f"M = {fl['param_ratio']:.2f}x parameters; D_pretrain = {fl['d_pretrain']:,.0f} "
              f"tokens. For each R = D_inference / D_pretrain the small model gets k times the "
              f"larger model's greedy tokens per question; the matched budget is the largest "
              f"generation budget whose compute-optimal policy (oracle bins) spent no more "
              f"inference FLOPs on average, as measured. The policy+verifier rows charge "
              f"the verifier at its own size, {fl['n_verifier']:,.0f} parameters "
              f"({fl['n_verifier'] / fl['n_small']:.2f}x the policy), per token it scores.",
      "table": [{k: row[k] for k in ("variant", "r", "multiplier", "matched_budget",
                                     "spent_generated_tokens", "small_accuracy",
                                     "large_greedy", "large_pass@1")} for row in fl["table"]],
      "images": images},
      {"title": "FLOPs-matched accuracy per oracle bin", "table": _per_bin_rows(fl)}]


def _headline_text(opt: Mapping[str, Any]) -> str:
  o, p = opt["oracle"], opt["predicted"]
  m = o["match"]
  lines = [
      f"Target: best-of-N weighted at its largest budget {m['baseline_budget']}, accuracy "
      f"{m['target_accuracy']:.3f}. Choices are made per (bin, budget) with 2-fold "
      f"cross-validation inside each bin (paper §3.2) over {len(opt['strategies'])} strategies. "
      f"Best-of-N itself first reaches that accuracy at "
      f"{m['baseline_budget'] / opt['baseline_self_ratio']:g} "
      f"({opt['baseline_self_ratio']:.2f}x): ratios at or below that are noise, not allocation.",
      f"- Oracle bins: matched at budget {m['matched_budget']}, "
      f"**{tables.ratio_ci_text(o)} fewer samples** (difficulty samples not "
      f"counted: oracle bins need the answers). Best {m['best_accuracy']:.3f} at "
      f"{m['best_budget']}.",
      f"- Predicted bins: matched at budget {p['match']['matched_budget']}, "
      f"**{tables.ratio_ci_text(p)} fewer samples** counting the "
      f"{p['difficulty_samples_counted']} PRM-scored samples per question spent to bin it "
      f"({tables.ratio_text(p.get('samples_ratio_vs_bon_uncounted'))} without counting them, the "
      f"paper's convention)."]
  if "num_boot" in opt:
    lines.append(f"Intervals: percentiles of {opt['num_boot']} bootstrap resamples of the "
                 f"questions within their (bin, fold) cells, each redoing the choices, curves "
                 f"and ratio; a resample that never matches counts as ratio 0.")
  return "\n".join(lines)


def _paired_section(opt: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Each strategy minus best-of-N on the harder half, budgets <= 16 (paper §5, Fig. 3)."""
  paired = opt.get("search_vs_baseline")
  if not paired:  # a compute_optimal.json written before the paired comparison
    return []
  rows = []
  for s, by_n in paired["strategies"].items():
    for n, cell in by_n.items():
      hard, every = cell["harder_half"], cell["all"]
      if int(n) <= PAIRED_MAX_BUDGET and hard is not None:
        rows.append({"strategy": s, "N": int(n), "harder half: mean diff": hard["mean"],
                     "95% CI": f"{hard['ci'][0]:+.3f} .. {hard['ci'][1]:+.3f}",
                     "CI above 0": "yes" if hard["ci"][0] > 0 else "",
                     "all: mean diff": every["mean"]})
  h = paired["harder_half"]
  return [{"title": f"Strategies vs {paired['baseline']}, question by question (paper §5)",
           "text": f"Mean over questions of (strategy correct - {paired['baseline']} correct) at "
                   f"equal budget N <= {PAIRED_MAX_BUDGET}, with a {paired['confidence']:.0%} "
                   f"paired bootstrap interval ({paired['num_boot']} resamples of the "
                   f"questions). Harder half: the {h['num_questions']} of "
                   f"{paired['num_questions']} questions whose oracle pass@1 is strictly "
                   f"below its median {h['median_pass@1']}.",
           "table": rows}]


def _setup_section(r: state.Run, large: Mapping[str, Any], diff: Mapping[str, Any],
                   num_questions: int) -> dict[str, Any]:
  policy, alloc = r.settings.policy, r.settings.allocator
  base = f" (pretrained: {policy.checkpoint})" if policy.checkpoint else ""
  larger = ("pretrained." if alloc.large_checkpoint else
            f"trained on the same data for {alloc.large_train.total_steps} steps.")
  return {"title": "Setup",
          "text": f"{num_questions} test questions (the search stage's). Base LM "
                  f"{r.model_cfg.num_params:,} parameters{base}; larger LM "
                  f"{large['num_params']:,} ({large['param_ratio']:.2f}x, {large['model']}), "
                  f"{larger}",
          "table": [{"model": "base", "params": r.model_cfg.num_params,
                     "mean pass@1 (difficulty samples)": round(float(np.mean(diff["pass@1"])), 4)},
                    {"model": "larger", "params": large["num_params"],
                     "greedy": large["greedy_accuracy"], "pass@1": large["pass@1_accuracy"]}]}


def _per_bin_rows(fl: Mapping[str, Any]) -> list[dict[str, Any]]:
  rows = [{"series": "larger greedy", **fl["per_bin"]["large_greedy"]},
          {"series": "larger pass@1", **fl["per_bin"]["large_pass@1"]}]
  for variant, by_r in fl["per_bin"]["small_matched"].items():
    for r, v in by_r.items():
      rows.append({"series": f"small, {variant}, R={r} (N={v['budget']})", **v["small"]})
  return rows


def _revisions_section(rev: Mapping[str, Any], path: str) -> dict[str, Any]:
  """Accuracy vs sequential:parallel ratio per budget from `revisions.json` (paper §6, Fig. 7)."""
  sweep = rev["sweep"]
  how = next(iter(next(iter(next(iter(sweep.values())).values()))))
  curves = {int(n): {int(s) / (int(n) // int(s)): v[how]["all"] for s, v in by_s.items()}
            for n, by_s in sweep.items()}
  img = figures.revision_ratios(path, curves, f"Revisions ({how} selection)")[0]
  ratios = sorted({r for c in curves.values() for r in c})  # one column order for every row
  return {"title": "Revisions: sequential vs parallel (paper §6, Fig. 7)",
          "text": f"Selection: {how}; ratio = attempts per chain / chains.",
          "table": [{"budget": n, **{f"{r:g}": c.get(r, "") for r in ratios}}
                    for n, c in curves.items()],
          "images": [img]}


def _revision_steps_section(rev: Mapping[str, Any]) -> dict[str, Any]:
  """pass@1 per revision step with its gain over step 0 and the no-revision baseline (§6.1)."""
  steps = rev["pass@1_by_step"]["all"]
  gains = rev["pass@1_gain_vs_step0"]["all"]
  base, rep = rev["independent_baseline"], rev["repeats_previous"]
  rows = []
  for i, acc in enumerate(steps[:GAIN_TABLE_STEPS]):
    g = gains.get(str(i))
    rows.append({"step": i, "pass@1": acc,
                 "gain vs step 0 (95% CI)": "" if g is None else
                 f"{g['mean']:+.3f} ({g['ci95'][0]:+.3f} .. {g['ci95'][1]:+.3f})"})
  text = (f"Revisions turn {rev['correct_to_incorrect']} of correct attempts incorrect and "
          f"{rev['incorrect_to_correct']} of incorrect ones correct; a sampler that ignores its "
          f"previous attempts would give {base['correct_to_incorrect']} and "
          f"{base['incorrect_to_correct']}. A revision repeats the previous attempt verbatim "
          f"{rep['after_correct']} of the time after a correct one, "
          f"{rep['after_incorrect']} after an incorrect one.")
  return {"title": "Revisions: pass@1 per revision step (paper §6.1, Fig. 6)", "text": text,
          "table": rows}
