#!/usr/bin/env python3
"""Run ttc-jax on every worker of a Cloud TPU VM slice (standard library only; needs gcloud).

    python launch/tpu.py --name=NAME --zone=ZONE [--project=P] COMMAND [options] [-- ttc-jax flags]

Commands, in the order a run uses them:
  create   the slice: a queued resource (default; waits until ACTIVE) or, with
           --via=tpu-vm, `gcloud compute tpus tpu-vm create`
  ship     this checkout's working tree, uncommitted changes included (what
           `git ls-files -co --exclude-standard` lists; never .git, .venv/, venv/,
           workdir*/), to ~/ttc_jax on every worker; --committed-only refuses a dirty tree
  install  a venv ~/ttc_jax/.venv on every worker with `pip install 'jax[tpu]' .`
  run      the same `ttc-jax --distributed FLAGS` on every worker, detached from ssh
           (setsid + nohup), from ~/ttc_jax; log ~/ttc_jax/logs/job.log on each worker
  status   per worker: running / finished with its exit code, and the log's tail
  stop     ends the job on every worker
  fetch    the job's workdir and logs from worker 0 (process 0 writes the results);
           for a gs:// workdir, prints the `gcloud storage cp` command instead
  delete   the slice

--dry-run prints every gcloud command, one per line, and runs nothing.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

PROG = "tpu.py"
REMOTE = "ttc_jax"  # on every worker: ~/ttc_jax holds the code, .venv/ and logs/
ARCHIVE = "ttc_jax.tar.gz"  # ship copies the archive to ~/ttc_jax.tar.gz first
NEVER_SHIPPED = (".git", ".venv", "venv", "workdir*", "__pycache__")  # any path component
RUNTIMES = (  # accelerator-type prefix -> default runtime (--version); cloud.google.com/tpu/docs/runtimes
    ("v6e", "v2-alpha-tpuv6e"), ("v5litepod", "v2-alpha-tpuv5-lite"), ("v5p", "v2-alpha-tpuv5"),
    ("v4", "tpu-ubuntu2204-base"), ("v3", "tpu-ubuntu2204-base"), ("v2", "tpu-ubuntu2204-base"))
COMMANDS = ("create", "ship", "install", "run", "status", "stop", "fetch", "delete")

# Shell fragments run on the workers (POSIX sh, one line each).
_HOST = 'h=$(hostname)'
# Alive and not a zombie (an orphan nobody has reaped yet still answers kill -0).
_RUNNING = ('[ -f logs/job.pid ] && ps -o stat= -p "$(cat logs/job.pid)" 2>/dev/null '
            '| grep -qv "^Z"')
_CD = f'cd "$HOME/{REMOTE}"'


def _globals(g, d) -> None:
  """The global flags (`common.command_parser`)."""
  g.add_argument("--name", default=d(None), help="the TPU (and queued resource) name")
  g.add_argument("--zone", default=d(None), help="e.g. us-east5-a")
  g.add_argument("--project", default=d(None), help="GCP project (default: gcloud's)")
  g.add_argument("--accelerator-type", default=d(None), help="create: e.g. v5p-64, v6e-8")
  g.add_argument("--version", default=d(None),
                 help="create: TPU runtime (software) version; default from the accelerator "
                 "type (" + ", ".join(f"{a}*: {v}" for a, v in RUNTIMES) + ")")
  g.add_argument("--via", choices=("queued-resources", "tpu-vm"), default=d("queued-resources"),
                 help="create/delete through `queued-resources` (default) or `tpu-vm`")
  g.add_argument("--workdir", default=d(None),
                 help="the job's workdir: run passes --config.workdir=DIR, fetch copies it "
                 "back (relative paths are under ~/ttc_jax on the workers)")
  g.add_argument("--repo", default=d(common.REPO),
                 help="ship: the git checkout to ship (default: the one holding this script)")
  g.add_argument("--dry-run", action="store_true", default=d(False),
                 help="print every gcloud command, one per line; run nothing")


def parser() -> argparse.ArgumentParser:
  p, command = common.command_parser(
      PROG, __doc__, _globals,
      epilog="ttc-jax flags go after `--`, e.g. "
      "`run -- --config=configs/paper.py --config.search.strategies='(\"best_of_n\",)'`.")

  c = command("create", "create the slice")
  c.add_argument("--spot", action="store_true", help="Spot capacity (preemptible)")
  c.add_argument("--reserved", action="store_true", help="use the project's reservation")
  c.add_argument("--no-wait", action="store_true",
                 help="queued resources: return at once instead of waiting for ACTIVE")
  c.add_argument("--wait-minutes", type=float, default=120,
                 help="queued resources: give up waiting after this long (default 120)")
  c.add_argument("--poll-seconds", type=float, default=30, help=argparse.SUPPRESS)
  c = command("ship", "copy the working tree to ~/ttc_jax on every worker")
  c.add_argument("--committed-only", action="store_true",
                 help="ship HEAD's files only, and refuse (exit 2) if the tree is dirty")
  c = command("install", "make ~/ttc_jax/.venv and pip install 'jax[tpu]' . on every worker")
  c.add_argument("--python", default="auto",
                 help="interpreter for the venv (default: the newest python3.1x >= 3.11)")
  c.add_argument("--jax", default="jax[tpu]", help="the jax requirement (default jax[tpu])")
  c.add_argument("--recreate", action="store_true", help="delete ~/ttc_jax/.venv first")
  command("run", "start ttc-jax --distributed FLAGS (after --) on every worker, detached")
  c = command("status", "is the job running on each worker; the tail of its log")
  c.add_argument("--lines", type=int, default=20, help="log lines per worker (default 20)")
  c.add_argument("--worker", default="all", help="all (default) or a worker index")
  command("stop", "end the job on every worker (SIGTERM to its process group)")
  c = command("fetch", "copy the workdir and the logs back from worker 0")
  c.add_argument("--dest", default=None,
                 help="local folder (default REPO/workdir/fetched/NAME); gets WORKDIR's "
                 "basename and logs/ inside")
  c.add_argument("--worker", default="0", help="worker to copy from (default 0)")
  c = command("delete", "delete the slice")
  c.add_argument("--yes", action="store_true", help="no confirmation prompt (gcloud --quiet)")
  return p


class Launcher:

  def __init__(self, args: argparse.Namespace, ttc_args: list[str]):
    self.a = args
    self.ttc_args = ttc_args
    self.sh = common.Runner(args.dry_run, PROG)
    for flag in ("name", "zone"):
      if not getattr(args, flag):
        raise common.Fail(f"--{flag} is required (the slice's {flag}).")

  # --- gcloud commands -------------------------------------------------------------------

  def _gcloud(self, *parts: str) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", *parts]
    return cmd + ([f"--project={self.a.project}"] if self.a.project else [])

  def _ssh(self, script: str, worker: str = "all") -> list[str]:
    return self._gcloud("tpu-vm", "ssh", self.a.name, f"--zone={self.a.zone}",
                        f"--worker={worker}", f"--command={script}")

  def _scp(self, src: str, dst: str, worker: str, recurse: bool = False) -> list[str]:
    return self._gcloud("tpu-vm", "scp", *(["--recurse"] if recurse else []), src, dst,
                        f"--zone={self.a.zone}", f"--worker={worker}")

  # --- commands ------------------------------------------------------------------------

  def create(self) -> None:
    a = self.a
    if not a.accelerator_type:
      raise common.Fail("create needs --accelerator-type (e.g. v5p-64, v5litepod-16, v6e-8).")
    version = a.version or next(
        (v for prefix, v in RUNTIMES if a.accelerator_type.startswith(prefix + "-")), None)
    if version is None:
      raise common.Fail(f"no default runtime for {a.accelerator_type!r}; pass --version.")
    tier = (["--spot"] if a.spot else []) + (["--reserved"] if a.reserved else [])
    if a.via == "tpu-vm":
      self.sh(self._gcloud("tpu-vm", "create", a.name, f"--zone={a.zone}",
                           f"--accelerator-type={a.accelerator_type}", f"--version={version}",
                           *tier))
      return
    self.sh(self._gcloud("queued-resources", "create", a.name, f"--node-id={a.name}",
                         f"--zone={a.zone}", f"--accelerator-type={a.accelerator_type}",
                         f"--runtime-version={version}", *tier))
    if a.no_wait:
      return
    describe = self._gcloud("queued-resources", "describe", a.name, f"--zone={a.zone}",
                            "--format=value(state.state)")
    deadline = time.monotonic() + 60 * a.wait_minutes
    while True:
      state = self.sh(describe, capture=True).strip()
      if a.dry_run or state == "ACTIVE":
        return
      if state in ("FAILED", "SUSPENDING", "SUSPENDED"):
        raise common.Fail(f"queued resource {a.name} is {state}; see `gcloud compute tpus "
                          f"queued-resources describe {a.name} --zone={a.zone}`.", code=1)
      if time.monotonic() > deadline:
        raise common.Fail(f"queued resource {a.name} is still {state or 'not ACTIVE'} after "
                          f"{a.wait_minutes:g} minutes; check it later with status.", code=1)
      print(f"{PROG}: {a.name} is {state or '?'}; waiting", file=sys.stderr, flush=True)
      time.sleep(a.poll_seconds)

  def ship(self) -> None:
    files, dirty, commit = _working_tree(self.a.repo, self.a.committed_only)
    archive = os.path.join(tempfile.gettempdir(), f"ttc_jax-ship-{self.a.name}.tar.gz")
    what = "HEAD's files" if self.a.committed_only else (
        f"the working tree ({len(dirty)} uncommitted changes)" if dirty else "the working tree")
    print(f"{PROG}: shipping {len(files)} files, {what}, in {archive}", file=sys.stderr)
    if not self.a.dry_run:
      _write_archive(self.a.repo, files, archive,
                     {"commit": commit, "uncommitted": dirty,
                      "shipped_at": datetime.datetime.now().astimezone().isoformat()})
    self.sh(self._scp(archive, f"{self.a.name}:{ARCHIVE}", "all"))
    self.sh(self._ssh("; ".join([
        "set -e", f'mkdir -p "$HOME/{REMOTE}/logs"', _CD, _HOST,
        f'if {_RUNNING}; then echo "$h: a job is running (pid $(cat logs/job.pid)); stop it '
        f'first" >&2; exit 1; fi',
        # Files the previous ship brought are removed first; .venv/, logs/ and workdirs stay.
        'if [ -f .shipped-files ]; then while IFS= read -r f; do rm -f -- "$f"; done '
        '< .shipped-files; fi',
        f'tar -xzf "$HOME/{ARCHIVE}"', f'tar -tzf "$HOME/{ARCHIVE}" > .shipped-files',
        f'rm -f "$HOME/{ARCHIVE}"',
        # An existing venv gets the new code at once (dependencies untouched).
        'if [ -x .venv/bin/pip ]; then .venv/bin/pip install -q --no-deps .; fi',
        f'echo "$h: shipped $(wc -l < .shipped-files) files to ~/{REMOTE}"'])))

  def install(self) -> None:
    a = self.a
    if a.python == "auto":
      find = ('PY=; for p in python3.13 python3.12 python3.11 python3; do if command -v "$p" '
              '>/dev/null 2>&1 && "$p" -c "import sys; sys.exit(sys.version_info < (3, 11))"; '
              'then PY=$p; break; fi; done')
    else:
      find = (f'PY={shlex.quote(a.python)}; "$PY" -c "import sys; sys.exit(sys.version_info '
              f'< (3, 11))" || PY=')
    self.sh(self._ssh("; ".join([
        "set -e", _CD, _HOST, find,
        'if [ -z "$PY" ]; then echo "$h: no Python >= 3.11 (ttc_jax needs one): install it '
        '(e.g. sudo apt-get install -y python3.11 python3.11-venv) or pass --python" >&2; '
        'exit 1; fi',
        *(["rm -rf .venv"] if a.recreate else []),
        'if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi',
        ".venv/bin/pip install -q --upgrade pip",
        f".venv/bin/pip install -q {shlex.quote(a.jax)} .",
        'echo "$h: installed $(.venv/bin/python -c "import jax; print(\'jax\', '
        'jax.__version__)")"'])))

  def run(self) -> None:
    args = common.job_args(self.ttc_args, self.a.workdir, self.a.repo)
    if self.a.workdir is None and common.config_workdir(args) is None:
      print(f"{PROG}: note: no --workdir; the job uses its config's workdir (relative ones "
            f"are under ~/{REMOTE}); pass the same path to fetch --workdir.", file=sys.stderr)
    job = shlex.join([".venv/bin/ttc-jax", *args])
    print(f"{PROG}: on every worker, in ~/{REMOTE}: {job}", file=sys.stderr)
    # sh records its pid and the job's exit code; setsid: its own session and process group
    # (stop kills the group), so nothing ends when ssh hangs up; nohup: SIGHUP ignored.
    wrapped = f"echo $$ > logs/job.pid; {job}; echo $? > logs/job.rc"
    self.sh(self._ssh("; ".join([
        "set -e", _CD, _HOST,
        'if [ ! -x .venv/bin/ttc-jax ]; then echo "$h: ttc-jax is not installed; run ship and '
        'install first" >&2; exit 1; fi',
        f'if {_RUNNING}; then echo "$h: a job is already running (pid $(cat logs/job.pid))" '
        f'>&2; exit 1; fi',
        "mkdir -p logs",
        'if [ -f logs/job.log ]; then mv logs/job.log "logs/job.$(date +%Y%m%d-%H%M%S).log"; fi',
        "rm -f logs/job.rc", f"printf '%s\\n' {shlex.quote(job)} > logs/job.cmd",
        f"setsid nohup sh -c {shlex.quote(wrapped)} > logs/job.log 2>&1 < /dev/null & "
        "echo $! > logs/job.pid",
        f'echo "$h: started pid $(cat logs/job.pid); log ~/{REMOTE}/logs/job.log"'])))

  def status(self) -> None:
    self.sh(self._ssh("; ".join([
        _HOST,
        f'if ! {_CD} 2>/dev/null; then echo "[$h] nothing shipped"; exit 0; fi',
        f'if {_RUNNING}; then echo "[$h] running (pid $(cat logs/job.pid))"; '
        'elif [ -f logs/job.rc ]; then echo "[$h] finished, exit code $(cat logs/job.rc)"; '
        'elif [ -f logs/job.pid ]; then echo "[$h] not running, no exit code (killed, or the '
        'VM restarted)"; else echo "[$h] no job started"; fi',
        f'if [ -f logs/job.log ]; then tail -n {int(self.a.lines)} logs/job.log | '
        'sed "s|^|[$h] |"; fi']), worker=self.a.worker))

  def stop(self) -> None:
    self.sh(self._ssh("; ".join([
        _HOST, f'if ! {_CD} 2>/dev/null; then echo "[$h] nothing shipped"; exit 0; fi',
        f'if {_RUNNING}; then kill -TERM -"$(cat logs/job.pid)"; echo "[$h] stopped pid '
        '$(cat logs/job.pid)"; else echo "[$h] not running"; fi'])))

  def fetch(self) -> None:
    workdir = self.a.workdir or common.config_workdir(self.ttc_args)
    if not workdir:
      raise common.Fail("fetch needs the job's workdir: --workdir=DIR (what the job ran "
                        "with as --config.workdir).")
    dest = self.a.dest or os.path.join(self.a.repo, "workdir", "fetched", self.a.name)
    if not self.a.dry_run:
      os.makedirs(dest, exist_ok=True)
    if "://" in workdir:
      # A cloud workdir outlives the slice: copy it with gcloud storage, whenever.
      print(f"{PROG}: {workdir} is not on the workers; copy it with:", file=sys.stderr)
      print(shlex.join(["gcloud", "storage", "cp", "--recursive", workdir, dest]))
    else:
      remote = os.path.normpath(workdir if os.path.isabs(workdir)
                                else os.path.join(REMOTE, workdir))  # scp: relative to ~
      self.sh(self._scp(f"{self.a.name}:{remote}", dest, self.a.worker, recurse=True))
    self.sh(self._scp(f"{self.a.name}:{REMOTE}/logs", dest, self.a.worker, recurse=True))
    if not self.a.dry_run:
      print(f"{PROG}: fetched into {dest}", file=sys.stderr)

  def delete(self) -> None:
    quiet = ["--quiet"] if self.a.yes else []
    if self.a.via == "tpu-vm":
      self.sh(self._gcloud("tpu-vm", "delete", self.a.name, f"--zone={self.a.zone}", *quiet))
    else:  # --force: the TPU VMs go with the queued resource
      self.sh(self._gcloud("queued-resources", "delete", self.a.name, f"--zone={self.a.zone}",
                           "--force", *quiet))


def _git(repo: str, *args: str) -> str:
  try:
    return subprocess.run(["git", "-C", repo, *args], check=True, text=True,
                          capture_output=True).stdout
  except FileNotFoundError:
    raise common.Fail("git is not on PATH.") from None
  except subprocess.CalledProcessError as e:
    raise common.Fail(f"git {' '.join(args)} in {repo}: "
                      f"{(e.stderr or '').strip().splitlines()[-1:] or e.returncode}") from None


def _never_shipped(path: str) -> bool:
  return any(fnmatch.fnmatch(part, pattern) for part in path.split("/")
             for pattern in NEVER_SHIPPED)


def _is_real_dir(path: str) -> bool:
  return os.path.isdir(path) and not os.path.islink(path)


def _working_tree(repo: str, committed_only: bool) -> tuple[list[str], list[str], str]:
  """(files to ship, uncommitted paths, HEAD's commit) of the checkout at `repo`."""
  top = _git(repo, "rev-parse", "--show-toplevel").strip()
  if os.path.realpath(top) != os.path.realpath(repo):
    raise common.Fail(f"{repo} is not the top of a git checkout (that is {top}).")
  commit = _git(repo, "rev-parse", "HEAD").strip()
  # -z: paths as they are; renames in --porcelain -z carry the old path as an extra entry.
  entries = _git(repo, "status", "--porcelain", "-z", "--untracked-files=all").split("\0")
  dirty, skip = [], False
  for entry in entries:
    if skip or not entry:
      skip = False
      continue
    dirty.append(entry[3:])
    skip = entry[0] in "RC"
  if committed_only and dirty:
    raise common.Fail(f"--committed-only: the working tree has {len(dirty)} uncommitted "
                      f"change(s) (e.g. {dirty[0]}); commit or stash them, or ship without "
                      f"--committed-only.")
  listed = _git(repo, "ls-files", "-z", "--cached", *(
      [] if committed_only else ["--others", "--exclude-standard"])).split("\0")
  files = sorted({f for f in listed if f and not _never_shipped(f)
                  and os.path.lexists(os.path.join(repo, f))  # deleted, not yet committed
                  and not _is_real_dir(os.path.join(repo, f))})  # a submodule
  return files, dirty, commit


def _write_archive(repo: str, files: list[str], path: str, manifest: dict) -> None:
  with tarfile.open(path, "w:gz") as tar:
    for f in files:
      tar.add(os.path.join(repo, f), arcname=f, recursive=False)
    data = json.dumps(manifest, indent=1).encode()
    info = tarfile.TarInfo(".shipped.json")  # which commit, which uncommitted changes
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str]) -> None:
  own, ttc_args = common.split_passthrough(argv)
  args = parser().parse_args(own)
  if ttc_args and args.command not in ("run", "fetch"):
    raise common.Fail(f"{args.command} takes no ttc-jax flags (only run and fetch read the "
                      f"flags after --).")
  getattr(Launcher(args, ttc_args), args.command)()


if __name__ == "__main__":
  common.run_main(PROG, main)
