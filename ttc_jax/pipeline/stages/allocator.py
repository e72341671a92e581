"""Stage "allocator" (paper §3.2, §5, §7): difficulty bins, compute-optimal allocation, FLOPs.

On the search stage's questions:
  * difficulty: oracle and predicted bins (`difficulty.json`, `difficulty.npz`); the samples
    are the verifier evaluation's when they suffice, else drawn here;
  * compute-optimal: the best strategy per (bin, budget) with 2-fold cross-validation,
    against best-of-N, with bootstrap intervals over questions, and each search strategy
    against best-of-N question by question on all and the harder half of the questions
    (`compute_optimal.json`, summary key `compute_optimal`, its `search_vs_baseline`);
  * FLOPs exchange: the small model at matched FLOPs against the larger model
    (`flops.json`, summary key `flops`).
Difficulty samples are drawn once; the allocation and FLOPs tables recompute in milliseconds.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
import tqdm

from ttc_jax.allocator import tables
from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.io import shards
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import state
from ttc_jax.sampling import solutions
from ttc_jax.tasks import base as tasks

FIELDS = ("correct", "generated_tokens", "verifier_tokens")


def run(r: state.Run, data: state.Data, lm: state.LM, verifiers: state.Verifiers,
        larger: dict[str, Any]) -> dict[str, Any]:
  """Difficulty bins, then the compute-optimal and FLOPs tables; returns the compute-optimal."""
  diff = difficulty_bins(r, data, lm, verifiers)
  questions, strategy, skipped = common.strategy_tables(r, data, FIELDS)
  result = allocate(r, diff, strategy, skipped)
  flops_exchange(r, diff, larger, strategy, skipped, verifiers.prm_num_params)
  return result


def difficulty_bins(r: state.Run, data: state.Data, lm: state.LM,
                    verifiers: state.Verifiers) -> dict[str, Any]:
  """Oracle bins (pass@1 quantiles) and predicted bins (mean PRM score) of the search questions."""
  cfg = r.settings.allocator
  path = r.path(artifacts.DIFFICULTY)
  examples = common.search_examples(r, data)
  if host.agree(paths.exists(path)):
    result = metrics.read_json(path)
    common.check_questions(result, examples, path)
    if result["difficulty_samples"] != cfg.difficulty_samples:
      raise ValueError(f"{path} holds {result['difficulty_samples']} samples per question but "
                       f"allocator.difficulty_samples={cfg.difficulty_samples}; delete it (and "
                       f"difficulty.npz) to redo the stage.")
    r.log("difficulty", "already complete; skipped")
    return result
  t0 = time.time()
  reused = _verifier_samples(r, examples)
  correct, final, gen = reused if reused else _score_samples(r, lm, verifiers, examples)
  if jax.process_index() == 0:
    shards.save_npz(r.path(artifacts.DIFFICULTY_SAMPLES),
                    {"correct": correct, "final_scores": final, "generated_tokens": gen})
  result = tables.bins_summary([e.question for e in examples], [e.level for e in examples],
                               correct, final, cfg.predicted_samples, cfg.num_bins)
  result.update(difficulty_samples=cfg.difficulty_samples,
                samples_from="verifier_eval" if reused else "sampled",
                mean_generated_tokens=round(float(gen.mean()), 2),
                wall_s=round(time.time() - t0, 1))
  metrics.write_json(path, result)
  metrics.append_jsonl(r.metrics_path, {"stage": "difficulty", **common.headline(result)})
  a = result["agreement"]
  r.log("difficulty", f"{len(examples)} questions x {cfg.difficulty_samples} samples "
        f"({result['samples_from']}); predicted vs oracle bins: exact {a['exact']:.3f}, "
        f"within one {a['within_one']:.3f}, spearman {a['spearman']}")
  return result


def _verifier_samples(r: state.Run, examples: list[tasks.Example]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """The verifier evaluation's samples of these questions, when they serve as difficulty samples.

  They are base-LM samples at temperature 1 scored by the same PRM and aggregation, so
  drawing new ones would only spend compute. Used when the file covers every question
  with at least `difficulty_samples` samples and the allocator's temperature is 1.
  """
  cfg = r.settings.allocator
  path = r.path(artifacts.VERIFIER_SAMPLES)
  if cfg.temperature != 1.0 or not host.agree(paths.exists(path)):
    return None
  arrays = shards.load_npz(path)
  row = {str(q): i for i, q in reversed(list(enumerate(arrays["question"])))}
  if arrays["correct"].shape[1] < cfg.difficulty_samples or any(
      e.question not in row for e in examples):
    return None
  idx = np.asarray([row[e.question] for e in examples])
  k = cfg.difficulty_samples
  return (arrays["correct"][idx, :k].astype(bool), arrays["prm_final"][idx, :k],
          arrays["generated_tokens"][idx, :k])


def _score_samples(r: state.Run, lm: state.LM, verifiers: state.Verifiers,
                   examples: list[tasks.Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`[Q, S]` correctness, final PRM score and generated tokens of base-LM samples."""
  cfg = r.settings.allocator
  k, max_len = cfg.difficulty_samples, lm.cfg.max_len
  correct, final, gen = [], [], []
  rng = jax.random.key(r.seed + 13)
  for start in tqdm.trange(0, len(examples), cfg.batch_prompts, desc="difficulty", leave=False):
    chunk = examples[start:start + cfg.batch_prompts]
    rng, key = jax.random.split(rng)
    sols = solutions.sample(lm.sampler, lm.params, chunk, r.task, r.tokenizer, key,
                            num_samples=k, max_len=max_len, temperature=cfg.temperature,
                            mesh=r.mesh)
    final.append(common.score_solutions(r, verifiers.prm, sols, max_len,
                                        r.settings.verifier_eval.aggregation)[2])
    correct.append(sols.correct)
    gen.append(sols.lengths)
  shape = (len(examples), k)
  return (np.concatenate(correct).reshape(shape).astype(bool),
          np.concatenate(final).reshape(shape).astype(np.float32),
          np.concatenate(gen).reshape(shape).astype(np.int32))


def allocate(r: state.Run, diff: dict[str, Any], strategy: dict[str, tables.Table],
             skipped: list[str]) -> dict[str, Any]:
  """Compute-optimal (paper §3 eq. 1, §5, §6) with oracle and predicted bins vs best-of-N.

  Also `search_vs_baseline`: every other strategy minus best-of-N per question, over all
  questions and the harder half by the difficulty samples' pass@1 (paper §5).
  """
  cfg = r.settings.allocator
  result = tables.compute_optimal_summary(
      strategy["correct"], np.asarray(diff["oracle_bins"]), np.asarray(diff["predicted_bins"]),
      cfg.baseline, diff["predicted_samples"], cfg.cv_seed, cfg.interpolate)
  result.update(num_questions=len(diff["question"]), skipped_rows=skipped,
                difficulty_samples=diff["difficulty_samples"],
                search_vs_baseline=tables.search_vs_baseline(
                    strategy["correct"], np.asarray(diff["pass@1"]), cfg.baseline,
                    seed=cfg.cv_seed))
  metrics.write_json(r.path(artifacts.COMPUTE_OPTIMAL), result)
  metrics.update_summary(r.workdir, compute_optimal=result)
  for name in ("oracle", "predicted"):
    m = result[name]
    r.log("compute-optimal", f"{name} bins: {tables.ratio_ci_text(m)} "
          f"fewer samples than best-of-N at {m['match']['baseline_budget']} "
          f"(target {m['match']['target_accuracy']:.3f})")
  return result


def flops_exchange(r: state.Run, diff: dict[str, Any], larger: dict[str, Any],
                   strategy: dict[str, tables.Table], skipped: list[str],
                   verifier_params: int) -> dict[str, Any]:
  """The FLOPs exchange table and a FLOPs-matched comparison (paper §7, Fig. 9)."""
  cfg = r.settings.allocator
  result = tables.flops_matched(
      strategy, np.asarray(diff["oracle_bins"]), larger, n_small=r.model_cfg.num_params,
      n_verifier=verifier_params, d_pretrain=larger["base_pretrain_tokens"],
      r_values=cfg.r_values, baseline=cfg.baseline, seed=cfg.cv_seed)
  result["skipped_rows"] = skipped
  metrics.write_json(r.path(artifacts.FLOPS), result)
  metrics.update_summary(r.workdir, flops=result)
  for row in result["table"]:
    r.log("flops", f"{row['variant']:>15} R={row['r']:<5g} k={row['multiplier']:.2f} -> "
          f"budget {row['matched_budget']}, acc {row['small_accuracy']} vs larger greedy "
          f"{row['large_greedy']}")
  return result
