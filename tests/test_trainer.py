"""Trainer: masked LM loss, schedule, config errors, learning, sharding, exact resume on SIGKILL."""

import dataclasses
import gc
import math
import os
import runpy
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from ttc_jax.io import metrics
from ttc_jax.models import transformer
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.training import batches
from ttc_jax.training import trainer

TINY = transformer.TransformerConfig(vocab_size=16, d_model=32, num_layers=1, num_heads=2,
                                     num_kv_heads=1, head_dim=16, mlp_dim=64, max_len=16)


def _batch_fn(step: int, batch_size: int = 8) -> dict[str, np.ndarray]:
  """Counting sequences mod 16 from a random start; the first 4 tokens are a masked prompt."""
  rng = np.random.default_rng([7, step])
  start = rng.integers(0, 16, (batch_size, 1))
  tokens = ((start + np.arange(16)) % 16).astype(np.int32)
  mask = np.ones((batch_size, 16), np.float32)
  mask[:, :4] = 0
  return {"tokens": tokens, "loss_mask": mask}


def _lm_loss(graphdef):
  return trainer.lm_loss(lambda p, t: transformer.apply(graphdef, p, t)[0])


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ---- loss ----

def test_lm_loss_hand_computed():
  # Bigram stub: logits at position t are table[tokens[t]].
  table = jnp.zeros((3, 3)).at[0, 1].set(math.log(2.0))
  loss_fn = trainer.lm_loss(lambda p, t: p[t])
  batch = {"tokens": jnp.array([[0, 1, 2]]), "loss_mask": jnp.array([[0.0, 1.0, 0.0]])}
  loss, m = loss_fn(table, batch)
  # Only target tokens[1]=1 counts, predicted by softmax(table[0]) = [1/4, 1/2, 1/4].
  np.testing.assert_allclose(loss, math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 1.0)
  batch["loss_mask"] = jnp.array([[1.0, 1.0, 1.0]])  # adds target 2 from uniform table[1]
  loss, m = loss_fn(table, batch)
  np.testing.assert_allclose(loss, (math.log(2.0) + math.log(3.0)) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 0.5)  # argmax of uniform row is 0, target 2


def test_lm_loss_ignores_masked_positions():
  logits = jax.random.normal(jax.random.key(0), (7,))
  loss_fn = trainer.lm_loss(lambda p, t: jnp.broadcast_to(p, t.shape + p.shape))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 7, (4, 10)).astype(np.int32)
  mask = (rng.random((4, 10)) < 0.5).astype(np.float32)
  loss, m = loss_fn(logits, {"tokens": tokens, "loss_mask": mask})
  changed = np.where(mask > 0, tokens, rng.integers(0, 7, tokens.shape)).astype(np.int32)
  assert not np.array_equal(changed, tokens)
  loss2, m2 = loss_fn(logits, {"tokens": changed, "loss_mask": mask})
  assert float(loss) == float(loss2) and float(m["accuracy"]) == float(m2["accuracy"])
  # Mean over masked targets only: equals the explicit average.
  logp = jax.nn.log_softmax(logits)
  sel = mask[:, 1:] > 0
  np.testing.assert_allclose(loss, -np.mean(np.asarray(logp)[tokens[:, 1:][sel]]), rtol=1e-6)
  # All masked: a finite zero, not NaN.
  zero, _ = loss_fn(logits, {"tokens": tokens, "loss_mask": np.zeros_like(mask)})
  assert float(zero) == 0.0


def test_lm_loss_real_model_ignores_masked_tail():
  graphdef, state = transformer.create(TINY, 0)
  batch = _batch_fn(0)
  batch["loss_mask"][:, -3:] = 0
  loss_fn = jax.jit(_lm_loss(graphdef))
  loss, _ = loss_fn(state, batch)
  tail = batch["tokens"].copy()
  tail[:, -3:] = (tail[:, -3:] + 5) % 16  # causal: earlier logits do not see these
  loss2, _ = loss_fn(state, dict(batch, tokens=tail))
  np.testing.assert_array_equal(loss, loss2)


# ---- schedule, optimizer, config ----

def test_schedule_warmup_then_cosine():
  cfg = trainer.TrainConfig(total_steps=100, batch_size=1, learning_rate=1e-3, warmup_steps=10,
                            end_lr_fraction=0.1)
  s = trainer.learning_rate_schedule(cfg)
  np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
  cosine = lambda t: 1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * (t - 10) / 90))
  for t in (25, 55, 80, 100):
    np.testing.assert_allclose(s(t), cosine(t), rtol=1e-5)
  np.testing.assert_allclose(s(100), 1e-4, rtol=1e-5)


def test_optimizer_decays_matrices_not_vectors_and_clips():
  cfg = trainer.TrainConfig(total_steps=10, batch_size=1, learning_rate=0.1, warmup_steps=0,
                            weight_decay=0.5, grad_clip=1.0)
  tx = trainer.make_optimizer(cfg)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_array_equal(updates["b"], 0.0)
  clip = optax.clip_by_global_norm(1.0)
  big = {"w": jnp.full((2, 2), 100.0), "b": jnp.full((2,), 100.0)}
  clipped, _ = clip.update(big, clip.init(params))
  np.testing.assert_allclose(optax.tree.norm(clipped), 1.0, rtol=1e-5)


def test_train_config_from_config():
  c = ml_collections.ConfigDict(dict(total_steps=10, batch_size=4, warmup_steps=2))
  assert trainer.TrainConfig.from_config(c) == trainer.TrainConfig(10, 4, warmup_steps=2)
  c.learnin_rate = 1e-3
  with pytest.raises(ValueError, match=r"Unknown key\(s\) \['learnin_rate'\].*learning_rate"):
    trainer.TrainConfig.from_config(c)
  with pytest.raises(ValueError, match="missing required.*batch_size"):
    trainer.TrainConfig.from_config({"total_steps": 10})
  with pytest.raises(ValueError, match="total_steps=0"):
    trainer.TrainConfig(total_steps=0, batch_size=4)
  with pytest.raises(ValueError, match="warmup_steps=100.*total_steps=50"):
    trainer.TrainConfig(total_steps=50, batch_size=4)


# ---- training ----

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 12-step run: (workdir, graphdef, initial state, final params)."""
  workdir = tmp_path_factory.mktemp("trained")
  graphdef, state = transformer.create(TINY, 0)
  cfg = trainer.TrainConfig(total_steps=12, batch_size=8, learning_rate=1e-2, warmup_steps=2,
                            checkpoint_every=4, log_every=4)
  params = trainer.train(state, _lm_loss(graphdef), _batch_fn, cfg, workdir)
  return workdir, graphdef, state, params, cfg


def test_loss_decreases_and_outputs(trained):
  workdir, graphdef, state, params, cfg = trained
  assert type(params) is type(state) and isinstance(params, nnx.State)
  assert jax.tree.structure(params) == jax.tree.structure(state)
  logits, _ = transformer.apply(graphdef, params, jnp.asarray(_batch_fn(0)["tokens"]))
  assert logits.shape == (8, 16, 16)
  assert not jax.tree.leaves(state)[0].is_deleted()  # the caller's arrays are not donated
  rows = [r for r in metrics.read_jsonl(workdir / "metrics.jsonl") if r["stage"] == "lm"]
  assert [r["step"] for r in rows] == [4, 8, 12]
  assert {"loss", "accuracy", "lr", "steps_per_s", "grad_norm"} <= set(rows[0])
  assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
  loss_fn = jax.jit(_lm_loss(graphdef))
  before, _ = loss_fn(state, _batch_fn(100))
  after, _ = loss_fn(params, _batch_fn(100))
  assert float(after) < 0.5 * float(before)
  assert os.listdir(workdir / "tensorboard" / "lm")
  assert sorted(os.listdir(workdir / "checkpoints" / "lm")) == ["12", "8"]  # keep 2


def test_complete_stage_restores_without_training(trained):
  workdir, graphdef, state, params, cfg = trained
  assert trainer.checkpoint_complete(workdir, "lm", 12)
  assert not trainer.checkpoint_complete(workdir, "lm", 20)
  assert not trainer.checkpoint_complete(workdir, "other", 12)

  def never(*args):
    raise AssertionError("loss_fn or batch_fn called for a finished stage")
  restored = trainer.train(state, never, never, cfg, workdir)
  assert type(restored) is type(state)
  for a, b in zip(_leaves(restored), _leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_partial_tmp_checkpoint_is_ignored(trained, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(trained[0], workdir)
  graphdef, state = trained[1], trained[2]
  ckpts = workdir / "checkpoints" / "lm"
  # What a process killed mid-save leaves behind: an uncommitted, half-written step.
  tmp = ckpts / "16.orbax-checkpoint-tmp"
  shutil.copytree(ckpts / "12", tmp)
  for f in tmp.rglob("*"):
    if f.is_file():
      f.write_bytes(b"\0garbage")
  assert not trainer.checkpoint_complete(workdir, "lm", 16)
  seen = []
  cfg = dataclasses.replace(trained[4], total_steps=16)
  trainer.train(state, _lm_loss(graphdef), lambda s: seen.append(s) or _batch_fn(s), cfg, workdir)
  assert seen == [12, 13, 14, 15]
  assert trainer.checkpoint_complete(workdir, "lm", 16)
  assert not tmp.exists()


# A failed orbax read leaves never-awaited coroutines behind; collected here, not in a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("files", ["*", "d/*"])  # everything / only the array data
def test_corrupt_checkpoint_error(trained, tmp_path, files):
  workdir = tmp_path / "w"
  shutil.copytree(trained[0], workdir)
  step_dir = workdir / "checkpoints" / "lm" / "12"
  corrupted = [f for f in (step_dir / "params").rglob(files) if f.is_file()]
  assert corrupted
  for f in corrupted:
    f.write_bytes(b"not a checkpoint")
  with pytest.raises(trainer.CheckpointError,
                     match=rf"checkpoint {step_dir}.*corrupt.*Delete {step_dir}.*restart"):
    trainer.train(trained[2], _lm_loss(trained[1]), _batch_fn, trained[4], workdir)
  gc.collect()


def test_checkpoint_of_another_model_error(trained, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(trained[0], workdir)
  _, other = transformer.create(dataclasses.replace(TINY, mlp_dim=32), 0)
  with pytest.raises(trainer.CheckpointError, match="different model/optimizer"):
    trainer.train(other, None, None, trained[4], workdir)


def test_unwritable_workdir_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  bad = blocker / "workdir"
  cfg = trainer.TrainConfig(total_steps=2, batch_size=8, warmup_steps=0)
  with pytest.raises(PermissionError, match=rf"Cannot write to workdir '{bad}'"):
    trainer.train({}, None, None, cfg, bad)


def test_mesh_resume_is_exact_and_keeps_shardings(tmp_path):
  mesh = mesh_lib.make_mesh(data=4, model=2)
  graphdef, state = transformer.create(TINY, 0)
  state = mesh_lib.shard_params(state, mesh)
  shardings = [x.sharding for x in jax.tree.leaves(state)]
  assert any(s.spec != jax.sharding.PartitionSpec() for s in shardings)
  opt_state = trainer._init_opt_state(trainer.make_optimizer(
      trainer.TrainConfig(total_steps=2, batch_size=8, warmup_steps=0)), state, mesh)
  mu = opt_state[1][0].mu  # chain(clip, adamw): Adam's moments mirror the params' shardings
  assert [x.sharding for x in jax.tree.leaves(mu)] == shardings
  assert all(x.sharding.mesh == mesh for x in jax.tree.leaves(opt_state))
  cfg = trainer.TrainConfig(total_steps=6, batch_size=8, learning_rate=1e-2, warmup_steps=1,
                            checkpoint_every=2, log_every=2)
  loss_fn = _lm_loss(graphdef)
  reference = trainer.train(state, loss_fn, _batch_fn, cfg, tmp_path / "ref", mesh=mesh)
  assert [x.sharding for x in jax.tree.leaves(reference)] == shardings

  def crash_at_5(step):
    if step == 5:
      raise KeyboardInterrupt("simulated crash")
    return _batch_fn(step)
  with pytest.raises(KeyboardInterrupt):
    trainer.train(state, loss_fn, crash_at_5, cfg, tmp_path / "run", mesh=mesh)
  assert _committed_steps(tmp_path / "run" / "checkpoints" / "lm") == [2, 4]
  seen = []
  resumed = trainer.train(state, loss_fn, lambda s: seen.append(s) or _batch_fn(s), cfg,
                          tmp_path / "run", mesh=mesh)
  assert seen == [4, 5]
  assert [x.sharding for x in jax.tree.leaves(resumed)] == shardings
  for a, b in zip(_leaves(resumed), _leaves(reference)):
    np.testing.assert_array_equal(a, b)

  restored = trainer.train(state, None, None, cfg, tmp_path / "run", mesh=mesh)  # complete
  assert [x.sharding for x in jax.tree.leaves(restored)] == shardings
  for a, b in zip(_leaves(restored), _leaves(reference)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="not divisible by the mesh's data axis"):
    trainer.train(state, loss_fn, lambda s: _batch_fn(s, 6),
                  dataclasses.replace(cfg, total_steps=8, batch_size=6), tmp_path / "run",
                  mesh=mesh)
  with pytest.raises(ValueError, match=r"\(6, 16\); expected .*batch_size=8"):
    trainer.train(state, loss_fn, lambda s: _batch_fn(s, 6),
                  dataclasses.replace(cfg, total_steps=8), tmp_path / "run", mesh=mesh)


# ---- exact resume after SIGKILL ----

# Run as a script (the killed and the resumed run) and imported (the uninterrupted reference).
_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax
    import numpy as np
    from ttc_jax.models import transformer
    from ttc_jax.training import trainer

    def run(workdir, steps_log, sleep):
      cfg = transformer.TransformerConfig(vocab_size=16, d_model=32, num_layers=1, num_heads=2,
                                          num_kv_heads=1, head_dim=16, mlp_dim=64, max_len=16)
      graphdef, state = transformer.create(cfg, 0)

      def batch_fn(step):
        with open(steps_log, "a") as f:
          f.write(f"{step}\\n")
        time.sleep(sleep)
        rng = np.random.default_rng([7, step])
        tokens = ((rng.integers(0, 16, (8, 1)) + np.arange(16)) % 16).astype(np.int32)
        return {"tokens": tokens, "loss_mask": np.ones((8, 16), np.float32)}

      train_cfg = trainer.TrainConfig(total_steps=TOTAL, batch_size=8, learning_rate=3e-3,
                                      warmup_steps=3, checkpoint_every=EVERY, log_every=4)
      loss_fn = trainer.lm_loss(lambda p, t: transformer.apply(graphdef, p, t)[0])
      return trainer.train(state, loss_fn, batch_fn, train_cfg, workdir, name="lm")

    if __name__ == "__main__":
      params = run(sys.argv[1], sys.argv[3], float(sys.argv[4]))
      np.savez(sys.argv[2], *[np.asarray(x) for x in jax.tree.leaves(params)])
""")


def _committed_steps(ckpt_dir):
  return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if ckpt_dir.exists() else []


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  total, every = 24, 4
  script = tmp_path / "run.py"
  script.write_text(_SCRIPT.replace("TOTAL", str(total)).replace("EVERY", str(every)))
  env = dict(os.environ, PYTHONUNBUFFERED="1")  # conftest's 8 CPU devices carry over

  def launch(sleep):
    log = open(tmp_path / "run.out", "w")
    args = [sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "run.npz"),
            str(tmp_path / "run.steps"), str(sleep)]
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

  def output():
    return (tmp_path / "run.out").read_text()[-3000:]

  def steps(name):
    return [int(s) for s in (tmp_path / f"{name}.steps").read_text().split()]

  victim = launch(sleep=0.2)  # slow steps, so the kill lands mid-run
  ckpts = tmp_path / "run" / "checkpoints" / "lm"
  deadline = time.time() + 60
  while not _committed_steps(ckpts) and victim.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert victim.poll() is None, f"run ended before it could be killed:\n{output()}"
  assert _committed_steps(ckpts), f"no checkpoint within 60 s:\n{output()}"
  time.sleep(0.3)  # into the steps after the checkpoint (or the next save)
  victim.send_signal(signal.SIGKILL)
  assert victim.wait() == -signal.SIGKILL
  resume_from = _committed_steps(ckpts)[-1]
  assert 0 < resume_from < total and max(steps("run")) >= resume_from, resume_from

  (tmp_path / "run.steps").write_text("")  # from now on: steps seen by the resumed process
  resumed = launch(sleep=0.0)
  # Meanwhile, the uninterrupted reference in this process, from the same code.
  reference = runpy.run_path(str(script))["run"](tmp_path / "ref", tmp_path / "ref.steps", 0.0)
  assert resumed.wait(timeout=120) == 0, output()
  assert f"resuming from step {resume_from}" in output()
  assert steps("run") == list(range(resume_from, total))  # not restarted from scratch
  assert steps("ref") == list(range(total))

  got = np.load(tmp_path / "run.npz")
  assert len(got.files) == len(_leaves(reference)) > 0
  for i, ref in enumerate(_leaves(reference)):
    np.testing.assert_array_equal(got[f"arr_{i}"], ref, err_msg=f"leaf {i}")
  assert trainer.checkpoint_complete(tmp_path / "run", "lm", total)


def test_group_batches_hold_whole_groups():
  groups = np.repeat([5, 3, 9, 1], 4)[np.random.default_rng(0).permutation(16)]
  arrays = {"g": groups, "i": np.arange(16)}
  fn = batches.group_batches(arrays, groups, batch_size=8, seed=0)
  seen = []
  for step in range(4):  # two epochs
    b = fn(step)
    assert len(b["g"]) == 8 and sorted(np.bincount(b["g"])[np.unique(b["g"])]) == [4, 4]
    np.testing.assert_array_equal(groups[b["i"]], b["g"])
    seen.append(tuple(b["i"]))
  assert set(seen[0] + seen[1]) == set(range(16))  # one epoch covers every row once
  np.testing.assert_array_equal(fn(3)["i"], batches.group_batches(arrays, groups, 8, 0)(3)["i"])
  with pytest.raises(ValueError, match="multiple of the rows per group"):
    batches.group_batches(arrays, groups, batch_size=6, seed=0)
