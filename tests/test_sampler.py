"""Sampler: greedy vs naive recompute, sampling statistics, cache parity, buckets, stops."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax import testing
from ttc_jax.compilation import count_compilations
from ttc_jax.models import transformer
from ttc_jax.sampling.sampler import row_keys, sample_logits


@pytest.fixture(scope="module")
def tiny():
  return testing.tiny_transformer(seed=1)


def _naive_greedy(graphdef, state, prompt, max_len):
  """Greedy decoding by a full forward pass per token, no cache. The row is padded to
  `max_len` (attention is causal, so position t sees only tokens <= t): one compilation."""
  forward = jax.jit(lambda s, x: transformer.apply(graphdef, s, x)[0])
  seq = list(prompt)
  while len(seq) < max_len:
    logits = forward(state, jnp.asarray([seq + [0] * (max_len - len(seq))]))
    seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
  return seq[len(prompt):]


def test_greedy_matches_full_recompute(tiny):
  cfg, graphdef, state, tok, sampler = tiny
  prompts = [tok.encode("Q:1+2\n", bos=True), tok.encode("Q:13+24-5\n", bos=True)]
  max_len = 30
  _, out = sampler.sample(state, prompts, jax.random.key(0), num_samples=2, max_len=max_len,
                          temperature=0.0, stop="none")
  for i, p in enumerate(prompts):
    ref = _naive_greedy(graphdef, state, p, max_len)
    for s in range(2):
      row = i * 2 + s
      assert int(out.lengths[row]) == len(ref)
      np.testing.assert_array_equal(np.asarray(out.tokens[row, :len(ref)]), ref)


def test_cached_logits_equal_uncached(tiny):
  cfg, graphdef, state, tok, _ = tiny
  seq = jnp.asarray([tok.encode("Q:12+34-5\n12+34=46\n", bos=True)])
  full, _ = transformer.apply(graphdef, state, seq)
  n_prompt = 5
  cache = cfg.init_cache(1, 32)
  pos = jnp.arange(seq.shape[1])[None]
  logits, cache = transformer.apply(graphdef, state, seq[:, :n_prompt], pos[:, :n_prompt], cache)
  steps = [logits]
  for t in range(n_prompt, seq.shape[1]):
    lg, cache = transformer.apply(graphdef, state, seq[:, t:t + 1], pos[:, t:t + 1], cache)
    steps.append(lg)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def _chi2_ok(counts, probs, n):
  expected = probs * n
  keep = expected > 0
  assert counts[~keep].sum() == 0, "sampled a token with zero probability"
  chi2 = (((counts - expected) ** 2)[keep] / expected[keep]).sum()
  dof = keep.sum() - 1
  # Reject at ~p < 1e-4: mean dof, sd sqrt(2 dof); 6 sd is far in the tail.
  return chi2 < dof + 6 * np.sqrt(2 * dof)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0),
                                                     (1.0, 3, 1.0), (1.0, 0, 0.8)])
def test_sampled_frequencies_match_softmax(temperature, top_k, top_p):
  logits = np.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2], np.float32)
  sampler = testing.stub_sampler(eos_id=99, step_id=98, context_len=260)
  n_prompts, new = 64, 256
  _, out = sampler.sample({"logits": jnp.asarray(logits)}, [[1]] * n_prompts,
                          jax.random.key(3), max_len=new + 1, stop="none",
                          temperature=temperature, top_k=top_k, top_p=top_p)
  toks = np.asarray(out.tokens).ravel()
  counts = np.bincount(toks, minlength=len(logits)).astype(np.float64)
  # Reference distribution, computed independently in numpy.
  z = logits / temperature
  order = np.argsort(-z)
  keep = np.zeros_like(z, bool)
  if top_k:
    keep[order[:top_k]] = True
  else:
    p = np.exp(z - z.max()); p /= p.sum()
    cum = np.cumsum(p[order])
    keep[order[:np.searchsorted(cum, top_p) + 1]] = True
  p = np.where(keep, np.exp(z - z.max()), 0.0)
  p /= p.sum()
  assert _chi2_ok(counts, p, toks.size)
  # And the test has power: the untempered, untruncated softmax is rejected
  # whenever the reference differs from it.
  raw = np.exp(logits - logits.max()); raw /= raw.sum()
  if (temperature, top_k, top_p) != (1.0, 0, 1.0):
    assert not _chi2_ok(counts, raw, toks.size)


def test_sample_logits_greedy_at_zero_temperature():
  logits = jnp.asarray([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]])
  for seed in range(5):
    tok = sample_logits(jax.random.key(seed), logits, jnp.float32(0.0), 0, jnp.float32(1.0))
    np.testing.assert_array_equal(tok, [1, 0])


def test_same_bucket_prompts_do_not_recompile(tiny):
  _, _, state, tok, sampler = tiny
  kw = dict(num_samples=2, max_len=40, max_new_tokens=16, temperature=1.0, stop="step")
  sampler.sample(state, [tok.encode("Q:1+2\n", bos=True)] * 3, jax.random.key(0), **kw)
  with count_compilations() as c:
    for i, q in enumerate(["Q:5-3\n", "Q:12+7-40\n", "Q:1\n"]):
      sampler.sample(state, [tok.encode(q, bos=True)] * 3, jax.random.key(i), **kw)
  assert c.count == 0
  with count_compilations() as c:  # the counter itself works: a new bucket compiles
    sampler.sample(state, [tok.encode("Q:" + "1+" * 10 + "1\n", bos=True)] * 3,
                   jax.random.key(0), **kw)
  assert c.count > 0


def test_step_stop_then_continue_equals_one_run(tiny):
  """Decoding step by step from the returned state equals one uninterrupted run."""
  _, _, state, tok, sampler = tiny
  prompts = [tok.encode("Q:1+2\n", bos=True), tok.encode("Q:33-4+5\n", bos=True)]
  max_len = 40
  _, full = sampler.sample(state, prompts, jax.random.key(0), max_len=max_len,
                           temperature=0.0, stop="eos")
  st, seg = sampler.sample(state, prompts, jax.random.key(0), max_len=max_len,
                           temperature=0.0, stop="step")
  pieces = [[list(np.asarray(seg.tokens[r, :seg.lengths[r]]))] for r in range(2)]
  for _ in range(20):
    st, seg = sampler.decode(state, st, jax.random.key(1), max_new_tokens=max_len,
                             stop="step", temperature=0.0)
    for r in range(2):
      pieces[r].append(list(np.asarray(seg.tokens[r, :seg.lengths[r]])))
  (step_id,) = tok.step_ids("\n")
  for r in range(2):
    steps = [p for p in pieces[r] if p]
    # Every piece but the last ends exactly at a step delimiter.
    assert all(p[-1] == step_id for p in steps[:-1])
    assert all(step_id not in p[:-1] for p in steps)
    joined = sum(steps, [])
    np.testing.assert_array_equal(joined, np.asarray(full.tokens[r, :full.lengths[r]]))
    np.testing.assert_array_equal(np.asarray(st.tokens[r, :st.positions[r]]),
                                  prompts[r] + joined)


def test_eos_stops_row_and_pads():
  logits = np.full(8, -10.0, np.float32)
  logits[2] = 10.0  # EOS almost surely
  sampler = testing.stub_sampler(eos_id=2, step_id=3)
  st, out = sampler.sample({"logits": jnp.asarray(logits)}, [[1], [1, 5, 6]],
                           jax.random.key(0), max_len=20, stop="eos")
  np.testing.assert_array_equal(out.lengths, [1, 1])
  assert bool(out.stopped.all()) and bool(st.done.all())
  assert (np.asarray(out.tokens[:, 1:]) == 0).all()


def test_step_stop_at_any_of_several_step_ids():
  """A BPE vocabulary has several tokens holding the delimiter ("\\n", "5\\n"): each ends a step."""
  sampler = dataclasses.replace(testing.stub_sampler(eos_id=2, step_id=3), step_ids=(3, 4))
  for tok, stops in ((3, True), (4, True), (5, False)):
    logits = np.full(8, -10.0, np.float32)
    logits[tok] = 10.0
    st, out = sampler.sample({"logits": jnp.asarray(logits)}, [[1], [1, 5, 6]],
                             jax.random.key(0), max_len=20, max_new_tokens=6, stop="step")
    np.testing.assert_array_equal(out.lengths, [1, 1] if stops else [6, 6])
    np.testing.assert_array_equal(out.stopped, [stops, stops])
    assert (np.asarray(out.tokens)[:, :int(out.lengths[0])] == tok).all()
    assert not bool(st.done.any())  # a step stop is no EOS: the rows go on


def test_logprobs_only_on_request():
  """Each token's log-prob under the unscaled logits, 0 after the row's end; None by default."""
  logits = np.log(np.asarray([0.0, 0.1, 0.2, 0.0, 0.3, 0.4, 0.0, 0.0], np.float32) + 1e-30)
  sampler = testing.stub_sampler(eos_id=2, step_id=3)
  params = {"logits": jnp.asarray(logits)}
  _, plain = sampler.sample(params, [[1], [1, 5]], jax.random.key(0), max_len=12,
                            temperature=0.7)
  assert plain.logprobs is None
  _, out = sampler.sample(params, [[1], [1, 5]], jax.random.key(0), max_len=12,
                          temperature=0.7, logprobs=True)
  np.testing.assert_array_equal(out.tokens, plain.tokens)  # the same draws
  want = np.log(np.asarray([0.0, 0.1, 0.2, 0.0, 0.3, 0.4, 0.0, 0.0]) + 1e-30)
  toks, lp = np.asarray(out.tokens), np.asarray(out.logprobs)
  for r in range(2):
    n = int(out.lengths[r])
    np.testing.assert_allclose(lp[r, :n], want[toks[r, :n]], rtol=1e-5)
    assert (lp[r, n:] == 0).all()


def test_sample_keeps_only_real_rows(tiny):
  """Three prompts pad to a batch of four; the padding row never comes back."""
  cfg, graphdef, state, tok, sampler = tiny
  prompts = [tok.encode(q, bos=True) for q in ("Q:1+2\n", "Q:3+4\n", "Q:5+6\n")]
  st, out = sampler.sample(state, prompts, jax.random.key(0), num_samples=1, max_len=20)
  assert st.tokens.shape[0] == out.tokens.shape[0] == 3
  st, out = sampler.sample(state, prompts[:2], jax.random.key(0), num_samples=2, max_len=20)
  assert st.tokens.shape[0] == out.tokens.shape[0] == 4


def test_row_keys_make_each_row_independent_of_its_batch(tiny):
  """With one key per row, a row samples the same tokens in any batch, at any index."""
  _, _, state, tok, sampler = tiny
  prompts = [tok.encode("Q:1+2\n", bos=True)] * 4
  toks, lens = sampler.pad_prompts(prompts, 24)
  st = sampler.prefill(state, jnp.asarray(toks), jnp.asarray(lens), 24)
  keys = row_keys(jax.random.key(0), jnp.arange(4))
  decode = lambda s, k: sampler.decode(state, s, k, max_new_tokens=12, stop="eos")[1].tokens
  out = np.asarray(decode(st, keys))
  order = jnp.array([2, 0])  # two of the rows, swapped, in a batch of two
  np.testing.assert_array_equal(decode(st.gather(order), keys[order]), out[np.asarray(order)])
  assert len({tuple(r) for r in out}) > 1  # one prompt, yet rows differ: a key per row
  with pytest.raises(ValueError, match="decode got 2 row keys for 4 rows"):
    decode(st, keys[:2])


def test_check_tokenizer(tiny):
  _, _, _, tok, sampler = tiny
  assert sampler.step_ids == tok.step_ids("\n")
  sampler.check_tokenizer(tok)
  sampler.check_tokenizer(tok, "\n")
  with pytest.raises(ValueError, match=r"Sampler ids \(eos, pad\[, step\]\) = .* differ from the "
                     r"tokenizer's"):
    sampler.check_tokenizer(tok, ":")
  with pytest.raises(ValueError, match="differ from the tokenizer's"):
    dataclasses.replace(sampler, eos_id=tok.pad_id).check_tokenizer(tok)
  with pytest.raises(ValueError, match="differ from the tokenizer's"):
    dataclasses.replace(sampler, pad_id=tok.eos_id).check_tokenizer(tok, "\n")


def test_prompt_longer_than_context_is_a_clear_error(tiny):
  cfg, _, state, tok, sampler = tiny
  long_prompt = [1] + [5] * (cfg.max_len + 3)
  with pytest.raises(ValueError, match="Prompt 0 has .* tokens"):
    sampler.sample(state, [long_prompt], jax.random.key(0))
  with pytest.raises(ValueError, match="exceeds the model's context window"):
    sampler.sample(state, [[1, 5]], jax.random.key(0), max_len=cfg.max_len + 1)
  with pytest.raises(ValueError, match="stop="):
    sampler.sample(state, [[1, 5]], jax.random.key(0), stop="line")
