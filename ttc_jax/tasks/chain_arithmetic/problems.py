"""Step-wise chain arithmetic: the embedded task that stands in for MATH.

A problem is a chain of terms evaluated left to right::

    Q:47-12+85        <- prompt (question line)
    47-12=35          <- step 1
    35+85=120         <- step 2
    A:120             <- final answer step, followed by EOS

One step per line, so the sampler can stop at step boundaries and a PRM can
score every step (paper §5.1). The difficulty knob is the number of terms and
the digits per operand; `answer_correct` is the exact outcome checker used for
ORM labels and accuracy, `step_correct` the exact per-step checker used *only*
to measure PRM label quality, never inside search.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from ttc_jax.io.configs import short_repr
from ttc_jax.tasks import generated
from ttc_jax.tasks.base import SPLITS  # pylint: disable=unused-import  (re-exported)

STEP_DELIMITER = "\n"  # one step per line
# Every character the task writes, plus a little slack for prompts (the char tokenizer's ids).
ALPHABET = "0123456789+-*=Q:A\n "
_STEP_RE = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")
_ANSWER_RE = re.compile(r"^A:(-?\d+)$")
_QUESTION_RE = re.compile(r"\d+(?:[+\-*]\d+)+")


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """The difficulty knob: terms in the chain, digits per operand, operators."""

  num_terms: int
  digits: int
  ops: str = "+-"

  def __post_init__(self):
    generated.check_ints(self, ("num_terms", "digits"))
    if not isinstance(self.ops, str):
      raise ValueError(f"ops={short_repr(self.ops)} must be a string over '+-*'.")
    if self.num_terms < 2:
      raise ValueError(f"num_terms must be >= 2, got {self.num_terms}")
    if self.digits < 1:
      raise ValueError(f"digits must be >= 1, got {self.digits}")
    if not self.ops or set(self.ops) - set("+-*"):
      raise ValueError(f"ops must be a non-empty subset of '+-*', got {self.ops!r}")


@dataclasses.dataclass(frozen=True)
class Problem:
  question: str          # e.g. "47-12+85"
  terms: tuple[int, ...]
  ops: tuple[str, ...]
  answer: int
  level: int

  @classmethod
  def from_question(cls, question: str, level: int = 0) -> "Problem":
    """Rebuilds a problem from its question text, e.g. `"47-12+85"` (as stored in TFDS)."""
    m = _QUESTION_RE.fullmatch(question)
    if not m:
      raise ValueError(f"Not a chain-arithmetic question: {question!r}; expected terms "
                       "joined by +, - or *, like '47-12+85'.")
    parts = re.findall(r"[+\-*]|\d+", question)
    terms = tuple(int(t) for t in parts[0::2])
    ops = tuple(parts[1::2])
    acc = terms[0]
    for op, t in zip(ops, terms[1:]):
      acc = _apply(acc, op, t)
    return cls(question, terms, ops, acc, level)

  @property
  def prompt(self) -> str:
    return f"Q:{self.question}{STEP_DELIMITER}"

  @property
  def steps(self) -> list[str]:
    """Reference solution steps; the last one is the answer line."""
    out, acc = [], self.terms[0]
    for op, t in zip(self.ops, self.terms[1:]):
      new = _apply(acc, op, t)
      out.append(f"{acc}{op}{t}={new}")
      acc = new
    out.append(f"A:{acc}")
    return out

  @property
  def solution(self) -> str:
    """Reference solution text (steps joined by the delimiter, no EOS)."""
    return STEP_DELIMITER.join(self.steps)


def _apply(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def make_problem(rng: np.random.Generator, difficulty: Difficulty, level: int = 0) -> Problem:
  lo = 0 if difficulty.digits == 1 else 10 ** (difficulty.digits - 1)
  terms = tuple(int(x) for x in rng.integers(lo, 10 ** difficulty.digits, difficulty.num_terms))
  ops = tuple(str(o) for o in rng.choice(list(difficulty.ops), difficulty.num_terms - 1))
  acc = terms[0]
  for op, t in zip(ops, terms[1:]):
    acc = _apply(acc, op, t)
  question = str(terms[0]) + "".join(o + str(t) for o, t in zip(ops, terms[1:]))
  return Problem(question, terms, ops, acc, level)


def generate(levels: Sequence[Difficulty], split: str, num_per_level: int,
             seed: int = 0) -> list[Problem]:
  """Deterministic problems, levels 1-based, train disjoint from validation and test
  (`generated.generate`)."""
  return generated.generate(make_problem, levels, split, num_per_level, seed)


def extract_answer(text: str) -> int | None:
  """The integer on the last `A:` line of a generated solution, or None."""
  for line in reversed(text.strip().split(STEP_DELIMITER)):
    m = _ANSWER_RE.match(line.strip())
    if m:
      return int(m.group(1))
  return None


def answer_correct(problem: Problem, text: str) -> bool:
  """Exact outcome checker (ORM labels, accuracy)."""
  return extract_answer(text) == problem.answer


def split_steps(text: str) -> list[str]:
  return [s for s in text.split(STEP_DELIMITER) if s]


def step_correct(problem: Problem, text: str) -> list[bool]:
  """Exact per-step checker: is each step the right next step of the chain?

  Step i is correct iff every step up to and including i is correct: once the
  chain goes wrong, later steps cannot recover the reference path. Only for
  measuring PRM label quality (issue: label AUROC), never used by search.
  """
  ref = problem.steps
  out, ok = [], True
  for i, step in enumerate(split_steps(text)):
    ok = ok and i < len(ref) and step.strip() == ref[i]
    out.append(ok)
  return out
