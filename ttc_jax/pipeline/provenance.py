"""Which config fields each stage's outputs depend on, and the check that a rerun agrees with them.

Every stage records, when it starts and when it finishes, the values of the config
fields it depends on (its own and its upstream stages') in `provenance.json`. A
rerun whose config changes a field a started or finished stage depends on is
refused before any compute, with the stage, the fields and the remedy: a new
workdir, or `--rerun_from=STAGE`, which moves that stage's outputs and those of
every stage downstream of it into `versions/<n>/` and recomputes them. Changes no recorded
stage depends on (a new search strategy or budget, allocator settings that are
recomputed every run) only add to the results. See docs/design.md, "Pipeline".
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import ml_collections

from ttc_jax.io import metrics
from ttc_jax.io import paths
from ttc_jax.pipeline import artifacts

PROVENANCE, VERSIONS = artifacts.PROVENANCE, artifacts.VERSIONS
ORDER = ("data", "base_lm", "evaluation", "prm_labels", "verifiers", "search", "revisions",
         "larger_model", "allocator", "report")
# stage -> (upstream stages, config field prefixes of its own).
DEPENDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "data": ((), ("task", "tokenizer", "model.max_len", "policy.chat_template")),
    "base_lm": (("data",), ("seed", "policy.checkpoint", "policy.param_dtype", "model",
                            "train")),
    "evaluation": (("base_lm",), ("eval",)),
    "prm_labels": (("base_lm",), ("prm.labels",)),
    "verifiers": (("prm_labels",), ("prm.train", "prm.checkpoint", "prm.format",
                                    "prm.param_dtype", "prm.ranking_weight", "orm.train",
                                    "verifier_eval")),
    # The grid (strategies x budgets) is not a dependency: new cells only add rows. Search
    # reads the PRM only (not the ORM or the verifier evaluation).
    "search": (("prm_labels",), ("prm.train", "prm.checkpoint", "prm.format",
                                 "prm.param_dtype", "prm.ranking_weight",
                                 "verifier_eval.aggregation",
                                 "search.num_questions", "search.rows_per_batch",
                                 "search.temperature", "search.max_step_tokens",
                                 "search.max_rounds")),
    # Revisions read the base LM and the ORM (trained on the PRM labels' samples).
    "revisions": (("prm_labels",), ("orm.train", "revisions")),
    # The larger model shares the base LM's architecture options and its pretraining count.
    "larger_model": (("data",), ("seed", "model", "train.total_steps", "train.batch_size",
                                 "policy.pretrain_tokens",
                                 "search.num_questions", "allocator.large_",
                                 "allocator.min_param_ratio", "allocator.batch_prompts",
                                 "allocator.temperature")),
    "allocator": (("verifiers",), ("search.num_questions", "allocator.difficulty_samples",
                                   "allocator.predicted_samples", "allocator.num_bins",
                                   "allocator.batch_prompts", "allocator.temperature")),
    "report": ((), ()),  # recomputed every run from the other stages' outputs
}
# Stages a stage depends on beyond its field upstream (it reads the verifiers' PRM and ORM
# checkpoints; the larger model shares the base LM's settings): a rerun of those reruns it.
READS = {"search": ("verifiers",), "revisions": ("verifiers",), "larger_model": ("base_lm",)}
# Fields added after stages began recording theirs, with the value that does what the code
# did before they existed: a record without one of them was made with that value.
ADDED_FIELDS = {"policy.checkpoint": "", "policy.param_dtype": "float32",
                "policy.pretrain_tokens": 0, "policy.chat_template": False,
                "prm.checkpoint": "", "prm.format": "",
                "prm.param_dtype": "float32", "prm.ranking_weight": 0.0,
                "allocator.large_checkpoint": "",
                "allocator.large_pretrain_tokens": 0}
# Bookkeeping, and compute layout, that changes no result: never a dependency.
_EXEMPT = ("log_every", "checkpoint_every", "keep_checkpoints", "compact_rows")
# stage -> what it writes besides its `artifacts` files (checkpoints, TensorBoard logs).
_EXTRA_OUTPUTS = {
    "base_lm": ("checkpoints/base_lm", "tensorboard/base_lm"),
    "verifiers": ("checkpoints/prm", "checkpoints/orm", "tensorboard/prm", "tensorboard/orm"),
    "revisions": ("checkpoints/revision", "tensorboard/revision"),
    "larger_model": ("checkpoints/larger_lm", "tensorboard/larger_lm"),
}


def flatten(config: ml_collections.ConfigDict | Mapping[str, Any], prefix: str = ""
            ) -> dict[str, Any]:
  """`{'search.temperature': 1.0, ...}`: every leaf of the config by its dotted path, JSON-able."""
  out = {}
  for key, value in dict(config).items():
    path = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, path + "."))
    else:
      out[path] = list(value) if isinstance(value, tuple) else value
  return out


def stage_fields(stage: str, flat: Mapping[str, Any]) -> dict[str, Any]:
  """The fields `stage` depends on, its upstream stages' included."""
  upstream, prefixes = DEPENDS[stage]
  fields = {k: v for k, v in flat.items()
            if any(k == p or k.startswith(p if p.endswith("_") else p + ".") for p in prefixes)
            and k.rsplit(".", 1)[-1] not in _EXEMPT}
  for up in upstream:
    fields.update(stage_fields(up, flat))
  return dict(sorted(fields.items()))


def _json_ready(flat: Mapping[str, Any]) -> dict[str, Any]:
  """The values as a JSON round trip gives them back (tuples as lists), so they compare."""
  return json.loads(json.dumps(dict(flat), sort_keys=True, default=str))


def read(workdir: str) -> dict[str, Any]:
  path = paths.join(workdir, PROVENANCE)
  return metrics.read_json(path) if paths.exists(path) else {}


def check(workdir: str, config: ml_collections.ConfigDict, ignore: Sequence[str] = ()) -> None:
  """Raises ValueError when `config` changes a field that a recorded stage depends on.

  `ignore`: stages about to be recomputed (`--rerun_from`). A workdir written before
  stages recorded their fields is checked against its `config.json` (the last run's).
  """
  recorded = read(workdir) or _legacy(workdir)
  flat = _json_ready(flatten(config))
  for stage in ORDER:
    if stage not in recorded or stage in ignore:
      continue
    now = stage_fields(stage, flat)
    then = {**{k: v for k, v in ADDED_FIELDS.items() if k in now}, **recorded[stage]["fields"]}
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if changed:
      what = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
      more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
      state = "finished" if recorded[stage].get("finished") else "started"
      raise ValueError(
          f"stage {stage!r} {state} in {workdir} with other settings ({what}{more}); use a "
          f"new workdir, or pass --rerun_from={stage} to recompute it and the stages that use it "
          f"(their outputs move to {paths.join(workdir, VERSIONS)}/).")


def _legacy(workdir: str) -> dict[str, Any]:
  """Records for a workdir from before provenance: its config.json for every stage with output."""
  present = [s for s in ORDER if any(paths.exists(paths.join(workdir, p))
                                     for p in outputs(s))]
  if not present:
    return {}
  path = paths.join(workdir, artifacts.CONFIG)
  if not paths.exists(path):
    raise ValueError(f"{workdir} holds results but no {PROVENANCE} or {artifacts.CONFIG} to tell "
                     f"what made them; use a new workdir, or pass --rerun_from=data to move them "
                     f"aside.")
  flat = _json_ready(flatten(metrics.read_json(path)))
  return {s: {"fields": stage_fields(s, flat), "finished": True} for s in present
          if s != "report"}


def record(workdir: str, config: ml_collections.ConfigDict, stage: str, finished: bool) -> None:
  """Writes `stage`'s fields (atomically, process 0) as started or finished."""
  recorded = read(workdir)
  recorded[stage] = {"fields": stage_fields(stage, _json_ready(flatten(config))),
                     "finished": finished}
  metrics.write_json(paths.join(workdir, PROVENANCE), recorded, sort_keys=True)


def outputs(stage: str) -> list[str]:
  """Workdir-relative paths `stage` writes."""
  own = [name for name, writer in artifacts.WRITTEN_BY.items() if writer == stage]
  return own + list(_EXTRA_OUTPUTS.get(stage, ()))


def downstream(first: str) -> list[str]:
  """`first` and every stage whose outputs depend on it, plus the allocator and the report
  (they read every earlier stage), in run order."""
  def depends(stage: str) -> bool:
    return stage == first or any(depends(up) for up in DEPENDS[stage][0] + READS.get(stage, ()))
  later = ORDER[ORDER.index(first):]
  return [s for s in later if depends(s) or s in ("allocator", "report")]


def move_to_version(workdir: str, first: str) -> str | None:
  """Moves the outputs of `downstream(first)` into `versions/<n>/`; returns that folder.

  The stages' provenance moves with them, so the rerun records its own.
  """
  if first not in ORDER:
    raise ValueError(f"--rerun_from={first!r} is not a stage; stages: {list(ORDER)}.")
  stages = downstream(first)
  present = [p for s in stages for p in outputs(s) if paths.exists(paths.join(workdir, p))]
  recorded = read(workdir)
  if not present and not any(s in recorded for s in stages):
    return None
  versions = paths.as_path(workdir) / VERSIONS
  taken = [p.name for p in versions.iterdir()] if versions.exists() else []
  n = 1 + max([int(name) for name in taken if name.isdigit()] or [0])
  dest = paths.join(workdir, VERSIONS, str(n))
  staging = dest + ".partial"  # renamed to `dest` once everything is in it
  for rel in present:
    paths.as_path(staging).joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
    paths.move(paths.join(workdir, rel), paths.join(staging, rel))
  moved = {s: recorded.pop(s) for s in stages if s in recorded}
  paths.as_path(staging).mkdir(parents=True, exist_ok=True)
  metrics.write_json(paths.join(staging, PROVENANCE), moved, sort_keys=True)
  metrics.write_json(paths.join(workdir, PROVENANCE), recorded, sort_keys=True)
  paths.move(staging, dest)
  return dest
