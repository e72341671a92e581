"""The `Tokenizer` interface every model, sampler and verifier sees (docs/design.md, "Tokenizer").

A tokenizer maps text to ids and back and knows its special ids (PAD, BOS, EOS).
Beyond that, search and PRMs need *step boundaries* (paper §5: a PRM scores each
step): the task names its step delimiter as a string, and the tokenizer says

  * `step_ids(delimiter)`: the ids that end a step while decoding (the sampler's
    jit stop set): every token whose text contains the whole delimiter, so a
    delimiter merged into a neighbouring token ("5\\n" as one BPE token) stops too;
  * `step_ends(ids, delimiter)`: on the host, the index of each step's last token
    in a generated solution, found on the decoded text, so it stays right when
    the delimiter spans several tokens or shares a token with step text.

The step rule (shared by PRM labels, PRM training, search and scoring): a step
is a stretch of text ending where a delimiter ends, or at EOS; delimiters right
after a step's end (blank lines) join it, so a final answer line followed by its
delimiter and EOS ends at the EOS; a trailing step with no terminator (a
truncated sample) is not counted. Text after EOS is ignored.
"""

from __future__ import annotations

import abc
import functools
from typing import Sequence

import numpy as np


class Tokenizer(abc.ABC):
  """Text <-> ids, special ids and step boundaries; hashable, so a static jit argument."""

  @property
  @abc.abstractmethod
  def pad_id(self) -> int:
    ...

  @property
  @abc.abstractmethod
  def bos_id(self) -> int:
    ...

  @property
  @abc.abstractmethod
  def eos_id(self) -> int:
    ...

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    ...

  @abc.abstractmethod
  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Ids of `text`, with BOS prepended / EOS appended when asked."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of `ids` up to the first EOS, special tokens dropped."""

  @abc.abstractmethod
  def token_text(self, token_id: int) -> str:
    """The text one id stands for in a decoded sequence ('' for special tokens)."""

  # ---- step boundaries (generic; a tokenizer may override them with a faster rule) ----

  def step_ids(self, delimiter: str) -> tuple[int, ...]:
    """Ids whose text contains `delimiter`: decoding stops a step at any of them."""
    return _step_ids(self, delimiter)

  def step_ends(self, ids: Sequence[int] | np.ndarray, delimiter: str) -> list[int]:
    """Index in `ids` (one solution, prompt excluded) of each step's last token."""
    if not delimiter:
      raise ValueError("The step delimiter is empty; a task must name a non-empty one.")
    ids = np.asarray(ids).tolist()
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id) + 1]
    pieces = ["" if i in (self.pad_id, self.bos_id, self.eos_id) else self.token_text(i)
              for i in ids]
    owner = [j for j, piece in enumerate(pieces) for _ in piece]
    text = "".join(pieces)
    in_delim = [False] * len(text)
    last_end = [-1] * len(ids)  # char index just past the last delimiter ending in token j
    start = text.find(delimiter)
    while start >= 0:
      end = start + len(delimiter)
      in_delim[start:end] = [True] * len(delimiter)
      last_end[owner[end - 1]] = end
      start = text.find(delimiter, end)
    before, after = [False] * len(ids), [False] * len(ids)
    for c, j in enumerate(owner):
      if not in_delim[c]:
        if last_end[j] >= 0 and c >= last_end[j]:
          after[j] = True
        else:
          before[j] = True
    term = [last_end[j] >= 0 or i == self.eos_id for j, i in enumerate(ids)]
    # Tokens of delimiter characters only (or EOS) right after a step's end extend it to the
    # last of them that ends a delimiter: blank lines join the step, also when a delimiter
    # spans tokens. PAD/BOS (no text) break the run, as in the char tokenizer's id rule.
    only_delim = [(bool(pieces[j]) or i == self.eos_id) and not before[j] and not after[j]
                  for j, i in enumerate(ids)]
    out, open_step, pending = [], False, -1
    for j in range(len(ids)):
      if pending >= 0:
        if only_delim[j]:
          pending = j if term[j] else pending
          continue
        out.append(pending)
        pending = -1
      open_step = open_step or before[j]
      if term[j] and open_step:
        if after[j]:  # the token also starts the next step: no blank line can join this one
          out.append(j)
        else:
          pending = j
        open_step = False
      open_step = open_step or after[j]
    if pending >= 0:
      out.append(pending)
    return out


@functools.lru_cache(maxsize=64)
def _step_ids(tokenizer: Tokenizer, delimiter: str) -> tuple[int, ...]:
  specials = (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
  out = tuple(i for i in range(tokenizer.vocab_size)
              if i not in specials and delimiter in tokenizer.token_text(i))
  if not out:
    raise ValueError(f"No token of the tokenizer contains the step delimiter {delimiter!r}; "
                     f"use a tokenizer whose vocabulary can write it.")
  return out


def find_step_ends(tokens: np.ndarray, tokenizer: Tokenizer, delimiter: str,
                   start: int | np.ndarray, max_steps: int | None = None) -> np.ndarray:
  """Host-side: indices `[B, S]` of each step's last token in rows `[B, T]`, -1 padded.

  Steps start at `start` (the first token after the prompt; an int or one per
  row), by `tokenizer.step_ends`. `S` is the most steps in any row, or
  `max_steps` for a fixed shape.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise ValueError(f"find_step_ends takes token rows [B, T], got shape {tokens.shape}.")
  b = tokens.shape[0]
  start = np.broadcast_to(np.asarray(start, np.int64), (b,))
  rows = [[int(start[r]) + j for j in tokenizer.step_ends(tokens[r, start[r]:], delimiter)]
          for r in range(b)]
  counts = [len(e) for e in rows]
  s = max(counts, default=0) if max_steps is None else max_steps
  if max(counts, default=0) > s:
    row = int(np.argmax(counts))
    raise ValueError(f"Row {row} has {counts[row]} steps, more than max_steps={max_steps}; "
                     f"raise max_steps.")
  out = np.full((b, s), -1, np.int32)
  for r, e in enumerate(rows):
    out[r, :len(e)] = e
  return out
