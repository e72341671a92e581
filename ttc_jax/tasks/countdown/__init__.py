"""Countdown, the embedded task on which a step can be a dead end (issue 18, item 2), as a `Task`.

`config.task` for it: `name="countdown"`, `levels` (one `(count, max_number)` per difficulty
level: how many numbers, drawn from 1..max_number), `num_per_level` (examples per level of
each split) and `seed`. The examples are prepared once into `<data_dir>` by the TFDS builder
(`tfds_builder.py`) and read back through a seqio task (`generated.GeneratedTask`).

An answer is `(value, sorted numbers used)` (`problems.extract_answer`), so majority voting
compares what the chains reached and from which numbers; the example's answer is
`(target, sorted question numbers)`.
"""

from __future__ import annotations

from typing import Any

from ttc_jax.tasks import base
from ttc_jax.tasks import generated
from ttc_jax.tasks.countdown import problems

ALPHABET = problems.ALPHABET


class Countdown(generated.GeneratedTask):
  """Reach the target from the numbers, one operation per line, the answer on an `A:` line."""

  name = "countdown"
  step_delimiter = problems.STEP_DELIMITER
  alphabet = problems.ALPHABET
  difficulty = problems.Difficulty

  @staticmethod
  def builder() -> type:
    from ttc_jax.tasks.countdown import tfds_builder  # pylint: disable=g-import-not-at-top
    return tfds_builder.Countdown

  def answer(self, question: str, stored: int) -> tuple[int, tuple[int, ...]]:
    return (stored, tuple(sorted(problems.parse_question(question)[0])))

  def extract_answer(self, text: str) -> tuple[int, tuple[int, ...]] | None:
    return problems.extract_answer(text)

  def step_correct(self, example: base.Example, text: str) -> list[bool]:
    return problems.step_correct(example.question, text)


@base.register(Countdown.name)
def make(settings: dict[str, Any], data_dir: str) -> Countdown:
  """The task from `config.task` (levels, num_per_level, seed), every value checked."""
  levels, counts, seed = generated.check_settings(
      Countdown.name, settings, "((3, 9), (4, 19)) as (count, max_number)", (2, 2))
  return Countdown(levels, counts, seed, data_dir)
