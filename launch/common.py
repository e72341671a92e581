"""Shared by launch/tpu.py and launch/slurm.py (standard library only).

The ttc-jax flags come after `--` on the launcher's command line and are passed to
every worker unchanged: each one is quoted with shlex.quote, so spaces, quotes and `$`
survive the remote shell.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import Any, Callable, NoReturn, Sequence

PROG = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "launch"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout


class Fail(Exception):
  """A user mistake or a failed command: one line on stderr, then exit `code`."""

  def __init__(self, message: str, code: int = 2):
    super().__init__(message)
    self.code = code


def die(prog: str, error: Fail) -> NoReturn:
  print(f"{prog}: error: {error}", file=sys.stderr)
  sys.exit(error.code)


Command = Callable[[str, str], argparse.ArgumentParser]


def command_parser(prog: str, doc: str, add_globals: Callable[[Any, Callable], None],
                   epilog: str | None = None) -> tuple[argparse.ArgumentParser, Command]:
  """A launcher's parser whose global flags work before or after the command.

  `add_globals(group, default)` adds the global flags to `group`, each with
  `default=default(value)`. They are added to the top parser and again to every
  command's parser with their defaults suppressed, so a flag given after the command
  is not overwritten by the top parser's default. Returns the parser and
  `command(name, help) -> the command's parser`.
  """
  def globals_on(parser: argparse.ArgumentParser, suppress: bool) -> None:
    group = parser.add_argument_group("global flags (before or after the command)")
    add_globals(group, (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v))
  top = argparse.ArgumentParser(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=doc.split("\n\n", 1)[1], epilog=epilog)
  globals_on(top, suppress=False)
  sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def command(name: str, help_: str) -> argparse.ArgumentParser:
    c = sub.add_parser(name, help=help_, description=help_)
    globals_on(c, suppress=True)
    return c
  return top, command


def run_main(prog: str, main: Callable[[list[str]], None]) -> None:
  """`main(sys.argv[1:])`; a `Fail` is one line and its exit code, Ctrl-C exit 130."""
  try:
    main(sys.argv[1:])
  except Fail as e:
    die(prog, e)
  except KeyboardInterrupt:
    sys.exit(130)


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(launcher arguments, ttc-jax arguments): everything after the first `--`."""
  argv = list(argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


def config_workdir(ttc_args: Sequence[str]) -> str | None:
  """The last `--config.workdir=DIR` (or `--config.workdir DIR`) in the ttc-jax flags."""
  found = None
  for i, a in enumerate(ttc_args):
    if a.startswith("--config.workdir="):
      found = a.split("=", 1)[1]
    elif a == "--config.workdir" and i + 1 < len(ttc_args):
      found = ttc_args[i + 1]
  return found


def config_file(ttc_args: Sequence[str]) -> str | None:
  for i, a in enumerate(ttc_args):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(ttc_args):
      return ttc_args[i + 1]
  return None


def job_args(ttc_args: Sequence[str], workdir: str | None, repo: str) -> list[str]:
  """The ttc-jax flags a job runs with: `--distributed` first, `--workdir` as a config flag.

  Checks what can be checked here: a config file is given and exists in the checkout
  (paths are relative to the repository root, which is the job's working directory),
  and `--workdir` does not contradict a `--config.workdir` flag.
  """
  args = list(ttc_args)
  config = config_file(args)
  if config is None:
    raise Fail("no config: pass ttc-jax flags after --, at least --config=configs/X.py "
               "(e.g. -- --config=configs/paper.py).")
  path = config.split(":", 1)[0]
  if not os.path.isabs(path) and not os.path.isfile(os.path.join(repo, path)):
    raise Fail(f"config file {path!r} is not in {repo} (config paths are relative to the "
               f"repository root, the job's working directory).")
  given = config_workdir(args)
  if workdir is not None:
    if given is not None and given != workdir:
      raise Fail(f"--workdir={workdir} and --config.workdir={given} disagree; give one.")
    if given is None:
      args.append(f"--config.workdir={workdir}")
  for a in args:
    if "=~" in a or a.startswith("~"):
      print(f"{PROG}: note: {a!r} is passed as written; '~' is not expanded (use an absolute "
            f"or a relative path).", file=sys.stderr)
  if not any(a in ("--distributed", "--nodistributed") or a.startswith("--distributed=")
             for a in args):
    args.insert(0, "--distributed")
  return args


class Runner:
  """Runs commands, or with dry_run prints each one on its own line (stdout) and runs nothing."""

  def __init__(self, dry_run: bool, prog: str):
    self.dry_run = dry_run
    self.prog = prog

  def __call__(self, cmd: Sequence[str], capture: bool = False, check: bool = True) -> str:
    line = shlex.join(cmd)
    assert "\n" not in line, line  # one command per line
    if self.dry_run:
      print(line, flush=True)
      return ""
    print(f"+ {line}", file=sys.stderr, flush=True)
    try:
      done = subprocess.run(list(cmd), text=True,
                            stdout=subprocess.PIPE if capture else None, check=False)
    except FileNotFoundError:
      raise Fail(f"{cmd[0]} is not on PATH.") from None
    if check and done.returncode != 0:
      raise Fail(f"{shlex.join(cmd[:5])} ... exited with status {done.returncode}.",
                 code=done.returncode)
    return done.stdout or ""
