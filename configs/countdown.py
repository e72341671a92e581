"""The demo job on the countdown task (issue 18, item 2): `ttc-jax --config=configs/countdown.py`.

Reach a target from the given numbers, each used once, one operation per line; unlike
chain arithmetic a well-computed step can be a dead end, which Monte-Carlo rollouts reveal.
"""

import os
import runpy

import ml_collections

# Loaded by path: config files are not a package (absl's config_flags loads them by path too).
demo_config = runpy.run_path(os.path.join(os.path.dirname(__file__), "demo.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
  c = demo_config()
  c.workdir = "workdir/countdown"
  c.task.name = "countdown"
  # Difficulty levels (count of numbers, largest number).
  c.task.levels = ((3, 9), (4, 9), (4, 19), (5, 19), (6, 25))
  c.task.num_per_level = ml_collections.ConfigDict(dict(train=6000, validation=50, test=100))
  # Six numbers up to 25 with results to 999 write up to 83 characters, plus BOS and EOS.
  c.model.max_len = 96
  c.revisions.update(max_attempt_tokens=64, context_len=400)
  return c
