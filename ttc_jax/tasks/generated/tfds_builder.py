"""The TFDS builder every generated task shares (chain arithmetic, countdown).

A `LevelsConfig` fixes the difficulty levels, the examples per level of every split and the
seed; its name is a hash of those values, so different settings are prepared into different
data-dir folders (`<data_dir>/<task>/<config name>/<VERSION>`). A task's builder subclasses
`GeneratedBuilder` with its difficulty class and generator; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from ttc_jax.tasks.base import SPLITS


@dataclasses.dataclass(eq=False)
class LevelsConfig(tfds.core.BuilderConfig):
  """Levels, examples per level of each split, and seed. Build with `create`."""

  levels: tuple[tuple, ...] = ()
  num_per_level: tuple[tuple[str, int], ...] = ()  # ((split, n), ...) in `SPLITS` order
  seed: int = 0

  @classmethod
  def create(cls, levels: Sequence[Any], num_per_level: Mapping[str, int], seed: int,
             difficulty: type) -> LevelsConfig:
    """Validates the settings (each level as a `difficulty` dataclass or the tuple of its
    fields) and names the config by a hash of them."""
    levels = tuple(_as_level(lv, difficulty) for lv in levels)
    if not levels:
      raise ValueError("levels is empty; pass at least one difficulty level.")
    num_per_level = dict(num_per_level)
    if set(num_per_level) != set(SPLITS):
      raise ValueError(f"num_per_level has splits {sorted(num_per_level)}; give a count for "
                       f"exactly {list(SPLITS)}, e.g. dict(train=1000, validation=50, test=100).")
    for split, n in num_per_level.items():
      if int(n) != n or n < 1:
        raise ValueError(f"num_per_level[{split!r}] = {n!r}; it must be a positive integer.")
    counts = tuple((s, int(num_per_level[s])) for s in SPLITS)
    key = json.dumps({"levels": levels, "num_per_level": counts, "seed": int(seed)})
    name = "h" + hashlib.sha256(key.encode()).hexdigest()[:12]
    description = f"levels={list(levels)} num_per_level={dict(counts)} seed={seed}"
    return cls(name=name, description=description, levels=levels, num_per_level=counts,
               seed=int(seed))


def _as_level(level: Any, difficulty: type) -> tuple:
  if not isinstance(level, (difficulty, tuple, list)):
    raise ValueError(f"Level {level!r} must be a {difficulty.__name__} or a tuple of its fields "
                     f"{[f.name for f in dataclasses.fields(difficulty)]}.")
  return dataclasses.astuple(level if isinstance(level, difficulty) else difficulty(*level))


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Generated problems with reference solutions; a subclass sets `difficulty` (the level
  class), `generate(levels, split, n, seed)` and `code_path` (its own file), and
  `stored_answer(problem)` where the integer stored as `answer` is not `problem.answer`."""

  # The version names what the generator writes (the settings name the config): a change
  # to the generator bumps it, so data prepared by older code is never read as today's.
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Validation and test questions are distinct within their split.",
  }
  difficulty: type
  generate: Callable

  @classmethod
  def config(cls, levels: Sequence[Any], num_per_level: Mapping[str, int],
             seed: int = 0) -> LevelsConfig:
    """The builder config of these settings (validated; named by their hash)."""
    return LevelsConfig.create(levels, num_per_level, seed, cls.difficulty)

  @staticmethod
  def stored_answer(problem: Any) -> int:
    return int(problem.answer)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=type(self).__doc__,
        features=tfds.features.FeaturesDict({
            "question": tfds.features.Text(),
            "prompt": tfds.features.Text(),
            "solution": tfds.features.Text(),
            "answer": tfds.features.Scalar(dtype=np.int64),
            "level": tfds.features.Scalar(dtype=np.int32),
        }),
        # Keep generation order (level-major), so a split reads back in generation order.
        disable_shuffling=True,
        citation="Snell et al. 2024, Scaling LLM Test-Time Compute Optimally.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the data is generated.
    return {split: self._generate_examples(split) for split, _ in self.builder_config.num_per_level}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    cfg = self.builder_config
    levels = [self.difficulty(*lv) for lv in cfg.levels]
    n = dict(cfg.num_per_level)[split]
    for i, p in enumerate(type(self).generate(levels, split, n, cfg.seed)):
      yield i, {"question": p.question, "prompt": p.prompt, "solution": p.solution,
                "answer": self.stored_answer(p), "level": p.level}
