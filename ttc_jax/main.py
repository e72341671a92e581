"""Entry point: `ttc-jax --config=configs/demo.py [--config.workdir=...]`."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config(), e.g. configs/demo.py.",
    lock_config=True)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host TPU/GPU pods; "
    "the cluster is auto-detected). Every host runs the same command.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep orbax/tfds INFO logs out of the way
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  from ttc_jax import pipeline  # pylint: disable=g-import-not-at-top
  from ttc_jax.training import trainer  # pylint: disable=g-import-not-at-top
  try:
    pipeline.run(_CONFIG.value)
  except (ValueError, PermissionError, FileNotFoundError, trainer.CheckpointError) as e:
    # User-facing problems: one clear line, no traceback from deep inside jit.
    print(f"ttc-jax: error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  flags.mark_flag_as_required("config")
  app.run(main)


if __name__ == "__main__":
  run()
