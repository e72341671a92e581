"""The allocator's tables (paper §3.2, §5, §7): per-question strategy tables, compute-optimal
and FLOPs-matched summaries, and difficulty bins, as JSON-able results.

Rows (search or revisions) are sweep rows: `{"cell": {"strategy": str, "budget": int}, "question":
[Q], "correct": [Q], "generated_tokens": [Q], "verifier_tokens": [Q]}` with per-question lists;
`correct` may be fractional (a mean over repeats). `budget` counts generations as the paper
does (lookahead's rollouts included), so cells compare at equal budget directly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ttc_jax import stats
from ttc_jax.allocator import compute_optimal as co
from ttc_jax.allocator import difficulty
from ttc_jax.allocator import flops
from ttc_jax.io.metrics import rounded as _round
from ttc_jax.revisions import sequential
from ttc_jax.tasks.base import Example, Task

Rows = Sequence[Mapping[str, Any]]
Table = dict[str, dict[int, np.ndarray]]


def bins_summary(questions: Sequence[str], levels: Sequence[int], correct: np.ndarray,
                 final_scores: np.ndarray, predicted_samples: int, num_bins: int
                 ) -> dict[str, Any]:
  """Oracle and predicted bins and their agreement from `[Q, S]` samples (paper §3.2, §5).

  Predicted bins use the first `predicted_samples` columns of `final_scores`. Also reports
  the Spearman correlation of each binning with the task's own difficulty levels.
  """
  correct, final_scores = np.asarray(correct), np.asarray(final_scores)
  if correct.shape != final_scores.shape or correct.shape[0] != len(questions):
    raise ValueError(f"correct {correct.shape} and final_scores {final_scores.shape} must both "
                     f"be [Q={len(questions)}, S].")
  if not 1 <= predicted_samples <= correct.shape[1]:
    raise ValueError(f"predicted_samples={predicted_samples} must be in [1, S={correct.shape[1]}].")
  oracle = difficulty.oracle_bins(correct, num_bins)
  predicted = difficulty.predicted_bins(final_scores[:, :predicted_samples], num_bins)
  agree = difficulty.agreement(predicted, oracle, num_bins)
  task_levels = np.asarray(levels, np.int64)
  return {
      "question": list(questions), "level": task_levels.tolist(),
      "oracle_bins": oracle.tolist(), "predicted_bins": predicted.tolist(),
      "pass@1": np.round(correct.mean(1), 4).tolist(),
      "mean_score": np.round(final_scores[:, :predicted_samples].mean(1), 4).tolist(),
      "predicted_samples": predicted_samples, "num_bins": num_bins,
      "agreement": {"exact": round(agree["exact"], 4), "within_one": round(agree["within_one"], 4),
                    "spearman": _round(agree["spearman"]),
                    "confusion_predicted_x_oracle": agree["confusion"].tolist()},
      "spearman_with_task_level": {
          "oracle": _round(stats.spearman(oracle, task_levels)),
          "predicted": _round(stats.spearman(predicted, task_levels))},
      "bin_sizes": {"oracle": np.bincount(oracle, minlength=num_bins + 1)[1:].tolist(),
                    "predicted": np.bincount(predicted, minlength=num_bins + 1)[1:].tolist()}}


def revision_rows(grids: sequential.Grids, examples: Sequence[Example], task: Task,
                  budgets: Sequence[int], seq_lengths: Sequence[int],
                  chain_lengths: Sequence[int]) -> list[dict[str, Any]]:
  """One sweep row per (budget N, sequential length s, selection) with per-question lists.

  `grids` are the revisions sweep's attempts (`sequential.attempt_grids`) on `examples`.
  `correct` is the mean over the disjoint chain groups of `sequential.ratio_accuracy`;
  `generated_tokens` the attempts' tokens, and `verifier_tokens` the same tokens again
  for ORM selection (the ORM reads every attempt) and 0 for majority voting. Strategy
  names: `revisions/seq_length=s,selection=how`.
  """
  is_correct = lambda q, answer: task.is_correct(answer, examples[q])
  rows = []
  for n, s in sequential.sweep_ratios(budgets, seq_lengths):
    for how in sequential.SELECTIONS:
      acc, _, toks = sequential.ratio_accuracy(grids.answers, grids.scores, is_correct,
                                               grids.lengths, chain_lengths, n, s, how)
      toks = np.round(toks, 1)
      rows.append({"cell": {"strategy": f"revisions/seq_length={s},selection={how}",
                            "budget": n},
                   "question": [e.question for e in examples],
                   "level": [e.level for e in examples], "correct": acc.tolist(),
                   "generated_tokens": toks.tolist(),
                   "verifier_tokens": (toks if how != "majority" else 0 * toks).tolist()})
  return rows


def strategy_table(rows: Rows, questions: Sequence[str], fields: Sequence[str] = ("correct",),
                   strict: bool = True) -> tuple[dict[str, Table], list[str]]:
  """Per field, `strategy -> budget -> [Q]` over `questions` (aligned by question text).

  Returns `(tables, skipped)`. A row missing a question or a field raises with `strict`,
  else is skipped (its `strategy@budget` listed in `skipped`); a repeated cell raises.
  """
  index = {q: i for i, q in enumerate(questions)}
  if len(index) != len(questions):
    raise ValueError("questions must be distinct (rows are aligned by question text).")
  tables: dict[str, Table] = {f: {} for f in fields}
  skipped = []
  for row in rows:
    cell = row.get("cell", {})
    if "strategy" not in cell or "budget" not in cell or "question" not in row:
      raise ValueError(f"Row {str(row)[:120]} is not a sweep row with cell.strategy, "
                       f"cell.budget and per-question lists.")
    spec, n = str(cell["strategy"]), int(cell["budget"])
    where = {q: i for i, q in enumerate(row["question"])}
    missing = [q for q in questions if q not in where]
    absent = [f for f in fields if f not in row]
    if missing or absent:
      if strict:
        raise ValueError(f"Row {spec}@{n} lacks " + (f"{len(missing)} of the {len(questions)} "
                         f"questions (e.g. {missing[0]!r})" if missing else f"fields {absent}")
                         + "; rows must cover every question of the search stage.")
      skipped.append(f"{spec}@{n}")
      continue
    if n in tables[fields[0]].get(spec, {}):
      raise ValueError(f"Cell {spec}@{n} appears in two rows; pass one row per cell.")
    take = np.asarray([where[q] for q in questions])
    for f in fields:
      tables[f].setdefault(spec, {})[n] = np.asarray(row[f], np.float64)[take]
  return tables, skipped


def compute_optimal_summary(results: Table, oracle_bins: np.ndarray, predicted_bins: np.ndarray,
                            baseline: str, predicted_samples: int, seed: int = 0,
                            interpolate: bool = False, num_boot: int = 1000) -> dict[str, Any]:
  """The JSON-able compute-optimal result for both binnings (paper §5 Fig. 4, §6 Fig. 8).

  Predicted bins count the `predicted_samples` scored per question to bin it in their
  `samples_ratio_vs_bon` (`samples_ratio_vs_bon_uncounted` is the paper's convention, which
  ignores that cost); oracle bins count nothing (they need the ground truth and are an
  upper bound). Each binning also gets 95% intervals from `num_boot` resamples of the
  questions within their (bin, fold) cells (`compute_optimal.bootstrap`):
  `samples_ratio_vs_bon_ci`, `never_matched_fraction` and `accuracy_ci`; the top-level
  `baseline_accuracy_ci` comes from the oracle binning's resamples.
  """
  baseline_curve = {n: float(np.mean(c)) for n, c in results[baseline].items()}
  out: dict[str, Any] = {"baseline": baseline, "strategies": sorted(results),
                         "budgets": sorted({n for r in results.values() for n in r}),
                         "baseline_accuracy": keyed(baseline_curve),
                         # A non-monotone baseline matches itself early: the noise floor.
                         "baseline_self_ratio": _round(co.samples_ratio_vs_bon(
                             baseline_curve, baseline_curve)["ratio"]),
                         "num_boot": num_boot}
  for name, bins, cost in (("oracle", oracle_bins, 0), ("predicted", predicted_bins,
                                                        predicted_samples)):
    bins = np.asarray(bins, np.int64)
    alloc = co.compute_optimal(results, bins, baseline, seed)
    curve = co.curves(alloc)
    match = co.samples_ratio_vs_bon(curve["compute_optimal"], baseline_curve, cost, interpolate)
    boot = co.bootstrap(results, bins, baseline, seed, num_boot=num_boot,
                        difficulty_samples=cost, interpolate=interpolate)
    entry = {
        "samples_ratio_vs_bon": _round(match["ratio"]),
        "samples_ratio_vs_bon_ci": _pair(boot.ratio_ci),
        "never_matched_fraction": round(boot.never_matched_fraction, 4),
        "match": _rounded(match),
        "accuracy": keyed(curve["compute_optimal"]),
        "accuracy_ci": {str(n): _pair(ci) for n, ci in sorted(boot.accuracy_ci.items())},
        "in_sample_accuracy": keyed(curve["in_sample"]),
        "per_bin": {str(n): keyed(a.per_bin) for n, a in alloc.items()},
        "choices": {str(n): {str(b): list(c) for b, c in a.choices.items()}
                    for n, a in alloc.items()},
        "in_sample_choices": {str(n): {str(b): c for b, c in a.in_sample_choices.items()}
                              for n, a in alloc.items()},
        "difficulty_samples_counted": cost}
    if cost:
      uncounted = co.samples_ratio_vs_bon(curve["compute_optimal"], baseline_curve, 0,
                                          interpolate)
      entry["samples_ratio_vs_bon_uncounted"] = _round(uncounted["ratio"])
    if name == "oracle":
      out["baseline_accuracy_ci"] = {str(n): _pair(ci)
                                     for n, ci in sorted(boot.baseline_accuracy_ci.items())}
    out[name] = entry
  return out


def search_vs_baseline(results: Table, pass_at_1: np.ndarray, baseline: str,
                       num_boot: int = 1000, seed: int = 0, confidence: float = 0.95
                       ) -> dict[str, Any]:
  """Paired differences, strategy minus baseline correctness, per shared budget (paper §5).

  For every strategy other than `baseline` and every budget both measured, the mean over
  questions of `correct[strategy] - correct[baseline]` with a paired percentile bootstrap
  interval (`stats.bootstrap_mean_ci`, one Generator seeded by `seed`, strategies and
  budgets in sorted order), over (a) all questions and (b) the harder half: the questions
  whose `pass_at_1` (oracle pass@1 from the difficulty samples) is strictly below its median
  over all questions (`np.median`). Ties at the median are left out, so the harder half
  holds at most half of the questions; an empty one gives None.
  """
  pass1 = np.asarray(pass_at_1, np.float64)
  base = results[baseline]
  q = next(iter(base.values())).shape[0]
  if pass1.shape != (q,) or not np.isfinite(pass1).all():
    raise ValueError(f"pass_at_1 has shape {pass1.shape}; pass one finite pass@1 per question, "
                     f"shape ({q},) like the strategy table.")
  median = float(np.median(pass1))
  subsets = {"all": np.ones(q, bool), "harder_half": pass1 < median}
  rng = np.random.default_rng(seed)
  strategies: dict[str, Any] = {}
  for s in sorted(set(results) - {baseline}):
    for n in sorted(set(results[s]) & set(base)):
      diff = np.asarray(results[s][n], np.float64) - np.asarray(base[n], np.float64)
      cell = {}
      for name, mask in subsets.items():
        cell[name] = None if not mask.any() else {
            "mean": _round(float(diff[mask].mean())),
            "ci": _pair(stats.bootstrap_mean_ci(diff[mask], num_boot, rng=rng,
                                                confidence=confidence))}
      strategies.setdefault(s, {})[str(n)] = cell
  return {"baseline": baseline, "num_boot": num_boot, "confidence": confidence,
          "num_questions": q,
          "harder_half": {"definition": "oracle pass@1 strictly below its median",
                          "median_pass@1": _round(median),
                          "num_questions": int(subsets["harder_half"].sum())},
          "strategies": strategies}


def applied_strategy(results: Table, bins: np.ndarray, baseline: str, seed: int = 0
                     ) -> dict[int, list[str]]:
  """Budget -> `[Q]` the strategy the 2-fold compute-optimal policy applies to each question.

  A question in fold f is answered by the choice made on the other fold (`compute_optimal`).
  """
  bins = np.asarray(bins, np.int64)
  fold = co.folds(bins, seed)
  return {n: [a.choices[int(b)][1 - int(f)] for b, f in zip(bins, fold)]
          for n, a in co.compute_optimal(results, bins, baseline, seed).items()}


def flops_matched(tables: Mapping[str, Table], bins: np.ndarray, large: Mapping[str, Any], *,
                  n_small: float, n_verifier: float, d_pretrain: float,
                  r_values: Sequence[float] = flops.PAPER_R_VALUES,
                  baseline: str = "best_of_n", seed: int = 0) -> dict[str, Any]:
  """FLOPs-matched small model + compute-optimal test-time compute vs the larger model.

  With M = N_large / N_small and R = D_inference / D_pretrain, the larger model answers each
  question greedily with `g` tokens (measured); at equal total FLOPs the small model may
  spend `k·g` policy tokens per question, k = `flops.matching_multiplier(M, R)`, i.e. an
  inference-FLOPs budget of `2·N_small·k·g`. The 'policy' variant counts generated tokens
  only; 'policy+verifier' also counts the verifier's scored tokens (`2·N_verifier·v`), the
  measured form of the paper's 4·N·D variant, with the verifier's own size (its table
  `multiplier` is k / (1 + N_verifier / N_small)). The matched budget is the largest generation
  budget whose compute-optimal policy (oracle bins, 2-fold CV) spends no more than that
  on average over the questions, as measured; its per-bin accuracies are compared with the
  larger model's greedy and pass@1 on the same bins (paper Fig. 9). `matched_budget` is None
  (accuracies too) where even the smallest budget spends more.
  """
  correct, gen, ver = (tables[f] for f in ("correct", "generated_tokens", "verifier_tokens"))
  bins = np.asarray(bins, np.int64)
  n_large = float(large["num_params"])
  m = n_large / n_small
  if m < 1:
    raise ValueError(f"The larger model ({n_large:,.0f} params) is smaller than the base "
                     f"({n_small:,.0f}).")
  greedy = np.asarray(large["greedy_correct"], np.float64)
  pass1 = np.asarray(large["pass@1"], np.float64)
  g = float(np.mean(large["greedy_tokens"]))
  if greedy.shape != bins.shape or g <= 0:
    raise ValueError(f"larger model results cover {greedy.shape} questions (mean greedy tokens "
                     f"{g}); the bins cover {bins.shape}.")
  alloc = co.compute_optimal(correct, bins, baseline, seed)
  applied = applied_strategy(correct, bins, baseline, seed)
  q = np.arange(bins.size)
  spend = {}
  for n, strategies in applied.items():
    g_tok = np.asarray([gen[s][n][i] for i, s in zip(q, strategies)])
    v_tok = np.asarray([ver[s][n][i] for i, s in zip(q, strategies)])
    spend[n] = {"policy": float(np.mean(flops.measured_inference_flops(g_tok, v_tok, n_small, 0))),
                "policy+verifier": float(np.mean(flops.measured_inference_flops(
                    g_tok, v_tok, n_small, n_verifier))),
                "generated_tokens": float(g_tok.mean()), "verifier_tokens": float(v_tok.mean())}
  levels = [int(b) for b in np.unique(bins)]
  per_bin = lambda x: {str(b): round(float(x[bins == b].mean()), 4) for b in levels}
  table, matched_by_bin = [], {}
  for row in flops.exchange_table(n_small, n_large, d_pretrain, r_values, n_verifier):
    k_policy = flops.matching_multiplier(m, row["r"])
    allowed = 2.0 * n_small * k_policy * g  # per question, = M·(X+Y) - X_small per query
    fits = [n for n in sorted(spend) if spend[n][row["variant"]] <= allowed]
    n_star = fits[-1] if fits else None
    a = alloc[n_star] if n_star is not None else None
    table.append({
        **{k: _round(v) for k, v in row.items() if k != "variant"}, "variant": row["variant"],
        "large_tokens_per_question": round(g, 2),
        "allowed_inference_flops_per_question": _round(allowed),
        "matched_budget": n_star,
        "spent_inference_flops_per_question": _round(spend[n_star][row["variant"]])
        if n_star else None,
        "spent_generated_tokens": _round(spend[n_star]["generated_tokens"]) if n_star else None,
        "small_accuracy": _round(a.accuracy) if a else None,
        "large_greedy": round(float(greedy.mean()), 4),
        "large_pass@1": round(float(pass1.mean()), 4)})
    if a is not None:
      matched_by_bin.setdefault(row["variant"], {})[f"{row['r']:g}"] = {
          "budget": n_star, "small": keyed(a.per_bin)}
  return {"param_ratio": round(m, 4), "n_small": n_small, "n_large": n_large,
          "n_verifier": n_verifier, "d_pretrain": d_pretrain, "table": table,
          "spend_by_budget": {str(n): {k: _round(v) for k, v in s.items()}
                              for n, s in spend.items()},
          "per_bin": {"large_greedy": per_bin(greedy), "large_pass@1": per_bin(pass1),
                      "small_matched": matched_by_bin},
          "bins": "oracle"}


def _pair(ci: Sequence[float] | None) -> list[float] | None:
  """An interval `(lo, hi)` as a JSON list, 4 decimals (None stays None)."""
  return None if ci is None else [_round(float(x)) for x in ci]


def _rounded(d: Mapping[str, Any]) -> dict[str, Any]:
  return {k: _round(v) if isinstance(v, float) else v for k, v in d.items()}


def keyed(curve: Mapping[int, float]) -> dict[str, float]:
  """A budget -> accuracy curve with JSON keys, 4 decimals."""
  return {str(k): round(float(v), 4) for k, v in sorted(curve.items())}


def unkeyed(curve: Mapping[str, float]) -> dict[int, float]:
  """The inverse of `keyed`."""
  return {int(k): float(v) for k, v in curve.items()}


def merged(questions: Sequence[str], search_rows: Rows, revision_rows: Rows | None,
           fields: Sequence[str], baseline: str) -> tuple[dict[str, Table], list[str]]:
  """Search and revision rows as one `strategy_table` per field; `(tables, skipped)`.

  Revision rows that miss a question are skipped (listed); search rows must cover all.
  """
  tables, _ = strategy_table(search_rows, questions, fields)
  skipped = []
  if revision_rows:
    extra, skipped = strategy_table(revision_rows, questions, fields, strict=False)
    clash = sorted(set(extra[fields[0]]) & set(tables[fields[0]]))
    if clash:
      raise ValueError(f"Revision strategies {clash} reuse search strategy names; name them "
                       f"e.g. 'revisions/seq_length=4,selection=orm_hierarchical'.")
    for f in fields:
      tables[f].update(extra[f])
  if baseline not in tables[fields[0]]:
    raise ValueError(f"allocator.baseline={baseline!r} has no rows; search strategies: "
                     f"{sorted(tables[fields[0]])}.")
  return tables, skipped


def ratio_text(ratio: float | None) -> str:
  """'4.00x', or 'never matches' where the policy never reaches the target."""
  return "never matches" if ratio is None else f"{ratio:.2f}x"


def ratio_ci_text(entry: Mapping[str, Any]) -> str:
  """'4.00x (95% CI 1.30x–8.00x; never matched in 12% of resamples)' of a summary entry.

  Just `ratio_text` for an entry without an interval (written before intervals existed).
  """
  text = ratio_text(entry.get("samples_ratio_vs_bon"))
  ci = entry.get("samples_ratio_vs_bon_ci")
  if ci is None:
    return text
  never = entry.get("never_matched_fraction", 0.0)
  return f"{text} (95% CI {ci[0]:.2f}x–{ci[1]:.2f}x; never matched in {never:.0%} of resamples)"
