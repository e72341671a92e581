"""Tokenizers: step ids and step ends (the one step rule), on a char and a BPE-like tokenizer.

`tokenizers.base.Tokenizer.step_ends` is the generic, text-based rule;
`CharTokenizer.step_ends` overrides it with an id rule for one-character
delimiters, which must give exactly the same result (and the one of the removed
`reward.step_ends_1d`). `find_step_ends` (was `reward.find_step_ends`) applies it
to token rows.
"""

import dataclasses

import numpy as np
import pytest

from ttc_jax.tasks.chain_arithmetic import problems
from ttc_jax.tokenizers import base
from ttc_jax.tokenizers.char import BOS, EOS, PAD, CharTokenizer

TOK = CharTokenizer(problems.ALPHABET)
NL = TOK.encode("\n")[0]


def _generic(tok, ids, delimiter):
  """The text rule of `tokenizers.base.Tokenizer`, bypassing a subclass's override."""
  return base.Tokenizer.step_ends(tok, ids, delimiter)


def _removed_step_ends_1d(gen, step_id, eos_id, pad_id=PAD, bos_id=BOS):
  """The id rule of the removed `reward.step_ends_1d`, after the EOS cut of `find_step_ends`."""
  gen = np.asarray(gen)
  eos = np.flatnonzero(gen == eos_id)
  gen = gen[:eos[0] + 1] if len(eos) else gen
  term = (gen == step_id) | (gen == eos_id)
  text = ~term & (gen != pad_id) & (gen != bos_id)
  out, has_text = [], False
  for j in range(len(gen)):
    if text[j]:
      has_text = True
    elif term[j] and has_text and not (j + 1 < len(gen) and term[j + 1]):
      out.append(j)
      has_text = False
  return out


# ---------------------------------------------------------------- find_step_ends (was reward's)


def test_find_step_ends():
  B, S, E, P = BOS, NL, EOS, PAD  # bos, step delimiter, eos, pad; other ids are content
  assert S not in (4, 5, 6, 7)
  tokens = np.array([
      [B, 5, S, 4, 4, S, 6, S, 7, E, P, P],  # prompt ends at 2 (its '\n' is no step end)
      [B, 5, 5, S, 4, S, 6, 6, P, P, P, P],  # truncated: the trailing step has no end
      [B, S, 4, E, 5, S, 6, E, P, P, P, P],  # anything after EOS is ignored
  ])
  got = base.find_step_ends(tokens, TOK, "\n", start=np.array([3, 4, 2]))
  np.testing.assert_array_equal(got, [[5, 7, 9], [5, -1, -1], [3, -1, -1]])
  np.testing.assert_array_equal(base.find_step_ends(tokens[:1], TOK, "\n", start=3, max_steps=4),
                                [[5, 7, 9, -1]])
  with pytest.raises(ValueError, match="max_steps=2"):
    base.find_step_ends(tokens, TOK, "\n", start=3, max_steps=2)
  with pytest.raises(ValueError, match=r"token rows \[B, T\], got shape \(12,\)"):
    base.find_step_ends(tokens[0], TOK, "\n", start=3)


def test_find_step_ends_uses_the_label_rule_for_blank_lines():
  """Same rule as the PRM labels: blank lines join a step; '\\n' then EOS ends at the EOS."""
  B, S, E, P = BOS, NL, EOS, PAD
  tokens = np.array([[B, 7, S, 4, S, S, 5, S, E, P]])
  np.testing.assert_array_equal(base.find_step_ends(tokens, TOK, "\n", start=3), [[5, 8]])
  assert TOK.step_ends(tokens[0, 3:], "\n") == [2, 5]
  assert _generic(TOK, tokens[0, 3:], "\n") == [2, 5]


# ---------------------------------------------------------------- char tokenizer


def test_char_step_ids():
  assert TOK.step_ids("\n") == (NL,)
  assert TOK.step_ids("=") == tuple(TOK.encode("="))
  with pytest.raises(ValueError, match=r"No token of the tokenizer contains the step delimiter "
                     r"'#'"):
    TOK.step_ids("#")
  with pytest.raises(ValueError, match="step delimiter is empty"):
    TOK.step_ends(TOK.encode("1\n"), "")


def test_char_multi_character_delimiter_uses_the_text_rule():
  ids = TOK.encode("1\n\n2\n3\n\n4")  # a lone "\n" is step text
  assert TOK.step_ends(ids, "\n\n") == _generic(TOK, ids, "\n\n") == [2, 7]
  assert TOK.step_ends(ids + [EOS], "\n\n") == [2, 7, 9]  # "4" then EOS is the last step
  assert TOK.step_ends(TOK.encode("1\n\n", eos=True), "\n\n") == [3]  # "\n\n", EOS: at EOS


def _char_rows(rng, delim_id, n):
  """Random rows: text, delimiters (often in runs), PAD, BOS and EOS anywhere, any length."""
  text_ids = [i for i in range(3, TOK.vocab_size) if i != delim_id]
  rows = []
  for _ in range(n):
    row, length = [], rng.integers(0, 25)
    while len(row) < length:
      u = rng.random()
      if u < 0.5:
        row.append(int(rng.choice(text_ids)))
      elif u < 0.82:
        row += [delim_id] * int(rng.integers(1, 4))
      elif u < 0.89:
        row.append(PAD)
      elif u < 0.94:
        row.append(BOS)
      else:
        row.append(EOS)
    rows.append(row)
  return rows


def _coverage(rows, delim_id):
  """How often each tricky case occurs in `rows`."""
  def is_text(i):
    return i >= 3 and i != delim_id
  c = dict(empty=0, delim_run=0, special_mid_text=0, text_after_eos=0, no_terminator=0)
  for row in rows:
    c["empty"] += not row
    c["delim_run"] += any(is_text(a) and b == d == delim_id
                          for a, b, d in zip(row, row[1:], row[2:]))
    c["special_mid_text"] += any(is_text(a) and b in (PAD, BOS) and is_text(d)
                                 for a, b, d in zip(row, row[1:], row[2:]))
    if EOS in row:
      c["text_after_eos"] += any(is_text(i) for i in row[row.index(EOS):])
    else:
      tail = row[max([j for j, i in enumerate(row) if i == delim_id], default=-1) + 1:]
      c["no_terminator"] += any(is_text(i) for i in tail)
  return c


@pytest.mark.parametrize("delimiter", ["\n", "="])
def test_char_id_rule_equals_the_generic_text_rule(delimiter):
  (delim_id,) = TOK.step_ids(delimiter)
  rows = _char_rows(np.random.default_rng(0), delim_id, 3000)
  coverage = _coverage(rows, delim_id)
  assert min(coverage.values()) >= 100, coverage
  num_steps = 0
  for row in rows:
    want = _removed_step_ends_1d(row, delim_id, EOS)
    assert TOK.step_ends(row, delimiter) == want, row
    assert TOK.step_ends(np.asarray(row, np.int32), delimiter) == want, row
    assert _generic(TOK, row, delimiter) == want, row
    num_steps += len(want)
  assert num_steps > len(rows), num_steps  # the rows really have steps


def test_find_step_ends_equals_step_ends_per_row():
  rng = np.random.default_rng(1)
  rows = _char_rows(rng, NL, 200)
  tokens = np.full((len(rows), 40), PAD, np.int32)
  for r, row in enumerate(rows):
    tokens[r, 5:5 + len(row)] = row
  start = rng.integers(0, 6, len(rows))
  got = base.find_step_ends(tokens, TOK, "\n", start)
  for r in range(len(rows)):
    want = [int(start[r]) + j for j in TOK.step_ends(tokens[r, start[r]:], "\n")]
    assert got[r].tolist() == want + [-1] * (got.shape[1] - len(want)), r


# ---------------------------------------------------------------- a BPE-like tokenizer


@dataclasses.dataclass(frozen=True)
class PieceTokenizer(base.Tokenizer):
  """BPE-like: ids 0..2 are PAD, BOS, EOS, then one id per multi-character piece.

  It keeps the generic text-based `step_ends` of `tokenizers.base.Tokenizer`.
  """

  pieces: tuple[str, ...]

  @property
  def pad_id(self):
    return PAD

  @property
  def bos_id(self):
    return BOS

  @property
  def eos_id(self):
    return EOS

  @property
  def vocab_size(self):
    return len(self.pieces) + 3

  def encode(self, text, bos=False, eos=False):
    ids, c = [], 0
    while c < len(text):  # greedy longest match
      best = max((p for p in self.pieces if text.startswith(p, c)), key=len, default=None)
      if best is None:
        raise ValueError(f"Cannot encode {text[c:]!r}")
      ids.append(self.pieces.index(best) + 3)
      c += len(best)
    return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

  def decode(self, ids):
    ids = np.asarray(ids).tolist()
    ids = ids[:ids.index(EOS)] if EOS in ids else ids
    return "".join(self.token_text(i) for i in ids)

  def token_text(self, token_id):
    return self.pieces[token_id - 3] if token_id >= 3 else ""


PIECES = ("ab", "5\n", "\n", "\n\n", "x", "\nx")  # "\nx": a delimiter, then the next step's text
BPE = PieceTokenizer(PIECES)


def _ids(*tokens):
  """Ids of pieces (strings) and special ids (ints)."""
  return [t if isinstance(t, int) else PIECES.index(t) + 3 for t in tokens]


def test_bpe_step_ids_are_the_tokens_holding_the_whole_delimiter():
  assert BPE.step_ids("\n") == tuple(_ids("5\n", "\n", "\n\n", "\nx"))
  assert BPE.step_ids("\n\n") == tuple(_ids("\n\n"))  # two "\n" tokens never stop decoding
  assert BPE.encode("ab5\n\n\nx", eos=True) == _ids("ab", "5\n", "\n\n", "x", EOS)
  assert BPE.decode(_ids(BOS, "ab", "\nx", EOS, "x")) == "ab\nx"


@pytest.mark.parametrize("tokens,want", [
    (("ab", "5\n", "x", "\n"), [1, 3]),  # the delimiter merged with step text ends the step
    (("ab", "\n\n", "x", "5\n", EOS), [1, 4]),  # a merged blank line joins; "\n" then EOS: EOS
    (("5\n", "\n", "\n\n", "ab", "5\n"), [2, 4]),  # a run of delimiters over three tokens
    (("\n", "ab", "x"), []),  # no text before the first delimiter, no terminator at the end
    (("ab", "\nx", "5\n"), [1, 2]),  # a delimiter, then the next step's text, in one token
    (("ab", "5\n", "\nx", "\n"), [1, 3]),  # a blank line sharing a token with the next step
    (("ab", EOS, "x", "\n"), [1]),  # text ends at EOS; after EOS nothing counts
    ((BOS, "ab", PAD, "5\n", PAD, "\n"), [3]),  # PAD/BOS are not text (and break a run)
    (("x", "\n\n", EOS), [2]),
])
def test_bpe_newline_delimiter(tokens, want):
  ids = _ids(*tokens)
  assert BPE.step_ends(ids, "\n") == want
  assert BPE.step_ends(np.asarray(ids), "\n") == want


@pytest.mark.parametrize("tokens,want", [
    (("ab", "\n", "\n", "x", "\n\n", EOS), [2, 5]),  # the delimiter spans two "\n" tokens
    (("ab", "\n", "x", "\n\n"), [3]),  # a lone "\n" is step text
    (("ab", "5\n", "\n", "x"), [2]),  # "5\n" + "\n" make the delimiter; "x" is unterminated
    (("ab", "\n\n", "\n\n", "x", "\n\n"), [2, 4]),  # a merged blank line joins the step
    (("ab", "\n\n", "\n\n", EOS), [3]),
    (("ab", "\n", "\n", EOS), [3]),  # the last line, its (split) delimiter, EOS: at the EOS
    (("ab", "\n\n", "\n", EOS), [1, 3]),  # a lone "\n" after it is text: a step ending at EOS
])
def test_bpe_delimiter_split_across_tokens(tokens, want):
  assert BPE.step_ends(_ids(*tokens), "\n\n") == want


@pytest.mark.parametrize("tokens,want", [
    # Same text as ("ab", "\n\n", "\n\n", EOS) -> [3]: the blank line joins, the step ends at EOS.
    (("ab", "\n", "\n", "\n", "\n", EOS), [5]),
    (("ab", "\n\n", "\n", "\n", EOS), [4]),
    # Same text as ("ab", "\n\n", "\n\n", "x", "\n\n") -> [2, 4].
    (("ab", "\n", "\n", "\n", "\n", "x", "\n\n"), [4, 6]),
])
def test_bpe_blank_line_split_across_tokens_joins_the_step(tokens, want):
  assert BPE.step_ends(_ids(*tokens), "\n\n") == want


def test_char_blank_line_joins_a_multi_character_delimiter_step():
  # Every delimiter of two characters spans two char tokens: "3\n\n\n\n" ends at index 9.
  assert TOK.step_ends(TOK.encode("1\n\n2\n3\n\n\n\n4"), "\n\n") == [2, 9]
  assert TOK.step_ends(TOK.encode("1\n\n\n\n", eos=True), "\n\n") == [5]  # at the EOS


@pytest.mark.parametrize("tokens,delimiter,want", [
    # "ab" ends in "\nx" whatever follows "x": ("ab", "\nx", "5\n") -> [1, 2] already.
    (("ab", "\nx", EOS), "\n", [1, 2]),
    (("ab", "\nx", "\n"), "\n", [1, 2]),
    (("ab", "\nx", "\n\n"), "\n", [1, 2]),
    # "ab\n\n" ends in the "\n\n" token, whose second "\n" is the next step's text.
    (("ab", "\n", "\n\n", EOS), "\n\n", [2, 3]),
])
def test_bpe_token_with_text_after_its_delimiter_ends_the_step(tokens, delimiter, want):
  assert BPE.step_ends(_ids(*tokens), delimiter) == want


def _bpe_rows(rng, ids, n, specials):
  rows = []
  for _ in range(n):
    length = rng.integers(0, 17)
    rows.append([int(rng.choice(specials)) if rng.random() < 0.15 else int(rng.choice(ids))
                 for _ in range(length)])
  return rows


def test_bpe_merged_delimiter_equals_the_char_rule_on_its_characters():
  """With "\\n" inside merged tokens, each step ends at the token holding its char-level end."""
  pieces = ("ab", "5\n", "\n", "\n\n", "x")  # no token has text after a delimiter
  bpe, char = PieceTokenizer(pieces), CharTokenizer("ab5x\n")
  rows = _bpe_rows(np.random.default_rng(2), range(3, 3 + len(pieces)), 3000, [PAD, BOS, EOS])
  merged = 0
  for row in rows:
    chars, owner = [], []
    for j, i in enumerate(row):
      piece = [i] if i < 3 else char.encode(bpe.token_text(i))
      chars += piece
      owner += [j] * len(piece)
    want = [owner[c] for c in char.step_ends(chars, "\n")]
    assert bpe.step_ends(row, "\n") == want, [bpe.token_text(i) or i for i in row]
    merged += any(bpe.token_text(i) in ("5\n", "\n\n") for i in row)
  assert merged > 1000  # most rows have a delimiter merged into a token


def _documented_rule(tok, ids, delimiter):
  """The step rule of `tokenizers.base`'s docstring on characters, mapped back to tokens.

  Delimiters are found left to right in the text of `ids` (up to EOS); every
  other character is step text. A step is text up to the end of a delimiter,
  or up to EOS; the delimiters right after it (blank lines) join it, unless
  the token ending one also holds text after it (that text starts the next
  step, so the blank line cannot join without it). The step ends at the token
  holding its last delimiter character, or at the EOS when only its delimiters
  lie between its text and the EOS. A trailing step with no terminator is not
  counted. No PAD or BOS in `ids`.
  """
  ids = list(ids)
  ids = ids[:ids.index(tok.eos_id) + 1] if tok.eos_id in ids else ids
  eos = len(ids) - 1 if ids and ids[-1] == tok.eos_id else None
  text, owner = "", []
  for j, i in enumerate(ids):
    text += tok.token_text(i)
    owner += [j] * len(tok.token_text(i))
  in_delim, c = [False] * len(text), text.find(delimiter)
  while c >= 0:
    in_delim[c:c + len(delimiter)] = [True] * len(delimiter)
    c = text.find(delimiter, c + len(delimiter))

  def text_after(e):  # the token of char e - 1 has step text from char e on
    return any(owner[k] == owner[e - 1] and not in_delim[k] for k in range(e, len(text)))

  out, has_text, c = [], False, 0
  while c < len(text):
    if in_delim[c]:
      e = c + len(delimiter)
      while e < len(text) and in_delim[e] and not text_after(e + len(delimiter)):
        e += len(delimiter)
      if has_text:
        out.append(eos if e == len(text) and eos is not None else owner[e - 1])
        has_text = False
      c = e
    else:
      has_text, c = True, c + 1
  if has_text and eos is not None:
    out.append(eos)
  return out


def test_documented_rule_reference():
  """The reference above: the char tokenizer's rule on one-character delimiters, the hand cases."""
  rows = _bpe_rows(np.random.default_rng(3), [NL] + TOK.encode("12A"), 3000, [EOS])
  for row in rows:
    assert _documented_rule(TOK, row, "\n") == TOK.step_ends(row, "\n"), row
  cases = [
      (("ab", "5\n", "\nx", "\n"), "\n", [1, 3]), (("ab", "\nx", EOS), "\n", [1, 2]),
      (("ab", "\n\n", "x", "5\n", EOS), "\n", [1, 4]), (("ab", "\n", "\n\n", EOS), "\n\n", [2, 3]),
      (("ab", "\n", "\n", "\n", "\n", EOS), "\n\n", [5]), (("ab", "\n", "x", "\n\n"), "\n\n", [3]),
      (("ab", "\n", "\n", "\n", "\n", "x", "\n\n"), "\n\n", [4, 6]),
  ]
  for tokens, delimiter, want in cases:
    assert _documented_rule(BPE, _ids(*tokens), delimiter) == want, tokens


@pytest.mark.parametrize("delimiter,pieces", [
    ("\n", ("ab", "5\n", "\n", "\n\n", "x")),
    ("\n", PIECES),
    ("\n\n", ("ab", "5\n", "\n", "\n\n", "x")),
])
def test_bpe_random_rows_follow_the_documented_rule(delimiter, pieces):
  bpe = PieceTokenizer(pieces)
  rows = _bpe_rows(np.random.default_rng(4), range(3, 3 + len(pieces)), 3000, [EOS])
  bad = [row for row in rows
         if bpe.step_ends(row, delimiter) != _documented_rule(bpe, row, delimiter)]
  assert not bad, [([bpe.token_text(i) or i for i in row], bpe.step_ends(row, delimiter),
                    _documented_rule(bpe, row, delimiter)) for row in bad[:5]]
