"""The grading worker process of `grader.Grader`: math-verify on one answer pair per line.

Run as a script (`python _worker.py MEMORY_MB`), never imported. Protocol, one JSON
object per line: it writes `{"ready": true}` (or `{"error": "..."}`) once, then reads
`{"gold": str, "pred": str, "soft_s": float}` lines from stdin and answers each with
`{"ok": bool}`. Both answers are parsed as the content of a `\\boxed{}`.

Limits inside the worker are best effort (the parent kills it at the hard limit):
math-verify's own signal timeouts are off and one interval timer of `soft_s`
covers the whole pair (both parses and every comparison), raising an exception
math-verify does not catch; the address space is capped at MEMORY_MB, so a
runaway big-number computation fails with MemoryError. Any failure is `ok: false`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
  sys.path.pop(0)  # the task package's own files must not shadow top-level modules


class _Deadline(BaseException):
  """Raised by the interval timer; a BaseException so math-verify's handlers let it pass."""


def _on_alarm(signum, frame):
  del signum, frame
  raise _Deadline()


def main() -> None:
  out = sys.stdout
  try:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_mb > 0:
      import resource  # pylint: disable=g-import-not-at-top
      limit = memory_mb << 20
      resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout and failed parse
    from math_verify import parse, verify  # pylint: disable=g-import-not-at-top
  except BaseException as e:  # pylint: disable=broad-except
    out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
    out.flush()
    return
  signal.signal(signal.SIGALRM, _on_alarm)
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; the worker ends at EOF
  out.write('{"ready": true}\n')
  out.flush()
  golds: dict[str, list] = {}  # parsed gold answers, reused across predictions
  for line in sys.stdin:
    ok = False
    try:
      request = json.loads(line)
      signal.setitimer(signal.ITIMER_REAL, max(float(request["soft_s"]), 1e-3))
      try:
        gold = request["gold"]
        if gold not in golds:
          if len(golds) > 10_000:
            golds.clear()
          golds[gold] = parse("\\boxed{" + gold + "}", parsing_timeout=None)
        pred = parse("\\boxed{" + request["pred"] + "}", parsing_timeout=None)
        ok = bool(golds[gold] and pred and verify(golds[gold], pred, timeout_seconds=None))
      finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException:  # pylint: disable=broad-except
      ok = False  # a timeout, MemoryError, RecursionError, ...: graded wrong
    out.write('{"ok": true}\n' if ok else '{"ok": false}\n')
    out.flush()


if __name__ == "__main__":
  main()
