"""PRM soft labels (paper §5.1): shard format, label semantics, resume, validation, AUROC."""

import dataclasses
import itertools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax import stats as stats_lib
from ttc_jax import testing
from ttc_jax.compilation import count_compilations
from ttc_jax.io import shards
from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.tasks.base import Example
from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.tokenizers.char import CharTokenizer
from ttc_jax.training import prm_labels as pl

TOK = CharTokenizer(arithmetic.ALPHABET)
TASK = testing.chain_task()
(STEP_ID,) = TOK.step_ids(arithmetic.STEP_DELIMITER)


# ---- a controllable fake LM: samples uniformly among the continuations of fixed texts ----

def _trie_apply(params, tokens, positions, cache):
  """Next-token logits: uniform over what the reference texts matching the history write next.

  The "KV cache" is the token history [B, max_len]. A history matching no
  reference ends with EOS (an incorrect, answerless solution).
  """
  refs = params["refs"]  # [R, max_len] token ids, PAD after EOS
  hit = positions[:, :, None] == jnp.arange(cache.shape[1])  # [B, T, M]; no scatter, so
  cache = jnp.where(hit.any(1), (hit * tokens[:, :, None]).sum(1), cache)  # mesh-friendly
  prefix_ok = jnp.cumprod(cache[:, None, :] == refs[None], axis=-1)  # [B, R, M]
  pos = jnp.minimum(positions, refs.shape[1] - 1)  # [B, T]
  match = jnp.take_along_axis(prefix_ok[:, None], pos[:, :, None, None], axis=-1)[..., 0]
  nxt = jnp.concatenate([refs[:, 1:], refs[:, -1:]], axis=1)  # [R, M]
  nxt_tok = nxt[jnp.arange(refs.shape[0])[None, None], pos[:, :, None]]  # [B, T, R]
  allowed = (jax.nn.one_hot(nxt_tok, TOK.vocab_size) * match[..., None]).max(axis=2)
  allowed = jnp.where(allowed.max(-1, keepdims=True) > 0, allowed,
                      jax.nn.one_hot(TOK.eos_id, TOK.vocab_size))
  return jnp.where(allowed > 0, 0.0, -1e9), cache


def _trie_cache(batch, max_len):
  return jnp.zeros((batch, max_len), jnp.int32)


MAX_LEN = 40
TRIE = Sampler(apply_fn=_trie_apply, init_cache=_trie_cache, eos_id=TOK.eos_id,
               step_ids=(STEP_ID,), pad_id=TOK.pad_id, context_len=MAX_LEN)


def _wrong_steps(p):
  """The reference solution with step 2's result off by one, carried to the answer."""
  steps = p.steps
  acc = int(steps[0].split("=")[1])
  right = arithmetic._apply(acc, p.ops[1], p.terms[2])  # pylint: disable=protected-access
  bad = right + 1 if abs(right) % 10 != 9 else right - 1  # same length, differs in last digit
  return [steps[0], f"{acc}{p.ops[1]}{p.terms[2]}={bad}", f"A:{bad}"]


def _text_ids(p, steps):
  return TOK.encode(p.prompt, bos=True) + TOK.encode("\n".join(steps), eos=True)


# Question kinds: 0 always right, 1 always wrong (from step 2), 2 right or wrong at 50/50
# where step 2's result is written.
PROBLEMS = arithmetic.generate([arithmetic.Difficulty(3, 2)], "train", 6, seed=0)
EXAMPLES = [Example(p.question, p.prompt, p.solution, p.answer, p.level) for p in PROBLEMS]
KIND = [i % 3 for i in range(len(PROBLEMS))]
REFS = []
for _p, _k in zip(PROBLEMS, KIND):
  if _k in (0, 2):
    REFS.append(_text_ids(_p, _p.steps))
  if _k in (1, 2):
    REFS.append(_text_ids(_p, _wrong_steps(_p)))
TRIE_PARAMS = {"refs": jnp.asarray([r + [0] * (MAX_LEN - len(r)) for r in REFS], jnp.int32)}
KW = dict(num_solutions=4, num_rollouts=32, shard_size=2, max_len=MAX_LEN,
          prefixes_per_batch=8, progress=False)


@pytest.fixture(scope="module")
def trie_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("trie")
  stats = pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, out, seed=0, **KW)
  return out, stats, pl.load_labels(out)


def test_fake_lm_labels_are_exact(trie_run):
  _, stats, d = trie_run
  assert stats["num_solutions"] == 6 * 4 and stats["num_steps"] == 6 * 4 * 3
  assert stats["rollouts"] == 6 * 4 * 2 * 32  # every non-final step, num_rollouts each
  np.testing.assert_array_equal(d["num_steps"], 3)
  for r in range(len(d["tokens"])):
    kind = KIND[d["question_index"][r]]
    lab, ok = d["labels"][r], bool(d["correct"][r])
    if kind == 0:
      assert ok and (lab == 1.0).all(), lab
    elif kind == 1:
      assert not ok and (lab == 0.0).all(), lab
    else:
      # Steps 2 and 3 fix the outcome; step 1 is a coin flip per rollout.
      assert (lab[1:] == float(ok)).all(), (lab, ok)
      assert 0.0 < lab[0] < 1.0
  branch = d["labels"][[KIND[q] == 2 for q in d["question_index"]], 0]
  assert abs(branch.mean() - 0.5) < 0.15  # 256 fair coin flips
  # Both outcomes occur among the branching questions' solutions.
  ok2 = d["correct"][[KIND[q] == 2 for q in d["question_index"]]]
  assert ok2.any() and not ok2.all()
  # Every wrong step has label 0; the only positives as low are step 1 of kind-1
  # questions (correct, but the model always goes wrong after it): 8 steps, ties.
  n_pos = 8 * 3 + 8 + 8 + 2 * int(ok2.sum())
  assert pl.step_label_auroc(d, EXAMPLES, TASK, TOK) == pytest.approx(1 - 0.5 * 8 / n_pos)


def test_shard_format_and_rollout_counts(trie_run):
  out, _, d = trie_run
  assert sorted(os.listdir(out)) == ["manifest.json"] + [f"shard-{i:05d}.npz" for i in range(3)]
  assert pl.labels_complete(out)
  with np.load(out / "shard-00001.npz") as f:
    assert {k: f[k].dtype for k in f.files} == {k: np.dtype(v) for k, v in pl.ARRAYS.items()}
    assert f["tokens"].shape == (8, MAX_LEN) and f["labels"].shape == f["step_ends"].shape
    np.testing.assert_array_equal(f["question_index"], np.repeat([2, 3], 4))
  # Soft labels are k / num_rollouts exactly.
  lab = d["labels"][:, 0]
  np.testing.assert_allclose(lab * 32, np.round(lab * 32), atol=1e-6)
  # Rows are the sampled solutions: prompt, then the reference or wrong text.
  for r in range(len(d["tokens"])):
    row = d["tokens"][r].tolist()
    assert any(row[:len(ref)] == ref and all(t == 0 for t in row[len(ref):]) for ref in REFS)
    assert d["prompt_len"][r] == len(TOK.encode(PROBLEMS[d["question_index"][r]].prompt, bos=True))


def test_invariants_on_random_tiny_model(tmp_path, monkeypatch):
  _, _, state, tok, sampler = testing.tiny_transformer(seed=3, max_len=32)
  sampler = dataclasses.replace(sampler, buckets=(32,))
  probs = [Example(p.question, p.prompt, p.solution, p.answer, p.level)
           for p in arithmetic.generate([arithmetic.Difficulty(2, 1)], "train", 4, seed=1)]
  kw = dict(num_solutions=3, num_rollouts=4, shard_size=2, max_len=32, prefixes_per_batch=4,
            progress=False)
  stats = pl.generate_labels(sampler, state, probs, TASK, tok, tmp_path / "a", seed=0, **kw)
  d = pl.load_labels(tmp_path / "a")
  n = 4 * 3
  assert {k: v.shape[0] for k, v in d.items()} == {k: n for k in pl.ARRAYS}
  assert stats["num_steps"] == d["num_steps"].sum() > 0
  valid = d["step_ends"] >= 0
  assert ((d["labels"][valid] >= 0) & (d["labels"][valid] <= 1)).all()
  assert (d["labels"][~valid] == -1).all()
  np.testing.assert_allclose(d["labels"][valid] * 4, np.round(d["labels"][valid] * 4), atol=1e-6)
  rollouts = 0
  for r in range(n):
    k = d["num_steps"][r]
    ends = d["step_ends"][r, :k]
    at = d["tokens"][r, ends]
    assert np.isin(at, [*tok.step_ids("\n"), tok.eos_id]).all(), at
    assert (ends >= d["prompt_len"][r]).all() and (np.diff(ends) > 0).all()
    finished = tok.eos_id in d["tokens"][r].tolist()
    if k and finished:
      assert at[-1] == tok.eos_id and d["labels"][r, k - 1] == float(d["correct"][r])
    rolled = ends[:k - 1] if k and finished else ends
    rollouts += int((rolled < 32 - 1).sum()) * 4  # a prefix filling max_len has no room
    assert tok.decode(d["tokens"][r, d["prompt_len"][r]:]).count("\n") >= k - 1
  assert stats["rollouts"] == rollouts  # one batch of num_rollouts per non-final step
  # Fixed batch shapes: every rollout call gets exactly prefixes_per_batch prompts (padded
  # with real prefixes), and another run over new samples compiles nothing new.
  batches, sample = [], Sampler.sample
  monkeypatch.setattr(Sampler, "sample", lambda self, params, prompts, *a, **k: (
      batches.append((len(prompts), k["num_samples"])), sample(self, params, prompts, *a, **k))[1])
  with count_compilations() as c:
    pl.generate_labels(sampler, state, probs, TASK, tok, tmp_path / "b", seed=7, **kw)
  assert c.count == 0
  assert set(batches) == {(2, 3), (4, 4)}  # (prompts, num_samples): solutions, rollouts
  assert not np.array_equal(pl.load_labels(tmp_path / "b")["tokens"], d["tokens"])


class _Killed(Exception):
  pass


def test_resume_after_kill_matches_uninterrupted_run(trie_run, tmp_path, monkeypatch):
  ref_dir, _, _ = trie_run
  out = tmp_path / "resumed"
  save = shards.save_npz
  calls = []

  def dying_save(path, arrays):
    calls.append(os.path.basename(path))
    if len(calls) == 2:
      with open(path + ".tmp", "wb") as f:  # a torn write, then the "kill"
        f.write(b"garbage")
      raise _Killed()
    save(path, arrays)

  monkeypatch.setattr(shards, "save_npz", dying_save)
  with pytest.raises(_Killed):
    pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, out, seed=0, **KW)
  assert not pl.labels_complete(out)
  with pytest.raises(ValueError, match="incomplete: shards \\[1, 2\\]"):
    pl.load_labels(out)

  calls.clear()
  monkeypatch.setattr(shards, "save_npz", lambda p, a: (calls.append(os.path.basename(p)),
                                                        save(p, a)))
  stats = pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, out, seed=0, **KW)
  assert calls == ["shard-00001.npz", "shard-00002.npz"]  # shard 0 kept, none redone
  assert stats["shards_skipped"] == 1 and stats["num_solutions"] == 24
  assert sorted(os.listdir(out)) == sorted(os.listdir(ref_dir))  # tmp file cleaned up
  for i in range(3):
    with np.load(ref_dir / f"shard-{i:05d}.npz") as a, np.load(out / f"shard-{i:05d}.npz") as b:
      for k in pl.ARRAYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"shard {i} {k}")
  # And the randomness is really used: another seed gives other labels.
  other = pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, tmp_path / "s1", seed=1, **KW)
  assert not np.array_equal(pl.load_labels(tmp_path / "s1")["labels"],
                            pl.load_labels(ref_dir)["labels"])
  assert other["num_solutions"] == 24


def test_manifest_mismatch_is_a_clear_error(trie_run, tmp_path):
  ref_dir, _, _ = trie_run
  out = tmp_path / "job"
  shutil.copytree(ref_dir, out)
  with pytest.raises(ValueError, match="num_rollouts: 32 on disk vs 16 now.*new out_dir"):
    pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, out, seed=0,
                       **{**KW, "num_rollouts": 16})
  with pytest.raises(ValueError, match="questions_sha256"):
    pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES[::-1], TASK, TOK, out, seed=0, **KW)
  os.remove(out / "manifest.json")
  with pytest.raises(ValueError, match="shard files but no manifest"):
    pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, out, seed=0, **KW)
  assert not pl.labels_complete(out)


def _tamper(src, dst, **changes):
  shutil.copytree(src, dst)
  path = dst / "shard-00001.npz"
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  for k, fn in changes.items():
    arrays[k] = fn(arrays[k])
  np.savez(path, **arrays)
  return dst


@pytest.mark.parametrize("changes,match", [
    (dict(labels=lambda x: x[:-1]), "shard-00001.npz.*labels has 7 rows"),
    (dict(num_steps=lambda x: np.r_[2, x[1:]].astype(np.int32)),
     "shard-00001.npz.*row 0 has num_steps=2 but 3 step_ends"),
    (dict(labels=lambda x: np.where(x == 1.0, 1.5, x).astype(np.float32)),
     "shard-00001.npz.*labels must lie in \\[0, 1\\]"),
    (dict(question_index=lambda x: np.zeros_like(x)), "shard-00001.npz.*question_index"),
])
def test_load_labels_rejects_inconsistent_shards(trie_run, tmp_path, changes, match):
  ref_dir, _, _ = trie_run
  with pytest.raises(ValueError, match=match):
    pl.load_labels(_tamper(ref_dir, tmp_path / "t", **changes))


def _brute_auroc(s, y):
  pos, neg = s[y], s[~y]
  return np.mean([(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)])


def test_auroc_hand_computed():
  assert stats_lib.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert stats_lib.auroc([0.2, 0.5, 0.5, 0.9], [False, True, False, True]) == 0.875  # one tie
  assert stats_lib.auroc([0.5] * 4, [0, 1, 0, 1]) == 0.5
  assert stats_lib.auroc([0.9, 0.1], [0, 1]) == 0.0
  assert np.isnan(stats_lib.auroc([0.3, 0.4], [1, 1]))
  rng = np.random.default_rng(0)
  s, y = rng.integers(0, 5, 200) / 4, rng.random(200) < 0.4  # many ties
  assert stats_lib.auroc(s, y) == pytest.approx(_brute_auroc(s, y))
  with pytest.raises(ValueError, match="3 scores but 2 labels"):
    stats_lib.auroc([0.1, 0.2, 0.3], [0, 1])
  with pytest.raises(ValueError, match="binary"):
    stats_lib.auroc([0.1, 0.2], [0.5, 1])


def test_within_group_auroc_ignores_between_group_differences():
  # Group 0 (an easy question) scores high, group 1 (a hard one) low; within each group
  # the wrong step outscores the right ones. A plain AUROC is fooled, the grouped one is not.
  scores = [0.9, 0.95, 0.92, 0.91, 0.1, 0.15, 0.12, 0.11]
  labels = [1, 0, 1, 1, 1, 0, 0, 0]
  groups = [0, 0, 0, 0, 1, 1, 1, 1]
  assert stats_lib.auroc(scores, labels) == pytest.approx(9 / 16)
  assert stats_lib.within_group_auroc(scores, labels, groups) == 0.0
  # 1 of 1 pairs right in group 0, 1 of 2 in group 1 (0.1 > 0.05, 0.1 < 0.15): 2/3 pooled.
  assert stats_lib.within_group_auroc([0.9, 0.8, 0.1, 0.15, 0.05], [1, 0, 1, 0, 0],
                               [0, 0, 1, 1, 1]) == pytest.approx(2 / 3)
  assert np.isnan(stats_lib.within_group_auroc([0.5, 0.6], [1, 0], [0, 1]))  # no group has both
  with pytest.raises(ValueError, match="one label and one group per score"):
    stats_lib.within_group_auroc([0.5], [1], [0, 1])


def test_step_label_auroc_constructed():
  p = PROBLEMS[0]
  rows = [_text_ids(p, p.steps), _text_ids(p, _wrong_steps(p))]  # step_correct: TTT and TFF
  plen = len(TOK.encode(p.prompt, bos=True))
  ends = [[i for i, t in enumerate(r) if i >= plen and t in (STEP_ID, TOK.eos_id)]
          for r in rows]
  data = {"tokens": np.array([r + [0] * (MAX_LEN - len(r)) for r in rows], np.int32),
          "prompt_len": np.array([plen, plen], np.int32),
          "step_ends": np.array(ends, np.int32),
          "labels": np.array([[0.9, 0.8, 1.0], [0.7, 0.85, 0.0]], np.float32),
          "num_steps": np.array([3, 3], np.int32), "correct": np.array([True, False]),
          "question_index": np.array([0, 0], np.int32)}
  # positives 0.9 0.8 1.0 0.7 vs negatives 0.85 (beaten by 2 of 4) and 0.0 (by all): 6/8.
  assert pl.step_label_auroc(data, EXAMPLES, TASK, TOK) == 0.75
  with pytest.raises(ValueError, match="question_index 0 but only 0 problems"):
    pl.step_label_auroc(data, [], TASK, TOK)


def test_bad_arguments_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="prefixes_per_batch must be a power of two"):
    pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, tmp_path, seed=0,
                       **{**KW, "prefixes_per_batch": 3})
  with pytest.raises(ValueError, match="leaves no room for a solution within max_len=12"):
    pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES, TASK, TOK, tmp_path, seed=0,
                       **{**KW, "max_len": 12})
  assert not os.listdir(tmp_path)  # nothing written before validation passes


def test_runs_on_a_data_mesh(tmp_path):
  mesh = mesh_lib.make_mesh(data=8, model=1)
  pl.generate_labels(TRIE, TRIE_PARAMS, EXAMPLES[:3], TASK, TOK, tmp_path, seed=0, mesh=mesh,
                     **{**KW, "num_rollouts": 4})
  d = pl.load_labels(tmp_path)
  assert len(d["tokens"]) == 3 * 4
  for r in range(len(d["tokens"])):
    kind = KIND[d["question_index"][r]]
    if kind < 2:
      assert (d["labels"][r] == float(kind == 0)).all() and d["correct"][r] == (kind == 0)
