"""Chain arithmetic, the embedded stand-in for MATH (paper §5.1), as a `Task`.

`config.task` for it: `name="chain_arithmetic"`, `levels` (one `(num_terms,
digits, ops)` per difficulty level), `num_per_level` (examples per level of each
split) and `seed`. The examples are prepared once into `<data_dir>` by the TFDS
builder (`tfds_builder.py`) and read back through a seqio task (`generated.GeneratedTask`).
"""

from __future__ import annotations

from typing import Any

from ttc_jax.tasks import base
from ttc_jax.tasks import generated
from ttc_jax.tasks.chain_arithmetic import problems

ALPHABET = problems.ALPHABET


class ChainArithmetic(generated.GeneratedTask):
  """Step-wise chain arithmetic: one step per line, the answer on an `A:` line."""

  name = "chain_arithmetic"
  step_delimiter = problems.STEP_DELIMITER
  alphabet = problems.ALPHABET
  difficulty = problems.Difficulty

  @staticmethod
  def builder() -> type:
    from ttc_jax.tasks.chain_arithmetic import tfds_builder  # pylint: disable=g-import-not-at-top
    return tfds_builder.ChainArithmetic

  def extract_answer(self, text: str) -> int | None:
    return problems.extract_answer(text)

  def step_correct(self, example: base.Example, text: str) -> list[bool]:
    return problems.step_correct(problems.Problem.from_question(example.question, example.level),
                                 text)


@base.register(ChainArithmetic.name)
def make(settings: dict[str, Any], data_dir: str) -> ChainArithmetic:
  """The task from `config.task` (levels, num_per_level, seed), every value checked."""
  levels, counts, seed = generated.check_settings(
      ChainArithmetic.name, settings, "((3, 1, '+-'), (3, 2, '+-')) as (num_terms, digits[, ops])",
      (2, 3))
  return ChainArithmetic(levels, counts, seed, data_dir)
