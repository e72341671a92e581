"""Revision-model training chains (paper §6.1) and the one chain format shared with inference.

A chain is what the revision model reads and writes: up to `MAX_PREVIOUS`
earlier attempts, each followed by the task's attempt separator (`ATTEMPT_SEPARATOR`,
a blank line, by default), then the question and
the new attempt and EOS::

    BOS <attempt 1>\\n\\n <attempt 2>\\n\\n Q:47-12+85\\n <new attempt> EOS

The question comes last, once, so the new attempt follows it as in the base LM's
training however many attempts precede it (a question first, or repeated before
every attempt, left the fine-tuned demo model reading operands from the wrong
place). With no previous attempt the context is exactly the base LM's prompt.

`build_context` is the only place that writes this format: training-data
construction here and sequential revisions at test time (`sequential.py`) both
call it, so the model sees at test time exactly what it was trained on.

Training data (paper §6.1): per training question sample `samples_per_question`
solutions from the base LM (64 in the paper, temperature 1). For every correct
one, put 0-4 incorrect samples of the same question in context (the number drawn
uniformly), the last of them the incorrect sample closest to the correct one by
character edit distance, the others drawn at random. The loss is on the final
(correct) attempt only.

Questions are processed in shards written atomically as
`<out_dir>/shard-NNNNN.npz`, as PRM labels are (`training/prm_labels.py`):
randomness is a pure function of `(seed, shard)` for sampling and of
`(seed, question index)` for pairing, so a killed run resumed later writes
exactly the shards an uninterrupted one would (on the same devices and mesh).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import editdistance
import jax
import numpy as np
from jax.sharding import Mesh

from ttc_jax.io import shards
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling.sampler import Sampler, pad_with_copies
from ttc_jax.tasks.base import Example, Task, fingerprint
from ttc_jax.tokenizers.base import Tokenizer

ATTEMPT_SEPARATOR = "\n\n"  # the default `Task.attempt_separator`: a blank line
MAX_PREVIOUS = 4            # paper §6.1: up to four previous attempts in context
TEMPERATURE = 1.0           # paper §6.1: the 64 samples per question are drawn at temperature 1
FORMAT_VERSION = 1
ARRAYS = {  # name -> dtype of every shard array
    "tokens": np.int32, "target_start": np.int32, "length": np.int32,
    "num_previous": np.int32, "question_index": np.int32, "sample_correct": np.bool_,
}


# ---------------------------------------------------------------------------
# The chain format
# ---------------------------------------------------------------------------


def build_context(tokenizer: Tokenizer, prompt: str, previous: Sequence[str], *,
                  separator: str = ATTEMPT_SEPARATOR,
                  context_len: int, max_new_tokens: int,
                  max_previous: int = MAX_PREVIOUS) -> list[int]:
  """Ids of BOS + the last `max_previous` of `previous` (each + separator) + `prompt`.

  Older attempts beyond `max_previous` are dropped (paper §6.1: each revision is
  conditioned on at most the four previous ones). Raises ValueError when the
  context plus `max_new_tokens` for the new attempt exceeds `context_len`.
  """
  if max_previous < 0:
    raise ValueError(f"max_previous={max_previous} must be >= 0 (the paper uses 4).")
  kept = list(previous)[max(0, len(previous) - max_previous):]
  ids = tokenizer.encode("", bos=True)  # the BOS, where the tokenizer has one
  for text in kept:
    ids += tokenizer.encode(text + separator)
  ids += tokenizer.encode(prompt)
  if len(ids) + max_new_tokens > context_len:
    raise ValueError(
        f"A revision context of {len(ids)} tokens (prompt + {len(kept)} previous attempts) plus "
        f"{max_new_tokens} tokens for the new attempt exceeds the revision model's window of "
        f"{context_len} tokens; raise revisions.context_len or lower max_attempt_tokens or "
        f"max_previous.")
  return ids


def worst_case_context(tokenizer: Tokenizer, prompt_tokens: int, max_attempt_tokens: int,
                       num_previous: int, separator: str = ATTEMPT_SEPARATOR) -> int:
  """Tokens a context can need: prompt (with BOS), `num_previous` full attempts, the new one."""
  per_previous = max_attempt_tokens + len(tokenizer.encode(separator))
  return prompt_tokens + num_previous * per_previous + max_attempt_tokens


def check_window(problems: Sequence[Example], tokenizer: Tokenizer, *, context_len: int,
                 max_attempt_tokens: int, num_previous: int,
                 separator: str = ATTEMPT_SEPARATOR) -> None:
  """Raises ValueError, before any compute, if the longest possible context does not fit."""
  lengths = [len(tokenizer.encode(p.prompt, bos=True)) for p in problems]
  longest = int(np.argmax(lengths))
  need = worst_case_context(tokenizer, lengths[longest], max_attempt_tokens, num_previous,
                            separator)
  if need > context_len:
    raise ValueError(
        f"Revision contexts can reach {need} tokens (question {problems[longest].question!r} + "
        f"{num_previous} previous attempts of up to {max_attempt_tokens} tokens + the new one), "
        f"longer than the revision model's window context_len={context_len}; raise "
        f"revisions.context_len to >= {need} or lower max_attempt_tokens or max_previous.")


# ---------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------


def closest(target: str, candidates: Sequence[str]) -> int:
  """Index of the candidate nearest `target` by character edit distance (first on ties)."""
  if not len(candidates):
    raise ValueError("closest() needs at least one candidate.")
  return int(np.argmin([editdistance.eval(target, c) for c in candidates]))


def pair_attempts(texts: Sequence[str], correct: Sequence[bool], rng: np.random.Generator, *,
                  max_previous: int = MAX_PREVIOUS,
                  max_chains: int = 0) -> list[tuple[list[str], str]]:
  """`(previous incorrect attempts, correct attempt)` for each correct sample (paper §6.1).

  The number of previous attempts is uniform in 0..min(max_previous, #incorrect);
  the last one is the incorrect sample closest to the correct one by edit
  distance, the earlier ones distinct random other incorrect samples.
  `max_chains > 0` keeps that many correct samples (drawn at random) per question.
  """
  if len(texts) != len(correct):
    raise ValueError(f"pair_attempts got {len(texts)} texts but {len(correct)} correctness "
                     "flags; pass one flag per text.")
  wrong = [t for t, ok in zip(texts, correct) if not ok]
  right = [i for i, ok in enumerate(correct) if ok]
  if max_chains and len(right) > max_chains:
    right = sorted(int(i) for i in rng.choice(right, max_chains, replace=False))
  out = []
  for i in right:
    k = int(rng.integers(0, min(max_previous, len(wrong)) + 1))
    previous = []
    if k:
      last = closest(texts[i], wrong)
      others = rng.permutation([j for j in range(len(wrong)) if j != last])[:k - 1]
      previous = [wrong[j] for j in others] + [wrong[last]]
    out.append((previous, texts[i]))
  return out


# ---------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------


def generate_trajectories(sampler: Sampler, params: Any, problems: list[Example], task: Task,
                          tokenizer: Tokenizer, out_dir: str | os.PathLike, *,
                          samples_per_question: int = 64, max_attempt_tokens: int,
                          context_len: int, max_previous: int = MAX_PREVIOUS,
                          max_chains_per_question: int = 0, shard_size: int = 25,
                          seed: int = 0, mesh: Mesh | None = None,
                          progress: bool = True) -> dict[str, Any]:
  """Writes revision training chains for `problems` into `out_dir` (paper §6.1); resumable.

  Args:
    sampler, params: the base LM (with a `mesh`, params already placed on it).
    problems: training questions; their order defines `question_index`.
    task, tokenizer: grade the samples; encode and decode the chains.
    out_dir: where `manifest.json` and `shard-NNNNN.npz` go; complete shards are skipped.
    samples_per_question: base-LM samples per question (64 in the paper).
    max_attempt_tokens: most tokens (EOS included) of one attempt, here and at test time.
    context_len: the revision model's window; every chain is checked against it.
    max_previous: most previous attempts in context (4 in the paper).
    max_chains_per_question: correct samples turned into chains per question (0: all).
    shard_size: questions per shard (the unit of resumption and of the sampling batch).
    seed: chains are a pure function of (seed, shard index, question index).

  Returns:
    Stats over all shards: num_questions, num_samples, fraction_correct, num_chains,
    mean_previous, previous_histogram; plus this call's shards_written,
    shards_skipped and seconds.
  """
  _check_args(sampler, problems, task, tokenizer, samples_per_question, max_attempt_tokens,
              context_len, max_previous, max_chains_per_question, shard_size)
  manifest = {
      "format_version": FORMAT_VERSION, "num_questions": len(problems),
      "num_shards": -(-len(problems) // shard_size), "shard_size": shard_size,
      "samples_per_question": samples_per_question, "max_attempt_tokens": max_attempt_tokens,
      "context_len": context_len, "max_previous": max_previous,
      "max_chains_per_question": max_chains_per_question, "seed": seed,
      "temperature": TEMPERATURE, "separator": task.attempt_separator,
      "questions_sha256": fingerprint(problems),
  }
  start = time.time()

  def make_shard(i: int) -> dict[str, np.ndarray]:
    lo = i * shard_size
    return _shard(sampler, params, problems[lo:lo + shard_size], lo, task, tokenizer,
                  jax.random.fold_in(jax.random.key(seed), i), seed=seed,
                  samples_per_question=samples_per_question,
                  max_attempt_tokens=max_attempt_tokens, context_len=context_len,
                  max_previous=max_previous, max_chains=max_chains_per_question, mesh=mesh)

  todo = shards.write_missing(out_dir, manifest, "revision training-data", make_shard,
                              progress=progress)
  num_shards = manifest["num_shards"]
  stats = _stats(load_trajectories(out_dir), max_previous)
  stats.update(shards_written=len(todo), shards_skipped=num_shards - len(todo),
               seconds=round(time.time() - start, 3))
  return stats


trajectories_complete = shards.complete  # True iff `out_dir` has a manifest and every shard


def load_trajectories(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """All shards concatenated in question order; raises ValueError naming a missing shard."""
  manifest, loaded = shards.load(out_dir, "revision data", "generate_trajectories")
  for i, shard in enumerate(loaded):
    bad = [k for k, dt in ARRAYS.items() if k not in shard or shard[k].dtype != dt]
    if bad or shard["tokens"].shape[1:] != (manifest["context_len"],):
      raise ValueError(f"Revision data shard {shards.shard_path(out_dir, i)} is inconsistent "
                       f"(arrays {bad or ['tokens']}); delete it and rerun "
                       f"generate_trajectories.")
  return {k: np.concatenate([s[k] for s in loaded]) for k in ARRAYS}


def training_arrays(data: dict[str, np.ndarray], multiple: int = 16) -> dict[str, np.ndarray]:
  """`tokens` and `loss_mask` for `trainer.lm_loss`: loss on the final attempt (+ EOS) only.

  Rows are cut to the longest chain rounded up to `multiple` tokens.
  """
  if not len(data["length"]):
    raise ValueError("The revision data holds no chain (no training question had a correct "
                     "sample); use more questions or samples_per_question.")
  width = min(-(-int(data["length"].max()) // multiple) * multiple, data["tokens"].shape[1])
  pos = np.arange(width)[None, :]
  mask = (pos >= data["target_start"][:, None]) & (pos < data["length"][:, None])
  return {"tokens": data["tokens"][:, :width], "loss_mask": mask.astype(np.float32)}


def bucketed_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int, pad_id: int,
                     widths: Sequence[int] = (64, 128, 192)
                     ) -> Callable[[int], dict[str, np.ndarray]]:
  """`batch_fn(step)` whose batches hold chains of one length class, cut to that class's width.

  Chains range from a bare question and answer to four previous attempts and
  more; a class is the chains no longer than one of `widths` (and longer than
  the one before; the last class runs to the full width). Cutting each batch to
  its class's width computes 40% of the columns of full-width batches on the
  demo's chains (55% with two classes split at 128). A class smaller than a batch
  joins the next wider one (the widest joins the one before, which then takes the
  full width). Each epoch (fixed by (seed, epoch)) shuffles the chains, forms full
  batches within each class and shuffles the batches; remainders wait for a later
  epoch. A pure function of the step, so a resumed run sees the same batches.
  """
  if not len(arrays["tokens"]):
    raise ValueError("bucketed_batches got no revision chains.")
  full = arrays["tokens"].shape[1]
  used = (arrays["loss_mask"] > 0) | (arrays["tokens"] != pad_id)
  lengths = np.where(used.any(1), used.shape[1] - np.argmax(used[:, ::-1], axis=1), 0)
  edges = sorted({min(int(w), full) for w in widths if int(w) > 0} | {full})
  which = np.searchsorted(edges, lengths)  # the narrowest class that holds the chain
  classes: list[np.ndarray] = []
  class_widths: list[int] = []
  pending = np.zeros((0,), np.int64)
  for k, width in enumerate(edges):
    pending = np.concatenate([pending, np.flatnonzero(which == k)])
    if len(pending) >= batch_size:
      classes.append(pending)
      class_widths.append(width)
      pending = np.zeros((0,), np.int64)
  if len(pending) or not classes:  # a short tail: widen the last class to hold it
    if classes:
      classes[-1] = np.concatenate([classes[-1], pending])
      class_widths[-1] = full
    else:
      classes, class_widths = [pending], [full]
  counts = [max(1, len(c) // batch_size) for c in classes]

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    epoch, k = divmod(step, sum(counts))
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for cls, (idx, n) in enumerate(zip(classes, counts)):
      idx = np.resize(rng.permutation(idx), max(len(idx), batch_size))  # repeats if too few
      batches += [(cls, idx[j * batch_size:(j + 1) * batch_size]) for j in range(n)]
    cls, idx = batches[rng.permutation(len(batches))[k]]
    w = class_widths[cls]
    return {key: v[idx, :w] if v.ndim == 2 else v[idx] for key, v in arrays.items()}
  return batch_fn


def _shard(sampler: Sampler, params: Any, problems: Sequence[Example], first_index: int,
           task: Task, tokenizer: Tokenizer, key: jax.Array, *, seed: int,
           samples_per_question: int, max_attempt_tokens: int, context_len: int,
           max_previous: int, max_chains: int, mesh: Mesh | None) -> dict[str, np.ndarray]:
  """Samples one shard's solutions and turns its correct ones into chains."""
  s = samples_per_question
  prompts = [tokenizer.encode(p.prompt, bos=True) for p in problems]
  _, out = sampler.sample(params, pad_with_copies(prompts, len(prompts), mesh), key, num_samples=s,
                          max_len=sampler.context_len, max_new_tokens=max_attempt_tokens,
                          stop="eos", temperature=TEMPERATURE, mesh=mesh)
  gen, lengths, finished = mesh_lib.to_host((out.tokens, out.lengths, out.stopped))
  rows, starts, ends, prev_n, qidx, sample_ok = [], [], [], [], [], []
  for q, prob in enumerate(problems):
    sl = range(q * s, (q + 1) * s)
    texts = [tokenizer.decode(gen[r, :lengths[r]]) for r in sl]
    ok = [bool(finished[r]) and task.grade(t, prob) for r, t in zip(sl, texts)]
    sample_ok.extend(ok)
    rng = np.random.default_rng([seed, first_index + q])
    for previous, final in pair_attempts(texts, ok, rng, max_previous=max_previous,
                                         max_chains=max_chains):
      ids = build_context(tokenizer, prob.prompt, previous, separator=task.attempt_separator,
                          context_len=context_len,
                          max_new_tokens=max_attempt_tokens, max_previous=max_previous)
      target = tokenizer.encode(final, eos=True)
      rows.append(ids + target)
      starts.append(len(ids))
      ends.append(len(ids) + len(target))
      prev_n.append(len(previous))
      qidx.append(first_index + q)
  tokens = np.full((len(rows), context_len), tokenizer.pad_id, np.int32)
  for r, ids in enumerate(rows):
    tokens[r, :len(ids)] = ids
  as32 = lambda x: np.asarray(x, np.int32)
  return {"tokens": tokens, "target_start": as32(starts), "length": as32(ends),
          "num_previous": as32(prev_n), "question_index": as32(qidx),
          "sample_correct": np.asarray(sample_ok, np.bool_)}


def _stats(data: dict[str, np.ndarray], max_previous: int) -> dict[str, Any]:
  hist = np.bincount(data["num_previous"], minlength=max_previous + 1)
  n = len(data["length"])
  return {"num_questions": int(len(np.unique(data["question_index"]))) if n else 0,
          "num_samples": int(len(data["sample_correct"])),
          "fraction_correct": round(float(data["sample_correct"].mean()), 4),
          "num_chains": n,
          "mean_previous": round(float(data["num_previous"].mean()), 3) if n else 0.0,
          "previous_histogram": hist.tolist()}


def _check_args(sampler, problems, task, tokenizer, samples_per_question, max_attempt_tokens,
                context_len, max_previous, max_chains, shard_size) -> None:
  if not problems:
    raise ValueError("generate_trajectories needs at least one problem.")
  for name, v, lo in (("samples_per_question", samples_per_question, 1),
                      ("max_attempt_tokens", max_attempt_tokens, 2),
                      ("shard_size", shard_size, 1), ("max_previous", max_previous, 0),
                      ("max_chains_per_question", max_chains, 0)):
    if v < lo:
      raise ValueError(f"{name} must be >= {lo}, got {v}.")
  sampler.check_tokenizer(tokenizer)
  check_window(problems, tokenizer, separator=task.attempt_separator, context_len=context_len,
               max_attempt_tokens=max_attempt_tokens, num_previous=max_previous)
  longest = max(len(tokenizer.encode(p.prompt, bos=True)) for p in problems)
  if longest >= sampler.context_len:
    raise ValueError(f"A {longest}-token prompt leaves the base LM (window "
                     f"{sampler.context_len}) no room to answer; use shorter questions.")
