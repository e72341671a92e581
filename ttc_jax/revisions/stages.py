"""The main job's revision stages (paper §6): revision data, revision model, revisions sweep.

Each stage takes the pipeline `Job` after its data, base LM and ORM stages have
run (it reads `job.params`, `job.sampler`, `job.orm`, `job.train_problems`,
`job.test_split`, ...) and a `RevisionConfig`, and is skipped when its output
is complete:

  cfg, train_cfg = stages.from_config(config.revisions)   # validated before any compute
  stages.revision_data(job, cfg)                  # <workdir>/revision_data/ shards
  stages.train_revision_model(job, cfg, train_cfg)  # <workdir>/checkpoints/revision
  stages.revisions_sweep(job, cfg)                # <workdir>/revisions/ shards, results

The sweep writes `revisions_sweep.jsonl` (one row per budget, sequential length,
selection and level), `revisions.json` and the `revisions` key of `summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from ttc_jax.data import arithmetic
from ttc_jax.experiments import metrics
from ttc_jax.experiments import shards
from ttc_jax.models import transformer
from ttc_jax.revisions import sequential
from ttc_jax.revisions import trajectories
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.training import prm_labels
from ttc_jax.training import trainer

SWEEP_FORMAT_VERSION = 1
GAIN_STEPS = 4  # pass@1 gains vs step 0 are reported for revision steps 1..GAIN_STEPS


@dataclasses.dataclass(frozen=True)
class RevisionConfig:
  """Every setting of the revision stages (paper §6.1 values in brackets).

  Attributes:
    num_questions: training questions for revision data, spread over the levels.
    samples_per_question: base-LM samples per training question [64].
    max_previous: most previous attempts in a context [4].
    max_chains_per_question: correct samples turned into chains per question (0: all).
    data_shard_size: training questions per data shard.
    context_len: the revision model's window (its TransformerConfig.max_len; RoPE
      lets it exceed the base LM's with the same parameters).
    max_attempt_tokens: most tokens of one attempt, EOS included.
    budgets: generations per test question [up to 256].
    seq_lengths: sequential attempts per chain s; budget N runs as N/s parallel
      chains for every s <= N (1 is all parallel, N all sequential).
    test_per_level: test questions per difficulty level in the sweep.
    sweep_shard_size: test questions per sweep shard (the unit of resumption).
    batch_rows: contexts per sampler call (a power of two).
    temperature: sampling temperature of every attempt.
  """

  num_questions: int = 200
  samples_per_question: int = 64
  max_previous: int = trajectories.MAX_PREVIOUS
  max_chains_per_question: int = 0
  data_shard_size: int = 25
  context_len: int = 320
  max_attempt_tokens: int = 56
  budgets: tuple[int, ...] = (16, 64)
  seq_lengths: tuple[int, ...] = (1, 4, 16, 64)
  test_per_level: int = 20
  sweep_shard_size: int = 50
  batch_rows: int = 512
  temperature: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
    object.__setattr__(self, "seq_lengths", tuple(int(s) for s in self.seq_lengths))
    checks = (
        ("num_questions", self.num_questions >= 1, ">= 1"),
        ("samples_per_question", self.samples_per_question >= 1, ">= 1 (64 in the paper)"),
        ("max_previous", self.max_previous >= 0, ">= 0 (4 in the paper)"),
        ("max_chains_per_question", self.max_chains_per_question >= 0, ">= 0 (0: all)"),
        ("data_shard_size", self.data_shard_size >= 1, ">= 1"),
        ("max_attempt_tokens", self.max_attempt_tokens >= 2, ">= 2"),
        ("context_len", self.context_len > self.max_attempt_tokens,
         f"> max_attempt_tokens={self.max_attempt_tokens}"),
        ("test_per_level", self.test_per_level >= 1, ">= 1"),
        ("sweep_shard_size", self.sweep_shard_size >= 1, ">= 1"),
        ("batch_rows", self.batch_rows >= 1 and not self.batch_rows & (self.batch_rows - 1),
         "a power of two"),
        ("temperature", self.temperature >= 0, ">= 0"),
    )
    for field, ok, want in checks:
      if not ok:
        raise ValueError(f"revisions.{field}={getattr(self, field)!r} is invalid; it must be "
                         f"{want}.")
    try:
      sequential.sweep_ratios(self.budgets, self.seq_lengths)
    except ValueError as e:
      raise ValueError(f"revisions.budgets={self.budgets} / seq_lengths={self.seq_lengths}: "
                       f"{e}") from None
    # Every attempt is conditioned on at most max_previous earlier ones, so the longest
    # context needs room for them; the question's own length is checked per stage.
    need = trajectories.worst_case_context(1, self.max_attempt_tokens, self.max_previous)
    if need > self.context_len:
      raise ValueError(
          f"revisions.context_len={self.context_len} is shorter than {self.max_previous} "
          f"previous attempts + the new one of max_attempt_tokens={self.max_attempt_tokens} "
          f"({need} tokens before the question); raise context_len or lower "
          f"max_attempt_tokens / max_previous.")

  @property
  def chain_lengths(self) -> tuple[int, ...]:
    return sequential.chain_plan(self.budgets, self.seq_lengths)


def from_config(section: ml_collections.ConfigDict | dict
                ) -> tuple[RevisionConfig, trainer.TrainConfig]:
  """`(RevisionConfig, TrainConfig)` from `config.revisions` (its `train` key is the SFT run)."""
  values = dict(section)
  if "train" not in values:
    raise ValueError("config.revisions is missing its 'train' section (the revision model's "
                     "fine-tuning TrainConfig).")
  train_cfg = trainer.TrainConfig.from_config(values.pop("train"), "revisions.train")
  valid = sorted(f.name for f in dataclasses.fields(RevisionConfig))
  unknown = sorted(set(values) - set(valid))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.revisions; valid keys: "
                     f"{valid + ['train']}.")
  return RevisionConfig(**values), train_cfg


# ---------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------


def _seconds(job, stage: str, t0: float) -> None:
  secs = getattr(job, "revision_seconds", {})
  secs[stage] = round(time.time() - t0, 1)
  job.revision_seconds = secs


def revision_data(job, cfg: RevisionConfig) -> dict[str, Any]:
  """Stage "revision data": base-LM samples paired into training chains (paper §6.1)."""
  t0 = time.time()
  out = os.path.join(job.workdir, "revision_data")
  problems = job.train_problems(cfg.num_questions)
  if trajectories.trajectories_complete(out):
    job.log("revision data", "already complete; skipped")
  stats = trajectories.generate_trajectories(
      job.sampler, job.params, problems, job.tokenizer, out,
      samples_per_question=cfg.samples_per_question, max_attempt_tokens=cfg.max_attempt_tokens,
      context_len=cfg.context_len, max_previous=cfg.max_previous,
      max_chains_per_question=cfg.max_chains_per_question, shard_size=cfg.data_shard_size,
      seed=job.config.seed, mesh=job.mesh)
  job.revision_data = trajectories.load_trajectories(out)
  job.log("revision data", f"{stats['num_chains']} chains from {stats['num_samples']} samples "
          f"({stats['fraction_correct']:.3f} correct); previous attempts per chain "
          f"{stats['previous_histogram']}")
  _seconds(job, "revision_data", t0)
  return stats


def revision_model_config(job, cfg: RevisionConfig) -> transformer.TransformerConfig:
  """The base LM's architecture with the revision window (max_len sizes only caches)."""
  return dataclasses.replace(job.model_cfg, max_len=cfg.context_len)


def train_revision_model(job, cfg: RevisionConfig, train_cfg: trainer.TrainConfig) -> None:
  """Stage "train revision model": SFT from the base LM, loss on the final attempt (paper §6.1)."""
  t0 = time.time()
  model_cfg = revision_model_config(job, cfg)
  graphdef, _ = transformer.create(model_cfg, job.config.seed)
  if not hasattr(job, "revision_data"):
    job.revision_data = trajectories.load_trajectories(os.path.join(job.workdir,
                                                                    "revision_data"))
  if not len(job.revision_data["length"]):
    # Only tiny configs get here (configs/test.py's base LM solves nothing); say so loudly.
    job.log("revision model", "WARNING: the revision data holds no chain (the base LM solved "
            "no training question), so the revision model is the base LM, not fine-tuned")
    params = job.params
  else:
    arrays = trajectories.training_arrays(job.revision_data)
    apply_fn = lambda params, tokens: transformer.apply(graphdef, params, tokens)[0]
    params = trainer.train(job.params, trainer.lm_loss(apply_fn),
                           trajectories.bucketed_batches(arrays, train_cfg.batch_size,
                                                         job.config.seed),
                           train_cfg, job.workdir, name="revision", mesh=job.mesh)
    job.log("revision model", f"{len(arrays['tokens'])} chains of <= "
            f"{arrays['tokens'].shape[1]} tokens; {train_cfg.total_steps} steps")
  job.revision = (graphdef, params, Sampler.for_transformer(graphdef, model_cfg, job.tokenizer))
  _seconds(job, "train_revision_model", t0)


def test_problems(job, per_level: int) -> list[arithmetic.Problem]:
  """The first `per_level` test questions of every level."""
  levels = np.asarray(job.test_split["level"])
  idx = [i for lv in np.unique(levels) for i in np.flatnonzero(levels == lv)[:per_level]]
  return [arithmetic.Problem.from_question(str(job.test_split["question"][i]), int(levels[i]))
          for i in idx]


def revisions_sweep(job, cfg: RevisionConfig) -> dict[str, Any]:
  """Stage "revisions sweep": chains on test questions, per-step accuracy and the ratio table."""
  t0 = time.time()
  path = os.path.join(job.workdir, "revisions.json")
  stored = metrics.read_json(path) if os.path.exists(path) else None
  if stored is not None and "pass@1_gain_vs_step0" in stored:
    result = stored
    job.log("revisions sweep", "already complete; skipped")
  else:
    if stored is not None:  # written before the gain / baseline diagnostics: re-summarize
      job.log("revisions sweep", "revisions.json lacks the per-step gains; summarizing its "
              "chains again (no chain is regenerated)")
    problems = test_problems(job, cfg.test_per_level)
    trajectories.check_window(problems, context_len=cfg.context_len,
                              max_attempt_tokens=cfg.max_attempt_tokens,
                              num_previous=min(cfg.max_previous, max(cfg.chain_lengths) - 1))
    arrays = _sweep_shards(job, cfg, problems)
    result = summarize(arrays, problems, cfg)
    data = getattr(job, "revision_data", None)
    result["num_training_chains"] = None if data is None else int(len(data["length"]))
    result["seconds"] = dict(getattr(job, "revision_seconds", {}))
    result["seconds"]["revisions_sweep"] = round(time.time() - t0, 1)
    if stored is not None:
      result["seconds"] = stored.get("seconds", result["seconds"])
    rows = sweep_rows(result)
    jsonl = os.path.join(job.workdir, "revisions_sweep.jsonl")
    if jax.process_index() == 0:
      with open(jsonl + ".tmp", "w") as f:  # whole file at once: a rerun never duplicates rows
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
      os.replace(jsonl + ".tmp", jsonl)
    metrics.write_json(path, result)
    metrics.append_jsonl(job.metrics_path, {"stage": "revisions_sweep", **result})
  metrics.update_summary(job.workdir, revisions=result)
  print(format_result(result), flush=True)
  return result


def _sweep_shards(job, cfg: RevisionConfig, problems: list[arithmetic.Problem]
                  ) -> dict[str, np.ndarray]:
  """Generates (or reuses) the chain shards of `problems`; returns them concatenated."""
  out = os.path.join(job.workdir, "revisions")
  os.makedirs(out, exist_ok=True)
  lengths = cfg.chain_lengths
  n = cfg.sweep_shard_size
  manifest = {"format_version": SWEEP_FORMAT_VERSION, "num_questions": len(problems),
              "num_shards": -(-len(problems) // n), "shard_size": n,
              "chain_lengths": list(lengths), "max_attempt_tokens": cfg.max_attempt_tokens,
              "max_previous": cfg.max_previous, "context_len": cfg.context_len,
              "temperature": cfg.temperature, "batch_rows": cfg.batch_rows,
              "seed": job.config.seed,
              "questions_sha256": prm_labels.questions_fingerprint(problems)}
  shards.open_manifest(out, manifest, "revisions sweep")
  graphdef, params, sampler = job.revision
  orm_g, orm_s = job.orm
  todo = [i for i in range(manifest["num_shards"])
          if not os.path.exists(shards.shard_path(out, i))]
  for i in tqdm.tqdm(todo, desc="revisions sweep", unit="shard"):
    chunk = problems[i * n:(i + 1) * n]
    prompts = [p.prompt for p in chunk]
    chains = sequential.generate_chains(
        sampler, params, job.tokenizer, prompts, lengths,
        jax.random.fold_in(jax.random.key(job.config.seed + 7), i),
        max_attempt_tokens=cfg.max_attempt_tokens, max_previous=cfg.max_previous,
        temperature=cfg.temperature, batch_rows=cfg.batch_rows, mesh=job.mesh)
    answers = [arithmetic.extract_answer(t) for t in chains.texts]
    scores = sequential.orm_scores(orm_g, orm_s, job.tokenizer, prompts, chains.problem,
                                   chains.tokens, chains.lengths, cfg.batch_rows)
    arrays = {"problem": (chains.problem + i * n).astype(np.int32),
              "chain": chains.chain.astype(np.int32), "step": chains.step.astype(np.int32),
              "tokens": chains.tokens, "lengths": chains.lengths.astype(np.int32),
              # As text: a sampled answer can overflow int64 ("A:99999999999999999999").
              "answer": np.asarray(["" if a is None else str(a) for a in answers]),
              "has_answer": np.asarray([a is not None for a in answers]),
              "orm": scores.astype(np.float32)}
    if jax.process_index() == 0:
      shards.save_npz(shards.shard_path(out, i), arrays)
  return load_sweep_chains(job.workdir)


def load_sweep_chains(workdir: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every attempt of the revisions sweep (`<workdir>/revisions/` shards), concatenated."""
  _, parts = shards.load(os.path.join(workdir, "revisions"), "revisions sweep chains",
                         "the revisions sweep stage")
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def summarize(arrays: dict[str, np.ndarray], problems: list[arithmetic.Problem],
              cfg: RevisionConfig) -> dict[str, Any]:
  """Per-step pass@1, correctness flips and accuracy vs sequential:parallel per level."""
  lengths = cfg.chain_lengths
  num_p = len(problems)
  answers = [int(a) if h else None for a, h in zip(arrays["answer"].tolist(),
                                                   arrays["has_answer"])]
  chains = sequential.Chains(problem=arrays["problem"], chain=arrays["chain"],
                             step=arrays["step"], tokens=arrays["tokens"],
                             lengths=arrays["lengths"], texts=[], samples=np.zeros(0),
                             generated_tokens=np.zeros(0))
  truth = [p.answer for p in problems]
  levels = np.asarray([p.level for p in problems])
  a_grid = sequential.as_grid(chains, answers, num_p, lengths)
  s_grid = sequential.as_grid(chains, arrays["orm"].tolist(), num_p, lengths, 0.0)
  n_grid = sequential.as_grid(chains, arrays["lengths"].tolist(), num_p, lengths, 0)
  ok_grid = [[[a == truth[q] for a in chain] for chain in a_grid[q]] for q in range(num_p)]
  by_level = lambda x: {"all": round(float(np.mean(x)), 4), **{
      str(int(lv)): round(float(np.mean(np.asarray(x)[levels == lv])), 4)
      for lv in np.unique(levels)}}

  attempt_grid = sequential.as_grid(chains, [t[:n].tobytes() for t, n in
                                             zip(arrays["tokens"], arrays["lengths"])],
                                    num_p, lengths)
  gain_steps = range(1, min(GAIN_STEPS, max(lengths) - 1) + 1)
  per_step = {"all": [round(v, 4) for v in sequential.step_accuracy(ok_grid)]}
  gains = {"all": sequential.step_gains(ok_grid, gain_steps)}
  flips_by_level = {}
  for lv in np.unique(levels):
    grid = [ok_grid[q] for q in np.flatnonzero(levels == lv)]
    per_step[str(int(lv))] = [round(v, 4) for v in sequential.step_accuracy(grid)]
    gains[str(int(lv))] = sequential.step_gains(grid, gain_steps)
    flips_by_level[str(int(lv))] = {**sequential.flip_rates(grid),
                                    "independent": sequential.independent_flip_rates(grid)}
  sweep: dict[str, Any] = {}
  counts: dict[str, Any] = {}
  for n, s in sequential.sweep_ratios(cfg.budgets, cfg.seq_lengths):
    for how in sequential.SELECTIONS:
      acc, samples, toks = sequential.ratio_accuracy(a_grid, s_grid, truth, n_grid, lengths,
                                                     n, s, how)
      sweep.setdefault(str(n), {}).setdefault(str(s), {})[how] = by_level(acc)
    counts.setdefault(str(n), {})[str(s)] = {
        "samples_per_problem": sorted(set(samples.tolist())),
        "mean_generated_tokens": round(float(toks.mean()), 1),
        "groups": len(sequential.ratio_groups(lengths, n, s))}
  return {"pass@1_by_step": per_step, "pass@1_gain_vs_step0": gains,
          **sequential.flip_rates(ok_grid),
          "independent_baseline": sequential.independent_flip_rates(ok_grid),
          "repeats_previous": sequential.repeat_rates(attempt_grid, ok_grid),
          "flips_by_level": flips_by_level, "sweep": sweep,
          "counts": counts, "num_questions": num_p, "chain_lengths": list(lengths),
          "attempts_per_question": int(sum(lengths))}


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
