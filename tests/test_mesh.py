"""Mesh: the same greedy tokens on 1 device and on an 8-device ('data','model') mesh."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ttc_jax import testing
from ttc_jax.parallel import mesh as mesh_lib


def test_eight_simulated_devices():
  assert jax.device_count() == 8


def test_logical_rules_map_params_to_model_axis():
  mesh = mesh_lib.make_mesh(data=4, model=2)
  assert mesh_lib.logical_to_spec(("embed", "mlp"), (32, 64), mesh) == P(None, "model")
  # A dimension the axis does not divide stays replicated instead of failing.
  assert mesh_lib.logical_to_spec(("vocab", "embed"), (23, 32), mesh) == P(None, None)
  with pytest.raises(ValueError, match="no rule"):
    mesh_lib.logical_to_spec(("bogus",), (4,), mesh)


def test_greedy_tokens_same_on_one_and_eight_devices():
  cfg, _, state, tok, sampler = testing.tiny_transformer(seed=2)
  prompts = [tok.encode(q, bos=True) for q in ["Q:1+2\n", "Q:33-4+5\n", "Q:7\n"]]
  kw = dict(num_samples=2, max_len=40, temperature=0.0, stop="eos")
  _, ref = sampler.sample(jax.device_put(state, jax.devices()[0]), prompts,
                         jax.random.key(0), **kw)
  assert len(ref.tokens.sharding.device_set) == 1
  mesh = mesh_lib.make_mesh(data=4, model=2)
  sharded = mesh_lib.shard_params(state, mesh)
  wq = sharded["blocks"][0]["attn"]["wq"].value
  assert wq.sharding.spec == P(None, "model") and len(wq.sharding.device_set) == 8
  _, out = sampler.sample(sharded, prompts, jax.random.key(0), mesh=mesh, **kw)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_array_equal(np.asarray(out.lengths), np.asarray(ref.lengths))


def test_bad_mesh_shape_is_a_clear_error():
  with pytest.raises(ValueError, match="must divide"):
    mesh_lib.make_mesh(model=3)
