"""The main job end to end (configs/test.py) and its bad-input errors."""

import json
import os
import subprocess
import sys

import pytest

import config_files
from ttc_jax import pipeline
from ttc_jax.pipeline import state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = os.path.join(ROOT, "configs", "test.py")


def _config(workdir, **overrides):
  c = config_files.load("test")
  c.workdir = str(workdir)
  for k, v in overrides.items():
    section, key = k.split(".")
    c[section][key] = v
  return c


def _cli(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "ttc_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(test_config_job):
  return test_config_job  # (workdir, the CLI process that wrote it); see conftest.py


def test_cli_job_writes_workdir(finished_run):
  workdir, proc = finished_run
  summary = json.load(open(workdir / "summary.json"))
  base = summary["base_lm"]
  assert set(base["pass@1"]) == {"1", "2"}
  assert all(0.0 <= v <= 1.0 for v in base["pass@1"].values())
  assert set(base["maj@4"]) == {"1", "2"}
  assert "pass@1" in proc.stdout  # the table is printed
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert any(r.get("stage") == "base_lm" and "loss" in r for r in rows)
  assert any(r.get("stage") == "eval_base_lm" for r in rows)
  assert json.load(open(workdir / "config.json"))["train"]["total_steps"] == 200
  assert os.path.isdir(workdir / "checkpoints" / "base_lm" / "200")
  # PRM / ORM stages: labels on disk, both reward models trained, verifier table.
  assert os.path.exists(workdir / "prm_labels" / "manifest.json")
  assert os.path.isdir(workdir / "checkpoints" / "prm" / "10")
  assert os.path.isdir(workdir / "checkpoints" / "orm" / "10")
  assert "prm_step_auroc" in summary and "mc_label_step_auroc" in summary
  assert "prm_first_step_within_question_auroc" in summary
  lo, hi = summary["prm_first_step_within_question_auroc_ci"]
  point = summary["prm_first_step_within_question_auroc"]  # None (NaN) with too few siblings
  assert (lo is None and hi is None) if point is None else lo <= point <= hi
  assert "mc_label_step_auroc_train" in summary
  assert os.path.exists(workdir / "prm_labels_heldout" / "manifest.json")
  assert set(summary["bon"]) == {"prm_weighted", "prm_naive", "orm_weighted", "majority"}
  assert set(summary["bon"]["majority"]) == {"2", "8"}
  # Search stage: one JSONL row per feasible (strategy, budget) cell, summarized by budget.
  rows = [json.loads(l) for l in open(workdir / "search.jsonl")]
  cells = {(r["cell"]["strategy"], r["cell"]["budget"]) for r in rows}
  assert cells == {("best_of_n", 1), ("best_of_n", 4), ("best_of_n", 8),
                   ("beam/beam_width=2", 4), ("beam/beam_width=2", 8),
                   ("lookahead/lookahead=1,beam_width=2", 4),
                   ("lookahead/lookahead=1,beam_width=2", 8),
                   ("dvts/beam_width=2", 4), ("dvts/beam_width=2", 8)}
  for r in rows:
    assert len(r["correct"]) == 6 and max(r["budget_used"]) <= r["cell"]["budget"]
    assert r["accuracy"] == round(sum(r["correct"]) / 6, 4)
    assert summary["search"][r["cell"]["strategy"]][str(r["cell"]["budget"])]["all"] == \
        r["accuracy"]
  assert "harder_half" in summary["search"]["beam/beam_width=2"]["4"]
  # Revisions and allocator stages: their summaries, checkpoints, figures and report.
  assert {"revisions", "compute_optimal"} <= set(summary)
  for name in ("revision", "larger_lm"):
    assert os.path.isdir(workdir / "checkpoints" / name), name
  assert os.path.exists(workdir / "report.md")
  assert any(f.endswith(".png") for f in os.listdir(workdir / "figures"))


def test_rerun_skips_finished_stages(finished_run):
  workdir, _ = finished_run
  before = json.load(open(workdir / "summary.json"))
  n_rows = len(open(workdir / "metrics.jsonl").readlines())
  n_search = len(open(workdir / "search.jsonl").readlines())
  summary = pipeline.run(_config(workdir))
  for key in ("base_lm", "bon", "prm_step_auroc", "mc_label_step_auroc", "search", "revisions",
              "compute_optimal"):
    assert summary[key] == before[key]
  # No training step and no evaluation ran again: no new metric or search rows.
  assert len(open(workdir / "metrics.jsonl").readlines()) == n_rows
  assert len(open(workdir / "search.jsonl").readlines()) == n_search


def test_unknown_config_key_is_a_clear_error(tmp_path):
  proc = _cli(f"--config={TEST_CONFIG}", f"--config.workdir={tmp_path}",
              "--config.train.bogus=1")
  assert proc.returncode != 0
  assert "bogus" in proc.stderr
  c = _config(tmp_path)
  c.model.unlock()
  c.model.bogus = 3
  with pytest.raises(ValueError, match=r"Unknown key\(s\) \['bogus'\] in config.model"):
    pipeline.run(c)


def test_unknown_task_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown task 'math500' \(config.task.name\); "
                                       r"registered tasks: \[[^\]]*'chain_arithmetic'"):
    pipeline.run(_config(tmp_path, **{"task.name": "math500"}))


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = _cli(f"--config={TEST_CONFIG}", f"--config.workdir={blocker}/sub")
  assert proc.returncode == 2
  assert "Cannot write to workdir" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error_and_keeps_data(tmp_path, finished_run):
  import shutil
  src, _ = finished_run
  shutil.copytree(src, tmp_path / "job")
  workdir = tmp_path / "job"
  os.remove(workdir / "eval_base_lm.json")
  ckpt = workdir / "checkpoints" / "base_lm" / "200"
  for root, _, files in os.walk(ckpt):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  proc = _cli(f"--config={TEST_CONFIG}", f"--config.workdir={workdir}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "checkpoint" in proc.stderr.lower() and "Traceback" not in proc.stderr
  # Nothing finished is lost: the prepared data and metrics are still there.
  assert os.path.isdir(workdir / "data")
  assert (workdir / "metrics.jsonl").stat().st_size > 0


def test_later_stage_config_errors_come_before_any_compute(tmp_path):
  with pytest.raises(ValueError, match=r"budgets \[3\] must divide max_n=8"):
    state.Run.create(_config(tmp_path, **{"verifier_eval.budgets": (2, 3)}))
  c = _config(tmp_path)
  c.prm.train.unlock()
  c.prm.train.bogus = 1
  with pytest.raises(ValueError, match=r"Unknown key\(s\) \['bogus'\] in config.prm.train"):
    state.Run.create(c)
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("key, value, match", [
    ("search.strategies", ("beam/beam_width=4", "bean"),
     r"unknown search strategy 'bean'.*registered: \[.*'beam'"),
    ("search.strategies", ("beam/width=4",), r"'width=4' in 'beam/width=4' is not field=value"),
    ("search.budgets", (4, 0), r"search.budgets=\(4, 0\) must be ints >= 1"),
])
def test_bad_search_config_fails_before_any_compute(tmp_path, key, value, match):
  with pytest.raises(ValueError, match=match):
    state.Run.create(_config(tmp_path, **{key: value}))
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("name", ["demo", "paper", "countdown"])
def test_shipped_configs_validate(tmp_path, name):
  """Every section of configs/demo.py, paper.py and countdown.py passes the job's checks."""
  config = config_files.load(name)
  config.workdir = str(tmp_path / name)
  r = state.Run.create(config)
  cfg = r.settings
  large = cfg.allocator.large_model_config(r.model_cfg)
  ratio = large.num_params / r.model_cfg.num_params
  assert ratio >= cfg.allocator.min_param_ratio
  if name == "paper":  # paper §7: a ~14x larger model; §5-6 budgets up to 256
    assert 12 <= ratio <= 16
    assert max(cfg.search.budgets) == 256 and cfg.prm_labels.num_rollouts == 16
    assert cfg.allocator.difficulty_samples == 2048
