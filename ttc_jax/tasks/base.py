"""The `Task` interface the library sees, and the registry of tasks by name (docs/design.md, "Task").

A task supplies examples per split (question, prompt text, reference solution,
answer, difficulty level), its step delimiter, how to read the final answer out
of a generated solution and how to grade it, and optionally an exact per-step
checker used only to measure label and PRM quality, never inside search.
Answers are any hashable value (an int for chain arithmetic, a canonical string
for MATH).

    @register("my_task")
    def make(settings: dict, data_dir: str) -> Task: ...   # settings: config.task minus name

    task = create(config.task, data_dir)

`config.task.module` (optional) names a module to import first, so a task defined in
its own file registers itself: `--config.task.module=my_tasks.countdown`.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
from typing import Any, Callable, Hashable, Mapping, Sequence

Answer = Hashable
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Example:
  """One question of a split.

  Attributes:
    question: the question text; identifies the example within its split.
    prompt: what the model is conditioned on (the question in the task's format).
    solution: the reference solution, steps joined by the delimiter (SFT target, no EOS).
    answer: the reference final answer.
    level: the task's own difficulty level, 1 = easiest.
  """

  question: str
  prompt: str
  solution: str
  answer: Answer
  level: int


class Task(abc.ABC):
  """What the pipeline and library need of a task (paper §5.1: MATH; here any stepwise task)."""

  name: str = ""
  step_delimiter: str = "\n"
  # Characters the task's texts use: the character tokenizer's alphabet (None: no char tokenizer).
  alphabet: str | None = None
  # Separates previous attempts in a revision context (paper §6.1); never inside a solution.
  attempt_separator: str = "\n\n"

  @abc.abstractmethod
  def examples(self, split: str) -> list[Example]:
    """Every example of `split` (one of SPLITS), in a fixed order, grouped by level."""

  @abc.abstractmethod
  def extract_answer(self, text: str) -> Answer | None:
    """The final answer of a generated solution, or None when it has none."""

  def is_correct(self, answer: Answer | None, example: Example) -> bool:
    """Whether `answer` (from `extract_answer`) is the example's answer."""
    return answer is not None and answer == example.answer

  def grade(self, text: str, example: Example) -> bool:
    """Whether the solution `text` ends in the right answer."""
    return self.is_correct(self.extract_answer(text), example)

  def step_correct(self, example: Example, text: str) -> list[bool] | None:
    """Exact correctness of each step of `text`, or None without a checker (measurement only)."""
    del example, text
    return None


# ---- registry ----

TaskFactory = Callable[[dict[str, Any], str], Task]
_REGISTRY: dict[str, TaskFactory] = {}


def register(name: str) -> Callable[[TaskFactory], TaskFactory]:
  """Decorator: `factory(settings, data_dir) -> Task` becomes `create({'name': name, ...})`."""
  def wrap(factory: TaskFactory) -> TaskFactory:
    if name in _REGISTRY and _REGISTRY[name] is not factory:
      raise ValueError(f"A task named {name!r} is already registered "
                       f"({_REGISTRY[name].__module__}); pick another name.")
    _REGISTRY[name] = factory
    return factory
  return wrap


def names() -> list[str]:
  return sorted(_REGISTRY)


def create(section: Mapping[str, Any], data_dir: str) -> Task:
  """The task `section['name']` built from the rest of `section` (config.task), its data in
  `section['data_dir']` if given, else in `data_dir`."""
  if not hasattr(section, "keys"):
    raise ValueError(f"config.task must be a section with a name; got {type(section).__name__}.")
  settings = dict(section)
  module = settings.pop("module", None)
  if module is not None and not isinstance(module, str):
    # The type, not the value: a section's repr spans lines, and the error must be one line.
    raise ValueError(f"config.task.module is a {type(module).__name__}; it must be a module "
                     f"name (a string), e.g. 'my_tasks.countdown', or '' for none.")
  if module:  # a task defined outside the package registers itself on import
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ValueError(f"config.task.module={module!r} cannot be imported ({e}); name a "
                       f"module on the Python path that registers the task.") from None
  name = settings.pop("name", None)
  if not isinstance(name, str) or name not in _REGISTRY:
    raise ValueError(f"Unknown task {' '.join(repr(name).split())[:40]} (config.task.name); "
                     f"registered tasks: {names()}.")
  # Where the task keeps prepared data (a TFDS data dir, local or gs://); "" = the default.
  data_dir = settings.pop("data_dir", "") or data_dir
  return _REGISTRY[name](settings, data_dir)


# ---- shared helpers over examples ----

def first_per_level(examples: Sequence[Example], per_level: int) -> list[Example]:
  """The first `per_level` examples of every level, levels in ascending order."""
  levels = sorted({e.level for e in examples})
  return [e for lv in levels for e in [x for x in examples if x.level == lv][:per_level]]


def spread_over_levels(examples: Sequence[Example], n: int) -> list[Example]:
  """The first `n` examples spread evenly over the levels (ceil(n / levels) each, cut to n)."""
  num_levels = len({e.level for e in examples})
  return first_per_level(examples, -(-n // max(num_levels, 1)))[:n]


def fingerprint(examples: Sequence[Example]) -> str:
  """sha256 of the ordered (question, answer, level) list: proves outputs belong to these examples."""
  h = hashlib.sha256()
  for e in examples:
    h.update(f"{e.question}|{e.answer}|{e.level}\n".encode())
  return h.hexdigest()
