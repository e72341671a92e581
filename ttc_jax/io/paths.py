"""Paths of every file the job reads or writes, on local disk or in cloud storage.

All of them go through `etils.epath` (as orbax and TFDS do), so a workdir can be
`gs://bucket/run` on a TPU pod (docs/design.md, "Workdirs"). Writes are atomic
either way: locally a temporary file, fsync and rename; in an object store the
object appears whole when its upload completes, so it is written in place.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

from etils import epath

from ttc_jax.io import tensorflow_setup

PathLike = str | os.PathLike


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path`; a local one is made absolute (`~` expanded)."""
  text = os.fspath(path)
  if "://" in text:
    _quiet_cloud_client()
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


@functools.cache
def _quiet_cloud_client() -> None:
  """epath reaches `gs://` through TensorFlow's client when TF is installed (unless
  EPATH_USE_TF=false): import TF quietly first, so its load-time logs stay out."""
  if os.environ.get("EPATH_USE_TF", "").lower() in ("false", "no", "f", "0"):
    return
  if importlib.util.find_spec("tensorflow") is not None:
    tensorflow_setup.quiet_import()


def is_local(path: PathLike) -> bool:
  return "://" not in os.fspath(path)


def join(path: PathLike, *names: str) -> str:
  """`path/name/...` as a string (`gs://` kept intact)."""
  return os.fspath(as_path(path).joinpath(*names))


def exists(path: PathLike) -> bool:
  return as_path(path).exists()


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `path` atomically (see the module docstring)."""
  path = as_path(path)
  if not is_local(path):
    path.write_bytes(data)
    return
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text(path: PathLike, text: str) -> None:
  write_bytes(path, text.encode())


def append_text(path: PathLike, text: str) -> None:
  """Appends `text` durably; an object store cannot append, so there the object is rewritten."""
  path = as_path(path)
  if is_local(path):
    with open(path, "a") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    return
  old = path.read_bytes() if path.exists() else b""
  path.write_bytes(old + text.encode())


def move(src: PathLike, dst: PathLike) -> None:
  """Moves a file or a directory tree (an object store has no rename: copy, then delete)."""
  src, dst = as_path(src), as_path(dst)
  if is_local(src):
    os.replace(src, dst)
    return
  if not src.is_dir():
    src.rename(dst)
    return
  for item in sorted(src.rglob("*")):
    if not item.is_dir():
      target = dst / item.relative_to(src)
      target.parent.mkdir(parents=True, exist_ok=True)
      item.rename(target)
  if src.exists():
    src.rmtree()


def open_file(path: PathLike, mode: str = "r") -> Any:
  return as_path(path).open(mode)
