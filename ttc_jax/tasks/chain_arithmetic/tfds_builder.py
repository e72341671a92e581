"""TFDS builder for the chain-arithmetic task (the stand-in for MATH, paper §5.1).

Prepared into `<data_dir>/chain_arithmetic/<config name>/1.1.0`, one config per levels,
counts and seed (`generated.tfds_builder.LevelsConfig`); examples come from
`arithmetic.generate` and nothing is downloaded.
"""

from __future__ import annotations

from etils import epath

from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.tasks.generated import tfds_builder


class ChainArithmetic(tfds_builder.GeneratedBuilder):
  """Step-wise chain arithmetic problems with reference solutions (one step per line)."""

  difficulty = arithmetic.Difficulty
  generate = staticmethod(arithmetic.generate)
  # TFDS 4.9.10 finds `code_path` through the optional `importlib_resources`
  # package, which is not installed; the path is known, so set it.
  code_path = epath.Path(__file__)
