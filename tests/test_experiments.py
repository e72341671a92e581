"""experiments/prm_levers.py on the session's finished test-config job: labels, then a PRM."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ttc_jax.training import prm_labels

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  proc = subprocess.run([sys.executable, "experiments/prm_levers.py", *args,
                         "--config=configs/test.py"], cwd=_ROOT, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a research script, not the library: two subprocesses, about a minute
def test_prm_levers_labels_then_train(_test_config_job, tmp_path):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(_test_config_job[0], workdir)
  before = prm_labels.load_labels(os.path.join(workdir, "prm_labels"))

  _, made = _run("labels", f"--workdir={workdir}", "--questions=6", "--solutions=2")
  assert made["labels"] == "prm_labels_q6s2" and made["solutions"] == 2
  labels = prm_labels.load_labels(os.path.join(workdir, "prm_labels_q6s2"))
  assert len(labels["tokens"]) == 12 and labels["question_index"].max() == 5
  after = prm_labels.load_labels(os.path.join(workdir, "prm_labels"))  # the run's own: untouched
  assert all(np.array_equal(before[k], after[k]) for k in before)

  proc, out = _run("train", f"--workdir={workdir}", "--labels=prm_labels_q6s2", "--steps=4",
                   "--eval_every=2", "--samples=4", "--exact_labels")
  steps = [json.loads(line)["step"] for line in proc.stdout.splitlines()
           if line.startswith('{"step"')]
  assert steps == [0, 2, 4]
  assert out["label_rows"] == 12 and out["questions"] == 6
  assert out["exact_labels"] and out["binary_labels"]  # the checker's 0/1, not MC fractions
  assert out["test_rows"] > 0 and out["final"]["step"] == 4
  auroc, (lo, hi) = out["final"]["auroc"], out["final"]["ci"]
  assert np.isnan(auroc) or (0 <= lo <= auroc <= hi <= 1)
