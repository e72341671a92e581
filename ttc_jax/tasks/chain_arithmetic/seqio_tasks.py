"""The seqio task over the chain-arithmetic TFDS data (`generated.seqio_tasks` with the
chain-arithmetic builder and alphabet); importing it does not import TensorFlow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.tasks.generated import seqio_tasks
from ttc_jax.tasks.generated.seqio_tasks import get_task, load_split  # pylint: disable=unused-import  (re-exported)

if TYPE_CHECKING:
  import seqio
  import tensorflow_datasets as tfds


def _builder() -> type:
  from ttc_jax.tasks.chain_arithmetic import tfds_builder  # pylint: disable=g-import-not-at-top
  return tfds_builder.ChainArithmetic


def prepare(data_dir: str, levels: Sequence[arithmetic.Difficulty | Sequence],
            num_per_level: Mapping[str, int], seed: int = 0) -> tfds.core.DatasetBuilder:
  """The chain-arithmetic TFDS data prepared into `data_dir` once (`seqio_tasks.prepare`)."""
  return seqio_tasks.prepare(_builder(), data_dir, levels, num_per_level, seed)


def register_task(name: str, data_dir: str, levels: Sequence[arithmetic.Difficulty | Sequence],
                  num_per_level: Mapping[str, int], seed: int = 0) -> seqio.Task:
  """A seqio task `name` over the prepared data (`seqio_tasks.register_task`)."""
  return seqio_tasks.register_task(name, _builder(), arithmetic.ALPHABET, data_dir, levels,
                                   num_per_level, seed)
