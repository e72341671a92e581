"""Pieces more than one stage uses (stages never import each other)."""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from ttc_jax.allocator import tables
from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import shards
from ttc_jax.io import sweep
from ttc_jax.models import convert
from ttc_jax.models import reward
from ttc_jax.models import transformer
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import state
from ttc_jax.revisions import sequential
from ttc_jax.sampling import solutions
from ttc_jax.search import base as search_base
from ttc_jax.tasks import base as tasks
from ttc_jax.tokenizers import base as tokenizers
from ttc_jax.training import batches
from ttc_jax.training import prm_labels
from ttc_jax.training import trainer


def train_lm(r: state.Run, data: state.Data, cfg: transformer.TransformerConfig,
             train_cfg: trainer.TrainConfig, name: str, seed: int) -> state.LM:
  """An LM of `cfg` trained on the train split as checkpoint `name` (restored when finished)."""
  graphdef, params = transformer.create(cfg, seed)
  params = mesh_lib.shard_params(params, r.mesh)
  apply_fn = lambda params, tokens: transformer.apply(graphdef, params, tokens)[0]
  params = trainer.train(params, trainer.lm_loss(apply_fn),
                         batches.epoch_batches(data.train_arrays, train_cfg.batch_size, r.seed),
                         train_cfg, r.workdir, name=name, mesh=r.mesh)
  return state.LM(graphdef=graphdef, params=params, cfg=cfg, sampler=r.sampler(graphdef, cfg))


def load_lm(r: state.Run, path: str, cfg: transformer.TransformerConfig, what: str) -> state.LM:
  """A pretrained LM of `cfg` from the `save_pretrained` directory `path`, placed on the mesh
  tensor by tensor (`models.convert.load_hf`)."""
  loaded, graphdef, params = convert.load_hf(path, max_len=cfg.max_len, dtype=cfg.dtype,
                                             param_dtype=cfg.param_dtype, mesh=r.mesh)
  if loaded != cfg:
    raise ValueError(f"{path} holds a model other than the one the run was planned with "
                     f"({loaded} vs {cfg}); its config.json changed: start a new workdir.")
  r.log(what, f"loaded {cfg.num_params:,} parameters ({cfg.param_dtype}) from {path}")
  return state.LM(graphdef=graphdef, params=params, cfg=cfg, sampler=r.sampler(graphdef, cfg))


def search_examples(r: state.Run, data: state.Data) -> list[tasks.Example]:
  """The search stage's test questions (the allocator and report work on the same ones)."""
  return tasks.spread_over_levels(data.test, r.settings.search.num_questions)


def revision_examples(r: state.Run, data: state.Data) -> list[tasks.Example]:
  """The revisions sweep's test questions: the first `test_per_level` of every level."""
  return tasks.first_per_level(data.test, r.settings.revisions.test_per_level)


def generate_labels(r: state.Run, lm: state.LM, examples: list[tasks.Example], name: str,
             seed: int) -> state.Labels:
  """Labels for `examples` in `<workdir>/<name>/` (resumable shards); returns them loaded."""
  cfg = r.settings.prm_labels
  out = r.path(name)
  stats = prm_labels.generate_labels(
      lm.sampler, lm.params, examples, r.task, r.tokenizer, out,
      num_solutions=cfg.num_solutions, num_rollouts=cfg.num_rollouts,
      shard_size=cfg.shard_size, max_len=lm.cfg.max_len, seed=seed,
      prefixes_per_batch=cfg.prefixes_per_batch, mesh=r.mesh)
  r.log("prm labels", f"{name}: {stats['num_solutions']} solutions, {stats['num_steps']} steps, "
        f"{stats['fraction_correct']:.3f} correct, mean label {stats['mean_label']:.3f}")
  return state.Labels(arrays=prm_labels.load_labels(out), examples=examples)


def revision_grids(r: state.Run, data: state.Data) -> sequential.Grids:
  """The revisions sweep's attempts (its chain shards) on its questions, as grids."""
  _, parts = shards.load(r.path(artifacts.REVISION_CHAINS), "revisions sweep chains",
                         "the revisions stage")
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return sequential.attempt_grids(arrays, r.settings.revisions.chain_lengths,
                                  revision_examples(r, data), r.task, r.tokenizer)


def check_questions(result: Mapping[str, Any], examples: Sequence[tasks.Example],
                    path: str) -> None:
  """Raises ValueError unless a stage output `result` was made for these questions."""
  if result.get("question") != [e.question for e in examples]:
    raise ValueError(f"{path} was made for other questions than the search stage's current "
                     f"{len(examples)}; delete it to redo its stage.")


def headline(result: Mapping[str, Any]) -> dict[str, Any]:
  """The scalar entries of a stage result (per-question lists stay in its JSON)."""
  return {k: v for k, v in result.items() if not isinstance(v, list)}


def search_setup(r: state.Run, examples: Sequence[tasks.Example]) -> str:
  """What a search row's results depend on besides its cell: questions, settings and seed."""
  # The grid only adds rows, and compaction changes where rows run, not what they draw.
  settings = {k: v for k, v in dataclasses.asdict(r.settings.search).items()
              if k not in ("budgets", "strategies", "compact_rows")}
  return tasks.fingerprint(examples)[:12] + "-" + str(zlib.crc32(
      json.dumps([settings, r.seed], sort_keys=True).encode()))


def search_rows(r: state.Run, examples: Sequence[tasks.Example]) -> list[dict[str, Any]]:
  """Every row of `search.jsonl` made with the current questions, settings and seed.

  Cells of earlier runs' grids count too (a strategy or budget added to the grid only
  adds rows); rows of other settings are left out. Rows come in file order.
  """
  path = r.path(artifacts.SEARCH)
  if not host.agree(paths.exists(path)):
    raise ValueError(f"{path} does not exist; run the 'search' stage first "
                     "(ttc_jax.pipeline.stages.search).")
  setup = search_setup(r, examples)
  rows = [row for row in sweep.load_rows(path).values() if row["cell"].get("setup") == setup]
  if not rows:
    raise ValueError(f"{path} holds no row for the current search questions and settings; run "
                     "the 'search' stage first (ttc_jax.pipeline.stages.search).")
  return rows


def strategy_tables(r: state.Run, data: state.Data, fields: Sequence[str]
                    ) -> tuple[list[str], dict[str, tables.Table], list[str]]:
  """`(questions, tables, skipped)`: search and revision rows per field on the search questions."""
  examples = search_examples(r, data)
  questions = [e.question for e in examples]
  revision_rows = None
  if host.agree(paths.exists(r.path(artifacts.REVISIONS))):
    cfg = r.settings.revisions
    revision_rows = tables.revision_rows(revision_grids(r, data), revision_examples(r, data),
                                         r.task, cfg.budgets, cfg.seq_lengths, cfg.chain_lengths)
  merged, skipped = tables.merged(questions, search_rows(r, examples), revision_rows, fields,
                                  r.settings.allocator.baseline)
  return questions, merged, skipped


def score_solutions(r: state.Run, verifier: search_base.Verifier, sols: solutions.Solutions,
                    max_len: int, aggregation: str = "last"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(step_scores [B, max_len], num_steps [B], final [B])` of sampled solutions under
  `verifier` (a PRM, or the ORM as `Verifier(*orm)`), in the verifier's own input format.

  One fixed step width (a step has >= 1 token) keeps the scorer's compiled shape constant.
  """
  ends = tokenizers.find_step_ends(sols.rows, r.tokenizer, r.task.step_delimiter,
                                   sols.prompt_len, max_steps=max_len)
  num_steps = (ends >= 0).sum(1)
  rows, v_ends, _ = verifier.score_rows(sols.rows, ends, np.asarray(sols.prompt_len),
                                        np.asarray(sols.lengths))
  steps = np.asarray(verifier.step_scores(rows, v_ends))
  return steps, num_steps, np.asarray(reward.aggregate(steps, num_steps, aggregation))
