"""MATH (Hendrycks et al. 2021) and MATH-500 as a `Task` (paper §5.1), graded by math-verify.

`config.task` for it: `name="math"` and

  * `source`: "hendrycks" (the 7.5k/5k MATH files) or "math500" (`test.jsonl`, and
    `train.jsonl` if given, e.g. PRM800K's train problems); default "hendrycks";
  * `manual_dir`: the raw files (layouts in `tfds_builder.py`); needed only until the
    data is prepared into `<data_dir>` once;
  * `levels`: the MATH levels kept, default (1, 2, 3, 4, 5);
  * `num_examples`: optional caps per split, e.g. dict(test=500), spread evenly over the
    levels (`base.spread_over_levels`); a split not named is whole;
  * `validation_fraction`: the share of train problems held out as validation, default 0.05;
  * `grade_timeout_s`: the hard limit per graded answer, default 5 (`grader.py`).

Splits: test is the dataset's test split. Validation is a fixed slice of the train
split: the problems whose sha256(unique_id) falls in the lowest `validation_fraction`
of the hash range (the same problems on every machine and run, and a larger fraction
only adds problems); train is the rest. Every split is ordered by (level, subject,
unique_id); a problem text repeated within a split is kept once (the question identifies
an example). Levels "Level ?" are dropped (`tfds_builder.py`).

Texts: prompt = "Problem: <problem>\\n\\nSolution:\\n\\n", solution = the reference
solution; steps are separated by a blank line ("\\n\\n", PRM800K-style steps), so
revision attempts are separated by `ATTEMPT_SEPARATOR` instead. Answers: the last
`\\boxed{}`/`\\fbox{}` as a canonical string (`answers.py`); equal strings are
correct at once, others go to math-verify in a worker process (`grader.py`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from typing import Any, Sequence

from ttc_jax.io import paths
from ttc_jax.io import tensorflow_setup
from ttc_jax.io.configs import short_repr
from ttc_jax.tasks import base
from ttc_jax.tasks.math import answers
from ttc_jax.tasks.math import grader as grading

SETTINGS = ("source", "manual_dir", "levels", "num_examples", "validation_fraction",
            "grade_timeout_s")
SOURCES = ("hendrycks", "math500")
LEVELS = (1, 2, 3, 4, 5)
STEP_DELIMITER = "\n\n"
ATTEMPT_SEPARATOR = "\n\n---\n\n"
PROMPT_FORMAT = "Problem: {problem}" + STEP_DELIMITER + "Solution:" + STEP_DELIMITER
TFDS_NAME = "competition_math"
TFDS_VERSION = "1.0.0"


def in_validation(unique_id: str, fraction: float) -> bool:
  """Whether a train problem is held out as validation: sha256(unique_id) in the lowest
  `fraction` of the hash range."""
  h = int.from_bytes(hashlib.sha256(unique_id.encode()).digest()[:8], "big")
  return h < fraction * 2.0 ** 64


def format_prompt(problem: str) -> str:
  return PROMPT_FORMAT.format(problem=problem.strip())


def format_solution(solution: str) -> str:
  """The reference solution with its steps (paragraphs) joined by exactly one blank line."""
  paragraphs = [p.strip() for p in solution.replace("\r\n", "\n").split(STEP_DELIMITER)]
  return STEP_DELIMITER.join(p for p in paragraphs if p)


@functools.cache
def _tf():
  tensorflow_setup.quiet_import("tensorflow_datasets")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  return tfds


def prepare(data_dir: str, source: str = "hendrycks", manual_dir: str = ""):
  """Builds the TFDS data of `source` from `manual_dir` into `data_dir` once; returns its builder.

  Idempotent: data already prepared there is reused (`manual_dir` is then not read).
  ValueError when it is not prepared and `manual_dir` does not hold the raw files.
  """
  tfds = _tf()
  from ttc_jax.tasks.math import tfds_builder  # pylint: disable=g-import-not-at-top
  data_dir = os.fspath(paths.as_path(data_dir))
  builder = tfds_builder.CompetitionMath(config=source, data_dir=data_dir)
  if not (builder.data_path / "dataset_info.json").exists():
    manual = tfds_builder.check_manual_dir(source, manual_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS's "Downloading and preparing" banner
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual), try_download_gcs=False))
  return builder


def load_split(builder, split: str) -> list[dict]:
  """The records of a prepared TFDS split ("train" or "test"); [] if the raw data had none."""
  tfds = _tf()
  if split not in builder.info.splits:
    return []
  out = []
  for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    out.append({k: (v.decode() if isinstance(v, bytes) else int(v)) for k, v in ex.items()})
  return out


class Math(base.Task):
  """MATH problems, solutions in blank-line-separated steps, answers in `\\boxed{}`."""

  name = "math"
  step_delimiter = STEP_DELIMITER
  alphabet = None  # a BPE/SentencePiece task, not a character-tokenizer one
  attempt_separator = ATTEMPT_SEPARATOR

  def __init__(self, source: str = "hendrycks", manual_dir: str = "", data_dir: str = "data",
               levels: Sequence[int] = LEVELS, num_examples: dict[str, int] | None = None,
               validation_fraction: float = 0.05, grade_timeout_s: float = 5.0):
    self.source, self.manual_dir, self.data_dir = source, manual_dir, data_dir
    self.levels = tuple(sorted(set(int(lv) for lv in levels)))
    self.num_examples = dict(num_examples or {})
    self.validation_fraction = float(validation_fraction)
    self.grade_timeout_s = float(grade_timeout_s)
    self._splits: dict[str, list[base.Example]] = {}
    self._subjects: dict[str, list[str]] = {}
    self._grader: grading.Grader | None = None

  def __getstate__(self) -> dict:  # the grader's worker processes stay with this process
    return {**self.__dict__, "_grader": None}

  # ---- examples

  def _records(self, split: str) -> list[dict]:
    if split not in base.SPLITS:
      raise ValueError(f"Unknown split {split!r}; choose one of {base.SPLITS}.")
    builder = prepare(self.data_dir, self.source, self.manual_dir)
    records = load_split(builder, "test" if split == "test" else "train")
    if split != "test":
      held_out = split == "validation"
      records = [r for r in records
                 if in_validation(r["unique_id"], self.validation_fraction) == held_out]
    records = [r for r in records if r["level"] in self.levels]
    records.sort(key=lambda r: (r["level"], r["subject"], r["unique_id"]))
    seen: set[str] = set()  # the question identifies an example: a repeated problem is kept once
    return [r for r in records if not (r["problem"] in seen or seen.add(r["problem"]))]

  def examples(self, split: str) -> list[base.Example]:
    if split not in self._splits:
      records = self._records(split)
      examples = [base.Example(question=r["problem"], prompt=format_prompt(r["problem"]),
                               solution=format_solution(r["solution"]), answer=r["answer"],
                               level=r["level"]) for r in records]
      cap = self.num_examples.get(split)
      if cap:
        kept = set(map(id, base.spread_over_levels(examples, cap)))
        records = [r for r, e in zip(records, examples) if id(e) in kept]
        examples = [e for e in examples if id(e) in kept]
      self._splits[split] = examples
      self._subjects[split] = [r["subject"] for r in records]
    return self._splits[split]

  def subjects(self, split: str) -> list[str]:
    """The subject of each example of `examples(split)`, in the same order."""
    self.examples(split)
    return self._subjects[split]

  # ---- answers

  def extract_answer(self, text: str) -> str | None:
    return answers.extract(text)

  def is_correct(self, answer: base.Answer | None, example: base.Example) -> bool:
    if not isinstance(answer, str) or not isinstance(example.answer, str):
      return False
    if answer == example.answer:
      return True
    if self._grader is None:
      self._grader = grading.Grader(timeout_s=self.grade_timeout_s)
    return self._grader.equivalent(example.answer, answer)


def _check(ok: bool, key: str, value: Any, want: str) -> None:
  if not ok:
    raise ValueError(f"config.task.{key}={short_repr(value)} must be {want}.")


@base.register(Math.name)
def make(settings: dict[str, Any], data_dir: str) -> Math:
  """The task from `config.task` (see the module doc), every value checked."""
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    raise ValueError(f"Unknown key(s) {unknown} in config.task for math; valid keys: "
                     f"{['name', 'data_dir', *SETTINGS]}.")
  source = settings.get("source", "hendrycks")
  _check(source in SOURCES, "source", source, f"one of {list(SOURCES)}")
  manual_dir = settings.get("manual_dir", "") or ""
  _check(isinstance(manual_dir, str), "manual_dir", manual_dir, "a directory path")
  levels = settings.get("levels", LEVELS)
  _check(isinstance(levels, (list, tuple)) and bool(levels) and all(
      isinstance(lv, int) and not isinstance(lv, bool) and lv in LEVELS for lv in levels),
         "levels", levels, "a non-empty tuple of MATH levels 1-5, e.g. (1, 2, 3, 4, 5)")
  counts = settings.get("num_examples") or {}
  _check(hasattr(counts, "keys") and set(counts.keys()) <= set(base.SPLITS) and all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in dict(counts).values()),
         "num_examples", counts, f"a dict from some of {list(base.SPLITS)} to positive ints, "
         "e.g. dict(test=500)")
  fraction = settings.get("validation_fraction", 0.05)
  _check(isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
         and 0 <= fraction < 1, "validation_fraction", fraction, "a number in [0, 1)")
  timeout = settings.get("grade_timeout_s", 5.0)
  _check(isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0,
         "grade_timeout_s", timeout, "a positive number of seconds")
  return Math(source, manual_dir, data_dir, levels, dict(counts), fraction, timeout)
