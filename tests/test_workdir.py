"""Trustworthy workdirs: provenance, one job per workdir, rebuilt summaries, kill anywhere."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import config_files
from ttc_jax import pipeline
from ttc_jax.io import paths
from ttc_jax.pipeline import lock
from ttc_jax.pipeline import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _job(workdir, *flags, wait=True):
  """The test-config job through the real CLI, in a subprocess."""
  cmd = [sys.executable, "-m", "ttc_jax.main", "--config=configs/test.py",
         f"--config.workdir={workdir}", *flags]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _search_cells(workdir):
  with open(os.path.join(workdir, "search.jsonl")) as f:
    return [json.dumps(json.loads(line)["cell"], sort_keys=True) for line in f]


@pytest.fixture(scope="module")
def finished(test_config_job):
  """A finished test-config workdir, its summary and search cells (one uninterrupted run
  through the CLI, conftest.py).

  Tests below add to the workdir; the summary and cells stay those of the first run.
  """
  workdir, _ = test_config_job
  return workdir, _summary(workdir), _search_cells(workdir)


def test_rerun_on_a_finished_workdir_keeps_summary_and_config(finished):
  workdir, summary, _ = finished
  done = _job(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  assert _summary(workdir) == summary  # rebuilt from the outputs, not from the rerun
  assert "wall_s" not in summary  # timings go to runs.jsonl, one row per run
  with open(os.path.join(workdir, "runs.jsonl")) as f:
    runs = [json.loads(line) for line in f]
  assert len(runs) == 2 and runs[1]["wall_s"] > 0 and set(runs[0]["stage_seconds"]) == set(
      provenance.ORDER)
  # What may differ across machines is recorded beside the results.
  env = summary["environment"]
  assert {"jax", "jaxlib", "backend", "device_kind", "cpu"} <= set(env) and env["backend"] == "cpu"
  assert isinstance(env["cpu"]["isa_flags"], list) and env["cpu"]["model"]


def test_a_changed_setting_of_a_finished_stage_is_refused_with_its_remedy(finished):
  workdir, summary, _ = finished
  before = {n: os.path.getmtime(os.path.join(workdir, n))
            for n in ("config.json", "search.jsonl", "summary.json")}
  done = _job(workdir, "--config.search.temperature=0.5")
  assert done.returncode == 2
  line = done.stderr.strip()
  assert "\n" not in line and "Traceback" not in line
  assert ("stage 'search' finished in" in line and "search.temperature: 1.0 -> 0.5" in line
          and "--rerun_from=search" in line), line
  after = {n: os.path.getmtime(os.path.join(workdir, n)) for n in before}
  assert after == before  # nothing written: config.json, results and summary untouched
  assert _summary(workdir) == summary
  # An infeasible grid on a finished workdir: refused before anything is read or written.
  done = _job(workdir, "--config.search.strategies=('beam/beam_width=3',)",
              "--config.search.budgets=(16,)")
  assert done.returncode == 2 and "can run at none of search.budgets=(16,)" in done.stderr
  assert {n: os.path.getmtime(os.path.join(workdir, n)) for n in before} == before


def test_a_new_strategy_only_adds_to_the_results(finished, tmp_path):
  workdir, summary, _ = finished
  strategies = tuple(config_files.load("test").search.strategies) + ("beam/beam_width=4",)
  # With row compaction on: it changes no result, so the finished stage does not refuse it.
  done = _job(workdir, f"--config.search.strategies={strategies!r}",
              "--config.search.compact_rows=True")
  assert done.returncode == 0, done.stderr[-2000:]
  new = _summary(workdir)
  assert set(new["search"]) == set(summary["search"]) | {"beam/beam_width=4"}
  for spec, table in summary["search"].items():
    assert new["search"][spec] == table  # old cells kept as they were
  cells = _search_cells(workdir)
  assert len(cells) == len(set(cells))
  # Back to the original grid: the added cells stay in the results (they only add).
  done = _job(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  assert set(_summary(workdir)["search"]) == set(new["search"])


def test_rerun_from_moves_old_outputs_to_a_version_and_recomputes(finished):
  workdir, _, _ = finished
  old_rows = open(os.path.join(workdir, "search.jsonl")).read()
  done = _job(workdir, "--config.search.temperature=0.5", "--rerun_from=search")
  assert done.returncode == 0, done.stderr[-2000:]
  version = os.path.join(workdir, "versions", "1")
  assert open(os.path.join(version, "search.jsonl")).read() == old_rows
  assert os.path.exists(os.path.join(version, "compute_optimal.json"))
  assert not os.path.exists(os.path.join(version, "revisions.json"))  # not downstream of search
  with open(os.path.join(version, "provenance.json")) as f:
    assert json.load(f)["search"]["fields"]["search.temperature"] == 1.0
  assert provenance.read(str(workdir))["search"]["fields"]["search.temperature"] == 0.5
  assert open(os.path.join(workdir, "search.jsonl")).read() != old_rows


def test_stop_after_runs_up_to_a_stage_and_a_later_run_carries_on(_test_config_job, tmp_path):
  workdir = tmp_path / "copy"  # of the session's job, as it finished (not this module's copy)
  shutil.copytree(_test_config_job[0], workdir)
  done = _job(workdir, "--rerun_from=allocator", "--stop_after=allocator")
  assert done.returncode == 0, done.stderr[-2000:]
  assert "stopped after allocator" in done.stdout + done.stderr
  record = provenance.read(str(workdir))
  assert record["allocator"]["finished"] and "report" not in record
  assert os.path.exists(workdir / "compute_optimal.json")  # recomputed
  assert not os.path.exists(workdir / "report.md")  # moved to a version, not rewritten
  with open(workdir / "runs.jsonl") as f:
    last = json.loads(f.read().splitlines()[-1])
  assert last["stop_after"] == "allocator" and set(last["stage_seconds"]) == {
      "data", "base_lm", "evaluation", "prm_labels", "verifiers", "search", "revisions",
      "larger_model", "allocator"}
  done = _job(workdir)  # carries on: the report is written
  assert done.returncode == 0, done.stderr[-2000:]
  assert os.path.exists(workdir / "report.md")


def test_a_second_job_on_a_busy_workdir_is_refused(tmp_path):
  first = _job(tmp_path, wait=False)
  lock_file = os.path.join(tmp_path, ".lock")
  deadline = time.time() + 300
  while not os.path.exists(lock_file) and first.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  try:
    assert os.path.exists(lock_file), first.stderr.read() if first.poll() is not None else ""
    second = _job(tmp_path)
    assert second.returncode == 2
    line = second.stderr.strip()
    assert "\n" not in line and f"pid {first.pid}" in line and "in use by another job" in line
  finally:
    first.kill()
    first.wait()


def test_a_stale_lock_of_a_killed_job_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(tmp_path / ".lock", "w") as f:  # what a SIGKILLed holder leaves behind
    json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": "earlier"}, f)
  with lock.hold(str(tmp_path)):
    with open(tmp_path / ".lock") as f:
      assert json.load(f)["pid"] == os.getpid()
  with lock.hold(str(tmp_path)):  # released on exit: the next job takes it
    pass


def test_a_lock_held_by_a_running_process_names_its_holder(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import fcntl, json, os, sys, time\n"
       f"fd = os.open({str(tmp_path / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
       "fcntl.flock(fd, fcntl.LOCK_EX)\n"
       "os.write(fd, json.dumps({'host': 'another-host', 'pid': 4242, 'since': 'then'}).encode())\n"
       "print('held', flush=True)\n"
       "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=r"in use by another job \(host another-host, pid 4242, "
                                         r"since then\)"):
      with lock.hold(str(tmp_path)):
        pass
  finally:
    holder.kill()
    holder.wait()
  with lock.hold(str(tmp_path)):  # the holder died: its lock went with it
    pass


def test_provenance_names_every_changed_field_of_the_earliest_stage(tmp_path):
  config = config_files.load("test")
  for stage in provenance.ORDER:
    provenance.record(str(tmp_path), config, stage, finished=True)
  config.train.learning_rate = 1e-2
  with pytest.raises(ValueError, match=r"stage 'base_lm' finished .*train.learning_rate: 0.003 "
                                       r"-> 0.01.*--rerun_from=base_lm"):
    provenance.check(str(tmp_path), config)
  config = config_files.load("test")
  config.allocator.cv_seed = 3  # the allocation is recomputed every run: allowed
  config.search.budgets = (1, 4)
  provenance.check(str(tmp_path), config)


# (stage, a path that exists once the stage is under way)
_KILL_POINTS = [
    ("data", "data"),
    ("base LM training", "checkpoints/base_lm/100"),
    ("PRM labels", "prm_labels/shard-00000.npz"),
    ("search", "search.jsonl"),
    ("revisions", "revisions/shard-00000.npz"),
    ("allocator", "difficulty.json"),
]


@pytest.mark.slow
def test_kill_anywhere_then_rerun_gives_the_uninterrupted_summary(finished, tmp_path):
  _, reference, reference_cells = finished
  workdir = tmp_path / "killed"
  killed = []
  for name, marker in _KILL_POINTS:
    job = _job(workdir, wait=False)
    deadline = time.time() + 600
    while (job.poll() is None and time.time() < deadline
           and not os.path.exists(os.path.join(workdir, marker))):
      time.sleep(0.02)
    if job.poll() is None:
      job.send_signal(signal.SIGKILL)
      killed.append(name)
    job.wait()
  assert len(killed) >= 4, killed  # most kills landed mid-job
  done = _job(workdir)
  assert done.returncode == 0, done.stderr[-3000:]
  assert _summary(workdir) == reference
  cells = _search_cells(workdir)
  assert sorted(cells) == sorted(reference_cells)  # every cell once, none lost
  with lock.hold(str(workdir)):  # the killed jobs' lock went with them
    pass


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _pod(workdir, logdir, tag, *flags):
  """The test-config job as 2 processes x 4 CPU devices joined by jax.distributed; the
  processes and their log files (a full pipe would block one process at a barrier)."""
  port = _free_port()
  env = dict(os.environ, PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  logs = [open(os.path.join(logdir, f"{tag}.process{i}.log"), "w+") for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "ttc_jax.main", "--config=configs/test.py",
       f"--config.workdir={workdir}", "--distributed", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout_s=10", *flags], cwd=ROOT,
      env=env,
      stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
  return procs, logs


def _wait_all(procs, logs, timeout=1200):
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      p.kill()
  return [(f.seek(0), f.read())[1] for f in logs]


def _same_as_one_process(workdir, reference, reference_cells):
  summary = _summary(workdir)
  assert summary.pop("environment")["process_count"] == 2
  assert summary == {k: v for k, v in reference.items() if k != "environment"}
  assert sorted(_search_cells(workdir)) == sorted(reference_cells)  # every cell once


@pytest.mark.slow
def test_two_processes_give_the_summary_of_one(finished, tmp_path):
  """2 processes x 4 CPU devices joined by jax.distributed == 1 process x 8 devices."""
  _, reference, reference_cells = finished
  procs, logs = _pod(tmp_path / "pod", tmp_path, "run")
  out = _wait_all(procs, logs)
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in out]
  _same_as_one_process(tmp_path / "pod", reference, reference_cells)


@pytest.mark.slow
def test_one_of_two_processes_killed_mid_job_then_rerun_resumes(finished, _test_config_job,
                                                               tmp_path):
  """A host lost mid-search: its peer stops on its own, and the rerun on 2 processes finishes
  with the 1-process summary, reusing what was written, every search cell once.

  The job recomputes search onwards (`--rerun_from=search`) on a copy of the finished
  workdir, so the stages before it cost nothing here.
  """
  _, reference, reference_cells = finished
  workdir = tmp_path / "pod"
  shutil.copytree(_test_config_job[0], workdir)  # as the job left it (`finished` is changed)
  kept = {p: (workdir / p).stat().st_mtime_ns for p in
          ("checkpoints/base_lm", "prm_labels/shard-00000.npz", "verifier_eval.json")}
  procs, logs = _pod(workdir, tmp_path, "killed", "--rerun_from=search")
  marker, moved = workdir / "search.jsonl", workdir / "versions" / "1"
  deadline = time.time() + 900
  while all(p.poll() is None for p in procs) and time.time() < deadline and not (
      moved.exists() and marker.exists() and marker.read_text().count("\n") >= 2):
    time.sleep(0.05)
  assert all(p.poll() is None for p in procs), "the job ended before the kill point"
  procs[1].send_signal(signal.SIGKILL)
  t = time.time()
  out = _wait_all(procs, logs, timeout=120)  # the survivor must not hang at a collective
  assert procs[0].returncode != 0, out[0][-2000:]
  assert time.time() - t < 120
  written = set(_search_cells(workdir))
  assert 2 <= len(written) < len(reference_cells)
  procs, logs = _pod(workdir, tmp_path, "rerun")
  out = _wait_all(procs, logs)
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in out]
  assert {p: (workdir / p).stat().st_mtime_ns for p in kept} == kept  # not recomputed
  _same_as_one_process(workdir, reference, reference_cells)


@pytest.fixture
def gcs():
  """A local Google Cloud Storage emulator (tests/gcs_emulator.py) with bucket `bkt`; the
  job's environment for it.

  gcsfs (epath's backend for gs:// without TensorFlow's client) and tensorstore (orbax's
  arrays) are pointed at it. TensorFlow's own GCS client cannot be pointed anywhere but
  Google, so the TFDS data dir, which TFDS writes through it, stays local in this test.
  """
  port = _free_port()
  server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "gcs_emulator.py"),
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    assert server.stdout.readline().strip() == "up"
    yield {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "EPATH_USE_TF": "false",
           # No bucket-type probe of Google's control plane, no GCE metadata lookups.
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}
  finally:
    server.kill()
    server.wait()


def test_a_gs_workdir_lock_is_a_lease(gcs, monkeypatch):
  """gs:// has no flock: one job holds a renewed lease; a second is refused; a lease its
  killed holder stopped renewing is taken over."""
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  for k, v in gcs.items():
    monkeypatch.setenv(k, v)
  gpath._is_tf_installed.cache_clear()  # epath caches its EPATH_USE_TF reading
  monkeypatch.setattr(lock, "BEAT_S", 0.2)
  try:
    _check_lease()
  finally:
    gpath._is_tf_installed.cache_clear()


def _check_lease():
  workdir = "gs://bkt/leased"
  lease = paths.as_path(workdir) / ".lock"

  def holder():  # the emulator may serve an object mid-rewrite (GCS itself never does)
    for _ in range(20):
      try:
        return json.loads(lease.read_text())
      except ValueError:
        time.sleep(0.05)
    raise AssertionError("lease never readable")
  with lock.hold(workdir):
    first = holder()
    assert first["pid"] == os.getpid()
    time.sleep(0.6)
    assert holder()["beat"] > first["beat"]  # renewed
    with pytest.raises(ValueError, match=r"gs://bkt/leased is in use by another job \(host "):
      with lock.hold(workdir):
        pass
  assert not lease.exists()  # released at the end
  lease.write_text(json.dumps({"host": "gone", "pid": 1, "since": "-",
                               "beat": time.time() - lock.STALE_S - 1}))
  with lock.hold(workdir):  # stale: taken over
    assert holder()["pid"] == os.getpid()


@pytest.mark.slow
def test_a_gs_workdir_keeps_everything_in_the_bucket(finished, gcs, tmp_path):
  """The test-config job on gs://bkt/run: the summary of a local run, every output (orbax
  checkpoints, shards, TensorBoard, figures) in the bucket, and none on local disk."""
  import gcsfs  # pylint: disable=g-import-not-at-top
  _, reference, _ = finished
  local = {name: tmp_path / name for name in ("home", "tmp", "cwd")}
  for d in local.values():
    d.mkdir()
  env = dict(os.environ, **gcs, HOME=str(local["home"]), TMPDIR=str(local["tmp"]),
             PYTHONUNBUFFERED="1")
  tfds_dir = tmp_path / "tfds"
  done = subprocess.run(
      [sys.executable, "-m", "ttc_jax.main", f"--config={ROOT}/configs/test.py",
       "--config.workdir=gs://bkt/run", f"--config.task.data_dir={tfds_dir}"],
      cwd=local["cwd"], env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  os.environ["STORAGE_EMULATOR_HOST"] = gcs["STORAGE_EMULATOR_HOST"]
  try:
    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=gcs["STORAGE_EMULATOR_HOST"])
    summary = json.loads(fs.cat("bkt/run/summary.json"))
    stored = fs.find("bkt/run")
  finally:
    del os.environ["STORAGE_EMULATOR_HOST"]
  assert {k: v for k, v in summary.items() if k != "environment"} == {
      k: v for k, v in reference.items() if k != "environment"}
  tops = {f.split("/")[2] for f in stored}
  assert {"checkpoints", "tensorboard", "prm_labels", "search.jsonl", "figures", "report.md",
          "metrics.jsonl", "provenance.json"} <= tops
  assert any("/checkpoints/base_lm/" in f for f in stored)
  assert not any(f.endswith((".tmp", ".lock")) or "/.lock" in f for f in stored)
  # Local disk: the TFDS data (see `gcs`) and library caches in HOME, nothing of the job's.
  left = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, files in
                os.walk(tmp_path) for f in files if not d.startswith(str(tfds_dir)))
  caches = ("home/.cache/", "home/.keras/", "home/.config/matplotlib/")
  assert [f for f in left if not f.startswith(caches)] == [], left


def test_a_workdir_from_before_provenance_is_checked_against_its_config_json(tmp_path):
  config = config_files.load("test")
  config.workdir = str(tmp_path)
  (tmp_path / "eval_base_lm.json").write_text("{}")
  with pytest.raises(ValueError, match=r"holds results but no provenance.json or config.json"):
    provenance.check(str(tmp_path), config)
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  provenance.check(str(tmp_path), config)  # the same settings: fine
  config.eval.num_samples = 2
  with pytest.raises(ValueError, match=r"stage 'evaluation' finished .*eval.num_samples: 4 -> 2"):
    provenance.check(str(tmp_path), config)


def test_rerun_from_is_refused_before_anything_moves_when_an_upstream_stage_changed(tmp_path):
  config = config_files.load("test")
  config.workdir = str(tmp_path)
  for stage in provenance.ORDER:
    provenance.record(str(tmp_path), config, stage, finished=True)
  (tmp_path / "search.jsonl").write_text("")
  config.train.learning_rate = 1e-2
  with pytest.raises(ValueError, match=r"stage 'base_lm' finished"):
    pipeline.run(config, rerun_from="search")
  assert (tmp_path / "search.jsonl").exists() and not (tmp_path / "versions").exists()
