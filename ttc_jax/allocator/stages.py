"""The main job's allocator stages (paper §3.2, §5, §7): larger model, difficulty, compute-optimal.

Each stage takes the pipeline `Job` (after its data, base LM, PRM and search stages) and an
`AllocatorConfig`; the stages that spend compute are skipped when their output exists, the
pure ones (allocation, FLOPs, figures) recompute from their inputs in milliseconds:

  cfg = stages.from_config(config.allocator)            # validated before any compute
  rows = stages.load_search_rows(job)                   # <workdir>/search.jsonl
  stages.train_larger_model(job, cfg)                   # checkpoints/larger_lm, larger_model.json
  stages.difficulty_bins(job, cfg)                      # difficulty.json, difficulty.npz
  stages.allocate(job, cfg, rows, revision_rows)        # compute_optimal.json
  stages.flops_exchange(job, cfg, rows, revision_rows)  # flops.json
  stages.figures_and_report(job, cfg, rows, revision_rows)  # figures/, report.md

`run_all(job, cfg, revision_rows)` runs them in that order. Every stage works on the search
stage's questions, `job.test_problems(job.search_cfg.num_questions)`, aligned by question text.

Rows (search or revisions) are sweep rows: `{"cell": {"strategy": str, "budget": int}, "question":
[Q], "correct": [Q], "generated_tokens": [Q], "verifier_tokens": [Q]}` with per-question lists;
`correct` may be fractional (a mean over repeats). `budget` counts generations as the paper
does (lookahead's rollouts included), so cells compare at equal budget directly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from ttc_jax.allocator import compute_optimal as co
from ttc_jax.allocator import difficulty
from ttc_jax.allocator import flops
from ttc_jax.data import arithmetic
from ttc_jax.data import tokenizer
from ttc_jax.experiments import figures
from ttc_jax.experiments import metrics
from ttc_jax.experiments import shards
from ttc_jax.models import reward
from ttc_jax.models import transformer
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.training import trainer

Rows = Sequence[Mapping[str, Any]]
Table = dict[str, dict[int, np.ndarray]]
_LARGE_FIELDS = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim")
GAIN_TABLE_STEPS = 6  # revision steps shown in the report's per-step table


@dataclasses.dataclass(frozen=True)
class AllocatorConfig:
  """Every setting of the allocator stages (config section `allocator`; paper values in brackets).

  Attributes:
    large_d_model … large_mlp_dim: the larger model's shape; the rest (vocab, max_len, RoPE)
      is the base model's. Paper §7 compares a ~14x larger model.
    large_train: its TrainConfig (same training data as the base LM).
    min_param_ratio: the stage refuses a larger model with fewer times the base's parameters.
    large_samples: temperature-1 samples per question for the larger model's pass@1.
    difficulty_samples: base-LM samples per question for oracle difficulty [2048]; the
      verifier evaluation's samples are reused when it drew at least this many.
    predicted_samples: the first this-many of them, PRM-scored, give predicted difficulty;
      they are counted in the predicted policy's budget (paper §5: predicted bins need no
      ground truth but cost samples).
    num_bins: difficulty levels [5].
    batch_prompts: questions per sampler call.
    temperature: sampling temperature of the difficulty and pass@1 samples.
    baseline: the search strategy spec compared against (best-of-N weighted).
    cv_seed: seeds the 2-fold split inside each bin (paper §3.2).
    interpolate: match budgets on the log2-linear accuracy curve instead of measured points.
    r_values: R = D_inference / D_pretrain of the FLOPs exchange [0.16, 0.79, 22].
  """

  large_d_model: int = 192
  large_num_layers: int = 4
  large_num_heads: int = 8
  large_num_kv_heads: int = 4
  large_head_dim: int = 24
  large_mlp_dim: int = 512
  large_train: trainer.TrainConfig = trainer.TrainConfig(total_steps=1000, batch_size=64)
  min_param_ratio: float = 4.0
  large_samples: int = 4
  difficulty_samples: int = 64
  predicted_samples: int = 16
  num_bins: int = 5
  batch_prompts: int = 16
  temperature: float = 1.0
  baseline: str = "best_of_n"
  cv_seed: int = 0
  interpolate: bool = False
  r_values: tuple[float, ...] = flops.PAPER_R_VALUES

  def __post_init__(self):
    object.__setattr__(self, "r_values", tuple(float(r) for r in self.r_values))
    checks = [(f"large_{f}", getattr(self, f"large_{f}") >= 1, ">= 1") for f in _LARGE_FIELDS]
    checks += [
        ("large_num_heads", self.large_num_heads % self.large_num_kv_heads == 0,
         f"a multiple of large_num_kv_heads={self.large_num_kv_heads}"),
        ("large_head_dim", self.large_head_dim % 2 == 0, "even (RoPE)"),
        ("large_train", isinstance(self.large_train, trainer.TrainConfig), "a TrainConfig"),
        ("min_param_ratio", self.min_param_ratio >= 1, ">= 1 (paper: ~14)"),
        ("large_samples", self.large_samples >= 1, ">= 1"),
        ("difficulty_samples", self.difficulty_samples >= 1, ">= 1 (paper: 2048)"),
        ("predicted_samples", 1 <= self.predicted_samples <= self.difficulty_samples,
         f"in [1, difficulty_samples={self.difficulty_samples}]"),
        ("num_bins", self.num_bins >= 1, ">= 1 (paper: 5)"),
        ("batch_prompts", self.batch_prompts >= 1, ">= 1"),
        ("temperature", self.temperature > 0, "> 0 (difficulty needs diverse samples)"),
        ("baseline", isinstance(self.baseline, str) and bool(self.baseline),
         "a search strategy spec, e.g. 'best_of_n'"),
        ("r_values", bool(self.r_values) and all(r > 0 and math.isfinite(r)
                                                 for r in self.r_values),
         f"non-empty, each > 0 (paper: {flops.PAPER_R_VALUES})"),
    ]
    for field, ok, want in checks:
      if not ok:
        raise ValueError(f"allocator.{field}={getattr(self, field)!r} is invalid; it must be "
                         f"{want}.")

  def large_model_config(self, base: transformer.TransformerConfig
                         ) -> transformer.TransformerConfig:
    """The larger model: the base's config with this shape; checks `min_param_ratio`."""
    large = dataclasses.replace(base, **{f: getattr(self, f"large_{f}") for f in _LARGE_FIELDS})
    ratio = large.num_params / base.num_params
    if ratio < self.min_param_ratio:
      raise ValueError(f"allocator: the larger model has {large.num_params:,} parameters, "
                       f"{ratio:.2f}x the base's {base.num_params:,}; it must be at least "
                       f"min_param_ratio={self.min_param_ratio}x. Raise large_d_model / "
                       f"large_num_layers / large_mlp_dim.")
    return large


def from_config(section: ml_collections.ConfigDict | Mapping[str, Any]) -> AllocatorConfig:
  """`AllocatorConfig` from `config.allocator` (its `large_train` key is a TrainConfig section)."""
  values = dict(section)
  valid = sorted(f.name for f in dataclasses.fields(AllocatorConfig))
  unknown = sorted(set(values) - set(valid))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.allocator; valid keys: {valid}.")
  if "large_train" in values:
    values["large_train"] = trainer.TrainConfig.from_config(values["large_train"],
                                                            "allocator.large_train")
  for k in ("r_values",):
    if k in values:
      values[k] = tuple(values[k])
  return AllocatorConfig(**values)



# ---------------------------------------------------------------------------
# Stages that spend compute (skipped when their output exists)
# ---------------------------------------------------------------------------


def train_larger_model(job, cfg: AllocatorConfig) -> dict[str, Any]:
  """Stage "larger model" (paper §7): a larger LM on the same data; greedy and pass@1 per question.

  Writes `<workdir>/larger_model.json`: the config, parameter counts and ratio, pretraining
  tokens, and per search question its greedy correctness, pass@1 over `large_samples`
  samples and greedy generated tokens (the larger model's D_inference per question).
  """
  from ttc_jax import pipeline  # pylint: disable=g-import-not-at-top  (pipeline imports us)
  large_cfg = cfg.large_model_config(job.model_cfg)
  path = os.path.join(job.workdir, "larger_model.json")
  problems = _problems(job)
  if os.path.exists(path):
    result = metrics.read_json(path)
    _check_questions(result, problems, path)
    job.log("larger model", "already complete; skipped")
    return result
  t0 = time.time()
  graphdef, state = transformer.create(large_cfg, job.config.seed + 11)
  state = mesh_lib.shard_params(state, job.mesh)
  apply_fn = lambda params, tokens: transformer.apply(graphdef, params, tokens)[0]
  tc = cfg.large_train
  params = trainer.train(state, trainer.lm_loss(apply_fn),
                         pipeline.epoch_batches(job.train_arrays, tc.batch_size, job.config.seed),
                         tc, job.workdir, name="larger_lm", mesh=job.mesh)
  train_s = time.time() - t0
  sampler = Sampler.for_transformer(graphdef, large_cfg, job.tokenizer)
  greedy, pass1, tokens = _greedy_and_pass1(job, sampler, params, problems, cfg)
  result = {
      "model": {f: getattr(large_cfg, f) for f in _LARGE_FIELDS},
      "num_params": large_cfg.num_params, "base_num_params": job.model_cfg.num_params,
      "param_ratio": round(large_cfg.num_params / job.model_cfg.num_params, 4),
      "pretrain_tokens": pretrain_tokens(job.train_arrays, tc),
      "base_pretrain_tokens": pretrain_tokens(job.train_arrays, job.train_cfg),
      "question": [p.question for p in problems], "level": [p.level for p in problems],
      "greedy_correct": greedy.astype(int).tolist(),
      "pass@1": np.round(pass1, 4).tolist(), "greedy_tokens": tokens.astype(int).tolist(),
      "num_samples": cfg.large_samples,
      "greedy_accuracy": round(float(greedy.mean()), 4),
      "pass@1_accuracy": round(float(pass1.mean()), 4),
      "train_s": round(train_s, 1), "wall_s": round(time.time() - t0, 1)}
  metrics.write_json(path, result)
  metrics.append_jsonl(job.metrics_path, {"stage": "larger_model", **_headline(result)})
  job.log("larger model", f"{result['num_params']:,} params ({result['param_ratio']:.2f}x); "
          f"greedy {result['greedy_accuracy']:.3f}, pass@1 {result['pass@1_accuracy']:.3f}")
  return result


def _greedy_and_pass1(job, sampler: Sampler, params, problems: Sequence[arithmetic.Problem],
                      cfg: AllocatorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  tok, k = job.tokenizer, cfg.large_samples
  greedy = np.zeros(len(problems), bool)
  pass1 = np.zeros(len(problems))
  tokens = np.zeros(len(problems), np.int64)
  rng = jax.random.key(job.config.seed + 12)
  for start in tqdm.trange(0, len(problems), cfg.batch_prompts, desc="larger model eval",
                           leave=False):
    chunk = problems[start:start + cfg.batch_prompts]
    prompts = [tok.encode(p.prompt, bos=True) for p in chunk]
    rng, key = jax.random.split(rng)
    _, g = sampler.sample(params, prompts, key, max_len=job.model_cfg.max_len, stop="eos",
                          temperature=0.0, mesh=job.mesh)
    _, s = sampler.sample(params, prompts, key, num_samples=k, max_len=job.model_cfg.max_len,
                          stop="eos", temperature=cfg.temperature, mesh=job.mesh)
    g_tok, s_tok = np.asarray(g.tokens), np.asarray(s.tokens)
    for i, p in enumerate(chunk):
      greedy[start + i] = arithmetic.extract_answer(tok.decode(g_tok[i])) == p.answer
      pass1[start + i] = np.mean([arithmetic.extract_answer(tok.decode(r)) == p.answer
                                  for r in s_tok[i * k:(i + 1) * k]])
    tokens[start:start + len(chunk)] = np.asarray(g.lengths)
  return greedy, pass1, tokens


def difficulty_bins(job, cfg: AllocatorConfig) -> dict[str, Any]:
  """Stage "difficulty" (paper §3.2, §5): oracle and predicted bins of the search questions.

  Per question `difficulty_samples` base-LM samples (stop at EOS; the verifier evaluation's,
  `<workdir>/verifier_samples.npz`, when they suffice) are checked against the
  answer (oracle: quantiles of pass@1) and scored by the PRM (predicted: quantiles of the
  mean final score of the first `predicted_samples`, no ground truth). Writes
  `<workdir>/difficulty.npz` (`correct`, `final_scores`, `generated_tokens`, `[Q, S]`) and
  `<workdir>/difficulty.json` (bins, per-question pass@1 and mean score, agreement).
  """
  path = os.path.join(job.workdir, "difficulty.json")
  problems = _problems(job)
  if os.path.exists(path):
    result = metrics.read_json(path)
    _check_questions(result, problems, path)
    if result["difficulty_samples"] != cfg.difficulty_samples:
      raise ValueError(f"{path} holds {result['difficulty_samples']} samples per question but "
                       f"allocator.difficulty_samples={cfg.difficulty_samples}; delete it (and "
                       f"difficulty.npz) to redo the stage.")
    job.log("difficulty", "already complete; skipped")
    return result
  t0 = time.time()
  reused = _verifier_samples(job, problems, cfg)
  correct, final, gen = reused if reused else _score_samples(job, problems, cfg)
  if jax.process_index() == 0:
    shards.save_npz(os.path.join(job.workdir, "difficulty.npz"),
                    {"correct": correct, "final_scores": final, "generated_tokens": gen})
  result = bins_summary([p.question for p in problems], [p.level for p in problems], correct,
                        final, cfg.predicted_samples, cfg.num_bins)
  result.update(difficulty_samples=cfg.difficulty_samples,
                samples_from="verifier_eval" if reused else "sampled",
                mean_generated_tokens=round(float(gen.mean()), 2),
                wall_s=round(time.time() - t0, 1))
  metrics.write_json(path, result)
  metrics.append_jsonl(job.metrics_path, {"stage": "difficulty", **_headline(result)})
  a = result["agreement"]
  job.log("difficulty", f"{len(problems)} questions x {cfg.difficulty_samples} samples "
          f"({result['samples_from']}); "
          f"predicted vs oracle bins: exact {a['exact']:.3f}, within one {a['within_one']:.3f}, "
          f"spearman {a['spearman']}")
  return result


def _verifier_samples(job, problems: Sequence[arithmetic.Problem], cfg: AllocatorConfig
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """The verifier evaluation's samples of these questions, when they serve as difficulty samples.

  They are base-LM samples at temperature 1 scored by the same PRM and aggregation, so
  drawing new ones would only spend compute. Used when the file covers every question
  with at least `difficulty_samples` samples and `cfg.temperature` is 1.
  """
  from ttc_jax import pipeline  # pylint: disable=g-import-not-at-top  (pipeline imports us)
  path = os.path.join(job.workdir, pipeline.VERIFIER_SAMPLES)
  if cfg.temperature != 1.0 or not os.path.exists(path):
    return None
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  row = {str(q): i for i, q in reversed(list(enumerate(arrays["question"])))}
  if arrays["correct"].shape[1] < cfg.difficulty_samples or any(
      p.question not in row for p in problems):
    return None
  idx = np.asarray([row[p.question] for p in problems])
  k = cfg.difficulty_samples
  return (arrays["correct"][idx, :k].astype(bool), arrays["prm_final"][idx, :k],
          arrays["generated_tokens"][idx, :k])


def _score_samples(job, problems: Sequence[arithmetic.Problem], cfg: AllocatorConfig
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`[Q, S]` correctness, final PRM score and generated tokens of base-LM samples."""
  tok, k, max_len = job.tokenizer, cfg.difficulty_samples, job.model_cfg.max_len
  prm_g, prm_s = job.prm
  correct, final, gen = [], [], []
  rng = jax.random.key(job.config.seed + 13)
  for start in tqdm.trange(0, len(problems), cfg.batch_prompts, desc="difficulty", leave=False):
    chunk = problems[start:start + cfg.batch_prompts]
    prompts = [tok.encode(p.prompt, bos=True) for p in chunk]
    rng, key = jax.random.split(rng)
    st, out = job.sampler.sample(job.params, prompts, key, num_samples=k, max_len=max_len,
                                 stop="eos", temperature=cfg.temperature, mesh=job.mesh)
    tokens = np.asarray(st.tokens)
    starts = np.repeat([len(p) for p in prompts], k)
    # As in pipeline.evaluate_verifiers: one fixed step width keeps one compiled shape.
    ends = reward.find_step_ends(tokens, tok.step_id, tok.eos_id, starts,
                                 max_steps=max_len // 2 + 1, pad_id=tok.pad_id,
                                 bos_id=tok.bos_id)
    steps = np.asarray(reward.step_scores(prm_g, prm_s, st.tokens, ends))
    final.append(reward.aggregate(steps, (ends >= 0).sum(1), job.verifier_cfg.aggregation))
    correct.append([arithmetic.extract_answer(tok.decode(row[s:])) == chunk[r // k].answer
                    for r, (row, s) in enumerate(zip(tokens, starts))])
    gen.append(np.asarray(out.lengths))
  shape = (len(problems), k)
  return (np.concatenate(correct).reshape(shape).astype(bool),
          np.concatenate(final).reshape(shape).astype(np.float32),
          np.concatenate(gen).reshape(shape).astype(np.int32))


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
                    "spearman": _finite(agree["spearman"]),
                    "confusion_predicted_x_oracle": agree["confusion"].tolist()},
      "spearman_with_task_level": {
          "oracle": _finite(difficulty.spearman(oracle, task_levels)),
          "predicted": _finite(difficulty.spearman(predicted, task_levels))},
      "bin_sizes": {"oracle": np.bincount(oracle, minlength=num_bins + 1)[1:].tolist(),
                    "predicted": np.bincount(predicted, minlength=num_bins + 1)[1:].tolist()}}


# ---------------------------------------------------------------------------
# Pure stages: recomputed from their inputs every run (milliseconds)
# ---------------------------------------------------------------------------


def load_search_rows(job) -> list[dict[str, Any]]:
  """The search stage's rows for its current questions and grid (`<workdir>/search.jsonl`).

  Rows of earlier runs on other questions, strategies or budgets are dropped; when a cell was
  run twice (a changed setting or seed), the later row is kept.
  """
  path = os.path.join(job.workdir, "search.jsonl")
  if not os.path.exists(path):
    raise ValueError(f"{path} does not exist; run the search stage (Job.search) first.")
  questions = [p.question for p in _problems(job)]
  grid = {(s, b) for s in job.search_cfg.strategies for b in job.search_cfg.budgets}
  rows = {}
  for row in metrics.read_jsonl(path):
    key = (row["cell"]["strategy"], int(row["cell"]["budget"]))
    if key in grid and row.get("question") == questions:
      rows[key] = row
  if not rows:
    raise ValueError(f"{path} holds no row for the current search questions and grid; run the "
                     f"search stage (Job.search) first.")
  return list(rows.values())


def load_revision_rows(job, rev_cfg) -> list[dict[str, Any]] | None:
  """Per-question rows of the revisions sweep (paper §6) for `allocate`, or None before it ran.

  Reads the chain shards `<workdir>/revisions/` that `revisions.stages.revisions_sweep` left
  (`rev_cfg` is its `RevisionConfig`); see `revision_rows_from_arrays`. They cover the
  revisions' own test questions (`rev_cfg.test_per_level` per level); `allocate` uses them
  only where those include every search question.
  """
  from ttc_jax.revisions import stages as rev_stages  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(job.workdir, "revisions.json")):
    return None
  arrays = rev_stages.load_sweep_chains(job.workdir)
  return revision_rows_from_arrays(arrays, rev_stages.test_problems(job, rev_cfg.test_per_level),
                                   rev_cfg)


def revision_rows_from_arrays(arrays: Mapping[str, np.ndarray],
                              problems: Sequence[arithmetic.Problem], rev_cfg
                              ) -> list[dict[str, Any]]:
  """One sweep row per (budget N, sequential length s, selection) with per-question lists.

  `arrays` are the revisions sweep's attempt rows (`problem`, `chain`, `step`, `lengths`,
  `answer`, `has_answer`, `orm`). `correct` is the mean over the disjoint chain groups of
  `sequential.ratio_accuracy`; `generated_tokens` the attempts' tokens, and
  `verifier_tokens` the same tokens again for ORM selection (the ORM reads every attempt)
  and 0 for majority voting. Strategy names: `revisions/seq_length=s,selection=how`.
  """
  from ttc_jax.revisions import sequential  # pylint: disable=g-import-not-at-top
  lengths = rev_cfg.chain_lengths
  num_p = len(problems)
  answers = [int(a) if h else None for a, h in zip(arrays["answer"], arrays["has_answer"])]
  chains = sequential.Chains(problem=arrays["problem"], chain=arrays["chain"],
                             step=arrays["step"], tokens=np.zeros((0, 0)),
                             lengths=arrays["lengths"], texts=[], samples=np.zeros(0),
                             generated_tokens=np.zeros(0))
  a_grid = sequential.as_grid(chains, answers, num_p, lengths)
  s_grid = sequential.as_grid(chains, np.asarray(arrays["orm"]).tolist(), num_p, lengths, 0.0)
  n_grid = sequential.as_grid(chains, np.asarray(arrays["lengths"]).tolist(), num_p, lengths, 0)
  truth = [p.answer for p in problems]
  rows = []
  for n, s in sequential.sweep_ratios(rev_cfg.budgets, rev_cfg.seq_lengths):
    for how in sequential.SELECTIONS:
      acc, _, toks = sequential.ratio_accuracy(a_grid, s_grid, truth, n_grid, lengths, n, s, how)
      toks = np.round(toks, 1)
      rows.append({"cell": {"strategy": f"revisions/seq_length={s},selection={how}",
                            "budget": n},
                   "question": [p.question for p in problems],
                   "level": [p.level for p in problems], "correct": acc.tolist(),
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


def _tables(job, cfg: AllocatorConfig, search_rows: Rows, revision_rows: Rows | None,
            fields: Sequence[str]) -> tuple[list[str], dict[str, Table], list[str]]:
  questions = [p.question for p in _problems(job)]
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
  if cfg.baseline not in tables[fields[0]]:
    raise ValueError(f"allocator.baseline={cfg.baseline!r} has no rows; search strategies: "
                     f"{sorted(tables[fields[0]])}.")
  return questions, tables, skipped


def allocate(job, cfg: AllocatorConfig, search_rows: Rows,
             revision_rows: Rows | None = None) -> dict[str, Any]:
  """Stage "compute-optimal" (paper §3 eq. 1, §5, §6): oracle and predicted bins vs best-of-N.

  Needs `difficulty_bins`' output. Revision rows are used when given (and skipped, listed,
  where they miss a search question). Writes `<workdir>/compute_optimal.json` and the
  summary's `compute_optimal`; returns that dict.
  """
  diff = _stage_output(job, "difficulty.json", "difficulty_bins")
  questions, tables, skipped = _tables(job, cfg, search_rows, revision_rows, ("correct",))
  _check_questions(diff, _problems(job), "difficulty.json")
  result = compute_optimal_summary(
      tables["correct"], np.asarray(diff["oracle_bins"]), np.asarray(diff["predicted_bins"]),
      cfg.baseline, diff["predicted_samples"], cfg.cv_seed, cfg.interpolate)
  result.update(num_questions=len(questions), skipped_rows=skipped,
                difficulty_samples=diff["difficulty_samples"])
  metrics.write_json(os.path.join(job.workdir, "compute_optimal.json"), result)
  metrics.update_summary(job.workdir, compute_optimal=result)
  for name in ("oracle", "predicted"):
    m = result[name]
    job.log("compute-optimal", f"{name} bins: {_ratio_text(m['samples_ratio_vs_bon'])} fewer "
            f"samples than best-of-N at {m['match']['baseline_budget']} "
            f"(target {m['match']['target_accuracy']:.3f})")
  return result


def compute_optimal_summary(results: Table, oracle_bins: np.ndarray, predicted_bins: np.ndarray,
                            baseline: str, predicted_samples: int, seed: int = 0,
                            interpolate: bool = False) -> dict[str, Any]:
  """The JSON-able compute-optimal result for both binnings (paper §5 Fig. 4, §6 Fig. 8).

  Predicted bins count the `predicted_samples` scored per question to bin it in their
  `samples_ratio_vs_bon` (`samples_ratio_vs_bon_uncounted` is the paper's convention, which
  ignores that cost); oracle bins count nothing (they need the ground truth and are an
  upper bound).
  """
  baseline_curve = {n: float(np.mean(c)) for n, c in results[baseline].items()}
  out: dict[str, Any] = {"baseline": baseline, "strategies": sorted(results),
                         "budgets": sorted({n for r in results.values() for n in r}),
                         "baseline_accuracy": _keyed(baseline_curve),
                         # A non-monotone baseline matches itself early: the noise floor.
                         "baseline_self_ratio": _round(co.samples_ratio_vs_bon(
                             baseline_curve, baseline_curve)["ratio"])}
  for name, bins, cost in (("oracle", oracle_bins, 0), ("predicted", predicted_bins,
                                                        predicted_samples)):
    alloc = co.compute_optimal(results, np.asarray(bins, np.int64), baseline, seed)
    curve = co.curves(alloc)
    match = co.samples_ratio_vs_bon(curve["compute_optimal"], baseline_curve, cost, interpolate)
    entry = {
        "samples_ratio_vs_bon": _round(match["ratio"]), "match": _rounded(match),
        "accuracy": _keyed(curve["compute_optimal"]),
        "in_sample_accuracy": _keyed(curve["in_sample"]),
        "per_bin": {str(n): _keyed(a.per_bin) for n, a in alloc.items()},
        "choices": {str(n): {str(b): list(c) for b, c in a.choices.items()}
                    for n, a in alloc.items()},
        "in_sample_choices": {str(n): {str(b): c for b, c in a.in_sample_choices.items()}
                              for n, a in alloc.items()},
        "difficulty_samples_counted": cost}
    if cost:
      uncounted = co.samples_ratio_vs_bon(curve["compute_optimal"], baseline_curve, 0,
                                          interpolate)
      entry["samples_ratio_vs_bon_uncounted"] = _round(uncounted["ratio"])
    out[name] = entry
  return out


def applied_strategy(results: Table, bins: np.ndarray, baseline: str, seed: int = 0
                     ) -> dict[int, list[str]]:
  """Budget -> `[Q]` the strategy the 2-fold compute-optimal policy applies to each question.

  A question in fold f is answered by the choice made on the other fold (`compute_optimal`).
  """
  bins = np.asarray(bins, np.int64)
  fold = co.folds(bins, seed)
  return {n: [a.choices[int(b)][1 - int(f)] for b, f in zip(bins, fold)]
          for n, a in co.compute_optimal(results, bins, baseline, seed).items()}


def flops_exchange(job, cfg: AllocatorConfig, search_rows: Rows,
                   revision_rows: Rows | None = None) -> dict[str, Any]:
  """Stage "FLOPs exchange" (paper §7, Fig. 9): the exchange table and a FLOPs-matched comparison.

  Needs `train_larger_model` and `difficulty_bins`. Writes `<workdir>/flops.json` and the
  summary's `flops`; see `flops_matched` for the matching.
  """
  large = _stage_output(job, "larger_model.json", "train_larger_model")
  diff = _stage_output(job, "difficulty.json", "difficulty_bins")
  fields = ("correct", "generated_tokens", "verifier_tokens")
  questions, tables, skipped = _tables(job, cfg, search_rows, revision_rows, fields)
  for name, out in (("larger_model.json", large), ("difficulty.json", diff)):
    _check_questions(out, _problems(job), name)
  result = flops_matched(
      tables, np.asarray(diff["oracle_bins"]), large, n_small=job.model_cfg.num_params,
      n_verifier=job.model_cfg.num_params, d_pretrain=large["base_pretrain_tokens"],
      r_values=cfg.r_values, baseline=cfg.baseline, seed=cfg.cv_seed)
  result["skipped_rows"] = skipped
  metrics.write_json(os.path.join(job.workdir, "flops.json"), result)
  metrics.update_summary(job.workdir, flops=result)
  for row in result["table"]:
    job.log("flops", f"{row['variant']:>15} R={row['r']:<5g} k={row['multiplier']:.2f} -> "
            f"budget {row['matched_budget']}, acc {row['small_accuracy']} vs larger greedy "
            f"{row['large_greedy']}")
  return result


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
  measured form of the paper's 4·N·D variant. The matched budget is the largest generation
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
  for row in flops.exchange_table(n_small, n_large, d_pretrain, r_values):
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
          "budget": n_star, "small": _keyed(a.per_bin)}
  return {"param_ratio": round(m, 4), "n_small": n_small, "n_large": n_large,
          "n_verifier": n_verifier, "d_pretrain": d_pretrain, "table": table,
          "spend_by_budget": {str(n): {k: _round(v) for k, v in s.items()}
                              for n, s in spend.items()},
          "per_bin": {"large_greedy": per_bin(greedy), "large_pass@1": per_bin(pass1),
                      "small_matched": matched_by_bin},
          "bins": "oracle"}


def figures_and_report(job, cfg: AllocatorConfig, search_rows: Rows,
                       revision_rows: Rows | None = None) -> str:
  """Stage "report" (issue 7): the paper-style figures in `<workdir>/figures/` and `report.md`.

  Needs `difficulty_bins`, `allocate` and `flops_exchange`; adds the revisions figure when
  `<workdir>/revisions.json` exists. Returns the report's path.
  """
  diff = _stage_output(job, "difficulty.json", "difficulty_bins")
  opt = _stage_output(job, "compute_optimal.json", "allocate")
  fl = _stage_output(job, "flops.json", "flops_exchange")
  large = _stage_output(job, "larger_model.json", "train_larger_model")
  questions, tables, _ = _tables(job, cfg, search_rows, revision_rows, ("correct",))
  results = tables["correct"]
  fig = lambda name: os.path.join(job.workdir, "figures", name + ".png")
  sections = [_setup_section(job, cfg, large, diff, len(questions))]

  curves = {s: {n: float(np.mean(c)) for n, c in per.items()} for s, per in results.items()}
  img = figures.accuracy_vs_budget(fig("accuracy_vs_budget"), curves,
                                   "Search strategies vs generation budget")[0]
  budgets = sorted({n for per in results.values() for n in per})
  sections.append({"title": "Accuracy vs generation budget (paper §5.3, Fig. 3)",
                   "table": [{"strategy": s, **{str(n): _round(curves[s].get(n))
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

  base, orc, pred = (_unkey(opt["baseline_accuracy"]), _unkey(opt["oracle"]["accuracy"]),
                     _unkey(opt["predicted"]["accuracy"]))
  img = figures.compute_optimal_vs_bon(fig("compute_optimal_vs_bon"), base, orc, pred)[0]
  sections.append({
      "title": "Compute-optimal vs best-of-N (paper §5, Fig. 4)",
      "text": _headline_text(opt),
      "table": [{"budget": n, "best-of-N weighted": base.get(n), "oracle bins": orc.get(n),
                 "predicted bins": pred.get(n),
                 "choices (oracle, per bin)": "; ".join(
                     f"{b}: {c[0]}" + ("" if c[0] == c[1] else f" / {c[1]}")
                     for b, c in opt["oracle"]["choices"][str(n)].items())}
                for n in sorted(orc)],
      "images": [img]})

  images = []
  for variant, by_r in fl["per_bin"]["small_matched"].items():
    small = {float(r): _unkey(v["small"]) for r, v in by_r.items()}
    suffix = "" if variant == "policy" else "_with_verifier"
    images.append(figures.flops_matched_bars(
        fig("flops_matched" + suffix), _unkey(fl["per_bin"]["large_greedy"]), small,
        title=f"FLOPs-matched vs a {fl['param_ratio']:.1f}x larger model ({variant})")[0])
  sections.append({
      "title": "FLOPs exchange (paper §7, Fig. 9)",
      "text": f"M = {fl['param_ratio']:.2f}x parameters; D_pretrain = {fl['d_pretrain']:,.0f} "
              f"tokens. For each R = D_inference / D_pretrain the small model gets k times the "
              f"larger model's greedy tokens per question; the matched budget is the largest "
              f"generation budget whose compute-optimal policy (oracle bins) spent no more "
              f"inference FLOPs on average, as measured.",
      "table": [{k: row[k] for k in ("variant", "r", "multiplier", "matched_budget",
                                     "spent_generated_tokens", "small_accuracy",
                                     "large_greedy", "large_pass@1")} for row in fl["table"]],
      "images": images})
  sections.append({"title": "FLOPs-matched accuracy per oracle bin",
                   "table": _per_bin_rows(fl)})

  revisions_path = os.path.join(job.workdir, "revisions.json")
  if os.path.exists(revisions_path):
    rev = metrics.read_json(revisions_path)
    sections += [_revisions_section(rev, fig("revision_ratios")), _revision_steps_section(rev)]
  return figures.write_report(job.workdir, sections, "ttc_jax: scaling test-time compute")


def run_all(job, cfg: AllocatorConfig, revision_rows: Rows | None = None) -> dict[str, Any]:
  """Every allocator stage in order, after the search (and revisions) stages."""
  rows = load_search_rows(job)
  train_larger_model(job, cfg)
  difficulty_bins(job, cfg)
  result = allocate(job, cfg, rows, revision_rows)
  flops_exchange(job, cfg, rows, revision_rows)
  figures_and_report(job, cfg, rows, revision_rows)
  return result


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def pretrain_tokens(arrays: Mapping[str, np.ndarray], train_cfg: trainer.TrainConfig) -> int:
  """D_pretrain: tokens the LM trained on (steps x batch x mean non-pad tokens per example)."""
  tokens = np.asarray(arrays["tokens"])
  per_example = float((tokens != tokenizer.PAD).sum() / len(tokens))
  return int(round(train_cfg.total_steps * train_cfg.batch_size * per_example))


def _problems(job) -> list[arithmetic.Problem]:
  return job.test_problems(job.search_cfg.num_questions)


def _check_questions(result: Mapping[str, Any], problems: Sequence[arithmetic.Problem],
                     path: str) -> None:
  if result.get("question") != [p.question for p in problems]:
    raise ValueError(f"{path} was made for other questions than the search stage's current "
                     f"{len(problems)}; delete it to redo its stage.")


def _stage_output(job, name: str, stage: str) -> dict[str, Any]:
  path = os.path.join(job.workdir, name)
  if not os.path.exists(path):
    raise ValueError(f"{path} does not exist; run the allocator stage {stage}(job, cfg) first.")
  return metrics.read_json(path)


def _headline(result: Mapping[str, Any]) -> dict[str, Any]:
  """The scalar entries of a stage result (per-question lists stay in its JSON)."""
  return {k: v for k, v in result.items() if not isinstance(v, list)}


def _finite(x: float) -> float | None:
  return round(float(x), 4) if math.isfinite(x) else None


def _round(x: float | None) -> float | None:
  return None if x is None else round(float(x), 4) if abs(x) < 1e6 else float(f"{x:.6g}")


def _rounded(d: Mapping[str, Any]) -> dict[str, Any]:
  return {k: _round(v) if isinstance(v, float) else v for k, v in d.items()}


def _keyed(curve: Mapping[int, float]) -> dict[str, float]:
  return {str(k): round(float(v), 4) for k, v in sorted(curve.items())}


def _unkey(curve: Mapping[str, float]) -> dict[int, float]:
  return {int(k): float(v) for k, v in curve.items()}


def _ratio_text(ratio: float | None) -> str:
  return "never matches" if ratio is None else f"{ratio:.2f}x"


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
      f"**{_ratio_text(o['samples_ratio_vs_bon'])} fewer samples** (difficulty samples not "
      f"counted: oracle bins need the answers). Best {m['best_accuracy']:.3f} at "
      f"{m['best_budget']}.",
      f"- Predicted bins: matched at budget {p['match']['matched_budget']}, "
      f"**{_ratio_text(p['samples_ratio_vs_bon'])} fewer samples** counting the "
      f"{p['difficulty_samples_counted']} PRM-scored samples per question spent to bin it "
      f"({_ratio_text(p.get('samples_ratio_vs_bon_uncounted'))} without counting them, the "
      f"paper's convention)."]
  return "\n".join(lines)


def _setup_section(job, cfg: AllocatorConfig, large: Mapping[str, Any],
                   diff: Mapping[str, Any], num_questions: int) -> dict[str, Any]:
  return {"title": "Setup",
          "text": f"{num_questions} test questions (the search stage's). Base LM "
                  f"{job.model_cfg.num_params:,} parameters; larger LM {large['num_params']:,} "
                  f"({large['param_ratio']:.2f}x, {large['model']}), trained on the same data "
                  f"for {cfg.large_train.total_steps} steps.",
          "table": [{"model": "base", "params": job.model_cfg.num_params,
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
