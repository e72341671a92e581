"""Chain arithmetic, the embedded stand-in for MATH (paper §5.1), as a `Task`.

`config.task` for it: `name="chain_arithmetic"`, `levels` (one `(num_terms,
digits, ops)` per difficulty level), `num_per_level` (examples per level of each
split) and `seed`. The examples are prepared once into `<data_dir>` by the TFDS
builder (`tfds_builder.py`) and read back through a seqio task (`seqio_tasks.py`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ttc_jax.io.configs import short_repr
from ttc_jax.tasks import base
from ttc_jax.tasks.chain_arithmetic import problems

SETTINGS = ("levels", "num_per_level", "seed")
ALPHABET = problems.ALPHABET


class ChainArithmetic(base.Task):
  """Step-wise chain arithmetic: one step per line, the answer on an `A:` line."""

  name = "chain_arithmetic"
  step_delimiter = problems.STEP_DELIMITER
  alphabet = problems.ALPHABET

  def __init__(self, levels: Sequence[Sequence], num_per_level: Mapping[str, int],
               seed: int = 0, data_dir: str = "data"):
    self.levels = [problems.Difficulty(*lv) for lv in levels]
    self.num_per_level = dict(num_per_level)
    self.seed = int(seed)
    self.data_dir = data_dir
    self._splits: dict[str, list[base.Example]] = {}

  def examples(self, split: str) -> list[base.Example]:
    if split not in self._splits:
      from ttc_jax.tasks.chain_arithmetic import seqio_tasks  # pylint: disable=g-import-not-at-top
      task = seqio_tasks.register_task(self.name, self.data_dir, self.levels,
                                       self.num_per_level, self.seed)
      arrays = seqio_tasks.load_split(task, split)
      self._splits[split] = [
          base.Example(question=str(q), prompt=str(p), solution=str(s), answer=int(a),
                       level=int(lv))
          for q, p, s, a, lv in zip(arrays["question"], arrays["prompt"], arrays["solution"],
                                    arrays["answer"], arrays["level"])]
    return self._splits[split]

  def extract_answer(self, text: str) -> int | None:
    return problems.extract_answer(text)

  def step_correct(self, example: base.Example, text: str) -> list[bool]:
    return problems.step_correct(problems.Problem.from_question(example.question, example.level),
                                 text)


@base.register(ChainArithmetic.name)
def make(settings: dict[str, Any], data_dir: str) -> ChainArithmetic:
  """The task from `config.task` (levels, num_per_level, seed), every value checked."""
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.task for chain_arithmetic; valid "
                     f"keys: {['name', *SETTINGS]}.")
  levels, counts = settings.get("levels"), settings.get("num_per_level")
  if not isinstance(levels, (list, tuple)) or not levels or not all(
      isinstance(lv, (list, tuple)) and 2 <= len(lv) <= 3 for lv in levels):
    raise ValueError(f"config.task.levels={short_repr(levels)} must be a non-empty tuple of "
                     f"(num_terms, digits[, ops]) levels, e.g. ((3, 1, '+-'), (3, 2, '+-')).")
  if not hasattr(counts, "keys") or set(counts.keys()) != set(base.SPLITS) or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in dict(counts).values()):
    raise ValueError(f"config.task.num_per_level must give a positive int for exactly "
                     f"{list(base.SPLITS)}, e.g. dict(train=1000, validation=50, test=100).")
  seed = settings.get("seed", 0)
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ValueError(f"config.task.seed={short_repr(seed)} must be an int.")
  return ChainArithmetic(levels, counts, seed, data_dir)
