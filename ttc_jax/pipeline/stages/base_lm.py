"""Stage "base LM": the policy, trained from scratch on the train split (resumable, orbax), or
loaded from `policy.checkpoint` (docs/design.md, "Checkpoints")."""

from __future__ import annotations

from ttc_jax.pipeline import common
from ttc_jax.pipeline import state


def run(r: state.Run, data: state.Data) -> state.LM:
  if r.settings.policy.checkpoint:
    return common.load_lm(r, r.settings.policy.checkpoint, r.model_cfg, "base LM")
  return common.train_lm(r, data, r.model_cfg, r.settings.train, "base_lm", r.seed)
