"""configs/math500.py's job in seconds, on tiny random Qwen2 checkpoints and a MATH-500 fixture.

Write the fixtures once, then run the job (tests/test_math_e2e.py does the same):

  python -c "from ttc_jax import testing; testing.write_math_fixtures('workdir/math_fixtures')"
  ttc-jax --config=configs/test_math.py

The models are random, so every accuracy is near zero: this checks that the whole
job (search, revisions, allocator, report) runs on real-model code paths, not results.
"""

import os
import runpy

import ml_collections

_here = os.path.dirname(__file__)
test_config = runpy.run_path(os.path.join(_here, "test.py"))["get_config"]

FIXTURES = "workdir/math_fixtures"  # testing.write_math_fixtures writes these directories


def get_config() -> ml_collections.ConfigDict:
  c = test_config()
  c.workdir = "workdir/test_math"
  c.task = ml_collections.ConfigDict(dict(
      name="math", source="math500", manual_dir=os.path.join(FIXTURES, "math500"),
      levels=(1, 2, 3), validation_fraction=0.25, grade_timeout_s=5.0, data_dir=""))
  c.tokenizer = ml_collections.ConfigDict(dict(name="hf", path=""))  # policy.checkpoint's
  c.policy = ml_collections.ConfigDict(dict(
      checkpoint=os.path.join(FIXTURES, "policy"), param_dtype="float32",
      pretrain_tokens=1_000_000, chat_template=True))
  c.model = ml_collections.ConfigDict(dict(max_len=96))
  c.allocator.update(large_checkpoint=os.path.join(FIXTURES, "larger"),
                     large_pretrain_tokens=2_000_000)
  c.search.update(budgets=(1, 4), max_step_tokens=16, max_rounds=4,
                  strategies=("best_of_n", "beam/beam_width=2",
                              "lookahead/lookahead=1,beam_width=2"))
  c.revisions.update(context_len=448, max_attempt_tokens=40, budgets=(4,), seq_lengths=(1, 2, 4))
  return c
