"""Stage "PRM labels": Monte-Carlo rollout soft labels on training questions (paper §5.1)."""

from __future__ import annotations

from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import state
from ttc_jax.tasks import base as tasks


def run(r: state.Run, data: state.Data, lm: state.LM) -> state.Labels:
  """Labels for the first `prm.labels.num_questions` training questions, spread over levels."""
  examples = tasks.spread_over_levels(data.train, r.settings.prm_labels.num_questions)
  return common.generate_labels(r, lm, examples, artifacts.PRM_LABELS, r.seed)
