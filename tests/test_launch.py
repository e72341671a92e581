"""launch/tpu.py and launch/slurm.py against stand-in gcloud / sbatch / srun executables.

Nothing here reaches a cloud: a stand-in `gcloud` first on PATH appends its argv as one
JSON line to a log. With FAKE_HOME set it also plays one TPU worker whose home is that
folder: `tpu-vm ssh --command=CMD` runs CMD with `sh -c` (dash where /bin/sh is dash,
stricter than the workers' bash) there, and `tpu-vm scp` copies to and from it. So the
remote scripts really run: the archive is unpacked, the job really starts detached, and
the fake `ttc-jax` the job runs records the argv it got.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "launch", "tpu.py")
SLURM = os.path.join(ROOT, "launch", "slurm.py")
WRAPPER = os.path.join(ROOT, "launch", "tpu_pod.sh")
NAME, ZONE, PROJECT = "my-pod", "us-east5-a", "my-proj"

FAKE_GCLOUD = r'''
import json, os, shutil, subprocess, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps({"tool": "gcloud", "argv": argv}) + "\n")
if "describe" in argv:
  print("ACTIVE")
home = os.environ.get("FAKE_HOME")
if home and argv[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  command = next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))
  sys.exit(subprocess.run(["sh", "-c", command], cwd=home,
                          env=dict(os.environ, HOME=home)).returncode)
if home and argv[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  *srcs, dst = [a for a in argv[4:] if not a.startswith("--")]
  local = lambda p: os.path.join(home, p.split(":", 1)[1]) if ":" in p else p
  dst = local(dst)
  for src in map(local, srcs):
    if os.path.isdir(src):
      target = os.path.join(dst, os.path.basename(src)) if os.path.isdir(dst) else dst
      shutil.copytree(src, target, dirs_exist_ok=True)
    else:
      shutil.copy(src, dst)
'''
FAKE_SBATCH = r'''
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps({"tool": os.path.basename(sys.argv[0]), "argv": argv,
                      "script": open(argv[-1]).read() if argv and os.path.isfile(argv[-1])
                      else None}) + "\n")
if os.path.basename(sys.argv[0]) == "sbatch":
  print("4242")
'''
FAKE_SRUN = r'''
import os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
  args.pop(0)
os.execv(args[0], args)
'''
# The job: records what it was started with, waits for RELEASE, says hello, exits 3.
FAKE_TTC_JAX = r'''
import json, os, sys, time
status = open("/proc/self/status").read()
sig_ign = int(next(l for l in status.splitlines() if l.startswith("SigIgn:")).split()[1], 16)
with open(os.environ["FAKE_JOB"] + ".tmp", "w") as f:
  json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(),
             "sid": os.getsid(0), "pgid": os.getpgid(0), "sighup_ignored": bool(sig_ign & 1),
             "stdin": os.readlink("/proc/self/fd/0"), "stdout": os.readlink("/proc/self/fd/1")},
            f)
os.replace(os.environ["FAKE_JOB"] + ".tmp", os.environ["FAKE_JOB"])
release = os.environ.get("FAKE_RELEASE")
deadline = time.time() + 30
while release and not os.path.exists(release) and time.time() < deadline:
  time.sleep(0.05)
print("hello from the job", flush=True)
sys.exit(3)
'''


def _script(path, body: str) -> str:
  with open(path, "w") as f:
    f.write(f"#!{sys.executable}\n{body}")
  os.chmod(path, 0o755)
  return str(path)


@pytest.fixture
def env(tmp_path):
  """PATH with the stand-ins first; FAKE_LOG records every call; TMPDIR private."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _script(bin_dir / "gcloud", FAKE_GCLOUD)
  for tool in ("sbatch", "squeue", "scancel"):
    _script(bin_dir / tool, FAKE_SBATCH)
  _script(bin_dir / "srun", FAKE_SRUN)
  (tmp_path / "tmp").mkdir()
  return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
              FAKE_LOG=str(tmp_path / "calls.jsonl"), TMPDIR=str(tmp_path / "tmp"))


def calls(env, tool="gcloud") -> list[list[str]]:
  if not os.path.exists(env["FAKE_LOG"]):
    return []
  with open(env["FAKE_LOG"]) as f:
    return [c["argv"] for c in map(json.loads, f) if c["tool"] == tool]


def launch(env, *args, script=TPU, timeout=60, check=True) -> subprocess.CompletedProcess:
  cmd = [script] if script.endswith(".sh") else [sys.executable, script]
  done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  if check and done.returncode != 0:
    raise AssertionError(f"{args} exited {done.returncode}: {done.stderr}")
  return done


def git(repo, *args) -> str:
  return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                         *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
  """A throwaway checkout: a few committed files and nothing else."""
  r = tmp_path / "repo"
  for path, text in {"setup.py": "# setup\n", "configs/paper.py": "# paper\n",
                     "pkg/a.py": "A = 1\n", "pkg/gone.py": "", ".gitignore": "*.log\n"}.items():
    (r / path).parent.mkdir(parents=True, exist_ok=True)
    (r / path).write_text(text)
  git(tmp_path, "init", "-q", str(r))
  git(r, "add", "-A")
  git(r, "commit", "-q", "-m", "init")
  return r


@pytest.fixture
def worker(tmp_path, env):
  """One emulated TPU worker: FAKE_HOME is its home; the fake ttc-jax is 'installed'."""
  home = tmp_path / "worker"
  venv_bin = home / "ttc_jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  _script(venv_bin / "ttc-jax", FAKE_TTC_JAX)
  env.update(FAKE_HOME=str(home), FAKE_JOB=str(tmp_path / "job.json"),
             FAKE_RELEASE=str(tmp_path / "release"))
  yield home
  open(env["FAKE_RELEASE"], "w").close()  # a job still waiting ends now
  pid_file = home / "ttc_jax" / "logs" / "job.pid"
  if pid_file.exists():
    deadline = time.time() + 10
    while time.time() < deadline and _alive(int(pid_file.read_text())):
      time.sleep(0.05)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  try:  # a zombie is not alive
    return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def _wait_for(path, seconds=20):
  deadline = time.time() + seconds
  while not os.path.exists(path):
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


GLOBAL = [f"--name={NAME}", f"--zone={ZONE}", f"--project={PROJECT}"]


def full_example(repo, dest) -> list[list[str]]:
  """The README's sequence: create -> ship -> install -> run -> status -> fetch -> delete."""
  return [
      [*GLOBAL, "create", "--accelerator-type=v5p-16"],
      [*GLOBAL, f"--repo={repo}", "ship"],
      [*GLOBAL, "install"],
      [*GLOBAL, f"--repo={repo}", "run", "--workdir=workdir/paper", "--",
       "--config=configs/paper.py"],
      [*GLOBAL, "status"],
      [*GLOBAL, "fetch", "--workdir=workdir/paper", f"--dest={dest}"],
      [*GLOBAL, "delete", "--yes"],
  ]


def test_dry_run_prints_every_command_and_calls_nothing(env, repo, tmp_path):
  printed = []
  for args in full_example(repo, tmp_path / "fetched"):
    out = launch(env, "--dry-run", *args).stdout
    printed.append([shlex.split(line) for line in out.splitlines()])
  assert calls(env) == []  # nothing ran
  assert not os.listdir(env["TMPDIR"]) and not (tmp_path / "fetched").exists()
  lines = [line for step in printed for line in step]
  assert all(line[:3] == ["gcloud", "compute", "tpus"] for line in lines)
  assert [len(step) for step in printed] == [2, 2, 1, 1, 1, 2, 1]  # create+describe, scp+ssh...
  assert [line[3:5] for line in lines] == [
      ["queued-resources", "create"], ["queued-resources", "describe"],
      ["tpu-vm", "scp"], ["tpu-vm", "ssh"], ["tpu-vm", "ssh"], ["tpu-vm", "ssh"],
      ["tpu-vm", "ssh"], ["tpu-vm", "scp"], ["tpu-vm", "scp"], ["queued-resources", "delete"]]
  assert all(f"--project={PROJECT}" in line for line in lines)
  # The wrapper prints the same.
  wrapped = launch(env, *GLOBAL, "--dry-run", "status", script=WRAPPER).stdout
  assert [shlex.split(line) for line in wrapped.splitlines()] == printed[4]


def test_real_run_calls_gcloud_in_order_with_the_printed_arguments(env, repo, tmp_path):
  dest = tmp_path / "fetched"
  dry = []
  for args in full_example(repo, dest):
    dry += [shlex.split(line)[1:] for line in launch(env, "--dry-run", *args).stdout.splitlines()]
  for args in full_example(repo, dest):
    launch(env, *args)
  got = calls(env)
  assert got == dry  # the dry run printed exactly what a real run calls
  archive = os.path.join(env["TMPDIR"], f"ttc_jax-ship-{NAME}.tar.gz")
  zone, project = f"--zone={ZONE}", f"--project={PROJECT}"
  ssh = ["compute", "tpus", "tpu-vm", "ssh", NAME, zone, "--worker=all"]
  assert got[0] == ["compute", "tpus", "queued-resources", "create", NAME, f"--node-id={NAME}",
                    zone, "--accelerator-type=v5p-16", "--runtime-version=v2-alpha-tpuv5",
                    project]
  assert got[1] == ["compute", "tpus", "queued-resources", "describe", NAME, zone,
                    "--format=value(state.state)", project]
  assert got[2] == ["compute", "tpus", "tpu-vm", "scp", archive, f"{NAME}:ttc_jax.tar.gz", zone,
                    "--worker=all", project]
  for i, needle in ((3, 'tar -xzf "$HOME/ttc_jax.tar.gz"'),
                    (4, ".venv/bin/pip install -q 'jax[tpu]' ."),
                    (5, "setsid nohup sh -c"), (6, "tail -n 20 logs/job.log")):
    assert got[i][:7] == ssh and got[i][8:] == [project], got[i]
    assert got[i][7].startswith("--command=") and needle in got[i][7], (i, got[i][7])
  assert got[7] == ["compute", "tpus", "tpu-vm", "scp", "--recurse",
                    f"{NAME}:ttc_jax/workdir/paper", str(dest), zone, "--worker=0", project]
  assert got[8] == ["compute", "tpus", "tpu-vm", "scp", "--recurse", f"{NAME}:ttc_jax/logs",
                    str(dest), zone, "--worker=0", project]
  assert got[9] == ["compute", "tpus", "queued-resources", "delete", NAME, zone, "--force",
                    "--quiet", project]


def test_tpu_vm_create_and_delete(env):
  launch(env, *GLOBAL, "--via=tpu-vm", "create", "--accelerator-type=v6e-8", "--spot")
  launch(env, *GLOBAL, "--via=tpu-vm", "delete")
  assert calls(env) == [
      ["compute", "tpus", "tpu-vm", "create", NAME, f"--zone={ZONE}", "--accelerator-type=v6e-8",
       "--version=v2-alpha-tpuv6e", "--spot", f"--project={PROJECT}"],
      ["compute", "tpus", "tpu-vm", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}"]]


def _archive_members(env) -> dict[str, bytes]:
  with tarfile.open(os.path.join(env["TMPDIR"], f"ttc_jax-ship-{NAME}.tar.gz")) as tar:
    return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_ship_sends_uncommitted_changes_and_never_big_folders(env, repo, worker):
  (repo / "pkg" / "a.py").write_text("A = 2  # edited, not committed\n")
  (repo / "pkg" / "new.py").write_text("NEW = 1\n")  # untracked
  (repo / "pkg" / "gone.py").unlink()  # deleted, not committed
  (repo / "run.log").write_text("ignored by .gitignore\n")
  for junk in (".venv/lib/big.so", "venv/x", "workdir/paper/summary.json", "workdir-old/x",
               "pkg/__pycache__/a.pyc"):  # not in this repo's .gitignore: never shipped anyway
    (repo / junk).parent.mkdir(parents=True, exist_ok=True)
    (repo / junk).write_text("junk\n")
  results = worker / "ttc_jax" / "workdir" / "paper" / "summary.json"  # an earlier job's
  results.parent.mkdir(parents=True)
  results.write_text("{}")
  launch(env, *GLOBAL, f"--repo={repo}", "ship")

  members = _archive_members(env)
  assert sorted(members) == [".gitignore", ".shipped.json", "configs/paper.py", "pkg/a.py",
                             "pkg/new.py", "setup.py"]
  assert members["pkg/a.py"] == b"A = 2  # edited, not committed\n"
  manifest = json.loads(members[".shipped.json"])
  assert manifest["commit"] == git(repo, "rev-parse", "HEAD").strip()
  assert sorted(manifest["uncommitted"]) == [".venv/lib/big.so", "pkg/__pycache__/a.pyc",
                                             "pkg/a.py", "pkg/gone.py", "pkg/new.py", "venv/x",
                                             "workdir-old/x", "workdir/paper/summary.json"]
  shipped = worker / "ttc_jax"
  assert (shipped / "pkg" / "a.py").read_text() == "A = 2  # edited, not committed\n"
  assert (shipped / "pkg" / "new.py").exists() and not (shipped / "pkg" / "gone.py").exists()
  assert not (worker / "ttc_jax.tar.gz").exists()

  # Shipping again drops files the last ship brought; results, venv and logs stay.
  (repo / "pkg" / "new.py").unlink()
  launch(env, *GLOBAL, f"--repo={repo}", "ship")
  assert not (shipped / "pkg" / "new.py").exists() and (shipped / "pkg" / "a.py").exists()
  assert results.read_text() == "{}" and (shipped / ".venv" / "bin" / "ttc-jax").exists()


def test_committed_only_refuses_a_dirty_tree_in_one_line(env, repo, worker):
  launch(env, *GLOBAL, f"--repo={repo}", "ship", "--committed-only")  # clean: ships
  assert sorted(_archive_members(env)) == [".gitignore", ".shipped.json", "configs/paper.py",
                                           "pkg/a.py", "pkg/gone.py", "setup.py"]
  n = len(calls(env))
  for dirty in ("edit", "untracked"):
    if dirty == "edit":
      (repo / "pkg" / "a.py").write_text("A = 3\n")
    else:
      git(repo, "checkout", "-q", "--", ".")
      (repo / "notes.txt").write_text("scratch\n")
    for extra in ([], ["--dry-run"]):
      done = launch(env, *GLOBAL, f"--repo={repo}", "ship", "--committed-only", *extra,
                    check=False)
      assert done.returncode == 2, done
      assert len(done.stderr.splitlines()) == 1 and "--committed-only" in done.stderr, done.stderr
      assert "uncommitted" in done.stderr and done.stdout == ""
  assert len(calls(env)) == n  # no gcloud call after the first ship


WEIRD = ["--config=configs/paper.py", '--config.search.strategies=("best_of_n",)',
         "--config.note=it's \"quoted\" $HOME `date` ; echo pwned &"]


def test_run_quotes_every_argument_and_detaches_the_job(env, repo, worker):
  began = time.time()
  done = launch(env, *GLOBAL, f"--repo={repo}", "run", "--workdir=/tmp/a b", "--", *WEIRD,
                timeout=20)
  _wait_for(env["FAKE_JOB"])
  assert not os.path.exists(env["FAKE_RELEASE"]) and time.time() - began < 20
  with open(env["FAKE_JOB"]) as f:
    job = json.load(f)
  # Every argument arrives exactly as given, after --distributed.
  assert job["argv"] == ["--distributed", *WEIRD, "--config.workdir=/tmp/a b"]
  assert job["cwd"] == str(worker / "ttc_jax")
  logs = worker / "ttc_jax" / "logs"
  # Detached: the launcher returned while the job still runs, in a session of its own
  # (setsid), ignoring SIGHUP (nohup), with no file of the ssh session open.
  assert _alive(job["pid"])
  assert job["sid"] != os.getsid(0) and job["sid"] == job["pgid"]
  assert job["sid"] == int((logs / "job.pid").read_text())
  assert job["sighup_ignored"]
  assert job["stdin"] == "/dev/null" and job["stdout"] == str(logs / "job.log")
  assert "started pid" in done.stdout
  assert shlex.split((logs / "job.cmd").read_text()) == [".venv/bin/ttc-jax", *job["argv"]]

  status = launch(env, *GLOBAL, "status").stdout
  assert f"running (pid {job['sid']})" in status
  again = launch(env, *GLOBAL, f"--repo={repo}", "run", "--", WEIRD[0], check=False)
  assert again.returncode != 0 and "already running" in again.stderr

  open(env["FAKE_RELEASE"], "w").close()
  _wait_for(logs / "job.rc")
  time.sleep(0.2)
  status = launch(env, *GLOBAL, "status").stdout
  assert "finished, exit code 3" in status
  assert any(line.endswith("] hello from the job") for line in status.splitlines()), status
  assert (logs / "job.log").read_text() == "hello from the job\n"


def test_stop_ends_the_job_and_status_says_so(env, repo, worker):
  launch(env, *GLOBAL, f"--repo={repo}", "run", "--", WEIRD[0])
  _wait_for(env["FAKE_JOB"])
  with open(env["FAKE_JOB"]) as f:
    pid = json.load(f)["pid"]
  assert "stopped" in launch(env, *GLOBAL, "stop").stdout
  deadline = time.time() + 10
  while _alive(pid):
    assert time.time() < deadline, "the job survived stop"
    time.sleep(0.05)
  assert "not running" in launch(env, *GLOBAL, "status").stdout


def test_fetch_copies_the_workdir_and_logs_or_prints_the_storage_command(env, worker, tmp_path):
  summary = worker / "ttc_jax" / "workdir" / "paper" / "summary.json"
  summary.parent.mkdir(parents=True)
  summary.write_text('{"ok": 1}')
  (worker / "ttc_jax" / "logs").mkdir()
  (worker / "ttc_jax" / "logs" / "job.log").write_text("log\n")
  dest = tmp_path / "back"
  launch(env, *GLOBAL, "fetch", f"--dest={dest}", "--", "--config.workdir=workdir/paper")
  assert (dest / "paper" / "summary.json").read_text() == '{"ok": 1}'
  assert (dest / "logs" / "job.log").read_text() == "log\n"

  n = len(calls(env))
  out = launch(env, *GLOBAL, "fetch", "--workdir=gs://bucket/run 1", f"--dest={dest}").stdout
  assert shlex.split(out.splitlines()[0]) == ["gcloud", "storage", "cp", "--recursive",
                                              "gs://bucket/run 1", str(dest)]
  assert [c[3:5] for c in calls(env)[n:]] == [["scp", "--recurse"]]  # the logs only


@pytest.mark.parametrize("args, message", [
    (["run"], "no config"),
    (["run", "--", "--config=configs/nope.py"], "is not in"),
    (["run", "--workdir=a", "--", "--config=configs/paper.py", "--config.workdir=b"],
     "disagree"),
    (["fetch"], "needs the job's workdir"),
    (["ship", "--", "--config=configs/paper.py"], "takes no ttc-jax flags"),
    (["create"], "--accelerator-type"),
    (["create", "--accelerator-type=v9x-8"], "pass --version"),
])
def test_mistakes_end_in_one_line_and_exit_2(env, repo, args, message):
  done = launch(env, *GLOBAL, f"--repo={repo}", *args, check=False)
  assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done
  assert message in done.stderr and calls(env) == []
  done = launch(env, f"--zone={ZONE}", "status", check=False)
  assert done.returncode == 2 and "--name is required" in done.stderr


def test_slurm_dry_run_prints_the_script_and_the_sbatch_command(env, repo, tmp_path):
  out = launch(env, f"--repo={repo}", "submit", "--nodes=2", "--gpus-per-node=4",
               "--partition=gpu", "--dry-run", "--", "--config=configs/paper.py",
               script=SLURM).stdout.splitlines()
  assert calls(env, "sbatch") == [] and not (repo / "workdir").exists()
  path = os.path.join(repo, "workdir", "slurm", "ttc-jax.sbatch")
  assert out[0] == f"# {path}" and out[1] == "#!/bin/bash"
  for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
               "#SBATCH --partition=gpu",
               f"#SBATCH --output={os.path.join(repo, 'workdir', 'slurm', 'slurm-%j.log')}"):
    assert line in out
  srun = next(line for line in out if line.startswith("srun "))
  assert shlex.split(srun) == ["srun", "--kill-on-bad-exit=1",
                               os.path.join(repo, ".venv", "bin", "ttc-jax"), "--distributed",
                               "--config=configs/paper.py"]
  assert out[-1] == f"sbatch --parsable {path}"


def test_slurm_submit_writes_a_script_whose_srun_gets_every_argument(env, repo, tmp_path):
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  _script(venv / "bin" / "ttc-jax", FAKE_TTC_JAX)
  env["FAKE_JOB"] = str(tmp_path / "job.json")
  done = launch(env, f"--repo={repo}", f"--venv={venv}", "submit", "--nodes=3", "--time=1:00:00",
                "--workdir=/tmp/a b", "--", *WEIRD, script=SLURM)
  assert done.stdout.strip() == "4242"
  (argv,) = calls(env, "sbatch")
  script_path = os.path.join(repo, "workdir", "slurm", "ttc-jax.sbatch")
  assert argv == ["--parsable", script_path]
  with open(script_path) as f:
    script = f.read()
  assert "#SBATCH --nodes=3\n" in script and "#SBATCH --time=1:00:00\n" in script
  # Run the submitted script as a node would (srun: a stand-in that runs its command).
  assert subprocess.run(["bash", script_path], env=env, timeout=30).returncode == 3
  with open(env["FAKE_JOB"]) as f:
    job = json.load(f)
  assert job["argv"] == ["--distributed", *WEIRD, "--config.workdir=/tmp/a b"]
  assert job["cwd"] == str(repo)

  launch(env, f"--repo={repo}", "status", "4242", script=SLURM)
  launch(env, f"--repo={repo}", "cancel", "4242", script=SLURM)
  assert calls(env, "squeue") == [["--job=4242", "--format=%.12i %.10T %.10M %.6D %R"]]
  assert calls(env, "scancel") == [["4242"]]
