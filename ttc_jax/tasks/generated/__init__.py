"""What the tasks generated in code share (chain arithmetic, countdown; docs/design.md, "Task").

A generated task draws its problems from a seeded generator per difficulty level, writes them
once through a TFDS builder (`tfds_builder.py`) and reads them back through a seqio task
(`seqio_tasks.py`). This module holds the parts that import no TensorFlow: the level-major,
split-disjoint generation, the `config.task` checks, and `GeneratedTask`, whose `examples`
reads a split through seqio. A task adds its problems, answers and checkers.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from ttc_jax.io.configs import short_repr
from ttc_jax.tasks import base

SETTINGS = ("levels", "num_per_level", "seed")


class Problem(Protocol):
  question: str
  prompt: str
  solution: str
  level: int


def generate(make: Callable[[np.random.Generator, Any, int], Problem], levels: Sequence[Any],
             split: str, num_per_level: int, seed: int = 0) -> list[Problem]:
  """`num_per_level` problems `make(rng, difficulty, level)` per level, levels 1-based in order.

  Deterministic: the same (seed, split, level, index) gives the same problem. Splits draw from
  disjoint seed streams, and a question belongs to train iff `in_train(question, seed)`, so
  evaluation never sees a training question. Validation and test questions are distinct
  within their split (a question identifies its example, and the allocator aligns results by
  it); a level with too few of them for `num_per_level` is a ValueError naming it. Training
  questions may repeat (they are LM training rows).
  """
  if split not in base.SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {base.SPLITS}.")
  out, seen = [], set()
  for level, difficulty in enumerate(levels, start=1):
    rng = np.random.default_rng([seed, base.SPLITS.index(split), level])
    n = misses = 0
    while n < num_per_level:
      p = make(rng, difficulty, level)
      if (split == "train") != in_train(p.question, seed) or (
          split != "train" and p.question in seen):
        misses += 1
        if misses > _MAX_MISSES:
          raise ValueError(f"Level {level} ({short_repr(difficulty)}) yields fewer than "
                           f"num_per_level.{split}={num_per_level} distinct {split} questions "
                           f"(found {n}); ask for fewer or make the level larger.")
        continue
      seen.add(p.question)
      out.append(p)
      n, misses = n + 1, 0
  return out


_MAX_MISSES = 10_000  # draws in a row without a new question of the split before giving up


def in_train(question: str, seed: int) -> bool:
  """Whether a question belongs to train: its hash, salted by the seed, is even."""
  h = seed * 1_000_003
  for c in question:
    h = (h * 131 + ord(c)) % 2_147_483_647
  return h & 1 == 0


def check_ints(level: Any, fields: Sequence[str]) -> None:
  """A ValueError unless each of `level`'s `fields` is an int (a bool is not)."""
  for field in fields:
    value = getattr(level, field)
    if isinstance(value, bool) or not isinstance(value, int):
      raise ValueError(f"{field}={short_repr(value)} must be an int.")


def check_settings(task: str, settings: Mapping[str, Any], level_hint: str,
                   level_sizes: tuple[int, int]) -> tuple[list, dict[str, int], int]:
  """`config.task`'s (levels, num_per_level, seed) for a generated task, the shapes checked.

  Each level is a tuple of `level_sizes[0]..level_sizes[1]` values (`level_hint` shows one);
  the task's difficulty class checks the values themselves.
  """
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.task for {task}; valid "
                     f"keys: {['name', *SETTINGS]}.")
  levels, counts = settings.get("levels"), settings.get("num_per_level")
  lo, hi = level_sizes
  if not isinstance(levels, (list, tuple)) or not levels or not all(
      isinstance(lv, (list, tuple)) and lo <= len(lv) <= hi for lv in levels):
    raise ValueError(f"config.task.levels={short_repr(levels)} must be a non-empty tuple of "
                     f"levels, e.g. {level_hint}.")
  if not hasattr(counts, "keys") or set(counts.keys()) != set(base.SPLITS) or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in dict(counts).values()):
    raise ValueError(f"config.task.num_per_level must give a positive int for exactly "
                     f"{list(base.SPLITS)}, e.g. dict(train=1000, validation=50, test=100).")
  seed = settings.get("seed", 0)
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ValueError(f"config.task.seed={short_repr(seed)} must be an int.")
  return list(levels), dict(counts), seed


class GeneratedTask(base.Task):
  """A task whose splits are generated problems prepared into TFDS and read through seqio.

  A subclass gives `difficulty` (its level dataclass), `builder()` (its
  `tfds_builder.GeneratedBuilder` subclass, imported on first use so TensorFlow loads only
  with the data), and `answer` where it is not the stored integer.
  """

  difficulty: type
  builder: Callable[[], type]

  def __init__(self, levels: Sequence[Any], num_per_level: Mapping[str, int],
               seed: int = 0, data_dir: str = "data"):
    self.levels = [lv if isinstance(lv, self.difficulty) else self.difficulty(*lv)
                   for lv in levels]
    self.num_per_level = dict(num_per_level)
    self.seed = int(seed)
    self.data_dir = data_dir
    self._splits: dict[str, list[base.Example]] = {}

  def answer(self, question: str, stored: int) -> base.Answer:
    """The example's answer from its question and the stored integer answer."""
    del question
    return stored

  def examples(self, split: str) -> list[base.Example]:
    if split not in self._splits:
      from ttc_jax.tasks.generated import seqio_tasks  # pylint: disable=g-import-not-at-top
      task = seqio_tasks.register_task(self.name, self.builder(), self.alphabet,
                                       self.data_dir, self.levels, self.num_per_level, self.seed)
      arrays = seqio_tasks.load_split(task, split)
      self._splits[split] = [
          base.Example(question=str(q), prompt=str(p), solution=str(s),
                       answer=self.answer(str(q), int(a)), level=int(lv))
          for q, p, s, a, lv in zip(arrays["question"], arrays["prompt"], arrays["solution"],
                                    arrays["answer"], arrays["level"])]
    return self._splits[split]
