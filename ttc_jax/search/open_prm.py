"""Open PRMs (Math-Shepherd, Qwen2.5-Math-PRM, RLHFlow) behind the `Verifier` interface.

The scoring is `models/open_prm.py`'s (formats, readouts, incremental scoring);
this module adds what search needs on the host: the PRM's own prompt for each
policy prompt (a table built at construction from the questions) and the hooks
`search_prompts` / `score_rows` that give tree search and best-of-N the PRM's rows.

  verifier = open_prm.from_checkpoint("/ckpt/Qwen2.5-Math-PRM-7B", "qwen_prm", tokenizer,
                                      prompts, questions, param_dtype="bfloat16")
  result = base.get("beam")(prompts, policy, verifier, budget=16, config=cfg, rng=key)

The PRM must share the policy's vocabulary (Qwen2.5 policy + Qwen2.5-Math-PRM,
Llama 3 + RLHFlow, Mistral + Math-Shepherd): the checkpoint's tokenizer (when it
ships one) must equal the policy's, or construction raises ValueError.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from ttc_jax.models import open_prm, reward
from ttc_jax.models.convert import common
from ttc_jax.search import base
from ttc_jax.tokenizers.base import Tokenizer

ROW_MULTIPLE = 64  # PRM rows are padded to a multiple of this (few compiled widths)


def _round_up(x: int, m: int = ROW_MULTIPLE) -> int:
  return max(m, -(-int(x) // m) * m)


@dataclasses.dataclass(frozen=True, eq=False)
class OpenVerifier(base.Verifier):
  """An open PRM: `graphdef` the trunk's, `state` its params (`{'trunk'[, 'head']}`).

  Attributes:
    spec: the format in the policy's ids (static under jit).
    prefixes: policy prompt ids -> the PRM's prompt ids for that question.
    pad_id: the id padding PRM rows (never read: masked by position).
    fmt, tokenizer, chat_tokenizer: the format, the policy's tokenizer and the one whose
      chat template renders the PRM prompts (`with_questions` adds prompts with them).
  """

  spec: open_prm.Spec | None = None
  prefixes: Mapping[tuple[int, ...], tuple[int, ...]] = dataclasses.field(default_factory=dict)
  pad_id: int = 0
  fmt: open_prm.PRMFormat | None = None
  tokenizer: Tokenizer | None = None
  chat_tokenizer: Any = None

  def prefix(self, prompt: Sequence[int]) -> tuple[int, ...]:
    key = tuple(int(i) for i in prompt)
    if key not in self.prefixes:
      raise ValueError(f"The open PRM has no prompt for a policy prompt of {len(key)} tokens "
                       f"(ids {key[:8]}...); build it with that prompt's question "
                       f"(from_checkpoint(..., prompts, questions) or with_questions).")
    return self.prefixes[key]

  def with_questions(self, prompts: Sequence[Sequence[int]],
                     questions: Sequence[str]) -> "OpenVerifier":
    """This verifier with PRM prompts for more `(policy prompt, question)` pairs."""
    table = dict(self.prefixes)
    table.update(prefix_table(self.fmt, self.tokenizer, prompts, questions,
                              self.chat_tokenizer))
    return dataclasses.replace(self, prefixes=table)

  # ---- the three methods search calls ----

  def step_scores(self, tokens: jax.Array, step_ends: jax.Array) -> jax.Array:
    """Full pass over `score_rows` rows: probabilities `[B, S]` at their scored positions."""
    return open_prm.step_scores(self.graphdef, self.state, self.spec, tokens, step_ends)

  def prefill(self, tokens: jax.Array, lengths: jax.Array, max_len: int) -> reward.ScoreState:
    return open_prm.prefill(self.graphdef, self.state, self.spec, tokens, lengths, max_len)

  def extend(self, score_state: reward.ScoreState, new_tokens: jax.Array,
             new_lengths: jax.Array) -> tuple[reward.ScoreState, jax.Array]:
    return open_prm.extend(self.graphdef, self.state, self.spec, score_state, new_tokens,
                           new_lengths)

  # ---- host hooks ----

  def search_prompts(self, prompts, tokens, lengths, max_len, max_step_tokens, max_steps):
    """The PRM's prompts, and slots for the longest solution plus `spec.overhead` per step."""
    rows = [self.prefix(p) for p in prompts]
    vlens = np.array([len(r) for r in rows], np.int32)
    vtoks = np.full((len(rows), _round_up(vlens.max())), self.pad_id, np.int32)
    for i, r in enumerate(rows):
      vtoks[i, :len(r)] = r
    gen = max_len - int(np.min(lengths))
    slots = (int(vtoks.shape[1]) + gen + min(max_steps, gen) * self.spec.overhead
             + max_step_tokens + self.spec.overhead)
    return vtoks, vlens, _round_up(slots)

  def score_rows(self, rows, ends, prompt_len, lengths):
    """The PRM's rows (`open_prm.format_rows`), its scored positions and real tokens."""
    rows = np.asarray(rows)
    prefixes = [self.prefix(r[:p]) for r, p in zip(rows, np.asarray(prompt_len))]
    return open_prm.format_rows(self.spec, prefixes, rows, ends, prompt_len, self.pad_id,
                                ROW_MULTIPLE)


def prefix_table(fmt: str | open_prm.PRMFormat, tokenizer: Tokenizer,
                 prompts: Sequence[Sequence[int]], questions: Sequence[str],
                 chat_tokenizer=None) -> dict[tuple[int, ...], tuple[int, ...]]:
  """Policy prompt ids -> the PRM's prompt ids of the same question."""
  if len(prompts) != len(questions):
    raise ValueError(f"{len(prompts)} prompts but {len(questions)} questions; pass one "
                     f"question per prompt.")
  return {tuple(int(i) for i in p): tuple(open_prm.prefix_ids(fmt, tokenizer, q, chat_tokenizer))
          for p, q in zip(prompts, questions)}


def check_vocab(path: str | os.PathLike, vocab_size: int, tokenizer: Tokenizer):
  """The checkpoint's tokenizer (an HFTokenizer, or None if it ships none); ValueError unless
  the PRM embeds every policy id with text and its tokenizer gives each of them the same
  token (it may add or rename special tokens, e.g. Qwen2.5-Math-PRM's `<extra_0>`)."""
  texts = [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
  used = max((i for i, t in enumerate(texts) if t), default=-1)
  if used >= vocab_size:
    raise ValueError(f"The policy tokenizer has ids up to {used} but the PRM at {path!r} "
                     f"embeds only {vocab_size}; an open PRM must share the policy's "
                     f"vocabulary (e.g. Qwen2.5 + Qwen2.5-Math-PRM, Llama 3 + RLHFlow, "
                     f"Mistral + Math-Shepherd).")
  if not os.path.exists(os.path.join(os.fspath(path), "tokenizer.json")):
    return None
  from ttc_jax.tokenizers.hf import HFTokenizer  # pylint: disable=g-import-not-at-top
  prm = HFTokenizer.from_dir(path)
  mine = getattr(tokenizer, "backend", None)
  if mine is not None:
    ours = {i: t for t, i in mine.get_vocab(with_added_tokens=True).items()
            if i < len(texts) and texts[i]}  # ids the policy writes text with
    theirs = {i: t for t, i in prm.backend.get_vocab(with_added_tokens=True).items()}
    diff = sorted((i, t, theirs.get(i)) for i, t in ours.items() if theirs.get(i) != t)
  else:
    theirs = [prm.token_text(i) for i in range(prm.vocab_size)]
    n = max(len(texts), len(theirs))
    pad = lambda x: x + [""] * (n - len(x))
    diff = [(i, t) for i, (s, t) in enumerate(zip(pad(texts), pad(theirs))) if s != t]
  if diff:
    raise ValueError(f"The PRM's tokenizer at {path!r} differs from the policy's in {len(diff)} "
                     f"tokens (e.g. {diff[:3]}); an open PRM scores the policy's token ids, so "
                     f"it must share the policy's vocabulary.")
  return prm


def check_checkpoint(path: str | os.PathLike, fmt: str | open_prm.PRMFormat,
                     tokenizer: Tokenizer) -> None:
  """Every check `from_checkpoint` makes, without loading weights (a job makes them before
  any compute): the format, the architecture, the head's tensors, the shared vocabulary."""
  fmt = open_prm.get_format(fmt)
  hf, _ = open_prm.check_checkpoint(path, fmt)
  prm_tok = check_vocab(path, int(hf["vocab_size"]), tokenizer)
  open_prm.spec(fmt, tokenizer, int(hf["vocab_size"]), prm_tok or tokenizer)


def from_checkpoint(path: str | os.PathLike, fmt: str | open_prm.PRMFormat,
                    tokenizer: Tokenizer, prompts: Sequence[Sequence[int]] = (),
                    questions: Sequence[str] = (), aggregation: str = "last",
                    max_len: int | None = None, dtype: str = "float32",
                    param_dtype: str = "float32", mesh=None) -> OpenVerifier:
  """An `OpenVerifier` for the checkpoint directory `path` read with format `fmt`.

  `tokenizer` is the policy's (the PRM must share it); `prompts[i]` (policy prompt
  ids) gets the PRM prompt of `questions[i]`, rendered with the checkpoint's chat
  template when it has one. Formats and checks raise ValueError before loading weights
  where they can.
  """
  fmt = open_prm.get_format(fmt)
  vocab_size = int(common.read_config(os.fspath(path), f"of the {fmt.name} checkpoint")
                   ["vocab_size"])
  prm_tok = check_vocab(path, vocab_size, tokenizer)
  chat = prm_tok if prm_tok is not None and prm_tok.chat_template else None
  own = prm_tok or tokenizer  # the PRM's own tokens (format, prompt) are its tokenizer's
  sp = open_prm.spec(fmt, tokenizer, vocab_size, own)
  table = prefix_table(fmt, own, prompts, questions, chat)
  _, graphdef, params = open_prm.load(path, fmt, max_len, dtype, param_dtype, mesh)
  return OpenVerifier(graphdef=graphdef, state=params, aggregation=aggregation, spec=sp,
                      prefixes=table, pad_id=int(tokenizer.pad_id), fmt=fmt,
                      tokenizer=own, chat_tokenizer=chat)
