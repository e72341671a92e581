"""Entry point: `ttc-jax --config=configs/demo.py [--config.workdir=...] [--rerun_from=STAGE]
[--stop_after=STAGE]`.

A user mistake (an unknown or bad config key, a missing config file, an infeasible
setting, a busy or incompatible workdir) ends in one line on stderr and exit code 2;
`--verbosity=1` shows the traceback instead.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any, NoReturn, Sequence

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
    "the cluster is auto-detected unless the three flags below are given). Every host runs "
    "the same command.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0 (e.g. "
    "127.0.0.1:12355 for several processes on one machine).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "With --distributed: a process that has not been heard from "
    "for this long counts as lost, and the others stop instead of waiting for it.")
_RERUN_FROM = flags.DEFINE_string(
    "rerun_from", None, "Recompute this stage and every stage that uses its outputs (data, "
    "base_lm, evaluation, prm_labels, verifiers, search, revisions, larger_model, allocator, "
    "report); their old outputs move to <workdir>/versions/<n>/.")
_STOP_AFTER = flags.DEFINE_string(
    "stop_after", None, "Run the stages up to and including this one, then stop (e.g. "
    "verifiers, to compare PRM settings without running search); a later run resumes.")


def _fail(message: str) -> NoReturn:
  print(f"ttc-jax: error: {message}", file=sys.stderr)
  sys.exit(2)


def _debug(argv: Sequence[str]) -> bool:
  """`--verbosity=N` (N >= 1) or `-v N` asks for tracebacks."""
  for i, a in enumerate(argv):
    value = a.split("=", 1)[1] if a.startswith(("--verbosity=", "-v=")) else (
        argv[i + 1] if a in ("--verbosity", "-v") and i + 1 < len(argv) else None)
    if value is not None and value.lstrip("-").isdigit() and int(value) >= 1:
      return True
  return False


def _config_file(argv: Sequence[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _explain(argv: Sequence[str], error: Exception) -> str:
  """One line for a flag-parsing failure: which file, key or value, and what is valid."""
  path = _config_file(argv)
  if path is None:
    return "no config file given; pass one with get_config(), e.g. --config=configs/demo.py."
  file = path.split(":", 1)[0]
  if not os.path.isfile(file):
    return (f"config file {file!r} does not exist; pass a config file with get_config(), "
            f"e.g. --config=configs/demo.py.")
  try:
    config: Any = runpy.run_path(file)["get_config"]()
  except Exception as e:  # pylint: disable=broad-except  (the file's own error, in one line)
    return f"config file {file!r} failed to load: {type(e).__name__}: {e}"
  for a in argv:
    if not a.startswith("--config."):
      continue
    key = a[len("--config."):].split("=", 1)[0]
    node, seen = config, []
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node.keys():
        where = "config" + "".join(f".{s}" for s in seen)
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        return (f"--config.{key}: {where} has no key {part!r}; valid keys there: {valid}.")
      node, seen = node[part], seen + [part]
  return f"{str(error).splitlines()[0]}"


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # a config file that failed to load raises only when read
    return rest
  except Exception as e:  # pylint: disable=broad-except  (flags.Error or a config's own error)
    if _debug(argv):
      raise
    _fail(_explain(argv, e))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; settings go in --config.KEY=VALUE flags.")
  debug = flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep orbax/tfds INFO logs out of the way
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    # CPU processes exchange data through gloo (TPU and GPU use their own interconnect).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT.value)
  from ttc_jax import pipeline  # pylint: disable=g-import-not-at-top
  from ttc_jax.training import trainer  # pylint: disable=g-import-not-at-top
  try:
    pipeline.run(_CONFIG.value, rerun_from=_RERUN_FROM.value, stop_after=_STOP_AFTER.value)
  except (ValueError, PermissionError, FileNotFoundError, trainer.CheckpointError) as e:
    # User-facing problems: one clear line, no traceback from deep inside jit.
    if debug:
      raise
    _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def run() -> None:
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
