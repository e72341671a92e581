"""TensorFlow imported once, quietly, with no GPU visible to it.

TensorFlow is only the data loader (TFDS, seqio) and `etils.epath`'s client for
`gs://` paths (docs/design.md, "Data stack"); it never takes device memory from
JAX, and its load-time log lines do not reach the user (a user error stays one
line).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import sys
import tempfile
from typing import Any, Iterator

# Libraries whose below-WARNING absl/python logs are dropped.
_QUIET_LIBS = ("tensorflow", "tensorflow_datasets", "seqio")
# TF 2.21 writes these C++ lines while it loads, before TF_CPP_MIN_LOG_LEVEL applies
# (and `import jax` already set that to 1), plus its GPU probe's error on a
# machine without CUDA; TF never uses a GPU here, so they are all noise.
_TF_LOAD_NOISE = re.compile(
    r"^([IW]\d{4} [\d:.]+ +\d+ \S+\] |"
    r"E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit|"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called)")


class _QuietLibraries(logging.Filter):
  """Drops INFO/DEBUG records from TF, TFDS and seqio, and TFDS's custom-config note."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, "/")
    if not any(f"/{lib}/" in path for lib in _QUIET_LIBS):
      return True
    if record.levelno < logging.WARNING:
      return False
    # Every config here is custom (named by a hash), so this warning says nothing.
    return not str(record.msg).startswith("Using custom data configuration")


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
  """Captures fd 2 meanwhile and replays it without TF's load-time noise lines."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      text = tmp.read().decode(errors="replace")
      kept = [l for l in text.splitlines(keepends=True) if not _TF_LOAD_NOISE.match(l)]
      if kept:
        sys.stderr.write("".join(kept))


@functools.cache
def quiet_import(*also: str) -> Any:
  """Imports TensorFlow (and the modules `also`, e.g. TFDS) once; returns `tensorflow`."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with _native_stderr_filtered():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for name in also:
      importlib.import_module(name)
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
      pass  # TF's devices were initialised before us; nothing left to hide.
  tf.get_logger().setLevel(logging.ERROR)
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _QuietLibraries) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietLibraries())
  return tf
