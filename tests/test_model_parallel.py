"""Parameters sharded over `model` (tensor parallel by the logical-axis rules, docs/design.md,
"Sharding"): on 8 CPU devices as data=2 x model=4, the sampler, the PRM and the trainer give the
tokens, scores and parameters of the 1-device run (search: tests/test_search.py,
`test_same_results_on_one_and_eight_devices`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax import testing
from ttc_jax.models import reward
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.training import trainer


@pytest.fixture(scope="module")
def models():
  cfg, _, lm_state, tok, sampler = testing.tiny_transformer(seed=3, max_len=32)
  prm_graphdef, prm_state = reward.create(cfg, seed=4)
  return cfg, lm_state, tok, sampler, prm_graphdef, prm_state


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.make_mesh(data=2, model=4)


def _one(tree):
  return jax.device_put(tree, jax.devices()[0])


def _model_split(state) -> int:
  """How many parameters are split 4 ways over `model` (not only replicated)."""
  leaves = jax.tree.leaves(state)
  return sum("model" in x.sharding.spec and len(x.sharding.device_set) == 8
             and x.addressable_shards[0].data.size * 4 == x.size for x in leaves)


def test_parameters_really_split_over_model(models, mesh):
  _, lm_state, _, _, _, prm_state = models
  for state in (lm_state, prm_state):
    sharded = mesh_lib.shard_params(state, mesh)
    # Every q/k/v/o and MLP matrix of both layers: 7 per layer.
    assert _model_split(sharded) == 14


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampler_tokens_equal_one_device(models, mesh, temperature):
  _, lm_state, tok, sampler, _, _ = models
  prompts = [tok.encode(q, bos=True) for q in ["Q:1+2\n", "Q:33-4+5\n", "Q:7\n", "Q:9-1\n"]]
  kw = dict(num_samples=4, max_len=32, temperature=temperature, stop="eos")
  _, ref = sampler.sample(_one(lm_state), prompts, jax.random.key(0), **kw)
  _, out = sampler.sample(mesh_lib.shard_params(lm_state, mesh), prompts, jax.random.key(0),
                          mesh=mesh, **kw)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_array_equal(np.asarray(out.lengths), np.asarray(ref.lengths))


def test_prm_scores_equal_one_device(models, mesh):
  _, _, tok, _, prm_graphdef, prm_state = models
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, tok.vocab_size, (8, 24)).astype(np.int32)
  ends = np.tile(np.array([5, 11, 17, 23], np.int32), (8, 1))
  ends[::3, 2:] = -1
  ref = reward.step_scores(prm_graphdef, _one(prm_state), jnp.asarray(tokens), jnp.asarray(ends))
  sharded = mesh_lib.shard_params(prm_state, mesh)
  batch = mesh_lib.shard_batch({"t": tokens, "e": ends}, mesh)
  out = reward.step_scores(prm_graphdef, sharded, batch["t"], batch["e"])
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
  # Incremental scoring (what search uses): prefill then extend, on the mesh and on one device.
  got = []
  for state, b in ((_one(prm_state), {"t": jnp.asarray(tokens)}), (sharded, batch)):
    s = reward.prefill(prm_graphdef, state, b["t"][:, :12], jnp.full((8,), 12), max_len=24)
    _, logit = reward.extend(prm_graphdef, state, s, b["t"][:, 12:], jnp.full((8,), 12))
    got.append(np.asarray(logit))
  np.testing.assert_allclose(got[1], got[0], atol=1e-5)


def _prm_batch(step: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng([3, step])
  tokens = rng.integers(3, 22, (8, 16)).astype(np.int32)
  ends = np.tile(np.array([3, 7, 11, 15], np.int32), (8, 1))
  return {"tokens": tokens, "step_ends": ends, "labels": rng.random((8, 4)).astype(np.float32),
          "label_mask": (rng.random((8, 4)) < 0.8).astype(np.float32)}


def test_trainer_params_equal_one_device(models, mesh, tmp_path):
  _, _, _, _, prm_graphdef, prm_state = models
  loss_fn = reward.prm_loss(lambda p, t: reward.apply(prm_graphdef, p, t)[0])
  cfg = trainer.TrainConfig(total_steps=4, batch_size=8, learning_rate=1e-2, warmup_steps=1,
                            checkpoint_every=2, log_every=2)
  ref = trainer.train(_one(prm_state), loss_fn, _prm_batch, cfg, tmp_path / "one", name="prm")
  sharded = mesh_lib.shard_params(prm_state, mesh)
  out = trainer.train(sharded, loss_fn, _prm_batch, cfg, tmp_path / "mesh", name="prm",
                      mesh=mesh)
  assert _model_split(out) == 14  # the trained params keep the model split
  moved = 0
  for a, b, init in zip(jax.tree.leaves(out), jax.tree.leaves(ref), jax.tree.leaves(prm_state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    moved += not np.allclose(np.asarray(b), np.asarray(init))
  assert moved > 10  # training changed the parameters being compared
