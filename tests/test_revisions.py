"""Revisions (paper §6): chain format, pairing, budgets, bad input, resume, the three stages."""

import dataclasses
import json
import os

import editdistance
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import config_files
from ttc_jax import testing
from ttc_jax.io import shards
from ttc_jax.models import reward
from ttc_jax.pipeline import settings
from ttc_jax.pipeline import state
from ttc_jax.pipeline.stages import base_lm
from ttc_jax.pipeline.stages import data as data_stage
from ttc_jax.pipeline.stages import revisions as stages
from ttc_jax.revisions import measurements
from ttc_jax.revisions import sequential
from ttc_jax.revisions import trajectories as tj
from ttc_jax.sampling.sampler import Samples, Sampler
from ttc_jax.search import base as search_base
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tasks.base import Example
from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.tokenizers.char import CharTokenizer

TOK = CharTokenizer(chain_arithmetic.ALPHABET)
TASK = testing.chain_task()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEP = tj.ATTEMPT_SEPARATOR


# ---- the chain format ----

def test_context_drops_the_oldest_attempts():
  prev = [f"A:{i}" for i in range(7)]
  ids = tj.build_context(TOK, "Q:1+2\n", prev, context_len=200, max_new_tokens=10)
  assert TOK.decode(ids) == "".join(f"A:{i}{SEP}" for i in range(3, 7)) + "Q:1+2\n"
  assert ids[0] == TOK.bos_id and TOK.decode(ids[1:3]) == "A:"
  two = tj.build_context(TOK, "Q:1+2\n", prev, context_len=200, max_new_tokens=10,
                         max_previous=2)
  assert TOK.decode(two) == f"A:5{SEP}A:6{SEP}Q:1+2\n"
  none = tj.build_context(TOK, "Q:1+2\n", prev, context_len=200, max_new_tokens=10,
                          max_previous=0)
  assert TOK.decode(none) == "Q:1+2\n"


def test_context_longer_than_window_is_a_clear_error():
  prev = ["1+2=3\nA:3"] * 4
  n = len(tj.build_context(TOK, "Q:1+2\n", prev, context_len=999, max_new_tokens=0))
  tj.build_context(TOK, "Q:1+2\n", prev, context_len=n + 8, max_new_tokens=8)  # fits exactly
  with pytest.raises(ValueError, match=r"exceeds the revision model's window of 40 tokens"):
    tj.build_context(TOK, "Q:1+2\n", prev, context_len=40, max_new_tokens=8)


# ---- pairing ----

def test_pairing_picks_the_closest_incorrect_attempt():
  right = "12+30=42\n42-5=37\nA:37"
  texts = [right, "12+30=42\n42-5=38\nA:38", "12+30=43\n43-5=38\nA:38", "9\nA:1",
           "12+30=42\nA:42", right, "A:0"]
  correct = [t == right for t in texts]
  wrong = [t for t, ok in zip(texts, correct) if not ok]
  nearest = min(wrong, key=lambda w: editdistance.eval(right, w))
  assert nearest == "12+30=42\n42-5=38\nA:38"
  assert tj.closest(right, wrong) == wrong.index(nearest)
  counts = np.zeros(5, int)
  for seed in range(60):
    chains = tj.pair_attempts(texts, correct, np.random.default_rng(seed))
    assert len(chains) == 2  # one per correct sample
    for previous, final in chains:
      assert final == right
      counts[len(previous)] += 1
      assert all(p in wrong for p in previous)
      assert len(set(previous)) == len(previous)  # distinct samples
      if previous:
        assert previous[-1] == nearest
  assert (counts > 0).all()  # 0..4 previous attempts all occur
  # No incorrect sample: the chain has no previous attempt.
  assert tj.pair_attempts([right, right], [True, True], np.random.default_rng(0)) == [
      ([], right), ([], right)]
  capped = tj.pair_attempts(texts, correct, np.random.default_rng(0), max_chains=1)
  assert len(capped) == 1


# ---- budgets ----

def test_chain_plan_and_budgets_are_exact():
  lengths = sequential.chain_plan((16, 64), (1, 4, 16, 64))
  assert lengths == (64,) + (16,) * 3 + (4,) * 12 + (1,) * 48
  for n, s in sequential.sweep_ratios((16, 64), (1, 4, 16, 64)):
    groups = sequential.ratio_groups(lengths, n, s)
    assert groups and all(len(g) * s == n for g in groups)
    used = [c for g in groups for c in g]
    assert len(set(used)) == len(used) and all(lengths[c] >= s for c in used)
  assert len(sequential.ratio_groups(lengths, 16, 1)) == 4
  assert len(sequential.ratio_groups(lengths, 64, 64)) == 1


def test_bad_ratio_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"s=3 does not divide budget N=16.*\[1, 2, 4, 8, 16\]"):
    sequential.check_ratio(16, 3)
  with pytest.raises(ValueError, match=r"revisions.budgets=\(16, 64\).*s=48 does not divide"):
    settings.RevisionConfig(budgets=(16, 64), seq_lengths=(1, 48))
  with pytest.raises(ValueError, match="context_len=128 is shorter"):
    settings.RevisionConfig(context_len=128, max_attempt_tokens=64).check_window(TOK)
  # The same window check runs when the job is set up, before any compute.
  c = config_files.load("test")
  c.workdir = str(tmp_path)
  c.revisions.update(context_len=128, max_attempt_tokens=64)
  with pytest.raises(ValueError, match="context_len=128 is shorter"):
    state.Run.create(c)
  with pytest.raises(ValueError, match=r"Unknown key\(s\) \['bogus'\] in config.revisions"):
    c = config_files.load("test")
    c.revisions.bogus = 1
    settings.parse(c)


class _Recorder:
  """A fake sampler: records every context it is given, answers with a unique attempt."""

  buckets = Sampler.buckets
  pad_id = TOK.pad_id

  def __init__(self, context_len=400):
    self.context_len, self.contexts, self.calls = context_len, [], 0

  def bucket(self, n):
    return Sampler.bucket(self, n)

  def pad_prompts(self, prompts, max_len, batch_multiple=1):
    return Sampler.pad_prompts(self, prompts, max_len, batch_multiple)

  def prefill(self, params, tokens, lengths, max_len):
    return [TOK.decode(row[:n]) for row, n in zip(np.asarray(tokens), np.asarray(lengths))]

  def decode(self, params, state, rng, *, max_new_tokens, stop, temperature):
    self.calls += 1
    toks = np.zeros((len(state), max_new_tokens), np.int32)
    for r, context in enumerate(state):
      self.contexts.append(context)
      ids = TOK.encode(f"A:{len(self.contexts)}", eos=True)
      toks[r, :len(ids)] = ids
    lens = (toks != 0).sum(1)
    return None, Samples(tokens=toks, logprobs=toks * 0.0, lengths=lens, stopped=lens > 0)


def test_inference_contexts_drop_the_oldest_attempts():
  rec = _Recorder()
  chains = sequential.generate_chains(rec, None, TOK, ["Q:1+2\n"], (7,), jax.random.key(0),
                                      max_attempt_tokens=8)
  assert rec.contexts[0] == "Q:1+2\n"
  outs = chains.texts
  for t in range(7):
    kept = outs[max(0, t - 4):t]
    assert rec.contexts[t] == "".join(a + SEP for a in kept) + "Q:1+2\n"
  assert rec.calls == 7 and list(chains.step) == list(range(7))


def test_too_long_context_is_an_error_before_any_compute():
  rec = _Recorder(context_len=100)
  with pytest.raises(ValueError, match=r"longer than the model's window of 100"):
    sequential.generate_chains(rec, None, TOK, ["Q:1+2\n"], (16, 1), jax.random.key(0),
                               max_attempt_tokens=32)
  assert rec.calls == 0
  # A single attempt per chain needs no previous attempts, so it fits.
  sequential.generate_chains(rec, None, TOK, ["Q:1+2\n"], (1, 1), jax.random.key(0),
                             max_attempt_tokens=32)
  assert rec.calls == 1


def test_budgets_exact_with_the_jit_sampler_and_early_ends():
  # A stub LM: EOS with p=.3, else a digit; attempts end early, some run to the limit.
  (step_id,) = TOK.step_ids(TASK.step_delimiter)
  sampler = testing.stub_sampler(eos_id=TOK.eos_id, step_id=step_id, context_len=128)
  logits = np.full((TOK.vocab_size,), -1e9, np.float32)
  logits[TOK.eos_id] = np.log(0.3)
  logits[TOK.encode("7")[0]] = np.log(0.7)
  prompts = ["Q:1+2\n", "Q:3+4+5\n", "Q:6-1\n"]
  lengths = sequential.chain_plan((4, 8), (1, 2, 8))
  chains = sequential.generate_chains(sampler, {"logits": jnp.asarray(logits)}, TOK, prompts,
                                      lengths, jax.random.key(1), max_attempt_tokens=6,
                                      batch_rows=8)
  assert (chains.samples == sum(lengths)).all()
  assert len(chains.texts) == len(prompts) * sum(lengths)
  assert chains.lengths.min() == 1 and chains.lengths.max() == 6  # ended at once / at the limit
  for p in range(len(prompts)):
    assert chains.generated_tokens[p] == chains.lengths[chains.problem == p].sum()
  grid = lambda v: sequential.as_grid(chains, v, len(prompts), lengths)
  answers, scores = grid([None] * len(chains.texts)), grid([0.5] * len(chains.texts))
  n_grid = grid(chains.lengths.tolist())
  truth = [3, 12, 5]
  for n, s in sequential.sweep_ratios((4, 8), (1, 2, 8)):
    _, samples, toks = sequential.ratio_accuracy(answers, scores, lambda q, a: a == truth[q],
                                                 n_grid, lengths, n, s, "majority")
    assert (samples == n).all()
    groups = sequential.ratio_groups(lengths, n, s)
    want = [np.mean([sum(sum(n_grid[q][c][:s]) for c in g) for g in groups]) for q in range(3)]
    np.testing.assert_allclose(toks, want)


def test_selection_rules():
  # Chain 1's best attempt says 5 (.9), chain 2's best says 7 (.6), chain 3's says 7 (.5).
  answers = [[5, 7], [7, 7], [None, 7]]
  scores = [[0.9, 0.1], [0.6, 0.2], [0.99, 0.5]]
  assert sequential.select_hierarchical(answers, scores) == 7  # 7: .6 + .5 > 5: .9
  assert sequential.select_hierarchical(answers[:1] + [[7, 7]], [[.9, .1], [.3, .2]]) == 5
  assert sequential.select_majority([[5, 5], [7, 7], [None, 7]]) == 7
  ok = [[[True, False, True, True], [False, False, True]]]
  assert measurements.step_accuracy(ok) == [0.5, 0.0, 1.0, 1.0]
  flips = measurements.flip_rates(ok)
  assert flips["correct_to_incorrect"] == 0.5  # True->False, True->True
  assert flips["incorrect_to_correct"] == pytest.approx(2 / 3, abs=1e-4)  # F->T, F->F, F->T


def test_independent_baseline_repeats_and_step_gains_by_hand():
  # Problem 0: chains [T, T, F] and [F, T] (step-0 pass@1 1/2); problem 1: [T, T] (pass@1 1).
  ok = [[[True, True, False], [False, True]], [[True, True]]]
  flips = measurements.flip_rates(ok)
  assert flips["correct_to_incorrect"] == pytest.approx(1 / 3, abs=1e-4)
  assert flips["incorrect_to_correct"] == 1.0
  base = measurements.independent_flip_rates(ok)
  # After a correct attempt: p0 T->T and T->F (1 - 1/2 each), p1 T->T (1 - 1).
  assert base["correct_to_incorrect"] == pytest.approx(1 / 3, abs=1e-4)
  assert base["incorrect_to_correct"] == 0.5  # p0 F->T: p = 1/2
  assert measurements.independent_flip_rates([[[False, False]]])["correct_to_incorrect"] is None
  texts = [[["a", "a", "b"], ["x", "y"]], [["z", "z"]]]
  rep = measurements.repeat_rates(texts, ok)
  assert rep["after_correct"] == pytest.approx(2 / 3, abs=1e-4)  # a->a, a->b, z->z
  assert rep["after_incorrect"] == 0.0  # x->y
  gains = measurements.step_gains(ok, steps=(1, 2, 5), num_boot=500)
  # Step 1: problem 0 (T->T: 0, F->T: +1) = 0.5, problem 1 = 0; step 2: problem 0 only, -1.
  assert gains["1"]["mean"] == 0.25 and gains["1"]["problems"] == 2
  lo, hi = gains["1"]["ci95"]
  assert 0.0 <= lo <= 0.25 <= hi <= 0.5
  assert gains["2"] == {"mean": -1.0, "ci95": [-1.0, -1.0], "problems": 1}
  assert "5" not in gains  # no chain reaches step 5
  always_better = measurements.step_gains([[[False, True]]] * 10, steps=(1,))
  assert always_better["1"]["ci95"] == [1.0, 1.0]


# ---- training data: shards, pairing in context, resume ----

@dataclasses.dataclass(frozen=True)
class _ScriptSampler:
  """A fake base LM: sample j of a question is right if j % 3 == 0, else a wrong one."""

  context_len: int = 80
  eos_id: int = TOK.eos_id
  pad_id: int = TOK.pad_id
  check_tokenizer = Sampler.check_tokenizer

  def sample(self, params, prompts, rng, *, num_samples, max_len, max_new_tokens, stop,
             temperature, mesh):
    rows = []
    for p in prompts:
      prob = arithmetic.Problem.from_question(TOK.decode(p)[2:].strip())
      for j in range(num_samples):
        off = j % 3 + 10 * (j // 3)  # wrong answers at growing edit distances
        rows.append(prob.solution if j % 3 == 0 else
                    prob.solution.replace(f"A:{prob.answer}", f"A:{prob.answer + off}"))
    toks = np.zeros((len(rows), max_new_tokens), np.int32)
    for r, text in enumerate(rows):
      ids = TOK.encode(text, eos=True)[:max_new_tokens]
      toks[r, :len(ids)] = ids
    lens = (toks != 0).sum(1)
    return None, Samples(tokens=toks, logprobs=toks * 0.0, lengths=lens,
                         stopped=(toks == TOK.eos_id).any(1))


PROBLEMS = [Example(p.question, p.prompt, p.solution, p.answer, p.level)
            for p in arithmetic.generate([arithmetic.Difficulty(3, 1)], "train", 5, seed=0)]
DATA_KW = dict(samples_per_question=9, max_attempt_tokens=24, context_len=200, shard_size=2,
               seed=3, progress=False)


def test_trajectory_shards_and_resume(tmp_path):
  stats = tj.generate_trajectories(_ScriptSampler(), None, PROBLEMS, TASK, TOK, tmp_path,
                                   **DATA_KW)
  assert stats["num_chains"] == 5 * 3
  assert stats["fraction_correct"] == pytest.approx(1 / 3, abs=1e-4)
  assert stats["shards_written"] == 3 and tj.trajectories_complete(tmp_path)
  d = tj.load_trajectories(tmp_path)
  for r in range(len(d["length"])):
    prob = PROBLEMS[d["question_index"][r]]
    row = d["tokens"][r]
    target = TOK.decode(row[d["target_start"][r]:d["length"][r]])
    assert target == prob.solution and row[d["length"][r] - 1] == TOK.eos_id
    context = TOK.decode(row[:d["target_start"][r]])
    assert context.endswith(prob.prompt)
    previous = [a for a in context[:-len(prob.prompt)].split(SEP) if a]
    assert len(previous) == d["num_previous"][r]
    if previous:  # the last previous attempt is the wrong sample closest to the solution
      wrong = [prob.solution.replace(f"A:{prob.answer}", f"A:{prob.answer + off}")
               for off in (1, 2, 11, 12, 21, 22)]
      assert previous[-1] == min(wrong, key=lambda w: editdistance.eval(prob.solution, w))
      assert all(p in wrong for p in previous)
  arrays = tj.training_arrays(d)
  mask = arrays["loss_mask"]
  assert mask.sum() == (d["length"] - d["target_start"]).sum()
  assert (arrays["tokens"][mask > 0] != TOK.pad_id).all()

  # A killed run: one shard missing, a torn temporary file; the rerun rebuilds only that shard.
  before = open(shards.shard_path(tmp_path, 1), "rb").read()
  os.remove(shards.shard_path(tmp_path, 1))
  open(shards.shard_path(tmp_path, 1) + ".tmp", "wb").write(b"torn")
  assert not tj.trajectories_complete(tmp_path)
  with pytest.raises(ValueError, match=r"shards \[1\] of 3 are missing"):
    tj.load_trajectories(tmp_path)
  stats2 = tj.generate_trajectories(_ScriptSampler(), None, PROBLEMS, TASK, TOK, tmp_path,
                                    **DATA_KW)
  assert stats2["shards_written"] == 1 and stats2["shards_skipped"] == 2
  assert open(shards.shard_path(tmp_path, 1), "rb").read() == before
  assert not os.path.exists(shards.shard_path(tmp_path, 1) + ".tmp")
  with pytest.raises(ValueError, match="different revision training-data job"):
    tj.generate_trajectories(_ScriptSampler(), None, PROBLEMS, TASK, TOK, tmp_path,
                             **dict(DATA_KW, seed=4))


def test_trajectory_window_error_before_compute(tmp_path):
  with pytest.raises(ValueError, match=r"raise revisions.context_len to >= \d+"):
    tj.generate_trajectories(_ScriptSampler(), None, PROBLEMS, TASK, TOK, tmp_path,
                             **dict(DATA_KW, context_len=100))
  assert not os.path.exists(tmp_path / "manifest.json")


# ---- the three stages on a small job (configs/test.py) ----

def _run(workdir):
  c = config_files.load("test")
  c.workdir = str(workdir)
  # A base LM that solves some level-1 questions, so that revision data has chains.
  c.train.update(total_steps=200, checkpoint_every=100, log_every=100)
  c.mesh.data = 1  # one device: the fastest on a shared CPU
  return state.Run.create(c)


def _run_stages(r):
  """Data, base LM and the three revision stages; `(result, sweep)`, sweep() reruns the last."""
  data = data_stage.run(r)
  lm = base_lm.run(r, data)
  # The sweep only reads the ORM's (graphdef, state); an untrained head keeps the test fast.
  head = reward.from_lm(lm.params, lm.cfg)
  verifiers = state.Verifiers(prm=search_base.Verifier(*head), prm_num_params=lm.cfg.num_params,
                              orm=head)
  chains = stages.revision_data(r, data, lm)
  model = stages.train_revision_model(r, lm, chains)
  sweep = lambda: stages.revisions_sweep(r, data, model, verifiers, chains, {})
  return sweep(), sweep


def test_stages_end_to_end_and_resume(tmp_path):
  r = _run(tmp_path)
  cfg, train_cfg = r.settings.revisions, r.settings.revision_train
  result, sweep = _run_stages(r)
  summary = json.load(open(tmp_path / "summary.json"))
  # The summary holds the results; the timings stay in revisions.json.
  assert summary["revisions"] == json.loads(json.dumps(
      {k: v for k, v in result.items() if k != "seconds"}))
  assert "seconds" in result and "seconds" not in summary["revisions"]
  assert len(result["pass@1_by_step"]["all"]) == max(cfg.chain_lengths)
  assert set(result["sweep"]) == {"4", "8"} and set(result["sweep"]["8"]) == {"1", "2", "4", "8"}
  for n, by_s in result["counts"].items():
    for s, c in by_s.items():
      assert c["samples_per_problem"] == [int(n)]
  rows = [json.loads(l) for l in open(tmp_path / "revisions_sweep.jsonl")]
  assert len(rows) == 7 * 2 * 3  # (N, s) pairs x selections x (all + 2 levels)
  assert all(0 <= row["accuracy"] <= 1 for row in rows)
  assert os.path.isdir(tmp_path / "checkpoints" / "revision" / str(train_cfg.total_steps))

  # A killed sweep: one chain shard and the results lost; the rerun redoes just that shard.
  n_metric_rows = len(open(tmp_path / "metrics.jsonl").readlines())
  os.remove(tmp_path / "revisions.json")
  os.remove(shards.shard_path(tmp_path / "revisions", 1))
  again = sweep()
  for k in ("pass@1_by_step", "sweep", "counts", "correct_to_incorrect"):
    assert again[k] == result[k]
  assert len([json.loads(l) for l in open(tmp_path / "revisions_sweep.jsonl")]) == len(rows)
  for k in ("pass@1_gain_vs_step0", "independent_baseline", "repeats_previous"):
    assert again[k] == result[k]

  # A revisions.json from before the per-step gains is summarized again from its chain
  # shards, none regenerated, keeping the stage times it recorded.
  old = {k: v for k, v in again.items() if k != "pass@1_gain_vs_step0"}
  old["seconds"] = {"revisions_sweep": 123.0}
  json.dump(old, open(tmp_path / "revisions.json", "w"))
  mtimes = {f: os.path.getmtime(tmp_path / "revisions" / f)
            for f in os.listdir(tmp_path / "revisions")}
  resummarized = sweep()
  assert resummarized["pass@1_gain_vs_step0"] == result["pass@1_gain_vs_step0"]
  assert resummarized["seconds"] == {"revisions_sweep": 123.0}
  assert {f: os.path.getmtime(tmp_path / "revisions" / f) for f in mtimes} == mtimes

  # A rerun of every stage on a fresh Run trains nothing and samples nothing.
  r2 = _run(tmp_path)
  n_metric_rows = len(open(tmp_path / "metrics.jsonl").readlines())
  assert _run_stages(r2)[0]["sweep"] == result["sweep"]
  assert len(open(tmp_path / "metrics.jsonl").readlines()) == n_metric_rows


def test_orm_scores_match_one_row_at_a_time():
  cfg, *_ = testing.tiny_transformer()
  graphdef, state = reward.create(cfg, seed=1)
  prompts = ["Q:1+2\n", "Q:13-4+5\n"]
  texts = ["1+2=3\nA:3", "A:9", "13-4=9\n9+5=14\nA:14", "13-4=9\n9+"]
  problem = np.array([0, 0, 1, 1])
  enc = [TOK.encode(t, eos=not t.endswith("+")) for t in texts]  # the last one is truncated
  tokens = np.zeros((4, 24), np.int32)
  for r, e in enumerate(enc):
    tokens[r, :len(e)] = e
  lengths = np.array([len(e) for e in enc])
  got = sequential.orm_scores(graphdef, state, TOK, prompts, problem, tokens, lengths,
                              batch_rows=2)
  for r in range(4):
    row = TOK.encode(prompts[problem[r]], bos=True) + enc[r]
    want = reward.step_scores(graphdef, state, jnp.asarray([row]), jnp.asarray([[len(row) - 1]]))
    np.testing.assert_allclose(got[r], np.asarray(want)[0, 0], rtol=1e-5, atol=1e-6)


def _chains_of_lengths(lengths, width=320):
  tokens = np.zeros((len(lengths), width), np.int32)
  mask = np.zeros((len(lengths), width), np.float32)
  for r, n in enumerate(lengths):
    tokens[r, :n] = 5
    mask[r, n - 5:n] = 1
  return {"tokens": tokens, "loss_mask": mask, "row": np.arange(len(lengths))}


def test_bucketed_batches_are_pure_and_cover_each_length_class():
  rng = np.random.default_rng(0)
  bounds = [(10, 64), (65, 128), (129, 192), (193, 300)]
  lengths = np.concatenate([rng.integers(lo, hi + 1, 20) for lo, hi in bounds])
  arrays = _chains_of_lengths(lengths)
  fn = tj.bucketed_batches(arrays, 8, seed=1, pad_id=TOK.pad_id, widths=(64, 128, 192))
  per_epoch = 4 * (20 // 8)
  seen, widths = [], set()
  for step in range(per_epoch):
    b = fn(step)
    assert len(b["row"]) == 8
    width = b["tokens"].shape[1]
    lo = {64: 10, 128: 65, 192: 129, 320: 193}[width]  # one length class per batch
    assert (lengths[b["row"]] >= lo).all() and (lengths[b["row"]] <= width).all()
    assert (b["loss_mask"].sum(1) == 5).all()  # no target cut off
    seen += b["row"].tolist()
    widths.add(width)
  assert widths == {64, 128, 192, 320}
  assert len(set(seen)) == len(seen) == per_epoch * 8  # an epoch repeats no chain
  np.testing.assert_array_equal(fn(3)["row"],
                                tj.bucketed_batches(arrays, 8, seed=1, pad_id=TOK.pad_id)(3)["row"])
  # Fewer chains than a batch: one class at full width, chains repeated.
  small = tj.bucketed_batches({k: v[:5] for k, v in arrays.items()}, 8, seed=1,
                               pad_id=TOK.pad_id)(0)
  assert small["tokens"].shape == (8, 320) and set(small["row"]) == set(range(5))
  # A class smaller than a batch joins the next wider one; a short widest tail widens
  # the class before it to the full width, so no chain is ever cut.
  mixed = _chains_of_lengths(np.array([30] * 8 + [100] * 3 + [150] * 6 + [250] * 2))
  fn = tj.bucketed_batches(mixed, 8, seed=0, pad_id=TOK.pad_id, widths=(64, 128, 192))
  got = {}
  for step in range(2):
    b = fn(step)
    got[b["tokens"].shape[1]] = set((b["tokens"] > 0).sum(1).tolist())
  assert got.keys() == {64, 320} and got[64] == {30} and got[320] <= {100, 150, 250}


def test_summary_of_a_tiny_sweep_with_a_huge_answer():
  cfg = settings.RevisionConfig(budgets=(2,), seq_lengths=(1, 2), context_len=384)
  assert cfg.chain_lengths == (2, 1)
  p = arithmetic.Problem.from_question("1+2", level=1)
  examples = [Example(p.question, p.prompt, p.solution, p.answer, p.level)]
  # Chain 0: wrong (a 23-digit answer) then right; chain 1: right. Answers are read back
  # from the attempts' tokens.
  texts = ["A:12345678901234567890123", "A:3", "A:3"]
  enc = [TOK.encode(t, eos=True) for t in texts]
  tokens = np.zeros((3, max(map(len, enc))), np.int32)
  for i, e in enumerate(enc):
    tokens[i, :len(e)] = e
  arrays = {"problem": np.zeros(3, np.int32), "chain": np.array([0, 0, 1], np.int32),
            "step": np.array([0, 1, 0], np.int32), "tokens": tokens,
            "lengths": np.array([len(e) for e in enc], np.int32),
            "orm": np.array([.9, .8, .1], np.float32)}
  grids = sequential.attempt_grids(arrays, cfg.chain_lengths, examples, TASK, TOK)
  assert grids.answers == [[[12345678901234567890123, 3], [3]]]  # no int64 overflow
  r = stages.summarize(grids, examples, TASK, cfg.chain_lengths, cfg.budgets, cfg.seq_lengths)
  assert r["pass@1_by_step"]["all"] == [0.5, 1.0]
  assert r["incorrect_to_correct"] == 1.0 and r["correct_to_incorrect"] is None
  # Step-0 pass@1 1/2 (chain 0 wrong, chain 1 right): a sampler ignoring the context fixes
  # chain 0's wrong attempt half the time; this chain fixed it (+1 at step 1).
  assert r["independent_baseline"] == {"correct_to_incorrect": None, "incorrect_to_correct": 0.5}
  assert r["pass@1_gain_vs_step0"]["all"]["1"]["mean"] == 1.0
  assert r["pass@1_gain_vs_step0"]["1"]["1"]["mean"] == 1.0
  assert r["repeats_previous"] == {"after_correct": None, "after_incorrect": 0.0}
  assert r["flips_by_level"]["1"]["independent"]["incorrect_to_correct"] == 0.5
  assert "step 1 - step 0: +1.0000" in stages.format_result(r)
  from ttc_jax.pipeline.stages import report  # the report's per-step section
  section = report._revision_steps_section(r)  # pylint: disable=protected-access
  assert section["table"] == [
      {"step": 0, "pass@1": 0.5, "gain vs step 0 (95% CI)": ""},
      {"step": 1, "pass@1": 1.0, "gain vs step 0 (95% CI)": "+1.000 (+1.000 .. +1.000)"}]
  assert "previous attempts would give None and 0.5" in section["text"]
  # (N=2, s=1): chains 0 and 1 first attempts; the ORM picks the huge wrong answer.
  assert r["sweep"]["2"]["1"]["orm_hierarchical"]["all"] == 0.0
  assert r["sweep"]["2"]["2"]["orm_hierarchical"]["all"] == 0.0  # chain 0: .9 beats .8
  assert r["sweep"]["2"]["2"]["majority"]["all"] == 0.0  # a tie goes to the first seen
  # (N=2, s=2): chain 0's two attempts, 26 + 4 tokens (EOS included).
  assert r["counts"]["2"]["2"] == {"samples_per_problem": [2], "mean_generated_tokens": 30.0,
                                   "groups": 1}
  assert len(stages.sweep_rows(r)) == 2 * 2 * 2  # (N, s) x selections x (all + level 1)
