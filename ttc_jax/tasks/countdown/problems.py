"""Countdown: reach a target from given numbers, each used exactly once (issue 18, item 2).

A problem lists its numbers, then the target::

    Q:7 3 9 5>47      <- prompt (question line): the numbers, then the target
    7*5=35            <- step 1: two numbers of the current multiset, replaced by the result
    35+9=44           <- step 2
    44+3=47           <- step 3
    A:47              <- answer line once one number remains, followed by EOS

Operations are + - * on non-negative integers (a-b needs a >= b), one per line, so the
sampler stops at step boundaries and a PRM scores every step (paper §5.1). Every number is
used exactly once (as in the 24 game), so every correct solution ends at the same value.
The target is the end of a random valid chain over the numbers (the reference solution);
difficulty is (count of numbers, largest number). Unlike chain arithmetic the next step is
a choice, and a step can be well computed yet leave numbers that can no longer reach the
target: `step_correct` finds such dead ends exactly, by exhaustive search.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from typing import Sequence

import numpy as np

from ttc_jax.tasks import generated

STEP_DELIMITER = "\n"
ALPHABET = "0123456789+-*=Q:A> \n"
OPS = "+-*"
MAX_COUNT = 6      # step_correct searches every order of up to this many numbers
MAX_NUMBER = 99    # two digits, so texts stay short for the character tokenizer
MAX_RESULT = 999   # the reference chain's results stay below this (three digits)
_INT = r"(0|[1-9]\d*)"  # canonical spelling: no sign, no leading zeros
_STEP_RE = re.compile(rf"{_INT}([+\-*]){_INT}={_INT}")
_ANSWER_RE = re.compile(rf"A:{_INT}")
_QUESTION_RE = re.compile(r"[1-9]\d*(?: [1-9]\d*)+>(0|[1-9]\d*)")


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """The difficulty knob: how many numbers, and the largest of them (drawn from 1..max)."""

  count: int
  max_number: int

  def __post_init__(self):
    generated.check_ints(self, ("count", "max_number"))
    if not 2 <= self.count <= MAX_COUNT:
      raise ValueError(f"count must be in 2..{MAX_COUNT}, got {self.count}; the exact step "
                       f"checker searches every order of the numbers.")
    if not 2 <= self.max_number <= MAX_NUMBER:
      raise ValueError(f"max_number must be in 2..{MAX_NUMBER}, got {self.max_number}.")


@dataclasses.dataclass(frozen=True)
class Problem:
  question: str                        # e.g. "7 3 9 5>47"
  numbers: tuple[int, ...]
  target: int
  steps: tuple[tuple[int, str, int, int], ...]  # the reference chain: (a, op, b, a op b)
  level: int

  @property
  def prompt(self) -> str:
    return f"Q:{self.question}{STEP_DELIMITER}"

  @property
  def answer(self) -> tuple[int, tuple[int, ...]]:
    """The canonical answer every correct solution reaches (`extract_answer`)."""
    return (self.target, tuple(sorted(self.numbers)))

  @property
  def solution(self) -> str:
    """Reference solution text (steps joined by the delimiter, no EOS)."""
    lines = [f"{a}{op}{b}={c}" for a, op, b, c in self.steps] + [f"A:{self.target}"]
    return STEP_DELIMITER.join(lines)


def parse_question(question: str) -> tuple[tuple[int, ...], int]:
  """`(numbers, target)` of a question such as `"7 3 9 5>47"`."""
  if not _QUESTION_RE.fullmatch(question):
    raise ValueError(f"Not a countdown question: {question!r}; expected positive numbers "
                     "separated by spaces, '>' and the target, like '7 3 9 5>47'.")
  numbers, target = question.split(">")
  return tuple(int(x) for x in numbers.split()), int(target)


def _apply(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def make_problem(rng: np.random.Generator, difficulty: Difficulty, level: int = 0) -> Problem:
  """Random numbers and a random chain over them: at each step an operation, then a pair it
  keeps in 1..MAX_RESULT (larger operand first); the chain's end is the target."""
  while True:
    numbers = tuple(int(x) for x in rng.integers(1, difficulty.max_number + 1, difficulty.count))
    pool, steps = sorted(numbers, reverse=True), []
    while len(pool) > 1:
      moves = {op: [(i, j) for i in range(len(pool)) for j in range(i + 1, len(pool))
                    if 0 < _apply(pool[i], op, pool[j]) <= MAX_RESULT] for op in OPS}
      ops = [op for op in OPS if moves[op]]
      if not ops:
        break
      op = ops[int(rng.integers(len(ops)))]
      i, j = moves[op][int(rng.integers(len(moves[op])))]
      a, b = pool[i], pool[j]
      steps.append((a, op, b, _apply(a, op, b)))
      pool = sorted([x for k, x in enumerate(pool) if k not in (i, j)] + [steps[-1][3]],
                    reverse=True)
    if len(pool) == 1:
      question = " ".join(map(str, numbers)) + f">{pool[0]}"
      return Problem(question, numbers, pool[0], tuple(steps), level)


def generate(levels: Sequence[Difficulty], split: str, num_per_level: int,
             seed: int = 0) -> list[Problem]:
  """Deterministic problems, levels 1-based, train disjoint from validation and test
  (`generated.generate`)."""
  return generated.generate(make_problem, levels, split, num_per_level, seed)


def split_steps(text: str) -> list[str]:
  return [s for s in text.split(STEP_DELIMITER) if s]


def _move(line: str) -> tuple[int, int, int] | None:
  """`(a, b, result)` of a step line whose arithmetic is exact, else None."""
  m = _STEP_RE.fullmatch(line)
  if not m:
    return None
  a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
  return (a, b, c) if _apply(a, m.group(2), b) == c else None


def extract_answer(text: str) -> tuple[int, tuple[int, ...]] | None:
  """`(value, sorted leaves)` of a well-formed chain, read from the text alone; else None.

  Well formed: every line but the last is a step `a<op>b=c` with exact arithmetic (c >= 0),
  the last is `A:<v>`, and exactly one value is left, v. An operand is an earlier result
  still unused if one is equal to it, else a leaf (a number of the question); the leaves
  are then all operands minus the consumed results, whichever of equal values is taken.
  Majority voting thus compares reached (value, numbers) pairs, and the answer is correct
  iff it is (target, the question's numbers): all numbers used once, target reached.
  """
  lines = split_steps(text)
  m = _ANSWER_RE.fullmatch(lines[-1]) if len(lines) >= 2 else None
  if m is None:
    return None
  results, leaves = collections.Counter(), []
  for line in lines[:-1]:
    move = _move(line)
    if move is None:
      return None
    for x in move[:2]:
      if results[x]:
        results[x] -= 1
      else:
        leaves.append(x)
    results[move[2]] += 1
  left = list(results.elements())
  if len(left) != 1 or left[0] != int(m.group(1)):
    return None
  return (left[0], tuple(sorted(leaves)))


@functools.lru_cache(maxsize=1 << 20)
def reachable(pool: tuple[int, ...], target: int) -> bool:
  """Whether the sorted numbers `pool`, each used once, can reach `target` (exhaustive)."""
  if len(pool) == 1:
    return pool[0] == target
  if len(pool) == 2:
    a, b = pool
    return target in (a + b, b - a, a * b)
  seen = set()
  for i in range(len(pool)):
    for j in range(i + 1, len(pool)):
      a, b = pool[i], pool[j]
      if (a, b) in seen:
        continue
      seen.add((a, b))
      rest = pool[:i] + pool[i + 1:j] + pool[j + 1:]
      for c in {a + b, b - a, a * b}:
        if reachable(tuple(sorted(rest + (c,))), target):
          return True
  return False


def step_correct(question: str, text: str) -> list[bool]:
  """Exact per-step labels (measurement only, never inside search).

  Step i is correct iff steps 1..i are valid moves (exact arithmetic on two numbers still
  in the multiset, the result replacing them) and the numbers left can still reach the
  target (`reachable`); the answer line is correct iff the answer is; lines after it are not.
  """
  numbers, target = parse_question(question)
  pool, out, ok, done = collections.Counter(numbers), [], True, False
  for line in split_steps(text):
    move = None if done else _move(line)
    if move is not None and ok:
      a, b, c = move
      pool[a] -= 1
      pool[b] -= 1
      ok = pool[a] >= 0 and pool[b] >= 0
      pool[c] += 1
      ok = ok and reachable(tuple(sorted(pool.elements())), target)
    elif move is None:
      m = None if done else _ANSWER_RE.fullmatch(line)
      ok = ok and m is not None and sorted(pool.elements()) == [target] == [int(m.group(1))]
      done = True
    out.append(ok)
  return out
