"""One job per workdir: a lock file naming its holder's host and pid (docs/design.md, "Pipeline").

A second job on a held workdir is refused with one line; a lock left by a job that
was killed on this host (its pid is gone) is taken over. On a pod, process 0 holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Iterator

import jax

from ttc_jax.pipeline import artifacts


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # it exists, as another user's process
  return True


def _holder(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _acquire(path: str, me: dict) -> None:
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _holder(path)
      if holder is None and time.time() - os.path.getmtime(path) < 5:
        time.sleep(0.2)  # being written right now
        continue
      stale = holder is None or (holder.get("host") == me["host"]
                                 and not _alive(int(holder.get("pid", -1))))
      if not stale:
        raise ValueError(
            f"workdir {os.path.dirname(path)} is in use by another job (host "
            f"{holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}); "
            f"wait for it to finish or use another workdir. If no such job runs, delete {path}.")
      print(f"lock: taking over {path} from a job that is gone ({holder})", flush=True)
      os.remove(path)
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    return
  raise ValueError(f"Could not take the lock {path}; delete it if no job uses the workdir.")


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `<workdir>/.lock` for the `with` block (process 0 only)."""
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, artifacts.LOCK)
  me = {"host": socket.gethostname(), "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S")}
  _acquire(path, me)
  try:
    yield
  finally:
    if _holder(path) == me:
      os.remove(path)
