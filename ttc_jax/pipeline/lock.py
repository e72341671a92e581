"""One job per workdir: an exclusive `flock` on `<workdir>/.lock`, which names its holder.

The lock is the kernel's, so a job killed in any way (SIGKILL included) releases it and
the next job takes it over; a second job while one runs is refused with one line naming
the holder's host, pid and start time. On a pod, process 0 holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Iterator

from ttc_jax.pipeline import artifacts


def _holder(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096).decode() or "{}")
  except (OSError, ValueError):
    return {}


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock for the `with` block; ValueError if another job holds it."""
  path = os.path.join(workdir, artifacts.LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      h = _holder(fd)
      raise ValueError(
          f"workdir {workdir} is in use by another job (host {h.get('host')}, pid "
          f"{h.get('pid')}, since {h.get('since')}); wait for it to finish or use another "
          f"workdir.") from None
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode())
    os.fsync(fd)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # released below; an empty file holds nothing
  finally:
    os.close(fd)  # closing releases the flock
