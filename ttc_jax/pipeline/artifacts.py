"""Every file the job writes in its workdir, and the stage that writes it (docs/design.md).

`require(workdir, NAME)` reads a stage's JSON output, or says which stage to run first.
"""

from __future__ import annotations

from typing import Any

from ttc_jax.io import metrics
from ttc_jax.io import paths

# name -> the stage (module of `pipeline.stages`) that writes it.
CONFIG = "config.json"  # the latest run's config
SUMMARY = "summary.json"  # rebuilt by every run from the stages' outputs
METRICS = "metrics.jsonl"
RUNS = "runs.jsonl"  # one row per run: host, pid, start, wall time, seconds per stage
PROVENANCE = "provenance.json"  # per stage: the config fields its outputs depend on
VERSIONS = "versions"  # outputs a --rerun_from moved aside, in numbered folders
LOCK = ".lock"  # the running job's host and pid
DATA = "data"
EVAL = "eval_base_lm.json"
PRM_LABELS = "prm_labels"
PRM_LABELS_HELDOUT = "prm_labels_heldout"
VERIFIER_EVAL = "verifier_eval.json"
VERIFIER_SAMPLES = "verifier_samples.npz"  # [Q, max_n] per-sample arrays of the verifier eval
SEARCH = "search.jsonl"
REVISION_DATA = "revision_data"
REVISION_CHAINS = "revisions"  # the revisions sweep's chain shards
REVISIONS = "revisions.json"
REVISIONS_SWEEP = "revisions_sweep.jsonl"
LARGER_MODEL = "larger_model.json"
DIFFICULTY = "difficulty.json"
DIFFICULTY_SAMPLES = "difficulty.npz"
COMPUTE_OPTIMAL = "compute_optimal.json"
FLOPS = "flops.json"
FIGURES = "figures"
REPORT = "report.md"

# stage -> its entries of summary.json.
SUMMARY_KEYS = {
    "evaluation": ("base_lm",),
    "verifiers": ("prm_step_auroc", "prm_first_step_within_question_auroc",
                  "prm_first_step_within_question_auroc_ci", "mc_label_step_auroc",
                  "mc_label_step_auroc_train", "bon"),
    "search": ("search",), "revisions": ("revisions",), "allocator": ("compute_optimal", "flops"),
}

WRITTEN_BY = {
    DATA: "data", EVAL: "evaluation", PRM_LABELS: "prm_labels", VERIFIER_EVAL: "verifiers",
    PRM_LABELS_HELDOUT: "verifiers", VERIFIER_SAMPLES: "verifiers", SEARCH: "search",
    REVISION_DATA: "revisions", REVISION_CHAINS: "revisions", REVISIONS: "revisions",
    REVISIONS_SWEEP: "revisions", LARGER_MODEL: "larger_model", DIFFICULTY: "allocator",
    DIFFICULTY_SAMPLES: "allocator", COMPUTE_OPTIMAL: "allocator", FLOPS: "allocator",
    FIGURES: "report", REPORT: "report",
}


def require(workdir: str, name: str) -> Any:
  """The JSON file `name` of `workdir`; a missing one names the stage that writes it."""
  path = paths.join(workdir, name)
  if not paths.exists(path):
    raise ValueError(f"{path} does not exist; run the {WRITTEN_BY[name]!r} stage first "
                     f"(ttc_jax.pipeline.stages.{WRITTEN_BY[name]}).")
  return metrics.read_json(path)
