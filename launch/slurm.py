#!/usr/bin/env python3
"""Run ttc-jax on N GPU nodes of a SLURM cluster (standard library only; needs sbatch).

    python launch/slurm.py COMMAND [options] [-- ttc-jax flags]

Commands:
  install  a venv (default REPO/.venv) with `pip install 'jax[cuda12]' REPO`, here, on the
           shared filesystem the nodes see
  submit   writes an sbatch script (LOG_DIR/JOB_NAME.sbatch) that runs
           `srun VENV/bin/ttc-jax --distributed FLAGS` from the repository root on --nodes
           nodes, one process per GPU (jax.distributed.initialize() reads SLURM_PROCID,
           SLURM_NTASKS and SLURM_LOCALID), and submits it with sbatch
  status   squeue for the job, and the tail of its log (LOG_DIR/slurm-JOBID.log)
  cancel   scancel

--dry-run prints the sbatch script and every command, and runs nothing.
The job runs the package installed in the venv: after changing the code, run install again.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

PROG = "slurm.py"


def _globals(g, d) -> None:
  """The global flags (`common.command_parser`)."""
  g.add_argument("--repo", default=d(common.REPO),
                 help="the checkout the job runs from (default: the one holding this script)")
  g.add_argument("--venv", default=d(None), help="the venv (default REPO/.venv)")
  g.add_argument("--log-dir", default=d(None),
                 help="sbatch scripts and job logs (default REPO/workdir/slurm)")
  g.add_argument("--dry-run", action="store_true", default=d(False),
                 help="print the sbatch script and every command; run nothing")


def parser() -> argparse.ArgumentParser:
  p, command = common.command_parser(PROG, __doc__, _globals)

  c = command("install", "make the venv and pip install 'jax[cuda12]' REPO into it")
  c.add_argument("--python", default="python3", help="interpreter for the venv (>= 3.11)")
  c.add_argument("--jax", default="jax[cuda12]", help="the jax requirement (default jax[cuda12])")
  c = command("submit", "write the sbatch script and submit it (ttc-jax flags after --)")
  c.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
  c.add_argument("--gpus-per-node", type=int, default=8,
                 help="GPUs per node, one process each (default 8)")
  c.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per process")
  c.add_argument("--partition", default=None)
  c.add_argument("--account", default=None)
  c.add_argument("--time", default=None, help="time limit, e.g. 24:00:00")
  c.add_argument("--job-name", default="ttc-jax")
  c.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                 help="another #SBATCH line, e.g. --sbatch-option=--exclusive (repeatable)")
  c.add_argument("--workdir", default=None, help="passed as --config.workdir=DIR")
  c = command("status", "squeue for the job, and its log's tail")
  c.add_argument("job_id")
  c.add_argument("--lines", type=int, default=20)
  c = command("cancel", "scancel the job")
  c.add_argument("job_id")
  return p


def _sbatch_value(flag: str, value: object) -> str:
  text = str(value)
  if not text or re.search(r"\s", text):
    raise common.Fail(f"{flag}={text!r}: #SBATCH values cannot be empty or hold whitespace.")
  return text


def sbatch_script(a: argparse.Namespace, ttc_args: list[str], log_dir: str, venv: str) -> str:
  if a.nodes < 1 or a.gpus_per_node < 1:
    raise common.Fail("--nodes and --gpus-per-node must be at least 1.")
  options = [f"--job-name={_sbatch_value('--job-name', a.job_name)}",
             f"--nodes={a.nodes}", f"--ntasks-per-node={a.gpus_per_node}",
             f"--gpus-per-node={a.gpus_per_node}",
             f"--output={_sbatch_value('--log-dir', os.path.join(log_dir, 'slurm-%j.log'))}"]
  for flag, value in (("cpus-per-task", a.cpus_per_task), ("partition", a.partition),
                      ("account", a.account), ("time", a.time)):
    if value is not None:
      options.append(f"--{flag}={_sbatch_value('--' + flag, value)}")
  options += [_sbatch_value("--sbatch-option", o) for o in a.sbatch_option]
  job = [os.path.join(venv, "bin", "ttc-jax"), *common.job_args(ttc_args, a.workdir, a.repo)]
  return "\n".join([
      "#!/bin/bash",
      *(f"#SBATCH {o}" for o in options),
      f"# Written by launch/slurm.py. {a.nodes} node(s) x {a.gpus_per_node} processes, one per",
      "# GPU: jax.distributed.initialize() reads SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID.",
      "set -euo pipefail",
      f"cd {shlex.quote(a.repo)}",
      f"srun --kill-on-bad-exit=1 {shlex.join(job)}",
      ""])


def main(argv: list[str]) -> None:
  own, ttc_args = common.split_passthrough(argv)
  a = parser().parse_args(own)
  if ttc_args and a.command != "submit":
    raise common.Fail(f"{a.command} takes no ttc-jax flags (only submit reads the flags "
                      f"after --).")
  a.repo = os.path.abspath(a.repo)
  venv = os.path.abspath(a.venv or os.path.join(a.repo, ".venv"))
  log_dir = os.path.abspath(a.log_dir or os.path.join(a.repo, "workdir", "slurm"))
  sh = common.Runner(a.dry_run, PROG)
  if a.command == "install":
    sh([a.python, "-m", "venv", venv])
    sh([os.path.join(venv, "bin", "pip"), "install", "--upgrade", "pip"])
    sh([os.path.join(venv, "bin", "pip"), "install", a.jax, a.repo])
  elif a.command == "submit":
    script = sbatch_script(a, ttc_args, log_dir, venv)
    path = os.path.join(log_dir, f"{a.job_name}.sbatch")
    if a.dry_run:
      print(f"# {path}")
      print(script, end="")
    else:
      os.makedirs(log_dir, exist_ok=True)  # sbatch does not make the --output folder
      with open(path, "w") as f:
        f.write(script)
    out = sh(["sbatch", "--parsable", path], capture=True)
    if not a.dry_run:
      job_id = out.strip().split(";")[0]
      print(job_id)
      print(f"{PROG}: submitted job {job_id}; log {os.path.join(log_dir, f'slurm-{job_id}.log')}"
            f"; `python launch/slurm.py status {job_id}`", file=sys.stderr)
  elif a.command == "status":
    sh(["squeue", f"--job={a.job_id}", "--format=%.12i %.10T %.10M %.6D %R"], check=False)
    log = os.path.join(log_dir, f"slurm-{a.job_id}.log")
    if a.dry_run or os.path.exists(log):
      sh(["tail", "-n", str(a.lines), log], check=False)
    else:
      print(f"{PROG}: no log yet at {log}", file=sys.stderr)
  elif a.command == "cancel":
    sh(["scancel", a.job_id])


if __name__ == "__main__":
  common.run_main(PROG, main)
