"""Final answers of MATH solutions: the last `\\boxed{...}` (paper §5.1 MATH), as a canonical string.

Pure string work (no parsing of the math, no `eval`): braces are matched with
escapes honoured, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}` and
`\\boxed{\\{1,2\\}}` gives `\\{1,2\\}`. `\\fbox{...}` and the brace-less
`\\boxed 5` count too. The canonical form only removes spelling that never
changes the value (spaces, `\\left`/`\\right`, `\\dfrac`, thin spaces, a trailing
period), so equal strings are equal answers; anything subtler is the grader's
job (`grader.py`, math-verify).
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Rewrites applied in order by `canonical`.
_REWRITES = (
    (re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])"), ""),
    (re.compile(r"\\[dt]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\[!,]"), ""),  # thin spaces: `10,\!000` is `10,000`
    (re.compile(r"\\(?:;|:|quad(?![A-Za-z])|qquad(?![A-Za-z]))"), " "),
    (re.compile(r"\s+"), " "),
)


def _group(text: str, start: int) -> int | None:
  """The index just past the brace group opening at `text[start] == '{'`; None if unclosed."""
  depth, i = 0, start
  while i < len(text):
    c = text[i]
    if c == "\\":
      i += 2  # an escaped character (`\{`, `\}`, `\\`) never opens or closes a group
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return i + 1
    i += 1
  return None


def _box_at(text: str, m: re.Match) -> tuple[str, int] | None:
  """(content, end) of the box whose command `m` matched; None when it is incomplete."""
  i = m.end()
  while i < len(text) and text[i] in " \t":
    i += 1
  if i < len(text) and text[i] == "{":
    end = _group(text, i)
    return None if end is None else (text[i + 1:end - 1], end)
  if i > m.end():  # `\boxed 5`: the argument is the next run of plain characters
    arg = re.match(r"[^\s$}{\\]+", text[i:])
    if arg:
      return arg.group(), i + arg.end()
  return None


def last_boxed(text: str) -> str | None:
  """The content of the last complete `\\boxed{}`/`\\fbox{}` of `text` (boxes inside a box are
  part of its content); None when there is none."""
  found, pos = None, 0
  while True:
    m = _BOX.search(text, pos)
    if m is None:
      return found
    box = _box_at(text, m)
    if box is None:
      pos = m.end()
    else:
      found, pos = box


def canonical(answer: str) -> str | None:
  """`answer` in canonical spelling (see the module doc); None when nothing is left."""
  s = answer
  while True:  # `\boxed{\boxed{3}}` -> `3`
    inner = s.strip()
    m = _BOX.match(inner)
    box = _box_at(inner, m) if m else None
    if box is None or box[1] != len(inner):
      break
    s = box[0]
  for pattern, repl in _REWRITES:
    s = pattern.sub(repl, s)
  s = s.strip()
  while s.startswith("$"):
    s = s[1:].lstrip()
  while s[-1:] in ("$", ".") and not s.endswith(("\\$", "\\.")):  # `$3$.` -> `3`
    s = s[:-1].rstrip()
  return s or None


def extract(text: str) -> str | None:
  """The canonical final answer of a solution `text`: its last box; None without one."""
  box = last_boxed(text)
  return None if box is None else canonical(box)
