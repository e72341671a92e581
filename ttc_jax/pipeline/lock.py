"""One job per workdir: an exclusive `flock` on `<workdir>/.lock`, which names its holder.

The lock is the kernel's, so a job killed in any way (SIGKILL included) releases it and
the next job takes it over; a second job while one runs is refused with one line naming
the holder's host, pid and start time. On a pod, process 0 holds it.

An object store (a `gs://` workdir) has no flock, so there `.lock` is a lease: the
holder rewrites it every `BEAT_S` seconds and deletes it at the end; a lease not
renewed for `STALE_S` seconds (its job was killed) is taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from typing import Iterator, NoReturn

from ttc_jax.io import paths
from ttc_jax.pipeline import artifacts

BEAT_S = 20.0
STALE_S = 90.0


def _holder(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096).decode() or "{}")
  except (OSError, ValueError):
    return {}


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock for the `with` block; ValueError if another job holds it."""
  if not paths.is_local(workdir):
    with _lease(workdir):
      yield
    return
  path = os.path.join(workdir, artifacts.LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      _refuse(workdir, _holder(fd), "wait for it to finish or use another workdir.")
    me = _me()
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


def _me() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _refuse(workdir: str, h: dict, remedy: str) -> NoReturn:
  raise ValueError(
      f"workdir {workdir} is in use by another job (host {h.get('host')}, pid {h.get('pid')}, "
      f"since {h.get('since')}); {remedy}") from None


@contextlib.contextmanager
def _lease(workdir: str) -> Iterator[None]:
  """The lock of a workdir in an object store (see the module docstring)."""
  path = paths.as_path(workdir) / artifacts.LOCK
  if path.exists():
    try:
      h = json.loads(path.read_text())
      beat = float(h["beat"])
    except (ValueError, KeyError, TypeError):
      _refuse(workdir, {}, f"its lease {path} is unreadable; delete it if no job runs there.")
    if time.time() - beat < STALE_S:
      _refuse(workdir, h, f"wait for it to finish, or use another workdir (a killed job's "
                          f"lease expires {STALE_S:.0f} s after its last renewal).")
  me = _me()
  stop = threading.Event()

  def renew() -> None:
    path.write_text(json.dumps({**me, "beat": time.time()}))

  def keep_renewing() -> None:
    while not stop.wait(BEAT_S):
      try:
        renew()
      except OSError:
        pass  # a transient store error; the next beat retries well before STALE_S
  renew()
  beat = threading.Thread(target=keep_renewing, name="workdir-lease", daemon=True)
  beat.start()
  try:
    yield
  finally:
    stop.set()
    beat.join()
    path.unlink(missing_ok=True)
