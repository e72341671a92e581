"""TFDS builder for the chain-arithmetic task (the stand-in for MATH, paper §5.1).

Each `ChainArithmeticConfig` fixes the difficulty levels, the examples per level
of every split and the seed; its name is a hash of those values, so different
settings are prepared into different data-dir folders
(`<data_dir>/chain_arithmetic/<config name>/1.0.0`). Examples come from
`arithmetic.generate` and nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Iterator, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ttc_jax.tasks.chain_arithmetic import problems as arithmetic

Level = tuple[int, int, str]  # (num_terms, digits, ops), as in `arithmetic.Difficulty`.


def _as_level(level: arithmetic.Difficulty | Sequence) -> Level:
  if isinstance(level, arithmetic.Difficulty):
    level = (level.num_terms, level.digits, level.ops)
  if not isinstance(level, (tuple, list)) or not 2 <= len(level) <= 3:
    raise ValueError(f"Level {level!r} must be an arithmetic.Difficulty or a tuple "
                     "(num_terms, digits[, ops]), e.g. (3, 2, '+-').")
  d = arithmetic.Difficulty(*level)  # validates
  return (int(d.num_terms), int(d.digits), str(d.ops))


@dataclasses.dataclass(eq=False)
class ChainArithmeticConfig(tfds.core.BuilderConfig):
  """Levels, examples per level of each split, and seed. Build with `create`."""

  levels: tuple[Level, ...] = ()
  num_per_level: tuple[tuple[str, int], ...] = ()  # ((split, n), ...) in `arithmetic.SPLITS` order
  seed: int = 0

  @classmethod
  def create(cls, levels: Sequence[arithmetic.Difficulty | Sequence],
             num_per_level: Mapping[str, int], seed: int = 0) -> ChainArithmeticConfig:
    """Validates the settings and names the config by a hash of them."""
    levels = tuple(_as_level(lv) for lv in levels)
    if not levels:
      raise ValueError("levels is empty; pass at least one (num_terms, digits, ops) level.")
    num_per_level = dict(num_per_level)
    if set(num_per_level) != set(arithmetic.SPLITS):
      raise ValueError(f"num_per_level has splits {sorted(num_per_level)}; give a count for "
                       f"exactly {list(arithmetic.SPLITS)}, e.g. dict(train=1000, "
                       "validation=50, test=100).")
    for split, n in num_per_level.items():
      if int(n) != n or n < 1:
        raise ValueError(f"num_per_level[{split!r}] = {n!r}; it must be a positive integer.")
    counts = tuple((s, int(num_per_level[s])) for s in arithmetic.SPLITS)
    key = json.dumps({"levels": levels, "num_per_level": counts, "seed": int(seed)})
    name = "h" + hashlib.sha256(key.encode()).hexdigest()[:12]
    description = (f"levels={list(levels)} num_per_level={dict(counts)} seed={seed}")
    return cls(name=name, description=description, levels=levels, num_per_level=counts,
               seed=int(seed))


class ChainArithmetic(tfds.core.GeneratorBasedBuilder):
  """Step-wise chain arithmetic problems with reference solutions (one step per line)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # No predefined configs: each experiment passes its own `ChainArithmeticConfig`.
  # TFDS 4.9.10 finds `code_path` through the optional `importlib_resources`
  # package, which is not installed; the path is known, so set it.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "question": tfds.features.Text(),
            "prompt": tfds.features.Text(),
            "solution": tfds.features.Text(),
            "answer": tfds.features.Scalar(dtype=np.int64),
            "level": tfds.features.Scalar(dtype=np.int32),
        }),
        # Keep generation order (level-major), so a split reads back in the
        # order of `arithmetic.generate`.
        disable_shuffling=True,
        citation="Snell et al. 2024, Scaling LLM Test-Time Compute Optimally.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the data is generated.
    return {split: self._generate_examples(split) for split, _ in self.builder_config.num_per_level}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    cfg = self.builder_config
    levels = [arithmetic.Difficulty(*lv) for lv in cfg.levels]
    n = dict(cfg.num_per_level)[split]
    for i, p in enumerate(arithmetic.generate(levels, split, n, cfg.seed)):
      yield i, {"question": p.question, "prompt": p.prompt, "solution": p.solution,
                "answer": p.answer, "level": p.level}
