"""Search API: registry, validation before compute, best-of-N and beam search counts and picks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import config_files
from ttc_jax import testing
from ttc_jax.compilation import count_compilations
from ttc_jax.models import reward
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import base, beam, selection
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tokenizers.char import CharTokenizer

TOK = CharTokenizer(chain_arithmetic.ALPHABET)
TASK = testing.chain_task()
STEP = list(TOK.step_ids(TASK.step_delimiter))  # the newline's one id
NEG = -30.0


# ---- a scripted policy and a verifier with known scores ----

def _id(c: str) -> int:
  return TOK.encode(c)[0]


def _script_table(length: int = 16, first_nine: float = .5) -> np.ndarray:
  """Next-token log-probs by position: solutions `d\\n` `A:d` (EOS | `\\n` `A:d` EOS).

  Row `p` is the distribution of the token at position p + 1 (prompts have 2
  tokens). First-step digits are 9 (p=`first_nine`) or 1; answer digits 1 (p=.7) or
  9 (p=.3); half the solutions end after the second step, half after the third.
  """
  table = np.full((length, TOK.vocab_size), NEG, np.float32)

  def put(pos, probs):
    for c, p in probs.items():
      table[pos, TOK.eos_id if c == "EOS" else _id(c)] = np.log(p)

  put(1, {"1": 1. - first_nine, "9": first_nine})
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


def script_policy(first_nine: float = .5) -> base.Policy:
  sampler = Sampler(apply_fn=_script_apply, init_cache=_script_cache, eos_id=TOK.eos_id,
                    step_ids=TOK.step_ids(TASK.step_delimiter), pad_id=TOK.pad_id, context_len=16)
  return base.Policy(sampler, {"table": jnp.asarray(_script_table(first_nine=first_nine))}, TOK,
                     TASK)


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
  prompts = [tok.encode("Q:1+2", bos=True) + STEP, tok.encode("Q:34-5+6", bos=True) + STEP]
  return (base.Policy(sampler, lm_state, tok, TASK), base.Verifier(prm_graphdef, prm_state),
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
  answers = [[policy.task.extract_answer(t[0])] for t in texts]
  return base.SearchResult(
      tokens=[t[None, :l] for t, l in zip(np.asarray(out.tokens), lengths)],
      lengths=[lengths[i:i + 1] for i in range(len(prompts))], texts=texts,
      answers=answers, step_scores=[np.zeros((1, 0))] * len(prompts),
      scores=[np.ones(1)] * len(prompts), selected=[a[0] for a in answers],
      samples=np.ones(len(prompts), np.int64), generated_tokens=lengths.astype(np.int64),
      verifier_tokens=np.zeros(len(prompts), np.int64),
      budget_used=np.ones(len(prompts), np.int64))


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
  policy = base.Policy(script_policy().sampler, None, TOK, TASK)
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


def test_beam_pool_keeps_finished_and_leaves_their_share_idle():
  alive = jnp.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
  finished = jnp.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
  scores = jnp.array([.1, .9, .8, .3, .2, .8, .5, .99], jnp.float32)
  src, new_alive, new_finished, expand = map(np.asarray, beam.beam_pool(2, alive, finished,
                                                                         scores))
  # 2 finished keep their rows; (8 - 2) // 2 = 3 parents (ties stable) x 2 children.
  np.testing.assert_array_equal(src, [1, 4, 2, 2, 5, 5, 6, 6])
  np.testing.assert_array_equal(new_finished, [1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(expand, [0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(new_alive, [1] * 8)
  src, new_alive, _, expand = map(np.asarray, beam.beam_pool(4, alive, finished, scores))
  np.testing.assert_array_equal(src[:6], [1, 4, 2, 2, 2, 2])  # one parent; 2 rows idle
  np.testing.assert_array_equal(new_alive, [1] * 6 + [0] * 2)
  assert expand.sum() == 4
  # Fewer than M rows left: nothing grows and the pool stays as it is.
  src, new_alive, new_finished, expand = map(np.asarray, beam.beam_pool(
      4, alive, jnp.array([1, 1, 1, 1, 1, 0, 0, 0], bool), scores))
  np.testing.assert_array_equal(src, np.arange(8))
  np.testing.assert_array_equal(new_alive, np.asarray(alive))
  assert not expand.any()


# ---- lookahead and DVTS ----

def test_lookahead_scores_each_step_at_the_end_of_a_greedy_rollout():
  k, budget, n, m = 1, 32, 16, 4
  cfg = dataclasses.replace(SCRIPT_CONFIG, lookahead=k)
  res = base.get("lookahead")(SCRIPT_PROMPTS, script_policy(), DigitVerifier(), budget, cfg,
                              jax.random.key(0))
  for q in range(2):
    steps = _steps(res, q)
    # Greedy rollouts answer 1 (p=.7), so every first step scores sigmoid(1 - 5), whatever
    # its own digit: unlike beam search, lookahead keeps first steps ending on 1 too.
    np.testing.assert_allclose(res.step_scores[q][:, 0], 0.018, atol=1e-3)
    ended = int((steps == 2).sum())              # round-2 children that hit EOS
    active = n - ended                           # each rolls out one more step
    parents = min(active // m, active)
    assert res.samples[q] == (n + n) + (n + active) + parents * m
    assert res.generated_tokens[q] == (2 * n + 4 * n) + (4 * n + 4 * active) + 4 * parents * m
    assert res.budget_used[q] == budget == n * (k + 1)
    assert res.verifier_tokens[q] == len(SCRIPT_PROMPTS[q]) + res.generated_tokens[q]
    # Steps that ended the solution are scored as they are: their own last digit.
    last = res.step_scores[q][np.arange(len(steps)), steps - 1]
    np.testing.assert_allclose(last, [0.982 if a == 9 else 0.018 for a in res.answers[q]],
                               atol=1e-3)


def test_dvts_keeps_the_best_of_each_subtree():
  n, m = 16, 4
  # First steps are 9 with p=.9, so a subtree of 4 draws no 9 with p=1e-4 (at even odds,
  # 1/16: the test would hold for some keys only).
  res = base.get("dvts")(SCRIPT_PROMPTS, script_policy(first_nine=.9), DigitVerifier(), n,
                         SCRIPT_CONFIG, jax.random.key(0))
  for q in range(2):
    steps = _steps(res, q)
    assert len(res.texts[q]) == n // m  # one final candidate per subtree
    open_after_two = int((steps == 3).sum())
    assert res.samples[q] == n + n + m * open_after_two
    assert res.budget_used[q] == n
    # Each subtree keeps its best first step (a 9 beats a 1); a subtree closes on an
    # answer 9 (its best) or, when all its children answered 1, grows a third step.
    assert all(t.startswith("9\nA:") for t in res.texts[q]), res.texts[q]
    assert all(t.endswith("A:9") or k == 3 for t, k in zip(res.texts[q], steps)), res.texts[q]
    assert res.selected[q] == 9


def test_dvts_pool_closes_subtrees_whose_best_beam_ended():
  from ttc_jax.search import dvts  # pylint: disable=g-import-not-at-top
  alive = jnp.ones((8,), bool)
  finished = jnp.array([0, 1, 0, 0, 0, 0, 1, 0], bool)
  scores = jnp.array([.1, .9, .5, .2, .3, .4, .1, .4], jnp.float32)
  src, new_alive, new_finished, expand = map(np.asarray, dvts.subtree_pool(4, alive, finished,
                                                                           scores))
  # Subtree 0's best (row 1) ended: it closes. Subtree 1's best (row 5, first on ties) grows.
  np.testing.assert_array_equal(src, [1, 1, 1, 1, 5, 5, 5, 5])
  np.testing.assert_array_equal(new_alive, [1, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(new_finished, [1, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(expand, [0, 0, 0, 0, 1, 1, 1, 1])
  # A closed subtree stays closed and keeps its beam.
  again = dvts.subtree_pool(4, jnp.asarray(new_alive), jnp.asarray(new_finished), scores)
  np.testing.assert_array_equal(np.asarray(again[0])[:4], [0, 0, 0, 0])
  assert not np.asarray(again[3])[:4].any()


@pytest.mark.parametrize("budget, k, match", [
    (16, 2, "multiple of k\\+1=3"),
    (4, 1, "N = B/\\(k\\+1\\) = 2 beams.*smaller than the beam width M=4"),
    (8, -1, "lookahead=-1"),
])
def test_lookahead_bad_budget_fails_before_compute(budget, k, match):
  policy = base.Policy(script_policy().sampler, None, TOK, TASK)
  cfg = dataclasses.replace(SCRIPT_CONFIG, lookahead=k)
  with count_compilations() as c, pytest.raises(ValueError, match=match):
    base.get("lookahead")(SCRIPT_PROMPTS, policy, DigitVerifier(), budget, cfg,
                          jax.random.key(0))
  with pytest.raises(ValueError, match=match):
    base.check_budget("lookahead", budget, cfg)
  assert c.count == 0


def test_check_budget_matches_what_each_strategy_accepts():
  cfg = base.SearchConfig(beam_width=4, lookahead=1)
  for name in ("beam", "dvts"):
    base.check_budget(name, 16, cfg)
    with pytest.raises(ValueError, match="not divisible"):
      base.check_budget(name, 18, cfg)
  base.check_budget("lookahead", 16, cfg)   # N = 8 beams of width 4
  base.check_budget("best_of_n", 3, cfg)    # any N >= 1
  with pytest.raises(ValueError, match="Unknown search strategy"):
    base.check_budget("beams", 16, cfg)


# ---- every strategy, on a real (tiny) model ----

STRATEGIES = [("best_of_n", {}), ("beam", {}), ("beam", {"beam_width": "sqrt"}),
              ("lookahead", {"lookahead": 1}), ("lookahead", {"lookahead": 3}), ("dvts", {})]


@pytest.mark.parametrize("name, overrides", STRATEGIES)
@pytest.mark.parametrize("budget", [4, 16])
def test_budgets_are_never_exceeded(tiny, name, overrides, budget):
  policy, verifier, prompts = tiny
  cfg = base.SearchConfig(**{"beam_width": 2, "max_rounds": 6, "max_step_tokens": 6, **overrides})
  try:
    base.check_budget(name, budget, cfg)
  except ValueError:
    pytest.skip(f"{name} cannot run at budget {budget}")
  res = base.get(name)(prompts, policy, verifier, budget, cfg, jax.random.key(budget))
  gen_room = np.array([policy.sampler.context_len - len(p) for p in prompts])
  assert (res.budget_used <= budget).all() and (res.budget_used >= 1).all()
  assert (res.samples <= budget * cfg.max_rounds).all()
  assert (res.generated_tokens <= res.samples * np.maximum(cfg.max_step_tokens, 0) +
          (name == "best_of_n") * budget * gen_room).all()
  for q in range(len(prompts)):
    assert 1 <= len(res.texts[q]) <= budget
    assert (res.lengths[q] <= gen_room[q]).all()
    assert res.selected[q] == base.select(res.answers[q], res.scores[q], cfg.selection)
  if name == "best_of_n":
    np.testing.assert_array_equal(res.budget_used, budget)


# Meshes: problems over 8 devices; or 2 x 4, parameters over model too (beam in the default
# run, every strategy with -m slow).
MESH_CASES = [pytest.param(name, overrides, data, model, marks=[pytest.mark.slow] * (
    model > 1 and (name, overrides) != ("beam", {})))
              for name, overrides in STRATEGIES for data, model in ((8, 1), (2, 4))]


@pytest.mark.parametrize("name, overrides, data, model", MESH_CASES)
def test_same_results_on_one_and_eight_devices(name, overrides, data, model):
  from ttc_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  cfg, _, lm_state, tok, sampler = testing.tiny_transformer(seed=3, max_len=32)
  prm_graphdef, prm_state = reward.create(cfg, seed=4)
  prompts = [tok.encode(f"Q:{a}+{b}", bos=True) + STEP
             for a, b in [(1, 2), (34, 5), (7, 8), (9, 10), (2, 2), (5, 61), (3, 3), (4, 8)]]
  # Compaction on: it takes rows within each device's share, the path a mesh can break.
  scfg = base.SearchConfig(**{"beam_width": 2, "max_rounds": 5, "max_step_tokens": 8,
                              "compact_rows": True, **overrides})
  budget = 4 if scfg.beam_width == "sqrt" else 8
  one = jax.devices()[0]
  ref = base.get(name)(prompts, base.Policy(sampler, jax.device_put(lm_state, one), tok, TASK),
                       base.Verifier(prm_graphdef, jax.device_put(prm_state, one)), budget,
                       scfg, jax.random.key(7))
  mesh = mesh_lib.make_mesh(data=data, model=model)
  sharded = base.get(name)(
      prompts, base.Policy(sampler, mesh_lib.shard_params(lm_state, mesh), tok, TASK),
      base.Verifier(prm_graphdef, mesh_lib.shard_params(prm_state, mesh)), budget,
      dataclasses.replace(scfg, mesh=mesh), jax.random.key(7))
  assert sharded.texts == ref.texts and sharded.selected == ref.selected
  for field in ("samples", "generated_tokens", "verifier_tokens", "budget_used"):
    np.testing.assert_array_equal(getattr(sharded, field), getattr(ref, field))
  for a, b in zip(sharded.scores, ref.scores):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_sharded_rows_keep_each_problem_on_one_device():
  from ttc_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(data=4, model=2)
  x = mesh_lib.shard_batch(jnp.arange(4 * 8 * 3).reshape(32, 3), mesh)
  src = jnp.tile(jnp.array([7, 7, 0, 1, 2, 3, 4, 5]), (4, 1))
  out = jax.jit(beam.take_rows)(x, src)
  assert out.sharding.spec[0] == "data"  # stays sharded by problem
  expect = np.asarray(x).reshape(4, 8, 3)[:, [7, 7, 0, 1, 2, 3, 4, 5]].reshape(32, 3)
  np.testing.assert_array_equal(np.asarray(out), expect)
  # Compaction takes 2 rows of each device's 8 and puts them back: sharded throughout.
  idx, valid = jnp.tile(jnp.array([1, 6]), (4, 1)), jnp.ones((4, 2), bool)
  part = jax.jit(beam.take_rows)(x, idx)
  back = jax.jit(beam.put_rows)(x, part + 1, idx, valid)
  assert part.sharding.spec[0] == back.sharding.spec[0] == "data"
  expect = np.asarray(x).reshape(4, 8, 3).copy()
  expect[:, [1, 6]] += 1
  np.testing.assert_array_equal(np.asarray(back), expect.reshape(32, 3))
  # Three problems on a 4-way data axis: padded with copies of the last prompt.
  assert base.pad_problems([[1], [2], [3]], mesh) == [[1], [2], [3], [3]]


@pytest.mark.parametrize("name, overrides", STRATEGIES)
@pytest.mark.parametrize("compact", [False, True])
def test_warm_search_compiles_nothing(tiny, name, overrides, compact):
  policy, verifier, prompts = tiny
  cfg = base.SearchConfig(**{"beam_width": 2, "max_rounds": 4, "max_step_tokens": 8,
                             "compact_rows": compact, **overrides})
  search, budget = base.get(name), 4 if cfg.beam_width == "sqrt" else 8
  search(prompts, policy, verifier, budget, cfg, jax.random.key(1))
  # Without compaction every round has one shape, so any key runs warm; with it, a round's
  # size depends on the draws, and a run that meets only sizes seen before runs warm.
  with count_compilations() as c:
    search(prompts, policy, verifier, budget, cfg, jax.random.key(1 if compact else 2))
  assert c.count == 0


def test_compaction_takes_expanding_rows_within_groups_and_puts_back_only_those():
  # Two groups (devices) of 4 rows; group 0 expands rows 0 and 2, group 1 row 5.
  expand = jnp.array([1, 0, 1, 0, 0, 1, 0, 0], bool)
  assert beam.most_expanding(expand, groups=2) == 2
  assert beam.compact_size(beam.most_expanding(expand, groups=2), 4) == 2
  assert beam.compact_size(beam.most_expanding(jnp.ones((64,), bool).at[0].set(False), 1),
                           64) == 64
  assert beam.compact_size(beam.most_expanding(jnp.zeros((64,), bool).at[:9].set(True), 1),
                           64) == 16  # 8 | size
  assert beam.most_expanding(jnp.zeros((8,), bool), groups=2) == 0
  idx, valid = beam.active_rows(expand, groups=2, size=3)
  np.testing.assert_array_equal(idx, [[0, 2, 0], [1, 0, 0]])  # in-group indices, then filler
  np.testing.assert_array_equal(valid, [[1, 1, 0], [1, 0, 0]])
  x = jnp.arange(8) * 10
  part = beam.take_rows(x, idx)
  np.testing.assert_array_equal(part, [0, 20, 0, 50, 40, 40])
  # Filler copies row 0 of its group; put back, it must not undo row 0's new value.
  out = beam.put_rows(x, part + jnp.where(valid.reshape(-1), 1, 0), idx, valid)
  np.testing.assert_array_equal(out, [1, 10, 21, 30, 40, 51, 60, 70])


class SlotCountingVerifier(DigitVerifier):
  """DigitVerifier that records the rows of each `extend` call."""

  def __init__(self):
    super().__init__()
    self.rows = []

  def extend(self, score_state, new_tokens, new_lengths):
    self.rows.append(new_tokens.shape[0])
    return super().extend(score_state, new_tokens, new_lengths)


@pytest.mark.parametrize("name, overrides", [("beam", {}), ("lookahead", {"lookahead": 1}),
                                             ("dvts", {})])
def test_compacted_rounds_find_and_count_the_same_as_full_ones(name, overrides):
  # Half the scripted solutions end after two steps: later rounds have idle rows.
  n = 16
  runs = {}
  for compact in (False, True):
    verifier = SlotCountingVerifier()
    cfg = dataclasses.replace(SCRIPT_CONFIG, compact_rows=compact, **overrides)
    runs[compact] = (base.get(name)(SCRIPT_PROMPTS, script_policy(), verifier, n, cfg,
                                    jax.random.key(3)), verifier.rows)
  (full, full_rows), (compacted, compacted_rows) = runs[False], runs[True]
  assert len(set(full_rows)) == 1  # every round on every row
  assert min(compacted_rows) < full_rows[0]  # some rounds on fewer
  # Each row draws from its own key, so the rows it runs on change nothing.
  assert compacted.texts == full.texts and compacted.selected == full.selected
  for field in ("samples", "generated_tokens", "verifier_tokens", "budget_used"):
    np.testing.assert_array_equal(getattr(compacted, field), getattr(full, field))
  for a, b in zip(compacted.step_scores, full.step_scores):
    np.testing.assert_array_equal(a, b)


def test_custom_strategy_runs_through_the_sweep_code(tmp_path, tiny):
  # pylint: disable=g-import-not-at-top
  from ttc_jax.io import sweep
  from ttc_jax.pipeline import settings, state
  from ttc_jax.pipeline.stages import search as search_stage
  from ttc_jax.search import specs
  from ttc_jax.tasks.base import Example
  from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
  # pylint: enable=g-import-not-at-top
  policy, verifier, _ = tiny
  examples = [Example(p.question, p.prompt, p.solution, p.answer, p.level)
              for p in (arithmetic.Problem.from_question(q, lv)
                        for q, lv in [("1+2", 1), ("3+4", 1), ("34-5+6", 2)])]
  cfg = settings.SearchSweepConfig(num_questions=3, budgets=(1, 2, 3),
                                   strategies=("test_greedy", "beam/beam_width=2"),
                                   rows_per_batch=4, max_step_tokens=8)
  c = config_files.load("test")
  c.workdir, c.mesh.data = str(tmp_path), 1
  r = state.Run.create(c)
  r = dataclasses.replace(r, settings=dataclasses.replace(r.settings, search=cfg))
  cells = specs.cells(cfg.strategies, cfg.budgets, cfg.search_config())
  # The custom strategy has no budget check, so it runs at every budget; beam needs 2 | N.
  assert [(c["strategy"], c["budget"]) for c in cells] == [
      ("test_greedy", 1), ("test_greedy", 2), ("test_greedy", 3), ("beam/beam_width=2", 2)]
  rows = sweep.run_grid(tmp_path / "search.jsonl", cells, lambda c: search_stage.run_cell(
      r, c, examples, policy, verifier))
  direct = base.get("test_greedy")([TOK.encode(e.prompt, bos=True) for e in examples], policy,
                                   verifier, 1, cfg.search_config(), jax.random.key(0))
  want = [int(s == e.answer) for s, e in zip(direct.selected, examples)]
  for row in rows[:3]:
    assert row["correct"] == want and row["samples"] == [1, 1, 1]
  table = search_stage.summarize(rows, baseline="test_greedy")
  assert set(table) == {"test_greedy", "beam/beam_width=2"}
  assert table["test_greedy"]["2"]["all"] == round(sum(want) / 3, 4)
  assert "test_greedy" in search_stage.format_table(table)
