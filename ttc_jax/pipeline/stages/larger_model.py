"""Stage "larger model" (paper §7): a larger LM on the same data; greedy and pass@1 per question.

Writes `larger_model.json`: its shape, parameter counts and ratio, pretraining
tokens, and per search question its greedy correctness, pass@1 over
`large_samples` samples and greedy generated tokens (its D_inference per question).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
import tqdm

from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import settings
from ttc_jax.pipeline import state
from ttc_jax.sampling import solutions
from ttc_jax.training import batches


def run(r: state.Run, data: state.Data) -> dict[str, Any]:
  cfg = r.settings.allocator
  large_cfg = cfg.large_model_config(r.model_cfg)
  path = r.path(artifacts.LARGER_MODEL)
  examples = common.search_examples(r, data)
  if host.agree(paths.exists(path)):
    result = metrics.read_json(path)
    common.check_questions(result, examples, path)
    r.log("larger model", "already complete; skipped")
    return result
  t0 = time.time()
  if cfg.large_checkpoint:
    lm = common.load_lm(r, cfg.large_checkpoint, large_cfg, "larger model")
  else:
    lm = common.train_lm(r, data, large_cfg, cfg.large_train, "larger_lm", r.seed + 11)
  train_s = time.time() - t0
  greedy, pass1, tokens = greedy_and_pass1(r, lm, examples)
  large_tokens, base_tokens = pretrain_tokens(r, data)
  result = {
      "model": ({"checkpoint": cfg.large_checkpoint} if cfg.large_checkpoint
                else {f: getattr(large_cfg, f) for f in settings.LARGE_FIELDS}),
      "num_params": large_cfg.num_params, "base_num_params": r.model_cfg.num_params,
      "param_ratio": round(large_cfg.num_params / r.model_cfg.num_params, 4),
      "pretrain_tokens": large_tokens, "base_pretrain_tokens": base_tokens,
      "question": [e.question for e in examples], "level": [e.level for e in examples],
      "greedy_correct": greedy.astype(int).tolist(),
      "pass@1": np.round(pass1, 4).tolist(), "greedy_tokens": tokens.astype(int).tolist(),
      "num_samples": cfg.large_samples,
      "greedy_accuracy": round(float(greedy.mean()), 4),
      "pass@1_accuracy": round(float(pass1.mean()), 4),
      "train_s": round(train_s, 1), "wall_s": round(time.time() - t0, 1)}
  metrics.write_json(path, result)
  metrics.append_jsonl(r.metrics_path, {"stage": "larger_model", **common.headline(result)})
  r.log("larger model", f"{result['num_params']:,} params ({result['param_ratio']:.2f}x); "
        f"greedy {result['greedy_accuracy']:.3f}, pass@1 {result['pass@1_accuracy']:.3f}")
  return result


def pretrain_tokens(r: state.Run, data: state.Data) -> tuple[int, int]:
  """D_pretrain of the larger and the base model (paper §7): the configured counts of
  pretrained checkpoints, else the tokens their training on the task read."""
  cfg, pad = r.settings.allocator, r.tokenizer.pad_id
  trained = lambda tc: batches.pretrain_tokens(data.train_arrays["tokens"], pad,
                                               tc.total_steps, tc.batch_size)
  large = cfg.large_pretrain_tokens if cfg.large_checkpoint else trained(cfg.large_train)
  policy = r.settings.policy
  base = policy.pretrain_tokens if policy.checkpoint else trained(r.settings.train)
  return int(large), int(base)


def greedy_and_pass1(r: state.Run, lm: state.LM, examples: list
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per question: greedy correctness, pass@1 over `large_samples`, greedy tokens."""
  cfg = r.settings.allocator
  k = cfg.large_samples
  greedy = np.zeros(len(examples), bool)
  pass1 = np.zeros(len(examples))
  tokens = np.zeros(len(examples), np.int64)
  rng = jax.random.key(r.seed + 12)
  solve = lambda chunk, key, **kw: solutions.sample(lm.sampler, lm.params, chunk, r.task,
                                                    r.tokenizer, key, max_len=r.model_cfg.max_len,
                                                    mesh=r.mesh, **kw)
  for start in tqdm.trange(0, len(examples), cfg.batch_prompts, desc="larger model eval",
                           leave=False):
    chunk = examples[start:start + cfg.batch_prompts]
    rng, key = jax.random.split(rng)
    g = solve(chunk, key, temperature=0.0)
    s = solve(chunk, key, num_samples=k, temperature=cfg.temperature)
    greedy[start:start + len(chunk)] = g.correct
    pass1[start:start + len(chunk)] = s.correct.reshape(-1, k).mean(1)
    tokens[start:start + len(chunk)] = g.lengths
  return greedy, pass1, tokens
