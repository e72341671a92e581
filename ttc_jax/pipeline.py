"""The main job, stage by stage; every stage is skipped when its output is complete.

Stages now: data (TFDS + seqio) -> train base LM -> evaluate base LM (pass@1 and
majority@N per difficulty level). Later stages (PRM, search, revisions,
allocator) append to the same job and the same `summary.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from ttc_jax.data import arithmetic
from ttc_jax.data import tasks
from ttc_jax.data.tokenizer import CharTokenizer
from ttc_jax.experiments import metrics
from ttc_jax.models import transformer
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import selection
from ttc_jax.training import trainer

KNOWN_TASKS = ("chain_arithmetic",)
TOP_LEVEL_KEYS = ("workdir", "seed", "task", "model", "train", "eval", "mesh")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_samples: int = 16
  temperature: float = 1.0
  batch_prompts: int = 32


def dataclass_from_config(cls, section: ml_collections.ConfigDict | dict, name: str, **extra):
  """Builds a frozen config dataclass, naming unknown keys and the valid ones."""
  values = dict(section)
  valid = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - valid)
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.{name}; valid keys: {sorted(valid)}.")
  return cls(**values, **extra)


def check_config(config: ml_collections.ConfigDict) -> None:
  unknown = sorted(set(config.keys()) - set(TOP_LEVEL_KEYS))
  if unknown:
    raise ValueError(f"Unknown top-level config key(s) {unknown}; valid: {list(TOP_LEVEL_KEYS)}.")
  if config.task.name not in KNOWN_TASKS:
    raise ValueError(f"Unknown task {config.task.name!r}; registered tasks: {list(KNOWN_TASKS)}.")


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir and proves it writable before any compute is spent."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(
        f"Cannot write to workdir {workdir!r} ({e.strerror}); pass a writable one with "
        f"--config.workdir=/path/you/own.") from None
  return workdir


def levels_from_config(config: ml_collections.ConfigDict) -> list[arithmetic.Difficulty]:
  return [arithmetic.Difficulty(*lv) for lv in config.task.levels]


class Job:
  """Holds what the stages share (config, workdir, tokenizer, mesh) and runs them."""

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    self.config = config
    self.workdir = prepare_workdir(config.workdir)
    self.tokenizer = CharTokenizer()
    self.model_cfg = dataclass_from_config(
        transformer.TransformerConfig, config.model, "model", vocab_size=self.tokenizer.vocab_size)
    self.train_cfg = trainer.TrainConfig.from_config(config.train)
    self.eval_cfg = dataclass_from_config(EvalConfig, config.eval, "eval")
    self.levels = levels_from_config(config)
    self.mesh = mesh_lib.make_mesh(data=config.mesh.data or None, model=config.mesh.model)
    self.metrics_path = os.path.join(self.workdir, "metrics.jsonl")
    self.start = time.time()

  def log(self, stage: str, msg: str) -> None:
    print(f"[{time.time() - self.start:7.1f}s] {stage}: {msg}", flush=True)

  # ---- stages ----

  def data(self) -> None:
    t = self.config.task
    self.task = tasks.register_task(
        t.name, os.path.join(self.workdir, "data"), self.levels, dict(t.num_per_level), t.seed)
    self.train_split = tasks.load_split(self.task, "train")
    self.test_split = tasks.load_split(self.task, "test")
    self.train_arrays = tasks.lm_batch_arrays(self.train_split, self.model_cfg.max_len)
    self.log("data", f"{len(self.train_arrays['tokens'])} train / "
             f"{len(self.test_split['answer'])} test examples")

  def train_base_lm(self) -> None:
    graphdef, state = transformer.create(self.model_cfg, self.config.seed)
    self.graphdef = graphdef
    state = mesh_lib.shard_params(state, self.mesh)
    arrays, bs, seed = self.train_arrays, self.train_cfg.batch_size, self.config.seed
    n = len(arrays["tokens"])

    def batch_fn(step: int) -> dict[str, np.ndarray]:
      # A fresh permutation per epoch, fixed by (seed, epoch): resume is exact.
      epoch, offset = divmod(step * bs, n)
      idx = np.concatenate([np.random.default_rng([seed, epoch]).permutation(n),
                            np.random.default_rng([seed, epoch + 1]).permutation(n)])
      idx = idx[offset:offset + bs]
      return {k: v[idx] for k, v in arrays.items()}

    apply_fn = lambda params, tokens: transformer.apply(graphdef, params, tokens)[0]
    self.params = trainer.train(state, trainer.lm_loss(apply_fn), batch_fn, self.train_cfg,
                                self.workdir, name="base_lm", mesh=self.mesh)
    self.sampler = Sampler.for_transformer(graphdef, self.model_cfg, self.tokenizer)

  def eval_base_lm(self) -> dict[str, Any]:
    path = os.path.join(self.workdir, "eval_base_lm.json")
    if os.path.exists(path):
      with open(path) as f:
        result = json.load(f)
      self.log("eval", "base LM evaluation already complete; skipped")
    else:
      result = evaluate(self.sampler, self.params, self.test_split, self.tokenizer,
                        self.eval_cfg, self.model_cfg.max_len, self.mesh,
                        jax.random.key(self.config.seed + 1))
      result["num_params"] = self.model_cfg.num_params
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
      os.replace(tmp, path)
      metrics.append_jsonl(self.metrics_path, {"stage": "eval_base_lm", **result})
    metrics.update_summary(self.workdir, base_lm=result)
    print(format_table(result), flush=True)
    return result

  def run(self) -> dict[str, Any]:
    with open(os.path.join(self.workdir, "config.json"), "w") as f:
      f.write(self.config.to_json_best_effort(indent=2))
    self.data()
    self.train_base_lm()
    self.eval_base_lm()
    return metrics.update_summary(self.workdir, wall_s=round(time.time() - self.start, 1))


def evaluate(sampler: Sampler, params, split: dict[str, Any], tokenizer: CharTokenizer,
             cfg: EvalConfig, max_len: int, mesh, rng: jax.Array) -> dict[str, Any]:
  """pass@1 (mean accuracy of temperature samples), majority@N and greedy accuracy per level."""
  prompts = [list(p) for p in split["inputs"]]
  answers = np.asarray(split["answer"])
  levels = np.asarray(split["level"])
  n, k = len(prompts), cfg.num_samples
  sampled = np.zeros((n, k), bool)
  voted = np.zeros((n,), bool)
  greedy = np.zeros((n,), bool)
  decode = lambda row: arithmetic.extract_answer(tokenizer.decode(row))
  for start in tqdm.trange(0, n, cfg.batch_prompts, desc="eval", leave=False):
    chunk = prompts[start:start + cfg.batch_prompts]
    rng, key = jax.random.split(rng)
    _, out = sampler.sample(params, chunk, key, num_samples=k, max_len=max_len, stop="eos",
                            temperature=cfg.temperature, mesh=mesh)
    got = [decode(r) for r in np.asarray(out.tokens)]
    _, g = sampler.sample(params, chunk, key, max_len=max_len, stop="eos", temperature=0.0,
                          mesh=mesh)
    for i in range(len(chunk)):
      cand = got[i * k:(i + 1) * k]
      truth = int(answers[start + i])
      sampled[start + i] = [a == truth for a in cand]
      voted[start + i] = selection.majority_vote(cand) == truth
      greedy[start + i] = decode(np.asarray(g.tokens[i])) == truth
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


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the job described by `config` (see configs/demo.py)."""
  return Job(config).run()
