"""TFDS builder for the countdown task (issue 18, item 2).

Prepared into `<data_dir>/countdown/<config name>/1.1.0`, one config per levels, counts and
seed (`generated.tfds_builder.LevelsConfig`); examples come from `problems.generate`, the
stored `answer` is the target, and nothing is downloaded.
"""

from __future__ import annotations

from etils import epath

from ttc_jax.tasks.countdown import problems
from ttc_jax.tasks.generated import tfds_builder


class Countdown(tfds_builder.GeneratedBuilder):
  """Countdown problems (numbers, target) with a reference chain, one operation per line."""

  difficulty = problems.Difficulty
  generate = staticmethod(problems.generate)
  code_path = epath.Path(__file__)  # as in the chain-arithmetic builder

  @staticmethod
  def stored_answer(problem: problems.Problem) -> int:
    return problem.target
