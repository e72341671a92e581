"""The paper's settings (Snell et al. 2024), for accelerators.

    ttc-jax --config=configs/paper.py --config.workdir=gs://bucket/ttc

Every count the paper states is used as stated: PRM labels from 16 solutions x 16
Monte-Carlo rollouts per step (§5.1), generation budgets 1 ... 256 (§5.3), beam width
sqrt(N) and 4, lookahead k in {1, 3} (§5.2), 64 samples per question for revision data
and up to 4 previous attempts (§6.1), 2048 samples per question for oracle difficulty,
5 bins, 2-fold cross-validation (§3.2), a ~14x larger model and R in {0.16, 0.79, 22}
(§7). Models are sized for a TPU slice (the base LM 31.5M parameters, the larger one
13.5x that); the task is the embedded chain arithmetic at harder levels, since MATH and
PaLM 2 are not shipped here. The mesh uses every device for data parallelism.
"""

import os
import runpy

import ml_collections

# Loaded by path: config files are not a package (absl's config_flags loads them by path too).
demo_config = runpy.run_path(os.path.join(os.path.dirname(__file__), "demo.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.workdir = "workdir/paper"
  c.task.levels = ((4, 1, "+-"), (6, 1, "+-"), (4, 2, "+-"), (6, 2, "+-"), (8, 2, "+-"),
                   (6, 3, "+-"))
  c.task.num_per_level = ml_collections.ConfigDict(dict(train=100_000, validation=500,
                                                        test=500))

  c.model = ml_collections.ConfigDict(dict(
      d_model=512, num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64, mlp_dim=2048,
      max_len=160))
  c.train = ml_collections.ConfigDict(dict(
      total_steps=20_000, batch_size=256, learning_rate=1e-3, warmup_steps=1000,
      checkpoint_every=2000, keep_checkpoints=3, log_every=100))
  c.eval.update(num_samples=64, batch_prompts=64)

  c.prm.labels.update(num_questions=12_000, num_solutions=16, num_rollouts=16, shard_size=200,
                      prefixes_per_batch=1024)
  c.prm.train.update(total_steps=5000, batch_size=256, learning_rate=3e-4, warmup_steps=200,
                     checkpoint_every=1000)
  c.orm.train.update(total_steps=3000, batch_size=256, learning_rate=3e-4, warmup_steps=200,
                     checkpoint_every=1000)
  c.verifier_eval.update(max_n=256, budgets=(4, 16, 64, 256), batch_prompts=32,
                         mc_label_questions=500)

  c.search.update(
      num_questions=500, budgets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
      strategies=("best_of_n", "beam/beam_width=4", "beam/beam_width=sqrt",
                  "lookahead/lookahead=1", "lookahead/lookahead=3", "dvts/beam_width=4"),
      rows_per_batch=8192, max_step_tokens=32, max_rounds=40, compact_rows=True)

  c.revisions.update(
      num_questions=12_000, samples_per_question=64, max_chains_per_question=0,
      data_shard_size=200, context_len=1024, max_attempt_tokens=160,
      budgets=(16, 64, 128, 256), seq_lengths=(1, 2, 4, 8, 16, 32, 64, 128, 256),
      test_per_level=100, sweep_shard_size=100, batch_rows=8192)
  c.revisions.train.update(total_steps=5000, batch_size=128, learning_rate=3e-4,
                           warmup_steps=200, checkpoint_every=1000)

  # ~14x the base LM's parameters (paper §7).
  c.allocator.update(
      large_d_model=1536, large_num_layers=12, large_num_heads=16, large_num_kv_heads=8,
      large_head_dim=96, large_mlp_dim=6144, min_param_ratio=12.0, large_samples=64,
      difficulty_samples=2048, predicted_samples=2048, num_bins=5, batch_prompts=64)
  c.allocator.large_train.update(total_steps=20_000, batch_size=256, learning_rate=5e-4,
                                 warmup_steps=1000, checkpoint_every=2000)
  return c
