"""The demo job shrunk to seconds, for tests: `ttc-jax --config=configs/test.py`."""

import importlib.util
import os

import ml_collections

_spec = importlib.util.spec_from_file_location(
    "ttc_demo_config", os.path.join(os.path.dirname(__file__), "demo.py"))
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def get_config() -> ml_collections.ConfigDict:
  c = demo.get_config()
  c.workdir = "workdir/test"
  c.task.levels = ((2, 1, "+-"), (3, 2, "+-"))
  c.task.num_per_level = ml_collections.ConfigDict(dict(train=200, validation=8, test=8))
  c.model = ml_collections.ConfigDict(dict(
      d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64,
      max_len=48))
  c.train.update(total_steps=30, batch_size=16, warmup_steps=5, checkpoint_every=10,
                 log_every=10)
  c.eval.update(num_samples=4, batch_prompts=8)
  c.prm.labels.update(num_questions=8, num_solutions=4, num_rollouts=4, shard_size=4,
                      prefixes_per_batch=16)
  c.prm.train.update(total_steps=10, batch_size=8, warmup_steps=2, checkpoint_every=5,
                     log_every=5)
  c.orm.train.update(total_steps=10, batch_size=8, warmup_steps=2, checkpoint_every=5,
                     log_every=5)
  c.verifier_eval.update(max_n=8, budgets=(2, 8), batch_prompts=8, mc_label_questions=4)
  c.search.update(num_questions=6, budgets=(1, 4, 8),
                  strategies=("best_of_n", "beam/beam_width=2", "lookahead/lookahead=1,beam_width=2",
                              "dvts/beam_width=2"), rows_per_batch=16)
  return c
