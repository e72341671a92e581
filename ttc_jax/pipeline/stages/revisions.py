"""Stage "revisions" (paper §6): revision data, revision model, revisions sweep.

  1. data: base-LM samples paired into chains of 0-4 wrong attempts and a correct
     one (`<workdir>/revision_data/` shards; `revisions.trajectories`);
  2. model: the base LM fine-tuned on them (`checkpoints/revision`);
  3. sweep: chains of revisions on test questions at every sequential:parallel
     ratio (`<workdir>/revisions/` shards), summarized in `revisions.json`,
     `revisions_sweep.jsonl` and the `revisions` key of `summary.json`.
Each part is skipped when its output is complete.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import jax
import numpy as np

from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.io import shards
from ttc_jax.models import transformer
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import state
from ttc_jax.revisions import measurements
from ttc_jax.revisions import sequential
from ttc_jax.revisions import trajectories
from ttc_jax.tasks import base as tasks
from ttc_jax.training import trainer

SWEEP_FORMAT_VERSION = 1
GAIN_STEPS = 4  # pass@1 gains vs step 0 are reported for revision steps 1..GAIN_STEPS


def run(r: state.Run, data: state.Data, lm: state.LM,
        verifiers: state.Verifiers) -> dict[str, Any]:
  """The three parts in order; returns the sweep's summary."""
  seconds = {}
  t0 = time.time()
  chains = revision_data(r, data, lm)
  seconds["revision_data"] = round(time.time() - t0, 1)
  t0 = time.time()
  model = train_revision_model(r, lm, chains)
  seconds["train_revision_model"] = round(time.time() - t0, 1)
  return revisions_sweep(r, data, model, verifiers, chains, seconds)


def revision_data(r: state.Run, data: state.Data, lm: state.LM) -> dict[str, np.ndarray]:
  """Base-LM samples paired into training chains (paper §6.1); returns the loaded chains."""
  cfg = r.settings.revisions
  out = r.path(artifacts.REVISION_DATA)
  examples = tasks.spread_over_levels(data.train, cfg.num_questions)
  if trajectories.trajectories_complete(out):
    r.log("revision data", "already complete; skipped")
  stats = trajectories.generate_trajectories(
      lm.sampler, lm.params, examples, r.task, r.tokenizer, out,
      samples_per_question=cfg.samples_per_question, max_attempt_tokens=cfg.max_attempt_tokens,
      context_len=cfg.context_len, max_previous=cfg.max_previous,
      max_chains_per_question=cfg.max_chains_per_question, shard_size=cfg.data_shard_size,
      seed=r.seed, mesh=r.mesh)
  r.log("revision data", f"{stats['num_chains']} chains from {stats['num_samples']} samples "
        f"({stats['fraction_correct']:.3f} correct); previous attempts per chain "
        f"{stats['previous_histogram']}")
  return trajectories.load_trajectories(out)


def train_revision_model(r: state.Run, lm: state.LM, chains: dict[str, np.ndarray]) -> state.LM:
  """SFT from the base LM, loss on the final attempt (paper §6.1), with the revision window."""
  cfg, train_cfg = r.settings.revisions, r.settings.revision_train
  model_cfg = dataclasses.replace(lm.cfg, max_len=cfg.context_len)  # max_len sizes only caches
  graphdef, _ = transformer.create(model_cfg, r.seed)
  if not len(chains["length"]):
    # Only tiny configs get here (configs/test.py's base LM solves nothing); say so loudly.
    r.log("revision model", "WARNING: the revision data holds no chain (the base LM solved "
          "no training question), so the revision model is the base LM, not fine-tuned")
    params = lm.params
  else:
    arrays = trajectories.training_arrays(chains)
    apply_fn = lambda params, tokens: transformer.apply(graphdef, params, tokens)[0]
    params = trainer.train(lm.params, trainer.lm_loss(apply_fn),
                           trajectories.bucketed_batches(arrays, train_cfg.batch_size, r.seed,
                                                         r.tokenizer.pad_id),
                           train_cfg, r.workdir, name="revision", mesh=r.mesh)
    r.log("revision model", f"{len(arrays['tokens'])} chains of <= "
          f"{arrays['tokens'].shape[1]} tokens; {train_cfg.total_steps} steps")
  return state.LM(graphdef=graphdef, params=params, cfg=model_cfg,
                  sampler=r.sampler(graphdef, model_cfg))


def revisions_sweep(r: state.Run, data: state.Data, model: state.LM, verifiers: state.Verifiers,
                    chains: dict[str, np.ndarray], seconds: dict[str, float]) -> dict[str, Any]:
  """Chains on test questions: per-step accuracy, flips and the ratio table (paper §6.2)."""
  t0 = time.time()
  cfg = r.settings.revisions
  path = r.path(artifacts.REVISIONS)
  stored = metrics.read_json(path) if host.agree(paths.exists(path)) else None
  if stored is not None and "pass@1_gain_vs_step0" in stored:
    result = stored
    r.log("revisions sweep", "already complete; skipped")
  else:
    if stored is not None:  # written before the gain / baseline diagnostics: re-summarize
      r.log("revisions sweep", "revisions.json lacks the per-step gains; summarizing its "
            "chains again (no chain is regenerated)")
    examples = common.revision_examples(r, data)
    trajectories.check_window(examples, r.tokenizer, separator=r.task.attempt_separator,
                              context_len=cfg.context_len,
                              max_attempt_tokens=cfg.max_attempt_tokens,
                              num_previous=min(cfg.max_previous, max(cfg.chain_lengths) - 1))
    _sweep_shards(r, model, verifiers, examples)
    result = summarize(common.revision_grids(r, data), examples, r.task, cfg.chain_lengths,
                       cfg.budgets, cfg.seq_lengths)
    result["num_training_chains"] = int(len(chains["length"]))
    result["seconds"] = {**seconds, "revisions_sweep": round(time.time() - t0, 1)}
    if stored is not None:
      result["seconds"] = stored.get("seconds", result["seconds"])
    _write_rows(r.path(artifacts.REVISIONS_SWEEP), sweep_rows(result))
    metrics.write_json(path, result)
    metrics.append_jsonl(r.metrics_path, {"stage": "revisions_sweep", **result})
  # Timings stay in revisions.json: the summary holds results only.
  metrics.update_summary(r.workdir, revisions={k: v for k, v in result.items() if k != "seconds"})
  print(format_result(result), flush=True)
  return result


def _write_rows(path: str, rows: list[dict[str, Any]]) -> None:
  """The whole JSONL file at once (process 0): a rerun never duplicates rows."""
  if jax.process_index() == 0:
    paths.write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def _sweep_shards(r: state.Run, model: state.LM, verifiers: state.Verifiers,
                  examples: list[tasks.Example]) -> None:
  """Generates the chain shards of `examples` that are not on disk yet."""
  cfg = r.settings.revisions
  n = cfg.sweep_shard_size
  manifest = {"format_version": SWEEP_FORMAT_VERSION, "num_questions": len(examples),
              "num_shards": -(-len(examples) // n), "shard_size": n,
              "chain_lengths": list(cfg.chain_lengths),
              "max_attempt_tokens": cfg.max_attempt_tokens,
              "max_previous": cfg.max_previous, "context_len": cfg.context_len,
              "temperature": cfg.temperature, "batch_rows": cfg.batch_rows, "seed": r.seed,
              "questions_sha256": tasks.fingerprint(examples)}

  def make_shard(i: int) -> dict[str, np.ndarray]:
    prompts = [e.prompt for e in examples[i * n:(i + 1) * n]]
    chains = sequential.generate_chains(
        model.sampler, model.params, r.tokenizer, prompts, cfg.chain_lengths,
        jax.random.fold_in(jax.random.key(r.seed + 7), i),
        max_attempt_tokens=cfg.max_attempt_tokens, max_previous=cfg.max_previous,
        temperature=cfg.temperature, batch_rows=cfg.batch_rows,
        separator=r.task.attempt_separator, mesh=r.mesh)
    scores = sequential.orm_scores(*verifiers.orm, r.tokenizer, prompts, chains.problem,
                                   chains.tokens, chains.lengths, cfg.batch_rows)
    return {"problem": (chains.problem + i * n).astype(np.int32),
            "chain": chains.chain.astype(np.int32), "step": chains.step.astype(np.int32),
            "tokens": chains.tokens, "lengths": chains.lengths.astype(np.int32),
            "orm": scores.astype(np.float32)}

  shards.write_missing(r.path(artifacts.REVISION_CHAINS), manifest, "revisions sweep",
                       make_shard)


def summarize(grids: sequential.Grids, examples: list[tasks.Example], task: tasks.Task,
              chain_lengths, budgets, seq_lengths) -> dict[str, Any]:
  """Per-step pass@1 with gains, correctness flips, and accuracy vs sequential:parallel."""
  levels = np.asarray([e.level for e in examples])
  ok = grids.correct
  by_level = lambda x: {"all": round(float(np.mean(x)), 4), **{
      str(int(lv)): round(float(np.mean(np.asarray(x)[levels == lv])), 4)
      for lv in np.unique(levels)}}
  gain_steps = range(1, min(GAIN_STEPS, max(chain_lengths) - 1) + 1)
  per_step = {"all": [round(v, 4) for v in measurements.step_accuracy(ok)]}
  gains = {"all": measurements.step_gains(ok, gain_steps)}
  flips_by_level = {}
  for lv in np.unique(levels):
    grid = [ok[q] for q in np.flatnonzero(levels == lv)]
    per_step[str(int(lv))] = [round(v, 4) for v in measurements.step_accuracy(grid)]
    gains[str(int(lv))] = measurements.step_gains(grid, gain_steps)
    flips_by_level[str(int(lv))] = {**measurements.flip_rates(grid),
                                    "independent": measurements.independent_flip_rates(grid)}
  sweep: dict[str, Any] = {}
  counts: dict[str, Any] = {}
  is_correct = lambda q, answer: task.is_correct(answer, examples[q])
  for n, s in sequential.sweep_ratios(budgets, seq_lengths):
    for how in sequential.SELECTIONS:
      acc, samples, toks = sequential.ratio_accuracy(grids.answers, grids.scores, is_correct,
                                                     grids.lengths, chain_lengths, n, s, how)
      sweep.setdefault(str(n), {}).setdefault(str(s), {})[how] = by_level(acc)
    counts.setdefault(str(n), {})[str(s)] = {
        "samples_per_problem": sorted(set(samples.tolist())),
        "mean_generated_tokens": round(float(toks.mean()), 1),
        "groups": len(sequential.ratio_groups(chain_lengths, n, s))}
  return {"pass@1_by_step": per_step, "pass@1_gain_vs_step0": gains,
          **measurements.flip_rates(ok),
          "independent_baseline": measurements.independent_flip_rates(ok),
          "repeats_previous": measurements.repeat_rates(grids.attempts, ok),
          "flips_by_level": flips_by_level, "sweep": sweep,
          "counts": counts, "num_questions": len(examples), "chain_lengths": list(chain_lengths),
          "attempts_per_question": int(sum(chain_lengths))}


def sweep_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
  """One JSONL row per (budget, sequential length, selection, level)."""
  rows = []
  for n, by_s in result["sweep"].items():
    for s, by_sel in by_s.items():
      for how, by_level in by_sel.items():
        for level, acc in by_level.items():
          rows.append({"budget": int(n), "seq_length": int(s), "parallel": int(n) // int(s),
                       "selection": how, "level": level, "accuracy": acc,
                       **result["counts"][n][s]})
  return rows


def format_result(result: dict[str, Any]) -> str:
  steps = result["pass@1_by_step"]["all"]
  base, rep = result["independent_baseline"], result["repeats_previous"]
  lines = ["revision step  " + " ".join(f"{i:>6}" for i in range(min(8, len(steps)))),
           "pass@1         " + " ".join(f"{v:6.3f}" for v in steps[:8]),
           f"correct->incorrect {result['correct_to_incorrect']}  "
           f"incorrect->correct {result['incorrect_to_correct']}  (a sampler ignoring its "
           f"previous attempts: {base['correct_to_incorrect']} / {base['incorrect_to_correct']})",
           f"repeats the previous attempt verbatim: after a correct one {rep['after_correct']}, "
           f"after an incorrect one {rep['after_incorrect']}"]
  for i, g in result["pass@1_gain_vs_step0"]["all"].items():
    lines.append(f"pass@1 at step {i} - step 0: {g['mean']:+.4f} "
                 f"(95% CI {g['ci95'][0]:+.4f} .. {g['ci95'][1]:+.4f}, {g['problems']} problems)")
  for n, by_s in result["sweep"].items():
    for s, by_sel in by_s.items():
      lines.append(f"N={n:<4} seq={s:<3} par={int(n) // int(s):<3} " + "  ".join(
          f"{how} {v['all']:.3f}" for how, v in by_sel.items()))
  return "\n".join(lines)
