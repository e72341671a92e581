"""The test job on the countdown task, in seconds: `ttc-jax --config=configs/test_countdown.py`."""

import os
import runpy

import ml_collections

# Loaded by path: config files are not a package (absl's config_flags loads them by path too).
test_config = runpy.run_path(os.path.join(os.path.dirname(__file__), "test.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
  c = test_config()
  c.workdir = "workdir/test_countdown"
  c.task.name = "countdown"
  c.task.levels = ((3, 9), (4, 9))
  c.model.max_len = 56  # four numbers up to 9 write up to 46 characters
  return c
