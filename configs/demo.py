"""Demo: the whole pipeline on the chain-arithmetic task in minutes on a 2-core CPU.

    ttc-jax --config=configs/demo.py [--config.workdir=/tmp/demo]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.workdir = "workdir/demo"
  c.seed = 0

  c.task = ml_collections.ConfigDict()
  c.task.name = "chain_arithmetic"
  # Difficulty levels (num_terms, digits, ops): tuned so the base model's pass@1
  # runs from mostly solved (level 1) to mostly unsolved (level 5).
  c.task.levels = ((3, 1, "+-"), (4, 1, "+-"), (6, 1, "+-"), (3, 2, "+-"), (5, 2, "+-"))
  c.task.num_per_level = ml_collections.ConfigDict(
      dict(train=6000, validation=50, test=100))
  c.task.seed = 0
  c.task.module = ""  # a module to import first that registers a task defined elsewhere
  c.task.data_dir = ""  # its prepared (TFDS) data, local or gs://; "" = <workdir>/data
  # The character tokenizer over the task's alphabet (one id per character).
  c.tokenizer = ml_collections.ConfigDict(dict(name="char"))

  # A pretrained policy instead of one trained here (docs/design.md, "Checkpoints"):
  # a save_pretrained directory; its config.json then fixes the architecture below.
  c.policy = ml_collections.ConfigDict(dict(checkpoint="", param_dtype="float32",
                                            pretrain_tokens=0, chat_template=False))

  c.model = ml_collections.ConfigDict(dict(
      d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=192,
      max_len=80))

  c.train = ml_collections.ConfigDict(dict(
      total_steps=1000, batch_size=64, learning_rate=3e-3, warmup_steps=100,
      checkpoint_every=200, keep_checkpoints=2, log_every=50))

  c.eval = ml_collections.ConfigDict(dict(
      num_samples=16, temperature=1.0, batch_prompts=32))

  # PRM: Monte-Carlo soft labels (paper: 16 solutions x 16 rollouts), fine-tuned from the LM.
  c.prm = ml_collections.ConfigDict()
  c.prm.labels = ml_collections.ConfigDict(dict(
      num_questions=600, num_solutions=16, num_rollouts=8, shard_size=50,
      prefixes_per_batch=64))
  c.prm.train = ml_collections.ConfigDict(dict(
      total_steps=800, batch_size=64, learning_rate=1e-3, warmup_steps=50,
      checkpoint_every=200, keep_checkpoints=2, log_every=50))
  # An open PRM instead (checkpoint + its scoring rule, models/open_prm.py): '' trains ours.
  c.prm.checkpoint = ""
  c.prm.format = ""
  c.prm.param_dtype = "float32"
  # Pairwise loss between sibling steps of a question beside the BCE (0 = the paper's BCE).
  c.prm.ranking_weight = 0.0
  # ORM: final-answer correctness of the same base-LM samples.
  c.orm = ml_collections.ConfigDict()
  c.orm.train = ml_collections.ConfigDict(dict(
      total_steps=300, batch_size=64, learning_rate=1e-3, warmup_steps=30,
      checkpoint_every=100, keep_checkpoints=2, log_every=50))
  c.verifier_eval = ml_collections.ConfigDict(dict(
      max_n=64, budgets=(4, 16, 64), aggregation="last", batch_prompts=16,
      mc_label_questions=100))

  # Search (paper §5): accuracy vs generation budget per strategy on test questions.
  c.search = ml_collections.ConfigDict(dict(
      num_questions=200, budgets=(1, 2, 4, 8, 16, 32, 64),
      strategies=("best_of_n", "beam/beam_width=4", "beam/beam_width=sqrt",
                  "lookahead/lookahead=1", "dvts/beam_width=4"),
      rows_per_batch=1024, temperature=1.0, max_step_tokens=16, max_rounds=40,
      # Tree search on the expanding rows only: off here, where the demo's tiny models
      # compile a size in more time than compaction saves (README, "Benchmarks").
      compact_rows=False))

  # Revisions (paper §6): training chains from 64 base-LM samples per question, revision
  # SFT, sweep on the search questions (40 per level) so the allocator can pick revisions.
  # Batch sizes keep each sampler call's KV cache near the CPU's 32 MiB L3 cache: measured
  # here, the base LM samples 4,400/s at 1,024 rows, 1,400/s at 1,600 and 450/s at 3,200.
  # Data shards of 16 questions x 64 samples take the stage from 101 s (100 questions) to
  # 22 s; the sweep's 320-token contexts take 138 s at batch_rows=128, 190 s at 512.
  c.revisions = ml_collections.ConfigDict(dict(
      num_questions=800, samples_per_question=64, max_previous=4, max_chains_per_question=16,
      data_shard_size=16, context_len=320, max_attempt_tokens=56, budgets=(4, 16, 64),
      seq_lengths=(1, 4, 16, 64), test_per_level=40, sweep_shard_size=50, batch_rows=128,
      temperature=1.0,
      train=dict(total_steps=600, batch_size=32, learning_rate=1e-3, warmup_steps=40,
                 checkpoint_every=200, keep_checkpoints=2, log_every=25)))

  # Allocator (paper §3.2, §7): a larger model (596K parameters, 5.9x the base LM),
  # difficulty bins, compute-optimal strategy per bin, FLOPs exchange.
  c.allocator = ml_collections.ConfigDict(dict(
      large_d_model=128, large_num_layers=3, large_num_heads=4, large_num_kv_heads=2,
      large_head_dim=32, large_mlp_dim=384,
      large_train=dict(total_steps=1000, batch_size=64, learning_rate=2e-3, warmup_steps=100,
                       checkpoint_every=200, keep_checkpoints=2, log_every=50),
      min_param_ratio=4.0, large_samples=4, difficulty_samples=64, predicted_samples=16,
      num_bins=5, batch_prompts=16, temperature=1.0, baseline="best_of_n", cv_seed=0,
      interpolate=False, r_values=(0.16, 0.79, 22.0),
      large_checkpoint="", large_pretrain_tokens=0))  # a pretrained larger model instead

  c.mesh = ml_collections.ConfigDict(dict(data=0, model=1))  # data=0: all devices
  return c
