"""Every user mistake through the real CLI: one line on stderr, exit code 2, nothing written."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(cwd, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "ttc_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _one_line_error(proc) -> str:
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  err = proc.stderr.strip()
  assert "\n" not in err and "Traceback" not in err, err
  assert err.startswith("ttc-jax: error: "), err
  return err


TEST_CONFIG = os.path.join(ROOT, "configs", "test.py")

CASES = {
    "unknown key on the CLI": (
        ["--config.no_such_key=1"],
        "--config.no_such_key: config has no key 'no_such_key'; valid keys there: ['allocator'"),
    "unknown nested key on the CLI": (
        ["--config.search.beams=1"],
        "config.search has no key 'beams'; valid keys there: ['budgets', 'compact_rows', 'max_rounds'"),
    "bad value type": (
        ["--config.seed=abc"], "--config.seed=abc: invalid literal for int()"),
    "bad value": (
        ["--config.train.total_steps=0"],
        "TrainConfig.total_steps=0 is invalid; it must be > 0."),
    "infeasible grid": (
        ["--config.search.strategies=('beam/beam_width=3',)", "--config.search.budgets=(16,)"],
        "strategy 'beam/beam_width=3' can run at none of search.budgets=(16,) (N=16: budget "
        "N=16 is not divisible by the beam width M=3"),
    "unreachable cloud workdir": (  # no network, no credentials here
        ["--config.workdir=gs://bucket/run1"], "Cannot write to workdir 'gs://bucket/run1' ("),
    "unknown stage to rerun": (
        ["--rerun_from=everything"], "--rerun_from='everything' is not a stage; stages: ['data'"),
    "unknown stage to stop after": (
        ["--stop_after=search_stage"], "--stop_after='search_stage' is not a stage; stages:"),
    "stray argument": (["extra"], "unexpected arguments ['extra']"),
    "missing policy checkpoint": (
        ["--config.policy.checkpoint=/no/such/model"],
        "config.policy.checkpoint='/no/such/model' does not exist; name the directory "
        "save_pretrained wrote"),
    "policy checkpoint without config.json": (
        ["--config.policy.checkpoint=."],  # the test's empty directory
        "config.policy.checkpoint='.' has no config.json"),
    "open PRM without its format": (
        ["--config.prm.format=qwen_math_prm"],
        "prm.format='qwen_math_prm' is invalid; it must be the open PRM's scoring rule when "
        "prm.checkpoint is set"),
    "ranking loss over split questions": (
        ["--config.prm.ranking_weight=1.0", "--config.prm.train.batch_size=6"],
        "prm.train.batch_size=6 must be a multiple of prm.labels.num_solutions=4"),
    "negative ranking weight": (
        ["--config.prm.ranking_weight=-1.0"], "prm.ranking_weight=-1.0 is invalid"),
    "missing larger checkpoint": (
        ["--config.allocator.large_checkpoint=/no/such/7b"],
        "config.allocator.large_checkpoint='/no/such/7b' does not exist"),
}


@pytest.mark.parametrize("name", CASES)
def test_user_mistakes_are_one_line_and_exit_2(name, tmp_path):
  flags, expected = CASES[name]
  workdir = tmp_path / "run"
  args = [f"--config={TEST_CONFIG}"]
  if not any(f.startswith("--config.workdir") for f in flags):
    args.append(f"--config.workdir={workdir}")
  err = _one_line_error(_cli(tmp_path, *args, *flags))
  assert expected in err, err
  # Nothing was computed or written: no workdir, and no `gs:` folder for a cloud path.
  assert not os.path.exists(workdir) or not os.listdir(workdir)
  assert not os.path.exists(tmp_path / "gs:")


def test_missing_and_broken_config_files(tmp_path):
  err = _one_line_error(_cli(tmp_path, "--config=configs/nope.py"))
  assert "config file 'configs/nope.py' does not exist" in err
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config():\n  raise RuntimeError('boom')\n")
  err = _one_line_error(_cli(tmp_path, f"--config={broken}"))
  assert "failed to load: RuntimeError: boom" in err
  err = _one_line_error(_cli(tmp_path))
  assert "no config file given" in err


def test_unknown_key_in_a_config_file(tmp_path):
  config = tmp_path / "extra_key.py"
  config.write_text(f"import runpy\n"
                    f"def get_config():\n"
                    f"  c = runpy.run_path({TEST_CONFIG!r})['get_config']()\n"
                    f"  c.eval.bogus = 1\n"
                    f"  return c\n")
  err = _one_line_error(_cli(tmp_path, f"--config={config}",
                             f"--config.workdir={tmp_path / 'run'}"))
  assert "Unknown key(s) ['bogus'] in config.eval; valid keys:" in err


def test_verbosity_shows_the_traceback(tmp_path):
  proc = _cli(tmp_path, f"--config={TEST_CONFIG}", "--config.workdir=gs://b/r", "--verbosity=1")
  assert proc.returncode != 0 and "Traceback" in proc.stderr
  assert "Cannot write to workdir 'gs://b/r'" in proc.stderr
