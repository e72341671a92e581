"""Test set-up: simulate an 8-device mesh on the CPU before jax is imported."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import shutil  # noqa: E402  (after the environment above is set)
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def _test_config_job(tmp_path_factory):
  """The test-config job, run once per session through the real CLI: (workdir, process)."""
  workdir = tmp_path_factory.mktemp("test_config_job")
  proc = subprocess.run(
      [sys.executable, "-m", "ttc_jax.main", "--config=configs/test.py",
       f"--config.workdir={workdir}"], cwd=_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
      capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


@pytest.fixture(scope="module")
def test_config_job(_test_config_job, tmp_path_factory):
  """A copy of the session's finished test-config workdir, the module's own to change, and
  the CompletedProcess of the job that wrote it."""
  src, proc = _test_config_job
  workdir = tmp_path_factory.mktemp("finished") / "workdir"
  shutil.copytree(src, workdir)
  return workdir, proc
