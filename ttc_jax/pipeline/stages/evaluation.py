"""Stage "eval": the base LM's pass@1, majority@N and greedy accuracy per difficulty level."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import tqdm

from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import state
from ttc_jax.sampling import solutions
from ttc_jax.search import selection


def run(r: state.Run, data: state.Data, lm: state.LM) -> dict[str, Any]:
  """Evaluates the base LM on the test split once (`eval_base_lm.json`); later runs read it."""
  path = r.path(artifacts.EVAL)
  if host.agree(paths.exists(path)):
    result = metrics.read_json(path)
    r.log("eval", "base LM evaluation already complete; skipped")
  else:
    result = evaluate(r, lm, data.test, jax.random.key(r.seed + 1))
    result["num_params"] = lm.cfg.num_params
    metrics.write_json(path, result)
    metrics.append_jsonl(r.metrics_path, {"stage": "eval_base_lm", **result})
  metrics.update_summary(r.workdir, base_lm=result)
  print(format_table(result), flush=True)
  return result


def evaluate(r: state.Run, lm: state.LM, examples: list, rng: jax.Array) -> dict[str, Any]:
  """pass@1 (mean accuracy of temperature samples), majority@N and greedy accuracy per level."""
  cfg = r.settings.eval
  levels = np.asarray([e.level for e in examples])
  n, k = len(examples), cfg.num_samples
  sampled = np.zeros((n, k), bool)
  voted = np.zeros((n,), bool)
  greedy = np.zeros((n,), bool)
  solve = lambda chunk, key, **kw: solutions.sample(lm.sampler, lm.params, chunk, r.task,
                                                    r.tokenizer, key, max_len=lm.cfg.max_len,
                                                    mesh=r.mesh, **kw)
  for start in tqdm.trange(0, n, cfg.batch_prompts, desc="eval", leave=False):
    chunk = examples[start:start + cfg.batch_prompts]
    rng, key = jax.random.split(rng)
    sols = solve(chunk, key, num_samples=k, temperature=cfg.temperature)
    g = solve(chunk, key, temperature=0.0)
    for i, e in enumerate(chunk):
      sampled[start + i] = sols.correct[i * k:(i + 1) * k]
      voted[start + i] = r.task.is_correct(
          selection.majority_vote(sols.answers[i * k:(i + 1) * k]), e)
      greedy[start + i] = g.correct[i]
  per_level = lambda x: {str(int(l)): round(float(x[levels == l].mean()), 4)
                         for l in np.unique(levels)}
  return {"pass@1": per_level(sampled.mean(axis=1)), f"maj@{k}": per_level(voted),
          "greedy": per_level(greedy), "num_samples": k, "num_questions": n,
          "overall_pass@1": round(float(sampled.mean()), 4)}


def format_table(result: dict[str, Any]) -> str:
  keys = [k for k in result if k.startswith(("pass@", "maj@", "greedy")) and
          isinstance(result[k], dict)]
  levels = list(result[keys[0]])
  lines = ["level  " + "  ".join(f"{k:>8}" for k in keys)]
  for lv in levels:
    lines.append(f"{lv:>5}  " + "  ".join(f"{result[k][lv]:8.3f}" for k in keys))
  return "\n".join(lines)
