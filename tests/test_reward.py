"""Reward model: incremental == full scoring, step positions, aggregation, losses, from_lm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ttc_jax import testing
from ttc_jax.models import reward, transformer
from ttc_jax.tokenizers import base as tokenizers_base

PAD_FILL = 7  # padding token inside extend blocks: any id; it must not leak into scores


@pytest.fixture(scope="module")
def tiny():
  cfg, lm_graphdef, lm_state, tok, _ = testing.tiny_transformer(seed=1)
  graphdef, state = reward.from_lm(lm_state, cfg, seed=0)
  return cfg, lm_graphdef, lm_state, tok, graphdef, state


def _solutions(tok, rng, num_steps):
  """Prompts and per-row steps (random digits + '\\n', the last step ending in EOS)."""
  digits = tok.encode("0123456789")
  (step_id,) = tok.step_ids("\n")
  prompts, steps = [], []
  for n in num_steps:
    prompts.append([tok.bos_id] + list(rng.choice(digits, rng.integers(2, 6))) + [step_id])
    row = [list(rng.choice(digits, rng.integers(1, 5))) + [step_id] for _ in range(n)]
    row[-1][-1] = tok.eos_id
    steps.append(row)
  return prompts, steps


def _rows(prompts, steps, width):
  out = np.zeros((len(prompts), width), np.int32)
  for i, (p, s) in enumerate(zip(prompts, steps)):
    seq = p + sum(s, [])
    out[i, :len(seq)] = seq
  return out


def test_incremental_scoring_equals_full_pass(tiny):
  cfg, _, _, tok, graphdef, state = tiny
  num_steps = [4, 2, 3]
  prompts, steps = _solutions(tok, np.random.default_rng(0), num_steps)
  full_tokens = _rows(prompts, steps, 40)
  full, _ = reward.apply(graphdef, state, jnp.asarray(full_tokens))
  starts = np.array([len(p) for p in prompts])
  ends = tokenizers_base.find_step_ends(full_tokens, tok, "\n", starts)
  assert ends.shape == (3, 4) and ((ends >= 0).sum(1) == num_steps).all()

  p_max = max(starts)
  prompt_tokens = np.full((3, p_max), PAD_FILL, np.int32)
  for i, p in enumerate(prompts):
    prompt_tokens[i, :len(p)] = p
  st = reward.prefill(graphdef, state, jnp.asarray(prompt_tokens), jnp.asarray(starts), 48)
  np.testing.assert_allclose(st.logit, full[np.arange(3), starts - 1], atol=1e-5)

  for k in range(max(num_steps)):
    width = 4 if k == 2 else 6  # two block widths, both right-padded
    new = np.full((3, width), PAD_FILL, np.int32)
    lens = np.zeros(3, np.int32)
    for i, row in enumerate(steps):
      if k < len(row):
        new[i, :len(row[k])] = row[k]
        lens[i] = len(row[k])
    before = np.asarray(st.logit)
    st, logit = reward.extend(graphdef, state, st, jnp.asarray(new), jnp.asarray(lens))
    want = np.where(lens > 0, np.asarray(full)[np.arange(3), np.maximum(ends[:, k], 0)], before)
    assert np.abs(np.asarray(logit) - want).max() <= 1e-5, k
  np.testing.assert_array_equal(st.positions, (full_tokens != 0).sum(1))
  assert not np.asarray(st.overflow).any()


def test_gathered_rows_continue_like_fresh_ones(tiny):
  """Keeping beams: gathering rows of a ScoreState mid-solution changes nothing downstream."""
  _, _, _, tok, graphdef, state = tiny
  prompts, steps = _solutions(tok, np.random.default_rng(1), [2, 2])
  full, _ = reward.apply(graphdef, state, jnp.asarray(_rows(prompts, steps, 32)))
  lens = np.array([len(p) for p in prompts])
  prompt_tokens = _rows(prompts, [[[]]] * 2, int(lens.max()))
  st = reward.prefill(graphdef, state, jnp.asarray(prompt_tokens), jnp.asarray(lens), 32)
  first = _rows([[]] * 2, [[s[0]] for s in steps], 6)
  st, _ = reward.extend(graphdef, state, st, jnp.asarray(first),
                        jnp.asarray([len(s[0]) for s in steps]))
  st = st.gather(jnp.asarray([1, 1, 0]))  # row 1 twice, row 0 once
  second = _rows([[]] * 3, [[steps[r][1]] for r in (1, 1, 0)], 6)
  st, logit = reward.extend(graphdef, state, st, jnp.asarray(second),
                            jnp.asarray([len(steps[r][1]) for r in (1, 1, 0)]))
  end = [len(prompts[r]) + len(steps[r][0]) + len(steps[r][1]) - 1 for r in (1, 1, 0)]
  np.testing.assert_allclose(logit, np.asarray(full)[[1, 1, 0], end], atol=1e-5)


def test_extend_past_cache_end_scores_nan(tiny):
  _, _, _, _, graphdef, state = tiny
  st = reward.prefill(graphdef, state, jnp.full((2, 5), 4), jnp.asarray([5, 3]), 10)
  st, logit = reward.extend(graphdef, state, st, jnp.full((2, 6), 5), jnp.asarray([2, 2]))
  np.testing.assert_array_equal(np.isnan(logit), [True, False])  # 5 + 6 > 10, 3 + 6 <= 10
  st, logit = reward.extend(graphdef, state, st, jnp.full((2, 1), 5), jnp.asarray([1, 1]))
  np.testing.assert_array_equal(np.isnan(logit), [True, False])  # sticky


def test_step_scores_read_step_ends(tiny):
  _, _, _, _, graphdef, state = tiny
  tokens = jnp.asarray(np.random.default_rng(2).integers(3, 22, (2, 12)), jnp.int32)
  ends = np.array([[3, 7, 11], [5, -1, -1]], np.int32)
  logits, _ = reward.apply(graphdef, state, tokens)
  logits = np.asarray(logits)
  want = np.zeros((2, 3))
  for b in range(2):
    for s in range(3):
      if ends[b, s] >= 0:
        want[b, s] = 1 / (1 + math.exp(-logits[b, ends[b, s]]))
  got = reward.step_scores(graphdef, state, tokens, jnp.asarray(ends))
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert len(set(np.round(want[0], 6))) == 3  # the positions really differ


def test_aggregate_last_min_prod():
  scores = np.array([[0.9, 0.5, 0.8, 0.1], [0.2, 0.7, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]])
  num_steps = np.array([3, 2, 0])
  np.testing.assert_allclose(reward.aggregate(scores, num_steps, "last"), [0.8, 0.7, 0.0])
  np.testing.assert_allclose(reward.aggregate(scores, num_steps, "min"), [0.5, 0.2, 0.0])
  np.testing.assert_allclose(reward.aggregate(scores, num_steps, "prod"), [0.36, 0.14, 0.0],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="'last', 'min', 'prod'"):
    reward.aggregate(scores, num_steps, "mean")


def _bce(x, y):
  p = 1 / (1 + math.exp(-x))
  return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_prm_and_orm_loss_equal_hand_bce():
  logits = np.array([[0.3, -1.2, 2.0, 0.7, -0.4], [1.5, 0.1, -2.2, 0.9, 0.0]], np.float32)
  apply_fn = lambda params, tokens: params["logits"]  # stub: fixed per-token logits
  params = {"logits": jnp.asarray(logits)}
  batch = {"tokens": jnp.zeros((2, 5), jnp.int32),
           "step_ends": jnp.asarray([[1, 3, 4], [0, 2, -1]]),
           "labels": jnp.asarray([[0.25, 0.75, 1.0], [0.5, 0.0, 0.9]]),
           "label_mask": jnp.asarray([[1, 1, 0], [1, 1, 1]])}
  want = np.mean([_bce(-1.2, 0.25), _bce(0.7, 0.75), _bce(1.5, 0.5), _bce(-2.2, 0.0)])
  loss, metrics = reward.prm_loss(apply_fn)(params, batch)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)
  want_mae = np.mean([abs(1 / (1 + math.exp(1.2)) - 0.25), abs(1 / (1 + math.exp(-0.7)) - 0.75),
                      abs(1 / (1 + math.exp(-1.5)) - 0.5), abs(1 / (1 + math.exp(2.2)))])
  np.testing.assert_allclose(metrics["mae"], want_mae, rtol=1e-5)

  orm_batch = {"tokens": batch["tokens"], "final_pos": jnp.asarray([4, 3]),
               "label": jnp.asarray([1.0, 0.0])}
  loss, _ = reward.orm_loss(apply_fn)(params, orm_batch)
  np.testing.assert_allclose(loss, np.mean([_bce(-0.4, 1.0), _bce(0.9, 0.0)]), rtol=1e-5)


def _synthetic_prm_batch(tok, rng, batch, steps=4):
  """Each step is 3 digits + delimiter; its soft label is (last digit + 0.5) / 10."""
  digits = np.array(tok.encode("0123456789"))
  d = rng.integers(0, 10, (batch, steps, 3))
  (step_id,) = tok.step_ids("\n")
  body = np.concatenate([digits[d], np.full((batch, steps, 1), step_id)], axis=2)
  body[:, -1, -1] = tok.eos_id
  tokens = np.concatenate([np.full((batch, 1), tok.bos_id), body.reshape(batch, -1)], axis=1)
  ends = 1 + 4 * np.arange(steps)[None, :] + 3 + np.zeros((batch, 1), int)
  return {"tokens": jnp.asarray(tokens, jnp.int32), "step_ends": jnp.asarray(ends, jnp.int32),
          "labels": jnp.asarray((d[:, :, -1] + 0.5) / 10, jnp.float32),
          "label_mask": jnp.ones((batch, steps), jnp.float32)}


def test_prm_fits_soft_labels(tiny):
  cfg, _, _, tok, _, _ = tiny
  graphdef, params = reward.create(cfg, seed=3)
  loss_fn = reward.prm_loss(lambda p, t: reward.apply(graphdef, p, t)[0])
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    grads, _ = jax.grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(0)
  held_out = _synthetic_prm_batch(tok, np.random.default_rng(99), 256)
  y = np.asarray(held_out["labels"])
  floor = float(np.mean(-(y * np.log(y) + (1 - y) * np.log(1 - y))))  # BCE of a perfect fit
  start, _ = loss_fn(params, held_out)
  for _ in range(300):
    params, opt_state = step(params, opt_state, _synthetic_prm_batch(tok, rng, 32))
  end, metrics = loss_fn(params, held_out)
  assert float(end) - floor < 0.15 * (float(start) - floor), (float(start), float(end), floor)
  assert float(metrics["mae"]) < 0.08, metrics


def test_from_lm_copies_trunk_exactly(tiny):
  cfg, lm_graphdef, lm_state, _, graphdef, state = tiny
  tokens = jnp.asarray(np.random.default_rng(3).integers(3, 22, (2, 10)), jnp.int32)
  lm_hidden, _ = nnx.merge(lm_graphdef, lm_state).hidden(tokens)
  rm_hidden, _ = nnx.merge(graphdef, state).trunk.hidden(tokens)
  np.testing.assert_array_equal(rm_hidden, lm_hidden)
  fresh_hidden, _ = nnx.merge(*reward.create(cfg, seed=0)).trunk.hidden(tokens)
  assert np.abs(np.asarray(fresh_hidden) - np.asarray(lm_hidden)).max() > 1e-3
  assert "lm_head" not in state["trunk"]  # the scalar head replaces the LM head


def test_mismatched_config_names_both_shapes(tiny):
  cfg, _, lm_state, _, graphdef, state = tiny
  bigger = transformer.TransformerConfig(**{**cfg.__dict__, "vocab_size": 30})
  with pytest.raises(ValueError, match=r"\(22, 32\).*\(30, 32\)"):
    reward.from_lm(lm_state, bigger)
  other_graphdef, _ = reward.create(bigger)
  with pytest.raises(ValueError, match=r"\(22, 32\).*\(30, 32\)"):
    reward.apply(other_graphdef, state, jnp.zeros((1, 4), jnp.int32))
  lm_graphdef, lm_state = transformer.create(cfg)
  with pytest.raises(ValueError, match="not a RewardModel"):
    reward.apply(lm_graphdef, lm_state, jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match="does not fit the graphdef"):
    reward.apply(lm_graphdef, state, jnp.zeros((1, 4), jnp.int32))


@pytest.mark.parametrize("how", reward.AGGREGATIONS)
def test_aggregate_in_jit_matches_the_host(how):
  scores = np.array([[0.9, 0.2, np.nan], [0.5, np.nan, np.nan], [np.nan] * 3, [0.3, 0.8, 0.6]],
                    np.float32)
  num_steps = np.array([2, 1, 0, 3])
  host = reward.aggregate(scores, num_steps, how)
  dev = jax.jit(lambda s, n: reward.aggregate(s, n, how, xp=jnp))(scores, num_steps)
  np.testing.assert_allclose(np.asarray(dev), host, rtol=1e-6)
  assert host[2] == 0.0
  assert host[0] == pytest.approx({"last": 0.2, "min": 0.2, "prod": 0.18}[how], rel=1e-6)


def test_pairwise_sibling_loss_by_hand():
  """Only steps of one question at one depth pair up; weights are the label gaps."""
  logits = jnp.asarray([[1.0, 0.0], [-1.0, 2.0], [3.0, 0.0]])
  labels = jnp.asarray([[0.9, 0.2], [0.1, 0.7], [0.0, 0.5]])
  mask = jnp.asarray([[1, 1], [1, 1], [1, 0]], jnp.float32)
  question = jnp.asarray([0, 0, 1])
  sp = lambda x: math.log1p(math.exp(-x))  # -log sigmoid(x)
  # Question 0: depth 0 pairs (row 0 over row 1, gap 0.8), depth 1 (row 1 over row 0, 0.5).
  # Row 2 is alone in question 1, and its second step is masked.
  want = (0.8 * sp(1.0 - -1.0) + 0.5 * sp(2.0 - 0.0)) / 1.3
  got = reward.pairwise_sibling_loss(logits, labels, mask, question)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(reward.pairwise_sibling_loss(logits, labels, mask, jnp.arange(3))) == 0.0

  apply_fn = lambda params, tokens: params["logits"]
  batch = {"tokens": jnp.zeros((3, 2), jnp.int32), "step_ends": jnp.asarray([[0, 1]] * 3),
           "labels": labels, "label_mask": mask, "question": question}
  bce, _ = reward.prm_loss(apply_fn)({"logits": logits}, batch)
  both, metrics = reward.prm_loss(apply_fn, 0.5)({"logits": logits}, batch)
  np.testing.assert_allclose(both, bce + 0.5 * want, rtol=1e-5)
  np.testing.assert_allclose(metrics["bce"], bce, rtol=1e-5)
  np.testing.assert_allclose(metrics["ranking_loss"], want, rtol=1e-5)


def test_ranking_loss_pushes_siblings_apart_in_label_order():
  """From tied scores, descending the pairwise loss raises the better-labelled siblings and
  lowers the worse, question by question (one question's labels never move another's)."""
  labels = jnp.asarray([[0.9], [0.5], [0.1], [0.3], [0.3]])
  question = jnp.asarray([0, 0, 0, 1, 1])
  grad = jax.grad(reward.pairwise_sibling_loss)(jnp.zeros((5, 1)), labels, jnp.ones((5, 1)),
                                                question)[:, 0]
  assert grad[0] < 0 < grad[2] and grad[0] < grad[1] < grad[2]
  np.testing.assert_array_equal(grad[3:], 0.0)  # equal labels: no pair, no push
