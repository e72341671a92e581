"""The paper's budgets and strategies on MATH-500 with a real policy and an open PRM.

    ttc-jax --config=configs/math500.py \
      --config.policy.checkpoint=/models/Qwen2.5-Math-1.5B-Instruct \
      --config.prm.checkpoint=/models/Qwen2.5-Math-PRM-7B \
      --config.allocator.large_checkpoint=/models/Qwen2.5-Math-7B-Instruct \
      --config.task.manual_dir=/data/math500 --config.workdir=gs://bucket/math500

Checkpoints are local `save_pretrained` directories (README, "Run on your own model");
the PRM must share the policy's vocabulary (Qwen2.5-Math-PRM with Qwen2.5 policies,
RLHFlow's Llama-3.1 PRMs with Llama 3 policies, Math-Shepherd with Mistral ones). The
manual dir holds MATH-500's `test.jsonl` and, for the revision data and the ORM,
PRM800K's `train.jsonl` (same format). Budgets 1 ... 256, beam widths 4 and sqrt(N),
lookahead k in {1, 3} (§5.2-5.3); revisions from 64 samples per question with up to 4
previous attempts (§6.1); 5 difficulty bins from the MATH levels' oracle (§3.2), 2-fold
cross-validation; R in {0.16, 0.79, 22} (§7). Pretraining token counts are the model
cards' (Qwen2.5: 18T; the Math models' continued pretraining is ignored).
"""

import os
import runpy

import ml_collections

paper_config = runpy.run_path(os.path.join(os.path.dirname(__file__), "paper.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
  c = paper_config()
  c.workdir = "workdir/math500"
  c.task = ml_collections.ConfigDict(dict(
      name="math", source="math500", manual_dir="/path/to/math500", levels=(1, 2, 3, 4, 5),
      validation_fraction=0.05, grade_timeout_s=5.0, data_dir=""))
  c.tokenizer = ml_collections.ConfigDict(dict(name="hf", path=""))  # policy.checkpoint's
  c.policy = ml_collections.ConfigDict(dict(
      checkpoint="/path/to/Qwen2.5-Math-1.5B-Instruct", param_dtype="bfloat16",
      pretrain_tokens=18_000_000_000_000, chat_template=True))
  # Prompt + solution; revision contexts hold up to 4 previous attempts.
  c.model = ml_collections.ConfigDict(dict(max_len=1536, dtype="bfloat16"))
  c.prm.checkpoint = "/path/to/Qwen2.5-Math-PRM-7B"
  c.prm.format = "qwen_prm"
  c.prm.param_dtype = "bfloat16"
  c.prm.labels.update(num_questions=500, num_solutions=16, num_rollouts=16, shard_size=50,
                      prefixes_per_batch=256)  # for the ORM and the label AUROCs
  c.verifier_eval.update(max_n=256, budgets=(4, 16, 64, 256), batch_prompts=16,
                         mc_label_questions=100)
  c.search.update(num_questions=500, rows_per_batch=2048, max_step_tokens=256, max_rounds=40,
                  compact_rows=True)
  c.revisions.update(
      num_questions=2000, samples_per_question=64, max_chains_per_question=16,
      data_shard_size=50, context_len=8192, max_attempt_tokens=1024,
      budgets=(16, 64, 128, 256), seq_lengths=(1, 4, 16, 64, 256), test_per_level=100,
      sweep_shard_size=50, batch_rows=512)
  c.allocator.update(
      large_checkpoint="/path/to/Qwen2.5-Math-7B-Instruct",
      large_pretrain_tokens=18_000_000_000_000, min_param_ratio=4.0, large_samples=64,
      difficulty_samples=2048, predicted_samples=256, num_bins=5, batch_prompts=32)
  return c
