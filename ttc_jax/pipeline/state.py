"""What the stages share and hand each other (docs/design.md, "Pipeline").

`Run` is created once per job from the config: every section validated, the
workdir proven writable, the task, tokenizer and mesh built, before any compute.
Stages are functions of a `Run` and the typed outputs of earlier stages
(`Data`, `LM`, `Labels`, `Verifiers`), and write their files atomically.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ttc_jax.io import configs
from ttc_jax.io import paths
from ttc_jax.io import metrics
from ttc_jax.models import transformer
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.pipeline import settings as settings_lib
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import base as search_base
from ttc_jax.search import open_prm
from ttc_jax.tasks import base as tasks
from ttc_jax.tasks import chain_arithmetic  # pylint: disable=unused-import  (registers the task)
from ttc_jax.tasks import countdown  # pylint: disable=unused-import  (registers the task)
from ttc_jax.tasks import math  # pylint: disable=unused-import  (registers the task)
from ttc_jax.tokenizers import base as tokenizers
from ttc_jax.tokenizers.char import CharTokenizer
from ttc_jax.tokenizers.hf import HFTokenizer


@dataclasses.dataclass(frozen=True)
class Run:
  """The job's validated settings, workdir, task, tokenizer and mesh."""

  config: ml_collections.ConfigDict
  settings: settings_lib.Settings
  workdir: str
  task: tasks.Task
  tokenizer: tokenizers.Tokenizer
  model_cfg: transformer.TransformerConfig
  mesh: Mesh
  seed: int
  start: float = dataclasses.field(default_factory=time.time)

  @classmethod
  def create(cls, config: ml_collections.ConfigDict) -> "Run":
    """Validates every section and builds what the stages share; no compute is spent."""
    parsed = settings_lib.parse(config)
    workdir = metrics.ensure_writable_dir(
        config.workdir, "the job writes its checkpoints, metrics and results there.")
    task = tasks.create(config.task, paths.join(workdir, "data"))
    tokenizer = make_tokenizer(config.get("tokenizer", {}), task, parsed.policy.checkpoint)
    tokenizer.step_ids(task.step_delimiter)  # the delimiter must be writable
    if parsed.policy.chat_template:
      chat_prompt(tokenizer, "")  # the tokenizer has a chat template
    if parsed.prm.checkpoint:  # format, architecture, head and vocabulary, before any compute
      open_prm.check_checkpoint(parsed.prm.checkpoint, parsed.prm.format, tokenizer)
    parsed.revisions.check_window(tokenizer, task.attempt_separator)
    model_cfg = settings_lib.model_config(config, tokenizer.vocab_size, parsed.policy)
    parsed.allocator.large_model_config(model_cfg)  # checks the larger model's size now
    mesh = mesh_lib.make_mesh(data=config.mesh.data or None, model=config.mesh.model)
    return cls(config=config, settings=parsed, workdir=workdir, task=task, tokenizer=tokenizer,
               model_cfg=model_cfg, mesh=mesh, seed=int(config.seed))

  def path(self, *names: str) -> str:
    return paths.join(self.workdir, *names)

  @property
  def metrics_path(self) -> str:
    return self.path("metrics.jsonl")

  def log(self, stage: str, msg: str) -> None:
    print(f"[{time.time() - self.start:7.1f}s] {stage}: {msg}", flush=True)

  def sampler(self, graphdef: nnx.GraphDef, cfg: transformer.TransformerConfig) -> Sampler:
    """A sampler over `models.transformer` that stops steps at the task's delimiter."""
    return Sampler.for_transformer(graphdef, cfg, self.tokenizer, self.task.step_delimiter)


def make_tokenizer(section: Any, task: tasks.Task, checkpoint: str = "") -> tokenizers.Tokenizer:
  """The tokenizer `config.tokenizer` names: 'char' (the task's alphabet), or 'hf' (the
  `tokenizer.json` in `path`, by default the policy checkpoint's directory)."""
  values = dict(section) if hasattr(section, "keys") else {"name": section}
  name = values.pop("name", "char")
  path = values.pop("path", "") if name == "hf" else None
  if name not in settings_lib.TOKENIZERS or values or not isinstance(path, (str, type(None))):
    raise ValueError(f"config.tokenizer={configs.short_repr(section)}: supported tokenizers "
                     f"are dict(name='char') and dict(name='hf', path=DIR) (path '' = "
                     f"policy.checkpoint), with no other keys.")
  if name == "hf":
    path = path or checkpoint
    if not path:
      raise ValueError("config.tokenizer=dict(name='hf') needs a path: set tokenizer.path or "
                       "policy.checkpoint to a directory holding tokenizer.json.")
    return HFTokenizer.from_dir(path)
  if checkpoint:
    raise ValueError(f"config.tokenizer is 'char' but policy.checkpoint={checkpoint!r} is a "
                     f"pretrained model; use its tokenizer: config.tokenizer=dict(name='hf').")
  if task.alphabet is None:
    raise ValueError(f"Task {task.name!r} has no alphabet, so the char tokenizer cannot write "
                     "it; name another config.tokenizer.")
  return CharTokenizer(task.alphabet)


def chat_prompt(tokenizer: tokenizers.Tokenizer, prompt: str) -> str:
  """`prompt` as the user turn of the tokenizer's chat template, the assistant's turn opened."""
  if not hasattr(tokenizer, "apply_chat_template"):
    raise ValueError("policy.chat_template=True needs a tokenizer with a chat template: "
                     "config.tokenizer=dict(name='hf').")
  return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                       add_generation_prompt=True)


@dataclasses.dataclass(frozen=True)
class Data:
  """The task's train and test examples, and the LM training rows of the train split."""

  train: list[tasks.Example]
  test: list[tasks.Example]
  train_arrays: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class LM:
  """A trained language model: `(graphdef, params)`, its config and a sampler over it."""

  graphdef: nnx.GraphDef
  params: Any
  cfg: transformer.TransformerConfig
  sampler: Sampler


@dataclasses.dataclass(frozen=True)
class Labels:
  """The PRM's Monte-Carlo labels (`training.prm_labels` arrays) and their questions."""

  arrays: dict[str, np.ndarray]
  examples: list[tasks.Example]


@dataclasses.dataclass(frozen=True)
class Verifiers:
  """The PRM as the `Verifier` search calls (ours, trained, or an open one), its parameter
  count (the verifier's N of the FLOPs exchange), and the ORM `(graphdef, state)`."""

  prm: search_base.Verifier
  prm_num_params: int
  orm: tuple[nnx.GraphDef, Any]
