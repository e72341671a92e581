"""Test set-up: simulate an 8-device mesh on the CPU before jax is imported."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache per test session, shared by this process and the CLI
# jobs the tests start (they inherit the environment): a job reuses what earlier jobs
# compiled. It starts empty every session, so no run reads another run's compilations.
_XLA_CACHE = tempfile.mkdtemp(prefix="ttc_jax_test_xla_cache_")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)


import subprocess  # noqa: E402  (after the environment above is set)
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
