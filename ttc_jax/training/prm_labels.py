"""Monte-Carlo rollout soft labels for PRM training (paper §5.1, Appendix D).

Per training question we sample `num_solutions` solutions from the base LM
(16 in the paper, temperature 1, stop at EOS) and split each into steps, one per
line. For every step we roll out `num_rollouts` continuations (16 in the paper,
temperature 1) from the prefix `prompt + steps[:i+1]`; the step's soft label is
the fraction of rollouts whose final answer is correct. The final step needs no
rollouts: its prefix is the whole solution, so its label is the solution's own
correctness.

Rollouts are batched across many questions: all prefixes of a shard go to the
sampler as prompts with `num_samples=num_rollouts`, so each prefix is prefilled
once and its KV cache broadcast to its rollouts. Prefix batches are padded to a
fixed size (with copies of a real prefix, which stop like real rows) so a run
compiles a handful of shapes, not one per batch.

Questions are processed in shards of `shard_size`; each finished shard is
written atomically to `<out_dir>/shard-NNNNN.npz`. Randomness is a pure function
of `(seed, shard index)`, so a killed run resumed later writes exactly the
shards an uninterrupted run would have (on the same devices and mesh: the mesh's
`data` size sets the batch padding and so the random draws). `manifest.json`
records the job so a resumed run can prove it is the same one; it cannot see
the model, so resume with the same checkpoint.

Steps follow the one rule of `tokenizers.base` for the task's delimiter: a
finished solution's last step ends at its EOS token; a truncated solution (no
EOS within `max_len`) keeps only its complete steps, and all of them get
rollouts.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from ttc_jax import stats
from ttc_jax.io import shards
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling.sampler import Sampler, pad_with_copies
from ttc_jax.tasks.base import Example, Task, fingerprint
from ttc_jax.tokenizers.base import Tokenizer

TEMPERATURE = 1.0  # paper §5.1: solutions and rollouts are sampled at temperature 1.
FORMAT_VERSION = 1
ARRAYS = {  # name -> dtype of every shard array
    "tokens": np.int32, "prompt_len": np.int32, "step_ends": np.int32,
    "labels": np.float32, "num_steps": np.int32, "correct": np.bool_,
    "question_index": np.int32,
}


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def generate_labels(sampler: Sampler, params: Any, problems: list[Example], task: Task,
                    tokenizer: Tokenizer, out_dir: str | os.PathLike, *,
                    num_solutions: int = 16, num_rollouts: int = 16, shard_size: int = 8,
                    max_len: int, seed: int = 0, prefixes_per_batch: int = 64,
                    mesh: Mesh | None = None, progress: bool = True) -> dict[str, Any]:
  """Writes MC soft PRM labels for `problems` into `out_dir` (paper §5.1); resumable.

  Args:
    sampler, params: the base LM (with a `mesh`, params already placed on it).
    problems: training questions; their order defines `question_index`.
    task: grades answers and names the step delimiter.
    tokenizer: the tokenizer the LM was trained with (prompts are BOS + prompt).
    out_dir: where `manifest.json` and `shard-NNNNN.npz` go. Complete shards are
      skipped, so rerunning after a kill finishes the job.
    num_solutions, num_rollouts: per question / per step (16 and 16 in the paper).
    shard_size: questions per shard (the unit of resumption and of the solution batch).
    max_len: total tokens (prompt + solution, and prefix + rollout) per sequence.
    seed: labels are a pure function of (seed, shard index).
    prefixes_per_batch: prefixes per rollout call (a power of two); each call
      decodes `prefixes_per_batch * num_rollouts` rows.
    mesh: optional `('data', 'model')` mesh; rows shard over `data`.
    progress: show a tqdm bar over shards.

  Returns:
    Stats over all shards: num_questions, num_solutions, num_steps,
    fraction_correct, mean_label; plus this call's shards_written, shards_skipped,
    rollouts, seconds and rollouts_per_s.
  """
  _check_args(sampler, problems, task, tokenizer, num_solutions, num_rollouts, shard_size,
              max_len, prefixes_per_batch)
  manifest = {
      "format_version": FORMAT_VERSION, "num_questions": len(problems),
      "num_shards": -(-len(problems) // shard_size), "shard_size": shard_size,
      "num_solutions": num_solutions, "num_rollouts": num_rollouts, "max_len": max_len,
      "seed": seed, "prefixes_per_batch": prefixes_per_batch, "temperature": TEMPERATURE,
      "questions_sha256": fingerprint(problems),
  }
  start, rollouts = time.time(), []

  def make_shard(i: int) -> dict[str, np.ndarray]:
    lo = i * shard_size
    arrays, n_roll = _label_shard(sampler, params, problems[lo:lo + shard_size], lo, task,
                                  tokenizer, jax.random.fold_in(jax.random.key(seed), i),
                                  num_solutions=num_solutions, num_rollouts=num_rollouts,
                                  max_len=max_len, prefixes_per_batch=prefixes_per_batch,
                                  mesh=mesh)
    rollouts.append(n_roll)
    return arrays

  todo = shards.write_missing(out_dir, manifest, "PRM label", make_shard, where="out_dir",
                              progress=progress)
  num_shards, rollouts = manifest["num_shards"], sum(rollouts)
  seconds = time.time() - start
  stats = _stats(out_dir, num_shards)
  stats.update(shards_written=len(todo), shards_skipped=num_shards - len(todo),
               rollouts=rollouts, seconds=round(seconds, 3),
               rollouts_per_s=round(rollouts / seconds, 1) if seconds > 0 else 0.0)
  return stats


labels_complete = shards.complete  # True iff `out_dir` has a manifest and every shard


def load_labels(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """All shards concatenated in question order, each validated (see `ARRAYS`).

  `step_ends` and `labels` are right-padded with -1 to the widest shard.
  Raises ValueError naming the shard when a shard is missing or inconsistent.
  """
  manifest, loaded = shards.load(out_dir, "PRM labels", "generate_labels")
  for i, shard in enumerate(loaded):
    lo = i * manifest["shard_size"]
    n_q = min(manifest["shard_size"], manifest["num_questions"] - lo)
    _validate_shard(shard, os.path.basename(shards.shard_path(out_dir, i)),
                    np.repeat(np.arange(lo, lo + n_q), manifest["num_solutions"]),
                    manifest["max_len"])
  width = max(s["step_ends"].shape[1] for s in loaded)
  out = {}
  for k in ARRAYS:
    parts = [s[k] for s in loaded]
    if k in ("step_ends", "labels"):
      parts = [np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-1) for p in parts]
    out[k] = np.concatenate(parts, axis=0)
  return out


def step_label_auroc(data: dict[str, np.ndarray], problems: list[Example], task: Task,
                     tokenizer: Tokenizer) -> float:
  """AUROC of the MC soft labels for the task's exact per-step checker, over all steps.

  Measures PRM label quality (paper §5.1 uses MC labels in place of human ones):
  a step is positive iff `task.step_correct` accepts it. NaN for a task with no checker.
  """
  scores, truth = [], []
  for r in range(len(data["tokens"])):
    q = int(data["question_index"][r])
    if not 0 <= q < len(problems):
      raise ValueError(f"Row {r} has question_index {q} but only {len(problems)} problems were "
                       "passed; pass the problem list the labels were generated from.")
    n = int(data["num_steps"][r])
    text = tokenizer.decode(data["tokens"][r, int(data["prompt_len"][r]):])
    ok = task.step_correct(problems[q], text)
    if ok is None:
      return float("nan")
    if len(ok) < n:
      raise ValueError(f"Row {r} has {n} labelled steps but its text has only {len(ok)} lines "
                       "(a different tokenizer, or tampered labels?).")
    scores.extend(data["labels"][r, :n].tolist())
    truth.extend(ok[:n])
  return stats.auroc(scores, truth)


# ---------------------------------------------------------------------------
# One shard
# ---------------------------------------------------------------------------


def _label_shard(sampler: Sampler, params: Any, problems: Sequence[Example], first_index: int,
                 task: Task, tokenizer: Tokenizer, key: jax.Array, *,
                 num_solutions: int, num_rollouts: int, max_len: int,
                 prefixes_per_batch: int, mesh: Mesh | None) -> tuple[dict[str, np.ndarray], int]:
  """Samples solutions for one shard of questions and labels every step by rollouts."""
  sol_key, roll_key = jax.random.split(key)
  prompts = [tokenizer.encode(p.prompt, bos=True) for p in problems]
  n = len(prompts) * num_solutions
  state, out = sampler.sample(params, pad_with_copies(prompts, len(prompts), mesh), sol_key,
                              num_samples=num_solutions, max_len=max_len, stop="eos",
                              temperature=TEMPERATURE, mesh=mesh)
  tokens, lengths, finished = mesh_lib.to_host((state.tokens, out.lengths, out.stopped))
  tokens, lengths, finished = tokens[:n].astype(np.int32), lengths[:n], finished[:n]
  prompt_len = np.repeat([len(p) for p in prompts], num_solutions).astype(np.int32)
  qidx = np.repeat(np.arange(len(prompts)), num_solutions)

  ends, correct, labels, jobs = [], np.zeros(n, bool), [], []
  for r in range(n):
    p0, prob = int(prompt_len[r]), problems[qidx[r]]
    gen = tokens[r, p0:p0 + int(lengths[r])]
    e = [p0 + j for j in tokenizer.step_ends(gen, task.step_delimiter)]
    correct[r] = task.grade(tokenizer.decode(gen), prob)
    lab = np.full(len(e), -1.0, np.float32)
    for i, end in enumerate(e):
      if finished[r] and i == len(e) - 1:
        lab[i] = float(correct[r])  # the last prefix is the whole solution: no rollouts
      elif end + 1 >= max_len:  # no room to roll out: the prefix is all there is
        lab[i] = float(task.grade(tokenizer.decode(tokens[r, p0:end + 1]), prob))
      else:
        jobs.append((r, i, tokens[r, :end + 1]))
    ends.append(e)
    labels.append(lab)

  # Rollouts: sort prefixes by length so a batch's rows need similar decode lengths.
  jobs.sort(key=lambda j: len(j[2]))
  for c, lo in enumerate(range(0, len(jobs), prefixes_per_batch)):
    chunk = jobs[lo:lo + prefixes_per_batch]
    _, ro = sampler.sample(params, pad_with_copies([j[2] for j in chunk], prefixes_per_batch, mesh),
                           jax.random.fold_in(roll_key, c), num_samples=num_rollouts,
                           max_len=max_len, stop="eos", temperature=TEMPERATURE, mesh=mesh)
    ro_tok, ro_len = mesh_lib.to_host((ro.tokens, ro.lengths))
    for k, (r, i, prefix) in enumerate(chunk):
      prob, head = problems[qidx[r]], tokenizer.decode(prefix[prompt_len[r]:])
      rows = range(k * num_rollouts, (k + 1) * num_rollouts)  # prompt-major sampler rows
      wins = sum(task.grade(head + tokenizer.decode(ro_tok[j, :ro_len[j]]), prob) for j in rows)
      labels[r][i] = wins / num_rollouts

  width = max([len(e) for e in ends] + [0])
  step_ends = np.full((n, width), -1, np.int32)
  soft = np.full((n, width), -1.0, np.float32)
  for r in range(n):
    step_ends[r, :len(ends[r])] = ends[r]
    soft[r, :len(ends[r])] = labels[r]
  arrays = {"tokens": tokens, "prompt_len": prompt_len, "step_ends": step_ends, "labels": soft,
            "num_steps": np.array([len(e) for e in ends], np.int32), "correct": correct,
            "question_index": (first_index + qidx).astype(np.int32)}
  return arrays, len(jobs) * num_rollouts


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _validate_shard(s: dict[str, np.ndarray], name: str, question_index: np.ndarray,
                    max_len: int) -> None:
  """Raises ValueError naming `name` when a shard disagrees with itself or the manifest.

  `question_index` is what the manifest implies: each question of the shard
  repeated `num_solutions` times, question-major.
  """
  rows = len(question_index)
  def bad(msg):
    raise ValueError(f"PRM label shard {name} is inconsistent: {msg}. Delete it and rerun "
                     "generate_labels to regenerate it.")
  missing = sorted(set(ARRAYS) - set(s))
  if missing:
    bad(f"missing arrays {missing}")
  for k, dt in ARRAYS.items():
    if s[k].dtype != dt:
      bad(f"{k} has dtype {s[k].dtype}, expected {np.dtype(dt)}")
    want = 2 if k in ("tokens", "step_ends", "labels") else 1
    if s[k].ndim != want:
      bad(f"{k} has shape {s[k].shape}, expected {want} dims")
    if len(s[k]) != rows:
      bad(f"{k} has {len(s[k])} rows but the shard should hold {rows} solutions")
  if s["tokens"].shape[1] != max_len:
    bad(f"tokens are {s['tokens'].shape[1]} wide, the manifest's max_len is {max_len}")
  if s["labels"].shape != s["step_ends"].shape:
    bad(f"labels {s['labels'].shape} and step_ends {s['step_ends'].shape} differ in shape")
  valid = s["step_ends"] >= 0
  counted = valid.sum(axis=1)
  if (counted != s["num_steps"]).any():
    r = int(np.argmax(counted != s["num_steps"]))
    bad(f"row {r} has num_steps={s['num_steps'][r]} but {counted[r]} step_ends")
  if (valid != (np.arange(valid.shape[1]) < s["num_steps"][:, None])).any():
    bad("step_ends padding (-1) is not at the end of every row")
  ends = np.where(valid, s["step_ends"], max_len)
  if valid.any() and ((np.diff(ends, axis=1)[valid[:, 1:]] <= 0).any() or
                      (ends[valid] >= max_len).any() or
                      (s["step_ends"] < s["prompt_len"][:, None])[valid].any()):
    bad("step_ends are not increasing positions inside each solution")
  lab = s["labels"]
  if ((lab[valid] < 0) | (lab[valid] > 1)).any() or (lab[~valid] != -1).any():
    bad("labels must lie in [0, 1] on steps and be -1 on padding")
  if (s["question_index"] != question_index).any():
    bad(f"question_index should be questions {question_index[0]}..{question_index[-1]}, each "
        f"repeated {rows // len(np.unique(question_index))} times, in order")


def _stats(out_dir: str | os.PathLike, num_shards: int) -> dict[str, Any]:
  n = steps = n_correct = 0
  label_sum, questions = 0.0, set()
  for i in range(num_shards):
    f = shards.load_npz(shards.shard_path(out_dir, i))
    lab, ns = f["labels"], f["num_steps"]
    n += len(ns)
    steps += int(ns.sum())
    n_correct += int(f["correct"].sum())
    label_sum += float(lab[lab >= 0].sum())
    questions.update(f["question_index"].tolist())
  return {"num_questions": len(questions), "num_solutions": n, "num_steps": steps,
          "fraction_correct": n_correct / max(n, 1), "mean_label": label_sum / max(steps, 1)}


def _check_args(sampler: Sampler, problems, task: Task, tokenizer: Tokenizer, num_solutions,
                num_rollouts, shard_size, max_len, prefixes_per_batch) -> None:
  if not problems:
    raise ValueError("generate_labels needs at least one problem.")
  for name, v in (("num_solutions", num_solutions), ("num_rollouts", num_rollouts),
                  ("shard_size", shard_size)):
    if v < 1:
      raise ValueError(f"{name} must be >= 1, got {v}.")
  if prefixes_per_batch < 1 or prefixes_per_batch & (prefixes_per_batch - 1):
    raise ValueError(f"prefixes_per_batch must be a power of two (the sampler pads batches to "
                     f"one), got {prefixes_per_batch}.")
  sampler.check_tokenizer(tokenizer, task.step_delimiter)
  if max_len > sampler.context_len:
    raise ValueError(f"max_len={max_len} exceeds the model's context window "
                     f"({sampler.context_len}); lower max_len.")
  lengths = [len(tokenizer.encode(p.prompt, bos=True)) for p in problems]
  longest = int(np.argmax(lengths))
  if lengths[longest] >= max_len:
    raise ValueError(f"Problem {longest} ({problems[longest].question!r}) leaves no room for a "
                     f"solution within max_len={max_len}; raise max_len.")
