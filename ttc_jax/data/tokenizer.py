"""Character-level tokenizer for the chain-arithmetic task.

Ids 0..2 are PAD, BOS, EOS; every other id is one character. The newline
character is the *step delimiter*: a solution is one step per line (paper §5:
the PRM scores each step, so steps must be found by the sampler as it decodes).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
STEP_DELIMITER = "\n"
# Everything the chain-arithmetic task writes, plus a little slack for prompts.
DEFAULT_CHARS = "0123456789+-*=Q:A\n "


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
  """Maps characters to ids and back; hashable so it can be a static jit arg."""

  chars: str = DEFAULT_CHARS

  def __post_init__(self):
    if len(set(self.chars)) != len(self.chars):
      raise ValueError(f"CharTokenizer chars must be unique, got {self.chars!r}")
    if STEP_DELIMITER not in self.chars:
      raise ValueError("CharTokenizer chars must contain the step delimiter '\\n'")

  @property
  def pad_id(self) -> int:
    return PAD

  @property
  def bos_id(self) -> int:
    return BOS

  @property
  def eos_id(self) -> int:
    return EOS

  @property
  def step_id(self) -> int:
    return self.chars.index(STEP_DELIMITER) + 3

  @property
  def vocab_size(self) -> int:
    return len(self.chars) + 3

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    ids = []
    for c in text:
      i = self.chars.find(c)
      if i < 0:
        raise ValueError(
            f"Character {c!r} in {text!r} is not in the tokenizer's alphabet "
            f"{self.chars!r}; pass a CharTokenizer with it added.")
      ids.append(i + 3)
    return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Decodes ids, stopping at the first EOS and skipping PAD/BOS."""
    out = []
    for i in np.asarray(ids).tolist():
      if i == EOS:
        break
      if i >= 3:
        out.append(self.chars[i - 3])
    return "".join(out)
