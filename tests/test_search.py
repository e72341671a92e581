"""Search API: registry, validation before compute, best-of-N and beam search counts and picks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax import testing
from ttc_jax.compilation import count_compilations
from ttc_jax.data.tokenizer import CharTokenizer
from ttc_jax.models import reward
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import base, selection

TOK = CharTokenizer()
NEG = -30.0


# ---- a scripted policy and a verifier with known scores ----

def _id(c: str) -> int:
  return TOK.encode(c)[0]


def _script_table(length: int = 16) -> np.ndarray:
  """Next-token log-probs by position: solutions `d\\n` `A:d` (EOS | `\\n` `A:d` EOS).

  Row `p` is the distribution of the token at position p + 1 (prompts have 2
  tokens). First-step digits are 1 or 9 (even odds); answer digits 1 (p=.7) or
  9 (p=.3); half the solutions end after the second step, half after the third.
  """
  table = np.full((length, TOK.vocab_size), NEG, np.float32)

  def put(pos, probs):
    for c, p in probs.items():
      table[pos, TOK.eos_id if c == "EOS" else _id(c)] = np.log(p)

  put(1, {"1": .5, "9": .5})
  put(2, {"\n": 1.})
  put(3, {"A": 1.}), put(4, {":": 1.}), put(5, {"1": .7, "9": .3})
  put(6, {"EOS": .5, "\n": .5})
  put(7, {"A": 1.}), put(8, {":": 1.}), put(9, {"1": .7, "9": .3})
  for pos in range(10, length):
    put(pos, {"EOS": 1.})
  return table


def _script_apply(params, tokens, positions, cache):
  del tokens
  table = params["table"]
  return table[jnp.minimum(positions, table.shape[0] - 1)], cache


def _script_cache(batch, max_len):
  del max_len
  return jnp.zeros((batch,), jnp.float32)


def script_policy() -> base.Policy:
  sampler = Sampler(apply_fn=_script_apply, init_cache=_script_cache, eos_id=TOK.eos_id,
                    step_id=TOK.step_id, pad_id=TOK.pad_id, context_len=16)
  return base.Policy(sampler, {"table": jnp.asarray(_script_table())}, TOK)


class DigitVerifier(base.Verifier):
  """A step's logit is (its last digit - 5): a step ending on 9 scores .98, on 1 scores .02."""

  def __init__(self, aggregation="last"):
    super().__init__(None, None, aggregation)

  def prefill(self, tokens, lengths, max_len):
    b = tokens.shape[0]
    return reward.ScoreState(cache=jnp.zeros((b,)), positions=lengths.astype(jnp.int32),
                             logit=jnp.zeros((b,)), overflow=jnp.zeros((b,), bool),
                             max_len=max_len)

  def extend(self, score_state, new_tokens, new_lengths):
    zero, t = _id("0"), new_tokens.shape[1]
    valid = jnp.arange(t)[None] < new_lengths[:, None]
    is_digit = (new_tokens >= zero) & (new_tokens <= zero + 9) & valid
    last = t - 1 - jnp.argmax(is_digit[:, ::-1], axis=1)
    digit = jnp.take_along_axis(new_tokens, last[:, None], axis=1)[:, 0] - zero
    logit = jnp.where(is_digit.any(1), digit - 5.0, score_state.logit)
    return score_state.replace(positions=score_state.positions + new_lengths, logit=logit), logit


SCRIPT_PROMPTS = [TOK.encode("Q", bos=True), TOK.encode("A", bos=True)]
SCRIPT_CONFIG = base.SearchConfig(beam_width=4, max_step_tokens=8)


# ---- a tiny real model and PRM ----

@pytest.fixture(scope="module")
def tiny():
  cfg, _, lm_state, tok, sampler = testing.tiny_transformer(seed=0, max_len=32)
  prm_graphdef, prm_state = reward.create(cfg, seed=1)
  prompts = [tok.encode("Q:1+2", bos=True) + [tok.step_id],
             tok.encode("Q:34-5+6", bos=True) + [tok.step_id]]
  return (base.Policy(sampler, lm_state, tok), base.Verifier(prm_graphdef, prm_state),
          prompts)


# ---- registry ----

@base.register("test_greedy")
def _greedy(prompts, policy, verifier, budget, config, rng):
  """A custom strategy: one greedy solution per problem, unscored."""
  del verifier, rng
  max_len = base.validate(prompts, policy, base.Verifier(None, None), budget, config)
  _, out = policy.sampler.sample(policy.params, prompts, jax.random.key(0), max_len=max_len,
                                 temperature=0.0)
  lengths = np.asarray(out.lengths)
  texts = [[policy.tokenizer.decode(t[:l])] for t, l in zip(np.asarray(out.tokens), lengths)]
  answers = [[config.answer_fn(t[0])] for t in texts]
  return base.SearchResult(
      tokens=[t[None, :l] for t, l in zip(np.asarray(out.tokens), lengths)],
      lengths=[lengths[i:i + 1] for i in range(len(prompts))], texts=texts,
      answers=answers, step_scores=[np.zeros((1, 0))] * len(prompts),
      scores=[np.ones(1)] * len(prompts), selected=[a[0] for a in answers],
      samples=np.ones(len(prompts), np.int64), generated_tokens=lengths.astype(np.int64),
      verifier_tokens=np.zeros(len(prompts), np.int64))


def test_registry_finds_custom_and_builtin_strategies():
  assert {"beam", "best_of_n", "test_greedy"} <= set(base.registered())
  res = base.get("test_greedy")(SCRIPT_PROMPTS, script_policy(), DigitVerifier(), 1,
                                base.SearchConfig(), jax.random.key(0))
  assert res.texts == [["1\nA:1"], ["1\nA:1"]] and res.selected == [1, 1]


def test_unknown_strategy_lists_registered():
  with pytest.raises(ValueError, match=r"Unknown search strategy 'bean'.*'beam'.*'best_of_n'"):
    base.get("bean")


def test_register_twice_under_one_name_fails():
  with pytest.raises(ValueError, match="already registered"):
    base.register("beam")(lambda *a: None)


@pytest.mark.parametrize("budget, config, match", [
    (6, base.SearchConfig(beam_width=4), "not divisible by the beam width M=4"),
    (2, base.SearchConfig(beam_width=4), "smaller than the beam width M=4"),
    (8, base.SearchConfig(beam_width="sqrt"), "needs a square budget"),
    (0, base.SearchConfig(), "budget=0"),
    (4, base.SearchConfig(selection="best"), "selection='best'"),
    (4, base.SearchConfig(max_len=99), "exceeds the policy's context window"),
])
def test_bad_settings_fail_before_compute(budget, config, match):
  # params=None: any compute would fail with a different error.
  policy = base.Policy(script_policy().sampler, None, TOK)
  with count_compilations() as c, pytest.raises(ValueError, match=match):
    base.get("beam")(SCRIPT_PROMPTS, policy, DigitVerifier(), budget, config, jax.random.key(0))
  assert c.count == 0


# ---- best-of-N ----

def test_best_of_n_counts_and_pick(tiny):
  policy, verifier, prompts = tiny
  rng, n = jax.random.key(3), 4
  res = base.get("best_of_n")(prompts, policy, verifier, n, base.SearchConfig(), rng)
  # The same draw straight from the sampler: counts are exactly its lengths.
  _, out = policy.sampler.sample(policy.params, prompts, rng, num_samples=n, stop="eos")
  lengths = np.asarray(out.lengths).reshape(2, n)
  np.testing.assert_array_equal(res.samples, [n, n])
  np.testing.assert_array_equal(res.generated_tokens, lengths.sum(1))
  np.testing.assert_array_equal(res.verifier_tokens,
                                lengths.sum(1) + n * np.array([len(p) for p in prompts]))
  for q in range(2):
    assert len(res.texts[q]) == n and res.step_scores[q].shape[0] == n
    np.testing.assert_array_equal(res.lengths[q], lengths[q])
    np.testing.assert_array_equal(res.tokens[q][:, :lengths[q].max()],
                                  np.asarray(out.tokens).reshape(2, n, -1)[q, :, :lengths[q].max()])
    assert res.selected[q] == selection.weighted_best_of_n(res.answers[q], res.scores[q])


# ---- beam search ----

def _steps(res, q):
  return (~np.isnan(res.step_scores[q])).sum(1)


def test_beam_counts_every_generation_with_early_endings():
  n, m = 16, 4
  res = base.get("beam")(SCRIPT_PROMPTS, script_policy(), DigitVerifier(), n, SCRIPT_CONFIG,
                         jax.random.key(0))
  idle_seen = False
  for q in range(2):
    steps = _steps(res, q)
    ended_early = int((steps == 2).sum())  # round-2 children that hit EOS
    parents = (n - ended_early) // m       # round 3 expands what the budget leaves
    idle_seen |= (n - ended_early) % m != 0
    assert 0 < ended_early < n
    np.testing.assert_array_equal(np.sort(steps), [2] * ended_early + [3] * (parents * m))
    assert res.samples[q] == n + n + parents * m      # <= N generations every round
    assert res.generated_tokens[q] == 2 * n + 4 * n + 4 * parents * m
    assert res.verifier_tokens[q] == len(SCRIPT_PROMPTS[q]) + res.generated_tokens[q]
    assert len(res.texts[q]) <= n
  assert idle_seen, "pick a seed where some finished beams leave idle rows"


def test_beam_keeps_the_verifiers_favourite_beams():
  res = base.get("beam")(SCRIPT_PROMPTS, script_policy(), DigitVerifier(), 16, SCRIPT_CONFIG,
                         jax.random.key(0))
  majority = base.get("beam")(SCRIPT_PROMPTS, script_policy(), DigitVerifier(), 16,
                              dataclasses.replace(SCRIPT_CONFIG, selection="majority"),
                              jax.random.key(0))
  for q in range(2):
    # Round 1 keeps only first steps ending on 9, round 2 only answers 9 among the unfinished.
    assert all(t.startswith("9\nA:") for t in res.texts[q]), res.texts[q]
    assert all(t.startswith("9\nA:9\n") for t, k in zip(res.texts[q], _steps(res, q)) if k == 3)
    assert res.selected[q] == 9
    np.testing.assert_allclose(res.scores[q], [0.982 if a == 9 else 0.018
                                               for a in res.answers[q]], atol=1e-3)
    # Selection is applied to the same pool: only the pick changes.
    assert majority.texts[q] == res.texts[q]
    assert majority.selected[q] == selection.majority_vote(res.answers[q])
  assert majority.selected != res.selected  # here the verifier overrules the vote


def test_beam_on_tiny_model_scores_incrementally_and_compiles_once(tiny):
  policy, verifier, prompts = tiny
  n, cfg = 4, base.SearchConfig(beam_width=2, max_rounds=4, max_step_tokens=8)
  search = base.get("beam")
  first = search(prompts, policy, verifier, n, cfg, jax.random.key(1))
  with count_compilations() as c:
    res = search(prompts, policy, verifier, n, cfg, jax.random.key(2))
  assert c.count == 0
  for r in (first, res):
    assert (r.samples >= n).all() and (r.samples <= n * cfg.max_rounds).all()
    np.testing.assert_array_equal(r.verifier_tokens,
                                  r.generated_tokens + [len(p) for p in prompts])
  assert (first.samples > n).any(), "the warm-up should run more than one round"
  # The incremental score of each final beam's last step equals a full PRM pass.
  for q, prompt in enumerate(prompts):
    tokens = res.tokens[q]
    lengths = res.lengths[q]
    rows = np.concatenate([np.tile(prompt, (len(tokens), 1)), tokens], axis=1)
    ends = (len(prompt) + lengths - 1)[:, None].astype(np.int32)
    full = np.asarray(reward.step_scores(verifier.graphdef, verifier.state, rows, ends))[:, 0]
    last = res.step_scores[q][np.arange(len(tokens)), _steps(res, q) - 1]
    np.testing.assert_allclose(last, full, atol=1e-4)


def test_next_pool_keeps_finished_and_leaves_their_share_idle():
  from ttc_jax.search import beam  # pylint: disable=g-import-not-at-top
  alive = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
  finished = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
  scores = np.array([.1, .9, .8, .3, .2, .8, .5, .99], np.float32)
  src, new_alive, new_finished, expand = beam._next_pool(8, 2, alive, finished, scores)
  # 2 finished keep their rows; (8 - 2) // 2 = 3 parents (ties stable) x 2 children.
  np.testing.assert_array_equal(src[:8], [1, 4, 2, 2, 5, 5, 6, 6])
  np.testing.assert_array_equal(new_finished, [1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(expand, [0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(new_alive, [1] * 8)
  src, new_alive, _, expand = beam._next_pool(8, 4, alive, finished, scores)
  np.testing.assert_array_equal(src[:6], [1, 4, 2, 2, 2, 2])  # one parent; 2 rows idle
  np.testing.assert_array_equal(new_alive, [1] * 6 + [0] * 2)
  assert expand.sum() == 4


