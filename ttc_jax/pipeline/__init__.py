"""The main job: one module per stage under `stages/`, run in order by `run` (docs/design.md).

  data -> base LM -> eval -> PRM labels -> verifiers (PRM, ORM, evaluation) -> search ->
  revisions -> larger model -> allocator (difficulty, compute-optimal, FLOPs) -> report

Every stage is skipped, or resumes, when its output is (partly) on disk; all write to
one workdir and its `summary.json`.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections

from ttc_jax.io import metrics
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import state
from ttc_jax.pipeline.stages import allocator
from ttc_jax.pipeline.stages import base_lm
from ttc_jax.pipeline.stages import data as data_stage
from ttc_jax.pipeline.stages import evaluation
from ttc_jax.pipeline.stages import larger_model
from ttc_jax.pipeline.stages import prm_labels
from ttc_jax.pipeline.stages import report
from ttc_jax.pipeline.stages import revisions
from ttc_jax.pipeline.stages import search
from ttc_jax.pipeline.stages import verifiers as verifiers_stage


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the job described by `config` (see configs/demo.py); returns `summary.json`."""
  r = state.Run.create(config)
  if jax.process_index() == 0:
    with open(r.path(artifacts.CONFIG), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  data = data_stage.run(r)
  lm = base_lm.run(r, data)
  evaluation.run(r, data, lm)
  labels = prm_labels.run(r, data, lm)
  verifiers, _ = verifiers_stage.run(r, data, lm, labels)
  search.run(r, data, lm, verifiers)
  revisions.run(r, data, lm, verifiers)
  larger = larger_model.run(r, data)
  allocator.run(r, data, lm, verifiers, larger)
  report.run(r, data)
  return metrics.update_summary(r.workdir, wall_s=round(time.time() - r.start, 1))
