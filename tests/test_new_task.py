"""A new task is one file: a digit-sum task defined here runs the whole test-config job."""

import json
import os

import ml_collections
import numpy as np
import pytest

import config_files
from ttc_jax import pipeline
from ttc_jax.tasks import base as tasks

STEP = "\n"


class DigitSum(tasks.Task):
  """Sum the digits of a number, one running total per line: `S:472` -> `4`, `4+7=11`, `11+2=13`,
  `A:13`. Levels are the numbers' lengths."""

  name = "digit_sum_test"
  step_delimiter = STEP
  alphabet = "0123456789+=SA:\n"

  def __init__(self, digits, num_per_level, seed):
    self.digits, self.num_per_level, self.seed = tuple(digits), dict(num_per_level), seed

  def examples(self, split):
    rng = np.random.default_rng([self.seed, tasks.SPLITS.index(split)])
    out = []
    for level, n_digits in enumerate(self.digits, start=1):
      for _ in range(self.num_per_level[split]):
        number = "".join(str(d) for d in rng.integers(0, 10, n_digits))
        out.append(tasks.Example(question=number, prompt=f"S:{number}{STEP}",
                                 solution=STEP.join(self.steps(number)),
                                 answer=sum(map(int, number)), level=level))
    return out

  @staticmethod
  def steps(number):
    total, out = int(number[0]), [number[0]]
    for d in number[1:]:
      out.append(f"{total}+{d}={total + int(d)}")
      total += int(d)
    return out + [f"A:{total}"]

  def extract_answer(self, text):
    for line in reversed(text.split(STEP)):
      if line.startswith("A:") and line[2:].isdigit():
        return int(line[2:])
    return None

  def step_correct(self, example, text):
    ref, ok, out = self.steps(example.question), True, []
    for i, line in enumerate(s for s in text.split(STEP) if s):
      ok = ok and i < len(ref) and line == ref[i]
      out.append(ok)
    return out


@tasks.register(DigitSum.name)
def _make(settings, data_dir):
  del data_dir  # generated in memory
  return DigitSum(**settings)


@pytest.mark.slow  # a whole job (about 70 s); countdown's job test is its twin
def test_the_whole_job_runs_on_a_task_defined_in_a_test_file(tmp_path):
  config = config_files.load("test")
  config.workdir = str(tmp_path / "run")
  config.task = ml_collections.ConfigDict(dict(
      name=DigitSum.name, digits=(2, 4), num_per_level=dict(train=200, validation=4, test=8),
      seed=0))
  summary = pipeline.run(config)

  task = DigitSum((2, 4), dict(train=200, validation=4, test=8), 0)
  questions = {e.question for e in task.examples("test")}
  rows = [json.loads(line) for line in open(tmp_path / "run" / "search.jsonl")]
  assert rows and all(set(row["question"]) <= questions for row in rows)
  assert set(summary["base_lm"]["pass@1"]) == {"1", "2"}  # the task's two levels
  assert summary["prm_step_auroc"] is None or 0 <= summary["prm_step_auroc"] <= 1
  assert set(summary["search"]) == set(config.search.strategies)
  for key in ("revisions", "compute_optimal", "flops"):
    assert key in summary
  assert os.path.exists(tmp_path / "run" / "report.md")


def test_an_unregistered_task_name_lists_the_registered_ones(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown task 'nope'.*digit_sum_test"):
    tasks.create({"name": "nope"}, str(tmp_path))


def test_a_task_in_its_own_module_is_selected_by_config_task_module(tmp_path, monkeypatch):
  (tmp_path / "my_reverse_task.py").write_text(
      "from ttc_jax.tasks import base\n"
      "class Reverse(base.Task):\n"
      "  name = 'reverse_test'\n"
      "  def examples(self, split):\n"
      "    return [base.Example('ab', 'R:ab\\n', 'b\\nA:ba', 'ba', 1)]\n"
      "  def extract_answer(self, text):\n"
      "    return text.rsplit('A:', 1)[-1] if 'A:' in text else None\n"
      "@base.register('reverse_test')\n"
      "def make(settings, data_dir):\n"
      "  return Reverse()\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  task = tasks.create({"name": "reverse_test", "module": "my_reverse_task"}, str(tmp_path))
  assert task.name == "reverse_test" and task.grade("b\nA:ba", task.examples("test")[0])
  with pytest.raises(ValueError, match=r"config.task.module='no_such_module' cannot be imported"):
    tasks.create({"name": "reverse_test", "module": "no_such_module"}, str(tmp_path))
