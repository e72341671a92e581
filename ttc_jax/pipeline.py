"""The main job, stage by stage; every stage is skipped when its output is complete.

Stages: data (TFDS + seqio) -> train base LM -> evaluate base LM (pass@1 and
majority@N per difficulty level) -> PRM labels (Monte-Carlo rollouts) -> train
PRM -> train ORM -> verifier evaluation (label/score AUROC, best-of-N table) ->
search sweep (accuracy vs budget per strategy) -> revisions (data, revision
model, sequential:parallel sweep; `revisions/stages.py`) -> allocator (larger
model, difficulty bins, compute-optimal, FLOPs exchange, figures and report;
`allocator/stages.py`). All write to the same workdir and `summary.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from ttc_jax.allocator import stages as allocator_stages
from ttc_jax.data import arithmetic
from ttc_jax.data import tasks
from ttc_jax.data.tokenizer import CharTokenizer
from ttc_jax.experiments import metrics
from ttc_jax.experiments import search_sweep
from ttc_jax.experiments import shards
from ttc_jax.experiments import sweep
from ttc_jax.models import reward
from ttc_jax.models import transformer
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.revisions import stages as revision_stages
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import base as search_base
from ttc_jax.search import selection
from ttc_jax.training import prm_labels
from ttc_jax.training import trainer

KNOWN_TASKS = ("chain_arithmetic",)
TOP_LEVEL_KEYS = ("workdir", "seed", "task", "model", "train", "eval", "mesh", "prm", "orm",
                  "verifier_eval", "search", "revisions", "allocator")


VERIFIER_SAMPLES = "verifier_samples.npz"  # [Q, max_n] per-sample arrays of the verifier eval


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_samples: int = 16
  temperature: float = 1.0
  batch_prompts: int = 32


@dataclasses.dataclass(frozen=True)
class PRMLabelConfig:
  """Monte-Carlo soft labels (paper §5.1: 16 solutions x 16 rollouts per step)."""
  num_questions: int = 200
  num_solutions: int = 16
  num_rollouts: int = 16
  shard_size: int = 25
  prefixes_per_batch: int = 64


@dataclasses.dataclass(frozen=True)
class VerifierEvalConfig:
  """Best-of-N on the test split: `max_n` samples per question, scored by PRM and ORM."""
  max_n: int = 64
  budgets: tuple[int, ...] = (4, 16, 64)
  aggregation: str = "last"
  batch_prompts: int = 16
  mc_label_questions: int = 100  # held-out test questions given MC labels for their AUROC

  def __post_init__(self):
    bad = [n for n in self.budgets if n < 1 or self.max_n % n]
    if bad:
      raise ValueError(f"verifier_eval.budgets {bad} must divide max_n={self.max_n}.")
    if self.aggregation not in reward.AGGREGATIONS:
      raise ValueError(f"verifier_eval.aggregation={self.aggregation!r}; choose one of "
                       f"{reward.AGGREGATIONS}.")


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


def levels_from_config(config: ml_collections.ConfigDict) -> list[arithmetic.Difficulty]:
  return [arithmetic.Difficulty(*lv) for lv in config.task.levels]


class Job:
  """Holds what the stages share (config, workdir, tokenizer, mesh) and runs them."""

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    self.config = config
    self.workdir = metrics.ensure_writable_dir(
        config.workdir, "the job writes its checkpoints, metrics and results there.")
    self.tokenizer = CharTokenizer()
    self.model_cfg = dataclass_from_config(
        transformer.TransformerConfig, config.model, "model", vocab_size=self.tokenizer.vocab_size)
    self.train_cfg = trainer.TrainConfig.from_config(config.train)
    self.eval_cfg = dataclass_from_config(EvalConfig, config.eval, "eval")
    # Every section is validated here, before any compute is spent.
    self.prm_label_cfg = dataclass_from_config(PRMLabelConfig, config.prm.labels, "prm.labels")
    self.reward_train_cfg = {name: trainer.TrainConfig.from_config(config[name].train,
                                                                  f"{name}.train")
                             for name in ("prm", "orm")}
    self.verifier_cfg = dataclass_from_config(VerifierEvalConfig, config.verifier_eval,
                                              "verifier_eval")
    self.search_cfg = dataclass_from_config(
        search_sweep.SearchSweepConfig, {k: tuple(v) if isinstance(v, (list, tuple)) else v
                                         for k, v in config.search.items()}, "search")
    self.revision_cfg, self.revision_train_cfg = revision_stages.from_config(config.revisions)
    self.allocator_cfg = allocator_stages.from_config(config.allocator)
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
    batch_fn = epoch_batches(self.train_arrays, self.train_cfg.batch_size, self.config.seed)
    apply_fn = lambda params, tokens: transformer.apply(graphdef, params, tokens)[0]
    self.params = trainer.train(state, trainer.lm_loss(apply_fn), batch_fn, self.train_cfg,
                                self.workdir, name="base_lm", mesh=self.mesh)
    self.sampler = Sampler.for_transformer(graphdef, self.model_cfg, self.tokenizer)

  def eval_base_lm(self) -> dict[str, Any]:
    path = os.path.join(self.workdir, "eval_base_lm.json")
    if os.path.exists(path):
      result = metrics.read_json(path)
      self.log("eval", "base LM evaluation already complete; skipped")
    else:
      result = evaluate(self.sampler, self.params, self.test_split, self.tokenizer,
                        self.eval_cfg, self.model_cfg.max_len, self.mesh,
                        jax.random.key(self.config.seed + 1))
      result["num_params"] = self.model_cfg.num_params
      metrics.write_json(path, result)
      metrics.append_jsonl(self.metrics_path, {"stage": "eval_base_lm", **result})
    metrics.update_summary(self.workdir, base_lm=result)
    print(format_table(result), flush=True)
    return result

  def train_problems(self, n: int) -> list[arithmetic.Problem]:
    """`n` training questions, spread evenly over the levels (split order is by level)."""
    return problems_by_level(self.train_split, n)

  def test_problems(self, n: int) -> list[arithmetic.Problem]:
    """`n` test questions, spread evenly over the levels."""
    return problems_by_level(self.test_split, n)

  def prm_labels(self) -> None:
    cfg = self.prm_label_cfg
    self.label_problems = self.train_problems(cfg.num_questions)
    out = os.path.join(self.workdir, "prm_labels")
    stats = prm_labels.generate_labels(
        self.sampler, self.params, self.label_problems, self.tokenizer, out,
        num_solutions=cfg.num_solutions, num_rollouts=cfg.num_rollouts,
        shard_size=cfg.shard_size, max_len=self.model_cfg.max_len, seed=self.config.seed,
        prefixes_per_batch=cfg.prefixes_per_batch, mesh=self.mesh)
    self.prm_data = prm_labels.load_labels(out)
    self.log("prm labels", f"{stats['num_solutions']} solutions, {stats['num_steps']} steps, "
             f"{stats['fraction_correct']:.3f} correct, mean label {stats['mean_label']:.3f}")

  def _train_reward(self, name: str, loss, arrays: dict[str, np.ndarray]):
    graphdef, state = reward.from_lm(self.params, self.model_cfg, self.config.seed)
    state = mesh_lib.shard_params(state, self.mesh)
    cfg = self.reward_train_cfg[name]
    apply_fn = lambda params, tokens: reward.apply(graphdef, params, tokens)[0]
    state = trainer.train(state, loss(apply_fn), epoch_batches(arrays, cfg.batch_size,
                                                               self.config.seed),
                          cfg, self.workdir, name=name, mesh=self.mesh)
    return graphdef, state

  def train_prm(self) -> None:
    d = self.prm_data
    arrays = {"tokens": d["tokens"], "step_ends": d["step_ends"],
              "labels": np.clip(d["labels"], 0.0, 1.0), "label_mask":
              (d["step_ends"] >= 0).astype(np.float32)}
    self.prm = self._train_reward("prm", reward.prm_loss, arrays)

  def train_orm(self) -> None:
    """ORM (paper §6.1 revisions selection): final-answer correctness of base-LM samples."""
    d = self.prm_data
    last = np.maximum(d["num_steps"] - 1, 0)
    final_pos = np.maximum(d["step_ends"][np.arange(len(last)), last], 0).astype(np.int32)
    arrays = {"tokens": d["tokens"], "final_pos": final_pos,
              "label": d["correct"].astype(np.float32)}
    self.orm = self._train_reward("orm", reward.orm_loss, arrays)

  def verifier_eval(self) -> dict[str, Any]:
    path = os.path.join(self.workdir, "verifier_eval.json")
    if os.path.exists(path):
      result = metrics.read_json(path)
      self.log("verifier eval", "already complete; skipped")
    else:
      cfg = self.verifier_cfg
      problems = [arithmetic.Problem.from_question(str(q), int(l)) for q, l in
                  zip(self.test_split["question"], self.test_split["level"])]
      result, samples = evaluate_verifiers(self, problems, cfg,
                                           jax.random.key(self.config.seed + 2))
      # Kept for the allocator's difficulty bins, which need these very samples (§3.2).
      if jax.process_index() == 0:
        shards.save_npz(os.path.join(self.workdir, VERIFIER_SAMPLES), samples)
      result["mc_label_step_auroc"] = self.heldout_label_auroc(problems)
      result["mc_label_step_auroc_train"] = _rounded(prm_labels.step_label_auroc(
          self.prm_data, self.label_problems, self.tokenizer))
      metrics.write_json(path, result)
      metrics.append_jsonl(self.metrics_path, {"stage": "verifier_eval", **result})
    metrics.update_summary(self.workdir, prm_step_auroc=result["prm_step_auroc"],
                           prm_first_step_within_question_auroc=result.get(
                               "prm_first_step_within_question_auroc"),
                           mc_label_step_auroc=result["mc_label_step_auroc"],
                           mc_label_step_auroc_train=result["mc_label_step_auroc_train"],
                           bon=result["bon"])
    self.log("verifier eval", f"prm_step_auroc={result['prm_step_auroc']} "
             f"mc_label_step_auroc={result['mc_label_step_auroc']}")
    print(format_bon(result["bon"]), flush=True)
    return result

  def heldout_label_auroc(self, problems: list[arithmetic.Problem]) -> float | None:
    """AUROC of MC soft labels for the exact step checker on held-out (test) questions."""
    cfg, n = self.prm_label_cfg, self.verifier_cfg.mc_label_questions
    levels = np.asarray([p.level for p in problems])
    per = -(-n // len(np.unique(levels)))
    held = [problems[i] for lv in np.unique(levels) for i in np.flatnonzero(levels == lv)[:per]]
    out = os.path.join(self.workdir, "prm_labels_heldout")
    prm_labels.generate_labels(
        self.sampler, self.params, held[:n], self.tokenizer, out,
        num_solutions=cfg.num_solutions, num_rollouts=cfg.num_rollouts,
        shard_size=cfg.shard_size, max_len=self.model_cfg.max_len, seed=self.config.seed + 3,
        prefixes_per_batch=cfg.prefixes_per_batch, mesh=self.mesh)
    return _rounded(prm_labels.step_label_auroc(prm_labels.load_labels(out), held[:n],
                                                self.tokenizer))

  def search(self) -> dict[str, Any]:
    """Accuracy vs generation budget of every search strategy on test questions (paper §5.3)."""
    cfg = self.search_cfg
    problems = self.test_problems(cfg.num_questions)
    policy = search_base.Policy(self.sampler, self.params, self.tokenizer)
    verifier = search_base.Verifier(*self.prm, aggregation=self.verifier_cfg.aggregation)
    # Rows are reused only for the same questions, settings and seed.
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("budgets", "strategies")}
    setup = prm_labels.questions_fingerprint(problems)[:12] + "-" + str(zlib.crc32(
        json.dumps([settings, self.config.seed], sort_keys=True).encode()))
    cells = [{**c, "setup": setup} for c in search_sweep.cells(cfg)]
    rows = sweep.run_grid(
        os.path.join(self.workdir, "search.jsonl"), cells,
        lambda c: search_sweep.run_cell(c, problems, policy, verifier, cfg, self.mesh,
                                        self.config.seed + 4), desc="search")
    table = search_sweep.summarize(rows)
    metrics.update_summary(self.workdir, search=table)
    self.log("search", f"{len(rows)} cells on {len(problems)} test questions; accuracy:")
    print(search_sweep.format_table(table), flush=True)
    if any("harder_half" in t for s in table.values() for t in s.values()):
      print("harder half:\n" + search_sweep.format_table(table, "harder_half"), flush=True)
    return table

  def revisions(self) -> dict[str, Any]:
    """Revision data, revision model and the sequential:parallel sweep (paper §6)."""
    revision_stages.revision_data(self, self.revision_cfg)
    revision_stages.train_revision_model(self, self.revision_cfg, self.revision_train_cfg)
    return revision_stages.revisions_sweep(self, self.revision_cfg)

  def allocator(self) -> dict[str, Any]:
    """Larger model, difficulty bins, compute-optimal allocation, FLOPs exchange, report (§3.2, §7)."""
    revision_rows = allocator_stages.load_revision_rows(self, self.revision_cfg)
    return allocator_stages.run_all(self, self.allocator_cfg, revision_rows)

  def run(self) -> dict[str, Any]:
    with open(os.path.join(self.workdir, "config.json"), "w") as f:
      f.write(self.config.to_json_best_effort(indent=2))
    self.data()
    self.train_base_lm()
    self.eval_base_lm()
    self.prm_labels()
    self.train_prm()
    self.train_orm()
    self.verifier_eval()
    self.search()
    self.revisions()
    self.allocator()
    return metrics.update_summary(self.workdir, wall_s=round(time.time() - self.start, 1))


def problems_by_level(split: dict[str, Any], n: int) -> list[arithmetic.Problem]:
  """The first `n` questions of a split, spread evenly over its levels."""
  levels = np.asarray(split["level"])
  per = -(-n // len(np.unique(levels)))
  idx = np.concatenate([np.flatnonzero(levels == lv)[:per] for lv in np.unique(levels)])[:n]
  return [arithmetic.Problem.from_question(str(split["question"][i]), int(levels[i]))
          for i in idx]


def epoch_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int):
  """`batch_fn(step)` over `arrays`: a fresh permutation per epoch, fixed by (seed, epoch).

  A pure function of the step, so a resumed training run sees the same batches.
  """
  n = len(next(iter(arrays.values())))

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    epoch, offset = divmod(step * batch_size, n)
    idx = np.concatenate([np.random.default_rng([seed, e]).permutation(n)
                          for e in range(epoch, epoch + 1 + batch_size // n + 1)])
    idx = idx[offset:offset + batch_size]
    return {k: v[idx] for k, v in arrays.items()}
  return batch_fn


def evaluate_verifiers(job: "Job", problems: list[arithmetic.Problem], cfg: VerifierEvalConfig,
                       rng: jax.Array) -> dict[str, Any]:
  """Samples `max_n` solutions per test question; PRM step AUROC and the best-of-N table.

  `prm_step_auroc`: AUROC of PRM step scores for the exact per-step checker;
  `prm_first_step_within_question_auroc`: the same over first steps, comparing
  only siblings of one question (what search relies on).
  `bon[method][N]`: accuracy of PRM-weighted best-of-N, naive PRM best-of-N,
  ORM-weighted best-of-N and majority voting, averaged over the `max_n / N`
  disjoint groups of N samples of every question (paper §5.1).

  Returns `(result, samples)`: `samples` holds the `[Q, max_n]` arrays `correct`,
  `prm_final` and `generated_tokens` and the `[Q]` `question` texts.
  """
  tok, k = job.tokenizer, cfg.max_n
  prm_g, prm_s = job.prm
  orm_g, orm_s = job.orm
  answers, prm_final, orm_final, step_s, step_ok, generated = [], [], [], [], [], []
  first_s, first_ok, first_q = [], [], []  # first steps, grouped by question
  for start in tqdm.trange(0, len(problems), cfg.batch_prompts, desc="verifier eval",
                           leave=False):
    chunk = problems[start:start + cfg.batch_prompts]
    prompts = [tok.encode(p.prompt, bos=True) for p in chunk]
    rng, key = jax.random.split(rng)
    st, out = job.sampler.sample(job.params, prompts, key, num_samples=k,
                                 max_len=job.model_cfg.max_len, stop="eos", temperature=1.0,
                                 mesh=job.mesh)
    tokens = np.asarray(st.tokens)
    generated.append(np.asarray(out.lengths))
    # A fixed width (a step has >= 2 tokens) keeps the scorers' compiled shape constant.
    ends = reward.find_step_ends(tokens, tok.step_id, tok.eos_id,
                                 np.repeat([len(p) for p in prompts], k),
                                 max_steps=job.model_cfg.max_len // 2 + 1, pad_id=tok.pad_id,
                                 bos_id=tok.bos_id)
    num_steps = (ends >= 0).sum(1)
    prm_steps = np.asarray(reward.step_scores(prm_g, prm_s, st.tokens, ends))
    orm_steps = np.asarray(reward.step_scores(orm_g, orm_s, st.tokens, ends))
    prm_final.append(np.asarray(reward.aggregate(prm_steps, num_steps, cfg.aggregation)))
    orm_final.append(np.asarray(reward.aggregate(orm_steps, num_steps, "last")))
    for r, row in enumerate(tokens):
      p = chunk[r // k]
      text = tok.decode(row[len(prompts[r // k]):])
      answers.append(arithmetic.extract_answer(text))
      ok = arithmetic.step_correct(p, text)
      n = min(int(num_steps[r]), len(ok))
      step_s.extend(prm_steps[r, :n].tolist())
      step_ok.extend(ok[:n])
      if n:
        first_s.append(float(prm_steps[r, 0]))
        first_ok.append(ok[0])
        first_q.append(start + r // k)
  prm_final, orm_final = np.concatenate(prm_final), np.concatenate(orm_final)
  truth = np.repeat([p.answer for p in problems], k)
  levels = np.asarray([p.level for p in problems])
  methods = {
      "prm_weighted": lambda a, s, o: selection.weighted_best_of_n(a, s),
      "prm_naive": lambda a, s, o: selection.best_of_n(a, s),
      "orm_weighted": lambda a, s, o: selection.weighted_best_of_n(a, o),
      "majority": lambda a, s, o: selection.majority_vote(a),
  }
  bon: dict[str, Any] = {}
  for name, pick in methods.items():
    bon[name] = {}
    for n in cfg.budgets:
      acc = np.zeros(len(problems))
      for q in range(len(problems)):
        for g in range(k // n):
          sl = slice(q * k + g * n, q * k + (g + 1) * n)
          acc[q] += pick(answers[sl], prm_final[sl], orm_final[sl]) == truth[q * k]
      acc /= k // n
      bon[name][str(n)] = {"all": round(float(acc.mean()), 4), **{
          str(int(lv)): round(float(acc[levels == lv].mean()), 4) for lv in np.unique(levels)}}
  correct = np.asarray([a == t for a, t in zip(answers, truth)])
  samples = {"question": np.asarray([p.question for p in problems], dtype=str),
             "correct": correct.reshape(-1, k),
             "prm_final": prm_final.reshape(-1, k).astype(np.float32),
             "generated_tokens": np.concatenate(generated).reshape(-1, k).astype(np.int32)}
  return {"prm_step_auroc": _rounded(prm_labels.auroc(step_s, step_ok)),
          "prm_first_step_within_question_auroc": _rounded(prm_labels.within_group_auroc(
              first_s, first_ok, first_q)),
          "orm_final_auroc": _rounded(prm_labels.auroc(orm_final, correct)),
          "prm_final_auroc": _rounded(prm_labels.auroc(prm_final, correct)),
          "pass@1": round(float(correct.mean()), 4), "bon": bon, "max_n": k}, samples


def _rounded(x: float) -> float | None:
  """4 decimals, or None where undefined (an AUROC over one class is NaN)."""
  return None if not np.isfinite(x) else round(float(x), 4)


def format_bon(bon: dict[str, Any]) -> str:
  methods = list(bon)
  budgets = list(bon[methods[0]])
  lines = ["N     " + "  ".join(f"{m:>13}" for m in methods)]
  for n in budgets:
    lines.append(f"{n:<5} " + "  ".join(f"{bon[m][n]['all']:13.3f}" for m in methods))
  return "\n".join(lines)


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
