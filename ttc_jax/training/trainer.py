"""One optax loop for every model we train: base LM, PRM, ORM, revision SFT, larger model.

`train(params, loss_fn, batch_fn, cfg, workdir)` runs a jitted pure step over
`(params, opt_state)`, saves both to an orbax `CheckpointManager` every
`checkpoint_every` steps and resumes from the latest one on start. Since
`batch_fn(step)` is a pure function of the step, a resumed run sees the same
batches and ends with bitwise the same parameters as an uninterrupted one.

Checkpoints are saved synchronously: orbax writes each one into a
`<step>.orbax-checkpoint-tmp` directory and renames it to `<step>` when complete,
so a SIGKILL at any moment leaves the previous checkpoints intact; the partial
one is ignored and removed on the next start.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable

import jax
from jax.tree_util import keystr
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttc_jax.io import configs
from ttc_jax.io import metrics as metrics_lib
from ttc_jax.io import paths
from ttc_jax.parallel import mesh as mesh_lib

PyTree = Any
Batch = dict[str, np.ndarray]
LossFn = Callable[[PyTree, Batch], tuple[jax.Array, dict[str, jax.Array]]]


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored into the current model/optimizer."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and bookkeeping settings shared by every training stage."""
  total_steps: int
  batch_size: int
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  end_lr_fraction: float = 0.1  # cosine decays to learning_rate * end_lr_fraction
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.95
  grad_clip: float = 1.0  # global-norm clip; 0 disables
  checkpoint_every: int = 500
  keep_checkpoints: int = 2
  log_every: int = 50

  def __post_init__(self):
    checks = (
        ("total_steps", self.total_steps > 0, "> 0"),
        ("batch_size", self.batch_size > 0, "> 0"),
        ("learning_rate", self.learning_rate > 0, "> 0"),
        ("warmup_steps", 0 <= self.warmup_steps < self.total_steps,
         f"in [0, total_steps={self.total_steps})"),
        ("end_lr_fraction", 0 <= self.end_lr_fraction <= 1, "in [0, 1]"),
        ("weight_decay", self.weight_decay >= 0, ">= 0"),
        ("b1", 0 <= self.b1 < 1, "in [0, 1)"),
        ("b2", 0 <= self.b2 < 1, "in [0, 1)"),
        ("grad_clip", self.grad_clip >= 0, ">= 0 (0 disables clipping)"),
        ("checkpoint_every", self.checkpoint_every > 0, "> 0"),
        ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1"),
        ("log_every", self.log_every > 0, "> 0"),
    )
    for field, ok, want in checks:
      if not ok:
        raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r} is invalid; "
                         f"it must be {want}.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | dict,
                  section: str = "train") -> "TrainConfig":
    """Builds from a `config.train` section, naming unknown keys and the valid ones."""
    return configs.from_section(cls, config, section)


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
  """Linear warmup 0 -> `learning_rate`, then cosine decay to `learning_rate * end_lr_fraction`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=cfg.total_steps, end_value=cfg.learning_rate * cfg.end_lr_fraction)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW; no weight decay on vectors (norm scales, biases)."""
  adamw = optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2,
                      weight_decay=cfg.weight_decay,
                      mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  if cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
  return adamw


def lm_loss(apply_fn: Callable[[PyTree, jax.Array], jax.Array]) -> LossFn:
  """Next-token cross-entropy: logits[:, :-1] predict tokens[:, 1:], averaged over loss_mask[:, 1:].

  `apply_fn(params, tokens) -> logits [B, T, V]`; the batch holds `tokens` [B, T]
  int32 and `loss_mask` [B, T] (1 where a token is a training target).
  """
  def loss_fn(params: PyTree, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    tokens = batch["tokens"]
    logits = apply_fn(params, tokens)[:, :-1].astype(jnp.float32)
    targets = tokens[:, 1:]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    denom = jnp.maximum(mask.sum(), 1.0)
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    loss = (xent * mask).sum() / denom
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return loss, {"loss": loss, "accuracy": (correct * mask).sum() / denom}
  return loss_fn


# ---- checkpoints ----

def _checkpoint_dir(workdir: str | os.PathLike, name: str) -> str:
  return paths.join(workdir, "checkpoints", name)


_ITEMS = ("params", "opt_state")


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False,  # a save is complete when save() returns
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      cleanup_tmp_directories=True)  # partial saves of a killed run
  handlers = {k: ocp.StandardCheckpointHandler() for k in _ITEMS}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def checkpoint_complete(workdir: str | os.PathLike, name: str, total_steps: int) -> bool:
  """True when stage `name` under `workdir` has a committed checkpoint at `total_steps`."""
  directory = _checkpoint_dir(workdir, name)
  if not paths.as_path(directory).is_dir():
    return False
  steps = ocp.utils.checkpoint_steps(paths.as_path(directory))  # committed steps only, no tmp dirs
  return bool(steps) and max(steps) == total_steps


def _to_nested_dict(tree: PyTree) -> dict[str, Any]:
  """Any pytree (nnx.State, optax states) as nested str-keyed dicts of its leaves, for orbax."""
  out: dict[str, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    node = out
    names = [keystr((k,), simple=True) for k in path]
    for n in names[:-1]:
      node = node.setdefault(n, {})
    node[names[-1]] = leaf
  return out


def _from_nested_dict(template: PyTree, nested: dict[str, Any]) -> PyTree:
  """Inverse of `_to_nested_dict`: `nested`'s leaves put back into `template`'s structure."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(template)
  leaves = []
  for path, _ in flat:
    node = nested
    for k in path:
      node = node[keystr((k,), simple=True)]
    leaves.append(node)
  return jax.tree.unflatten(treedef, leaves)


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _save(mgr: ocp.CheckpointManager, step: int, state: dict[str, PyTree]) -> None:
  args = {k: ocp.args.StandardSave(_to_nested_dict(v)) for k, v in state.items()}
  mgr.save(step, args=ocp.args.Composite(**args), force=True)


def _shapes(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {keystr(path, simple=True, separator="/"): (tuple(x.shape), str(np.dtype(x.dtype)))
          for path, x in flat}


def _restore(mgr: ocp.CheckpointManager, step: int, template: dict[str, PyTree],
             name: str) -> dict[str, PyTree]:
  """Restores the items of `template` at `step`, each leaf into the template leaf's sharding."""
  ckpt_dir = os.fspath(mgr.directory)
  step_dir = paths.join(ckpt_dir, str(step))
  try:
    metadata = mgr.item_metadata(step)
    saved = {k: _shapes(metadata[k].tree) for k in template}
  except Exception as e:  # orbax raises many types (JSON, tensorstore, KeyError, ...)
    raise CheckpointError(
        f"Cannot read checkpoint {step_dir} for stage {name!r} ({type(e).__name__}: "
        f"{str(e)[:300]}). It is corrupt or incomplete. Delete {step_dir} to resume from the "
        f"previous checkpoint, or delete {ckpt_dir} to restart the stage.") from e
  for k, v in template.items():
    want = _shapes(_to_nested_dict(v))
    if saved[k] != want:
      diff = sorted(set(saved[k].items()) ^ set(want.items()))[:3]
      raise CheckpointError(
          f"Checkpoint {step_dir} holds {k} of a different model/optimizer than stage {name!r} "
          f"is training (differing leaves, (path, (shape, dtype)): {diff}). Use a fresh workdir, "
          f"or delete {ckpt_dir} to restart the stage.")
  args = {k: ocp.args.StandardRestore(_to_nested_dict(_abstract(v))) for k, v in template.items()}
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(**args))
  except Exception as e:
    raise CheckpointError(
        f"Cannot restore checkpoint {step_dir} for stage {name!r} ({type(e).__name__}: "
        f"{str(e)[:300]}). It is corrupt. Delete {step_dir} to resume from the previous "
        f"checkpoint, or delete {ckpt_dir} to restart the stage.") from e
  return {k: _from_nested_dict(v, restored[k]) for k, v in template.items()}


# ---- the loop ----

def _on_mesh(params: PyTree, mesh: Mesh) -> PyTree:
  """Keeps each leaf's sharding if it lives on `mesh`'s devices, else replicates it there."""
  devices = set(mesh.devices.flat)
  def place(x):
    if isinstance(x, jax.Array) and x.sharding.device_set == devices:
      return x
    return mesh_lib.put(x, NamedSharding(mesh, P()))
  return jax.tree.map(place, params)


def _mesh_of(tree: PyTree) -> Mesh | None:
  """The mesh of the first `NamedSharding` leaf, if any."""
  for x in jax.tree.leaves(tree):
    if isinstance(getattr(x, "sharding", None), NamedSharding):
      return x.sharding.mesh
  return None


def _check_batch(batch: Batch, batch_size: int, step: int) -> None:
  for k, v in batch.items():
    if np.ndim(v) == 0 or np.shape(v)[0] != batch_size:
      raise ValueError(f"batch_fn({step})[{k!r}] has shape {np.shape(v)}; expected a leading "
                       f"batch dimension of TrainConfig.batch_size={batch_size}.")


def _init_opt_state(tx: optax.GradientTransformation, params: PyTree, mesh: Mesh | None) -> PyTree:
  """Optimizer state sharded like the params it mirrors; the rest replicated on the mesh."""
  # Eager, not jitted: a jitted init returns its zeros on one device (they do not depend
  # on the params' values), eager `zeros_like` keeps each param's sharding.
  opt_state = tx.init(params)
  mesh = mesh if mesh is not None else _mesh_of(params)
  return opt_state if mesh is None else _on_mesh(opt_state, mesh)


def _train_step(loss_fn: LossFn, tx: optax.GradientTransformation):
  def step(state, batch):
    params, opt_state = state["params"], state["opt_state"]
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return {"params": params, "opt_state": opt_state}, metrics
  return step


def train(params: PyTree, loss_fn: LossFn, batch_fn: Callable[[int], Batch], cfg: TrainConfig,
          workdir: str | os.PathLike, *, name: str = "lm", mesh: Mesh | None = None) -> PyTree:
  """Trains `params` for `cfg.total_steps` steps, resuming from `<workdir>/checkpoints/<name>`.

  `loss_fn(params, batch) -> (loss, metrics)`; `batch_fn(step) -> dict of numpy arrays`
  must depend on `step` only, so a resumed run is exact. With `mesh`, batches shard
  over its `data` axis and params keep their shardings. Returns params of the same
  pytree type as the input (an `nnx.State` stays an `nnx.State`); the input arrays are
  not donated. Metrics go to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard/<name>`.
  """
  workdir = metrics_lib.ensure_writable_dir(
      workdir, "training needs it for checkpoints and metrics.")
  ckpt_dir = _checkpoint_dir(workdir, name)
  is_main = jax.process_index() == 0
  mgr = _manager(ckpt_dir, cfg.keep_checkpoints)
  try:
    if mesh is not None:
      params = _on_mesh(params, mesh)
    latest = mgr.latest_step()
    if latest is not None and latest > cfg.total_steps:
      raise CheckpointError(
          f"Checkpoint at step {latest} in {ckpt_dir} is past total_steps={cfg.total_steps} "
          f"for stage {name!r}; raise total_steps or delete {ckpt_dir} to restart the stage.")
    if latest == cfg.total_steps:
      if is_main:
        print(f"{name}: training already complete at step {latest}; restored.", flush=True)
      return _restore(mgr, latest, {"params": params}, name)["params"]

    tx = make_optimizer(cfg)
    state = {"params": params, "opt_state": _init_opt_state(tx, params, mesh)}
    start = 0
    if latest is not None:
      state = _restore(mgr, latest, state, name)
      start = latest
      if is_main:
        print(f"{name}: resuming from step {start} ({ckpt_dir}).", flush=True)
    else:
      state["params"] = jax.tree.map(jnp.copy, params)  # the step donates its input
    shardings = jax.tree.map(lambda x: x.sharding, state)
    # Committed inputs from the start: step 1 then compiles the program every later step
    # (and a resumed run, whose restored arrays are committed) reuses.
    state = mesh_lib.put(state, shardings)
    step_fn = jax.jit(_train_step(loss_fn, tx), donate_argnums=0, out_shardings=(shardings, None))
    return _loop(state, step_fn, batch_fn, cfg, mgr, workdir, name, mesh, start)["params"]
  finally:
    mgr.close()


def _loop(state, step_fn, batch_fn, cfg: TrainConfig, mgr: ocp.CheckpointManager,
          workdir: str, name: str, mesh: Mesh | None, start: int) -> dict[str, PyTree]:
  is_main = jax.process_index() == 0
  schedule = learning_rate_schedule(cfg)
  metrics_path = paths.join(workdir, "metrics.jsonl")
  writer = None
  if is_main:
    import tensorboardX  # lazily: it imports torch when installed (seconds)
    writer = tensorboardX.SummaryWriter(paths.join(workdir, "tensorboard", name))
  bar = tqdm.tqdm(total=cfg.total_steps, initial=start, desc=name, disable=not is_main,
                  dynamic_ncols=True)
  window: list[dict[str, jax.Array]] = []
  t0 = time.time()
  try:
    for step in range(start, cfg.total_steps):
      batch = batch_fn(step)
      _check_batch(batch, cfg.batch_size, step)
      batch = mesh_lib.shard_batch(batch, mesh) if mesh is not None else jax.device_put(batch)
      state, m = step_fn(state, batch)
      window.append(m)
      done = step + 1
      bar.update(1)
      if done % cfg.log_every == 0 or done == cfg.total_steps:
        host = jax.device_get(window)
        dt = time.time() - t0
        row = {k: float(np.mean([w[k] for w in host])) for k in host[0]}
        row.update(stage=name, step=done, lr=float(schedule(step)),
                   steps_per_s=round(len(window) / max(dt, 1e-9), 3))
        if not math.isfinite(row["loss"]):
          raise FloatingPointError(
              f"{name}: loss is {row['loss']} at step {done}; lower learning_rate (now "
              f"{cfg.learning_rate}) or grad_clip. The last good checkpoint is in {mgr.directory}.")
        if is_main:
          metrics_lib.append_jsonl(metrics_path, row)
          for k, v in row.items():
            if isinstance(v, float) and math.isfinite(v):
              writer.add_scalar(f"{name}/{k}", v, done)
          bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        window, t0 = [], time.time()
      if done % cfg.checkpoint_every == 0 or done == cfg.total_steps:
        _save(mgr, done, state)
  finally:
    bar.close()
    if writer is not None:
      writer.close()
  return state
