"""TFDS builder for MATH (Hendrycks et al. 2021) and MATH-500 (paper §5.1), from a manual dir.

Nothing is downloaded: the raw files are read from the manual dir
(`tfds.download.DownloadConfig(manual_dir=...)`) in one of two layouts:

  * config `hendrycks`: `<manual_dir>/MATH/{train,test}/<subject>/<id>.json` (or without
    the `MATH/` level), each `{"problem", "level": "Level 3", "type", "solution"}`;
  * config `math500`: `<manual_dir>/test.jsonl` (and optionally `train.jsonl`, e.g.
    PRM800K's 12k), lines `{"problem", "solution", "answer", "subject", "level": 3,
    "unique_id"}`.

Stored per problem: problem, solution, answer (the "answer" field when present,
else the last `\\boxed{}` of the solution, canonical as in `answers.py`), subject,
level (1-5) and unique_id (`<split>/<subject>/<id>.json`, MATH-500's own scheme).
Problems whose level is "Level ?" (a handful of MATH train/test files) are left
out: their difficulty is unknown, and the levels feed the oracle difficulty bins;
so are problems with no answer. Splits are the dataset's own (train, test); the
task carves validation out of train (`ttc_jax/tasks/math/__init__.py`).
Prepared into `<data_dir>/competition_math/<config>/1.0.0`.
"""

from __future__ import annotations

import json
import re
from typing import Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ttc_jax.tasks.math import answers

SOURCES = ("hendrycks", "math500")
LAYOUTS = {
    "hendrycks": "MATH/train/<subject>/<id>.json and MATH/test/<subject>/<id>.json (Hendrycks "
                 "MATH, fields problem, level, type, solution)",
    "math500": "test.jsonl (optionally train.jsonl), one JSON object a line with problem, "
               "solution, answer, subject, level, unique_id (MATH-500)",
}
_LEVEL = re.compile(r"^\s*(?:Level\s+)?([1-5])\s*$")
_UNKNOWN_LEVEL = re.compile(r"^\s*Level\s+\?\s*$")


def check_manual_dir(source: str, manual_dir: str | epath.Path) -> epath.Path:
  """The manual dir as a path; ValueError naming the expected layout when it has no data."""
  if source not in SOURCES:
    raise ValueError(f"MATH source {source!r} is not one of {list(SOURCES)}.")
  path = epath.Path(manual_dir) if manual_dir else None
  if path is None or not _raw_files(source, path):
    raise ValueError(f"MATH manual dir {str(manual_dir)!r} has no {source} data; expected "
                     f"{LAYOUTS[source]} under it (config.task.manual_dir).")
  return path


def _hendrycks_root(path: epath.Path) -> epath.Path:
  return path / "MATH" if (path / "MATH").is_dir() else path


def _raw_files(source: str, path: epath.Path) -> dict[str, list[epath.Path]]:
  """split -> raw files; empty when the layout is not there."""
  if not path.is_dir():
    return {}
  if source == "math500":
    return {s: [path / f"{s}.jsonl"] for s in ("train", "test") if (path / f"{s}.jsonl").is_file()
            } if (path / "test.jsonl").is_file() else {}
  root = _hendrycks_root(path)
  out = {s: sorted(root.glob(f"{s}/*/*.json")) for s in ("train", "test")}
  return out if all(out.values()) else {}


def parse_level(level, where: str) -> int | None:
  """MATH level 1-5 from "Level 3" or 3; None for "Level ?"; ValueError otherwise."""
  if isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= 5:
    return level
  if isinstance(level, str):
    m = _LEVEL.match(level)
    if m:
      return int(m.group(1))
    if _UNKNOWN_LEVEL.match(level):
      return None
  raise ValueError(f"{where}: level {level!r} is not 'Level 1'..'Level 5', 'Level ?' or 1..5.")


def _record(raw: dict, unique_id: str, subject: str, where: str) -> dict | None:
  for key in ("problem", "solution", "level"):
    if key not in raw:
      raise ValueError(f"{where}: no {key!r} field; expected the layout {LAYOUTS['hendrycks']}.")
  level = parse_level(raw["level"], where)
  answer = raw.get("answer")
  answer = answers.canonical(str(answer)) if answer is not None else answers.extract(
      raw["solution"])
  if level is None or answer is None:
    return None
  return {"problem": str(raw["problem"]), "solution": str(raw["solution"]), "answer": answer,
          "subject": str(subject), "level": level, "unique_id": unique_id}


def read_split(source: str, manual_dir: str | epath.Path, split: str) -> Iterator[dict]:
  """The kept records of a raw split, in file order (see the module doc for what is kept)."""
  path = check_manual_dir(source, manual_dir)
  files = _raw_files(source, path).get(split, [])
  if source == "hendrycks":
    for f in files:
      where = str(f)
      try:
        raw = json.loads(f.read_text())
      except ValueError as e:
        raise ValueError(f"{where} is not JSON ({e}).") from None
      rel = f"{split}/{f.parent.name}/{f.name}"
      record = _record(raw, rel, raw.get("type", f.parent.name), where)
      if record is not None:
        yield record
    return
  for f in files:
    for i, line in enumerate(f.read_text().splitlines()):
      if not line.strip():
        continue
      where = f"{f}:{i + 1}"
      try:
        raw = json.loads(line)
      except ValueError as e:
        raise ValueError(f"{where} is not JSON ({e}).") from None
      subject = str(raw.get("subject", ""))
      uid = str(raw.get("unique_id") or f"{split}/{subject}/{i}.json")
      record = _record(raw, uid, subject, where)
      if record is not None:
        yield record


def raw_splits(source: str, manual_dir: str | epath.Path) -> list[str]:
  return sorted(_raw_files(source, check_manual_dir(source, manual_dir)))


class CompetitionMath(tfds.core.GeneratorBasedBuilder):
  """MATH problems with reference solutions, answers, subjects and levels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=s, description=LAYOUTS[s]) for s in SOURCES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the raw data in the manual dir: " + "; or ".join(
          f"for config {s}: {LAYOUTS[s]}" for s in SOURCES) + ".")
  # As in the chain-arithmetic builder: TFDS 4.9.10 cannot find `code_path` by itself.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "problem": tfds.features.Text(),
            "solution": tfds.features.Text(),
            "answer": tfds.features.Text(),
            "subject": tfds.features.Text(),
            "unique_id": tfds.features.Text(),
            "level": tfds.features.Scalar(dtype=np.int32),
        }),
        disable_shuffling=True,  # file order; the task sorts by level anyway
        citation="Hendrycks et al. 2021, Measuring Mathematical Problem Solving With the MATH "
                 "Dataset; Lightman et al. 2023 (MATH-500).",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = self.builder_config.name
    manual_dir = check_manual_dir(source, dl_manager._manual_dir)  # pylint: disable=protected-access
    return {split: self._generate_examples(source, manual_dir, split)
            for split in raw_splits(source, manual_dir)}

  def _generate_examples(self, source: str, manual_dir: epath.Path, split: str):
    seen = set()
    for record in read_split(source, manual_dir, split):
      if record["unique_id"] in seen:
        raise ValueError(f"unique_id {record['unique_id']!r} appears twice in the {split} split "
                         f"of {manual_dir}.")
      seen.add(record["unique_id"])
      yield record["unique_id"], record
