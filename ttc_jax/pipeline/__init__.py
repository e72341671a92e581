"""The main job: one module per stage under `stages/`, run in order by `run` (docs/design.md).

  data -> base LM -> eval -> PRM labels -> verifiers (PRM, ORM, evaluation) -> search ->
  revisions -> larger model -> allocator (difficulty, compute-optimal, FLOPs) -> report

Every stage is skipped, or resumes, when its output is (partly) on disk; all write to
one workdir. A job holds the workdir's lock, refuses a config that changes what a
recorded stage depends on (`provenance.py`), and rebuilds `summary.json` from every
stage's outputs; `runs.jsonl` records each run's host, pid and stage timings.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from ttc_jax.io import host
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import lock
from ttc_jax.pipeline import provenance
from ttc_jax.pipeline import state
from ttc_jax.pipeline.stages import allocator
from ttc_jax.pipeline.stages import base_lm
from ttc_jax.pipeline.stages import data as data_stage
from ttc_jax.pipeline.stages import evaluation
from ttc_jax.pipeline.stages import larger_model
from ttc_jax.pipeline.stages import prm_labels
from ttc_jax.pipeline.stages import report
from ttc_jax.pipeline.stages import revisions
from ttc_jax.pipeline.stages import search
from ttc_jax.pipeline.stages import verifiers as verifiers_stage


def run(config: ml_collections.ConfigDict, rerun_from: str | None = None,
        stop_after: str | None = None) -> dict[str, Any]:
  """Runs the job described by `config` (see configs/demo.py); returns `summary.json`.

  `rerun_from`: a stage whose outputs, and those of the stages that use them, move to
  `<workdir>/versions/<n>/` and are recomputed (see `provenance.py`). `stop_after`: the
  last stage to run (all, when None); a later run carries on from there.
  """
  for flag, value in (("rerun_from", rerun_from), ("stop_after", stop_after)):
    if value is not None and value not in provenance.ORDER:
      raise ValueError(f"--{flag}={value!r} is not a stage; stages: "
                       f"{list(provenance.ORDER)}.")
  r = state.Run.create(config)
  with contextlib.ExitStack() as stack:
    error = None
    if host.is_main():  # one decision, taken before anything is moved or computed
      try:
        stack.enter_context(lock.hold(r.workdir))
        again = provenance.downstream(rerun_from) if rerun_from else []
        provenance.check(r.workdir, config, ignore=again)
        if again:
          moved = provenance.move_to_version(r.workdir, rerun_from)
          if moved:
            r.log("rerun", f"outputs of {again} moved to {moved}")
      except ValueError as e:
        error = str(e)
    if not host.agree(error is None):
      raise ValueError(error or "process 0 refused to start the job (see its error).")
    return _run_stages(r, stop_after)


class _Stop(Exception):
  """Raised after the `stop_after` stage."""


def _run_stages(r: state.Run, stop_after: str | None = None) -> dict[str, Any]:
  if host.is_main():
    paths.write_text(r.path(artifacts.CONFIG), r.config.to_json_best_effort(indent=2))
  # The stages rebuild their entries from their outputs; entries of stages not (or no
  # longer) finished are dropped, never carried over.
  finished = {s for s, rec in provenance.read(r.workdir).items() if rec.get("finished")}
  path = r.path(artifacts.SUMMARY)
  old = metrics.read_json(path) if host.agree(paths.exists(path)) else {}
  keep = {k for s in finished for k in artifacts.SUMMARY_KEYS.get(s, ())}
  metrics.write_json(path, {**{k: v for k, v in old.items() if k in keep},
                            "environment": environment()}, sort_keys=True)
  seconds: dict[str, float] = {}

  def stage(name: str, fn: Callable, *args):
    provenance.record(r.workdir, r.config, name, finished=False)
    t0 = time.time()
    out = fn(r, *args)
    seconds[name] = round(time.time() - t0, 1)
    provenance.record(r.workdir, r.config, name, finished=True)
    host.barrier(f"stage {name}")  # its files are on disk before any host reads them
    if name == stop_after:
      raise _Stop
    return out

  try:
    data = stage("data", data_stage.run)
    lm = stage("base_lm", base_lm.run, data)
    stage("evaluation", evaluation.run, data, lm)
    labels = stage("prm_labels", prm_labels.run, data, lm)
    verifiers, _ = stage("verifiers", verifiers_stage.run, data, lm, labels)
    stage("search", search.run, data, lm, verifiers)
    stage("revisions", revisions.run, data, lm, verifiers)
    larger = stage("larger_model", larger_model.run, data)
    stage("allocator", allocator.run, data, lm, verifiers, larger)
    stage("report", report.run, data)
  except _Stop:
    r.log("job", f"stopped after {stop_after} (--stop_after)")
  wall_s = round(time.time() - r.start, 1)
  metrics.append_jsonl(r.path(artifacts.RUNS), {
      "host": socket.gethostname(), "pid": os.getpid(),
      "start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.start)),
      "wall_s": wall_s, "stage_seconds": seconds, "stop_after": stop_after})
  r.log("job", f"done in {wall_s} s; results in {r.path(artifacts.SUMMARY)}")
  return metrics.read_json(r.path(artifacts.SUMMARY))


def environment() -> dict[str, Any]:
  """What results may depend on beyond the config and seed (README, "Reproducibility")."""
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__, "numpy": np.__version__,
          "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
          "device_count": len(devices), "process_count": jax.process_count(),
          "machine": platform.machine(), "cpu": _cpu()}


def _cpu() -> dict[str, Any]:
  """The CPU model and its vector ISA flags (XLA's CPU code, and so the rounding, depends on them)."""
  model, flags = platform.processor(), []
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return {"model": model, "isa_flags": flags}
  for line in info.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "model name" and value.strip():
      model = value.strip()
    if key.strip() == "flags":
      flags = sorted(f for f in value.split()
                     if f.startswith(("avx", "fma", "sse", "amx", "f16c", "bmi", "vnni")))
      break
  return {"model": model, "isa_flags": flags}
