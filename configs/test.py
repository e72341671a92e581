"""The demo job shrunk to seconds, for tests: `ttc-jax --config=configs/test.py`."""

import os
import runpy

import ml_collections

# Loaded by path: config files are not a package (absl's config_flags loads them by path too).
demo_config = runpy.run_path(os.path.join(os.path.dirname(__file__), "demo.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.workdir = "workdir/test"
  c.task.levels = ((2, 1, "+-"), (3, 2, "+-"))
  c.task.num_per_level = ml_collections.ConfigDict(dict(train=200, validation=8, test=8))
  c.model = ml_collections.ConfigDict(dict(
      d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64,
      max_len=48))
  c.train.update(total_steps=200, batch_size=16, warmup_steps=5, checkpoint_every=100,
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
  c.revisions.update(num_questions=8, samples_per_question=8, max_chains_per_question=4,
                     data_shard_size=4, context_len=256, max_attempt_tokens=36, budgets=(4, 8),
                     seq_lengths=(1, 2, 4, 8), test_per_level=3, sweep_shard_size=2,
                     batch_rows=64)
  c.revisions.train.update(total_steps=6, batch_size=8, warmup_steps=1, checkpoint_every=3,
                           log_every=3)
  c.allocator.update(large_d_model=48, large_num_layers=2, large_num_heads=4,
                     large_num_kv_heads=2, large_head_dim=12, large_mlp_dim=128,
                     large_samples=2, difficulty_samples=8, predicted_samples=4, num_bins=2,
                     batch_prompts=8)
  c.allocator.large_train.update(total_steps=10, batch_size=16, learning_rate=3e-3,
                                 warmup_steps=2, checkpoint_every=10, log_every=10)
  return c
