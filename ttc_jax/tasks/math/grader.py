"""Safe MATH grading (paper §5.1): math-verify equivalence under a hard per-answer time limit.

Model output is never evaluated: both answers go to math-verify (`parse`, `verify`,
LaTeX -> SymPy) in a worker subprocess (`_worker.py`). Why a subprocess: math-verify's
own timeouts use `signal.alarm`, which works only in the main thread (elsewhere it
raises) and cannot stop a long computation inside C (a huge integer power). Here:

  * the limit holds from any thread: the caller waits on the worker's pipe with a
    deadline of `timeout_s` and kills the worker when it passes;
  * inside the worker one interval timer of `soft_fraction * timeout_s` ends most slow
    pairs cleanly first (the worker survives), and the address space is capped
    (`memory_mb`), so a runaway computation ends in MemoryError, not swapping;
  * a timed-out, crashed or unparsable pair is `False`, never an exception.

A killed worker is replaced at once (its start, about a second, runs in the
background and is not part of any answer's limit). Workers are pooled, one per
concurrent caller up to `max_workers`. Results, timeouts included, are cached by
(gold, pred).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")


class _Worker:
  """One worker process and its line-buffered pipes."""

  def __init__(self, argv: list[str]):
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, close_fds=True)
    self._buf = b""
    self.ready = False

  def read_line(self, deadline: float) -> bytes | None:
    """The next line from the worker, or None if it is not there by `deadline` (or it died)."""
    fd = self.proc.stdout.fileno()
    while b"\n" not in self._buf:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([fd], [], [], left)[0]:
        return None
      chunk = os.read(fd, 65536)
      if not chunk:
        return None
      self._buf += chunk
    line, self._buf = self._buf.split(b"\n", 1)
    return line

  def send(self, message: dict) -> bool:
    try:
      self.proc.stdin.write(json.dumps(message).encode() + b"\n")
      self.proc.stdin.flush()
      return True
    except (BrokenPipeError, OSError, ValueError):
      return False

  def kill(self) -> None:
    try:
      self.proc.kill()
      self.proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
      pass
    for f in (self.proc.stdin, self.proc.stdout):
      try:
        f.close()
      except OSError:
        pass


class Grader:
  """`equivalent(gold, pred)`: math-verify equivalence of two answer strings (box contents).

  Args:
    timeout_s: hard wall-clock limit per (gold, pred) pair, from any thread.
    max_workers: worker processes at most (concurrent callers beyond it wait).
    memory_mb: address-space cap of each worker (0: none).
    soft_fraction: the worker's own timer, as a fraction of `timeout_s`.
    start_timeout_s: how long a worker may take to start (import SymPy) before it is an error.
    cache_size: (gold, pred) results kept.
    worker_argv: the worker command (tests replace it); default `python _worker.py`.
  """

  def __init__(self, timeout_s: float = 5.0, max_workers: int = 4, memory_mb: int = 4096,
               soft_fraction: float = 0.8, start_timeout_s: float = 60.0,
               cache_size: int = 1_000_000, worker_argv: list[str] | None = None):
    if not timeout_s > 0:
      raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds.")
    self.timeout_s = float(timeout_s)
    self.max_workers = max(1, int(max_workers))
    self.soft_s = float(soft_fraction) * self.timeout_s
    self.start_timeout_s = float(start_timeout_s)
    self.cache_size = int(cache_size)
    self._argv = list(worker_argv or [sys.executable, "-u", _WORKER, str(int(memory_mb))])
    self._cond = threading.Condition()
    self._idle: list[_Worker] = []
    self._count = 0  # workers alive, idle or busy
    self._cache: dict[tuple[str, str], bool] = {}
    # calls: graded pairs (not cache hits); timeouts: pairs killed at the limit;
    # max_grade_s: the longest wait on a worker's answer (the limited part of a call);
    # start_wait_s: total time callers waited for workers to start (outside the limit).
    self.stats = {"calls": 0, "timeouts": 0, "restarts": 0, "max_grade_s": 0.0,
                  "start_wait_s": 0.0}
    # Idle workers end with the grader or at exit; a busy one ends on its stdin's EOF.
    weakref.finalize(self, Grader._close_all, self._idle)

  # ---- public

  def equivalent(self, gold: str, pred: str) -> bool:
    """Whether `pred` equals `gold` by math-verify; False on a timeout or any failure."""
    key = (gold, pred)
    with self._cond:
      if key in self._cache:
        return self._cache[key]
    worker = self._acquire()
    ok, alive = self._ask(worker, gold, pred)
    self._release(worker, alive)
    with self._cond:
      if len(self._cache) >= self.cache_size:
        self._cache.pop(next(iter(self._cache)))
      self._cache[key] = ok
    return ok

  def close(self) -> None:
    """Ends every idle worker (busy ones end when their caller releases them)."""
    with self._cond:
      idle, self._idle[:] = list(self._idle), []
      self._count -= len(idle)
    for w in idle:
      w.kill()

  # ---- workers

  @staticmethod
  def _close_all(idle: list[_Worker]) -> None:
    for w in list(idle):
      w.kill()

  def _acquire(self) -> _Worker:
    with self._cond:
      while not self._idle and self._count >= self.max_workers:
        self._cond.wait()
      if self._idle:
        worker = self._idle.pop()
      else:
        worker = self._spawn()
    if not worker.ready:
      self._wait_ready(worker)
    return worker

  def _spawn(self) -> _Worker:
    self._count += 1
    try:
      return _Worker(self._argv)
    except OSError:
      self._count -= 1
      raise

  def _wait_ready(self, worker: _Worker) -> None:
    start = time.monotonic()
    line = worker.read_line(start + self.start_timeout_s)
    with self._cond:
      self.stats["start_wait_s"] += time.monotonic() - start
    message = _decode(line)
    if message.get("ready") is not True:
      worker.kill()
      with self._cond:
        self._count -= 1
        self._cond.notify()
      detail = message.get("error") or f"no answer within {self.start_timeout_s:g} s"
      raise RuntimeError(f"The MATH grading worker ({' '.join(self._argv)}) did not start: "
                         f"{detail}. Install math-verify (pip install 'math-verify[antlr4_13_2]').")
    worker.ready = True

  def _ask(self, worker: _Worker, gold: str, pred: str) -> tuple[bool, bool]:
    """(answer, worker still usable)."""
    start = time.monotonic()
    sent = worker.send({"gold": gold, "pred": pred, "soft_s": self.soft_s})
    line = worker.read_line(start + self.timeout_s) if sent else None
    took = time.monotonic() - start
    with self._cond:
      self.stats["calls"] += 1
      self.stats["max_grade_s"] = max(self.stats["max_grade_s"], took)
      if line is None:
        self.stats["timeouts"] += 1
    if line is None:
      return False, False
    return _decode(line).get("ok") is True, True

  def _release(self, worker: _Worker, alive: bool) -> None:
    if not alive:
      worker.kill()
    with self._cond:
      if not alive:
        # Replace it now, so its start overlaps the caller's next work.
        self.stats["restarts"] += 1
        self._count -= 1
        try:
          worker = self._spawn()
        except OSError:
          self._cond.notify()
          return
      self._idle.append(worker)
      self._cond.notify()


def _decode(line: bytes | None) -> dict:
  try:
    message = json.loads(line) if line is not None else {}
  except ValueError:
    return {}
  return message if isinstance(message, dict) else {}
