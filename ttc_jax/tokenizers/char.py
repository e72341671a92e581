"""Character-level tokenizer: ids 0..2 are PAD, BOS, EOS; every other id is one character.

The embedded tasks write a small alphabet (the chain-arithmetic task's is
`tasks.chain_arithmetic.ALPHABET`); a task's step delimiter of one character is
one token, so `step_ends` uses the id rule directly (same result as the generic
text rule of `tokenizers.base.Tokenizer`, much faster).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ttc_jax.tokenizers import base

PAD, BOS, EOS = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class CharTokenizer(base.Tokenizer):
  """Maps the characters of `chars` to ids 3.. and back; hashable, so a static jit arg."""

  chars: str

  def __post_init__(self):
    if not self.chars or len(set(self.chars)) != len(self.chars):
      raise ValueError(f"CharTokenizer chars must be non-empty and unique, got {self.chars!r}")

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
    ids = np.asarray(ids).tolist()
    if EOS in ids:
      ids = ids[:ids.index(EOS)]
    if any(not 0 <= i < self.vocab_size for i in ids):
      bad = next(i for i in ids if not 0 <= i < self.vocab_size)
      self.token_text(bad)  # raises, naming it
    return "".join([self.chars[i - 3] for i in ids if i >= 3])

  def token_text(self, token_id: int) -> str:
    if not 0 <= token_id < self.vocab_size:
      raise ValueError(f"Token id {token_id} is outside this tokenizer's vocabulary "
                       f"[0, {self.vocab_size}); decode ids of the same CharTokenizer.")
    return self.chars[token_id - 3] if token_id >= 3 else ""

  def step_ends(self, ids: Sequence[int] | np.ndarray, delimiter: str) -> list[int]:
    if len(delimiter) != 1 or delimiter not in self.chars:
      return super().step_ends(ids, delimiter)
    gen = np.asarray(ids)
    eos = np.flatnonzero(gen == EOS)
    gen = gen[:eos[0] + 1] if len(eos) else gen
    term = (gen == self.chars.index(delimiter) + 3) | (gen == EOS)
    text = ~term & (gen != PAD) & (gen != BOS)
    out, has_text = [], False
    for j in range(len(gen)):
      if text[j]:
        has_text = True
      elif term[j] and has_text and not (j + 1 < len(gen) and term[j + 1]):
        out.append(j)
        has_text = False
    return out
