"""Data stack: chain-arithmetic generator and checkers, tokenizer, TFDS builder, seqio task."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.tasks.chain_arithmetic import seqio_tasks as tasks
from ttc_jax.tasks.generated import seqio_tasks
from ttc_jax.tokenizers.char import BOS, EOS, PAD, CharTokenizer
from ttc_jax.training import batches

LEVELS = (arithmetic.Difficulty(2, 1, "+-"), arithmetic.Difficulty(3, 2, "+-*"))
COUNTS = {"train": 12, "validation": 3, "test": 5}
SEED = 3
TASK = "test_data_chain_arithmetic"


# ---------------------------------------------------------------- arithmetic


def _left_to_right(p: arithmetic.Problem) -> int:
  acc = p.terms[0]
  for op, t in zip(p.ops, p.terms[1:]):
    acc = acc + t if op == "+" else acc - t if op == "-" else acc * t
  return acc


def test_generate_is_deterministic_per_seed():
  a = arithmetic.generate(LEVELS, "train", 20, seed=1)
  b = arithmetic.generate(LEVELS, "train", 20, seed=1)
  c = arithmetic.generate(LEVELS, "train", 20, seed=2)
  assert a == b
  assert [p.question for p in a] != [p.question for p in c]
  assert [p.level for p in a] == [1] * 20 + [2] * 20


def test_train_and_eval_questions_are_disjoint():
  # Level (2, 1) has only 200 distinct questions: without the split rule these would collide.
  levels = [arithmetic.Difficulty(2, 1, "+-")]
  train = {p.question for p in arithmetic.generate(levels, "train", 150, seed=0)}
  for split in ("validation", "test"):
    held_out = {p.question for p in arithmetic.generate(levels, split, 60, seed=0)}
    assert not train & held_out, split


def test_problem_format_and_answer():
  for p in arithmetic.generate(LEVELS, "test", 30, seed=0):
    assert p.answer == _left_to_right(p)
    assert p.prompt == f"Q:{p.question}\n"
    assert p.solution.split("\n")[-1] == f"A:{p.answer}"
    assert len(p.steps) == len(p.terms)  # one step per operator, then the answer line


def test_reference_solution_passes_checkers():
  for p in arithmetic.generate(LEVELS, "validation", 30, seed=0):
    assert arithmetic.answer_correct(p, p.solution)
    assert arithmetic.step_correct(p, p.solution) == [True] * len(p.steps)
    assert arithmetic.extract_answer(p.solution) == p.answer


def test_corrupted_step_fails_from_there_on():
  p = arithmetic.generate([arithmetic.Difficulty(5, 2, "+-")], "test", 1, seed=0)[0]
  for k in range(len(p.ops)):
    # A wrong result at step k, then a chain that continues correctly from the wrong value.
    steps, acc = [], p.terms[0]
    for i, (op, t) in enumerate(zip(p.ops, p.terms[1:])):
      new = (acc + t if op == "+" else acc - t) + (1 if i == k else 0)
      steps.append(f"{acc}{op}{t}={new}")
      acc = new
    text = "\n".join(steps + [f"A:{acc}"])
    assert arithmetic.step_correct(p, text) == [True] * k + [False] * (len(p.steps) - k)
    assert not arithmetic.answer_correct(p, text)
  wrong_answer = "\n".join(p.steps[:-1] + [f"A:{p.answer + 1}"])
  assert arithmetic.step_correct(p, wrong_answer) == [True] * (len(p.steps) - 1) + [False]
  assert arithmetic.step_correct(p, p.solution + "\nA:0") == [True] * len(p.steps) + [False]


@pytest.mark.parametrize("text", ["", "A:", "A:x", "12+3=15", "A: 1 2", "Q:1+2\n", "B:4",
                                  "A:1.5", "a:3"])
def test_extract_answer_malformed_is_none(text):
  assert arithmetic.extract_answer(text) is None


def test_extract_answer_takes_last_answer_line():
  assert arithmetic.extract_answer("1+2=3\nA:3\nA:-7\n") == -7
  assert arithmetic.extract_answer("A:12\nnot an answer") == 12


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_terms=1, digits=1), "num_terms must be >= 2, got 1"),
    (dict(num_terms=2, digits=0), "digits must be >= 1, got 0"),
    (dict(num_terms=2, digits=1, ops=""), "ops must be a non-empty subset"),
    (dict(num_terms=2, digits=1, ops="+/"), "'\\+/'"),
])
def test_difficulty_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    arithmetic.Difficulty(**kwargs)


def test_unknown_split_is_an_error():
  with pytest.raises(ValueError, match="Unknown split 'dev'"):
    arithmetic.generate(LEVELS, "dev", 1)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip():
  tok = CharTokenizer(arithmetic.ALPHABET)
  text = tok.chars + "Q:12*3-4\n12*3=36\n36-4=32\nA:32"
  ids = tok.encode(text, bos=True, eos=True)
  assert ids[0] == BOS and ids[-1] == EOS
  assert all(3 <= i < tok.vocab_size for i in ids[1:-1])
  assert tok.decode(ids) == text
  assert tok.decode(ids + [7, 8]) == text  # stops at EOS
  assert tok.decode([PAD, BOS] + tok.encode("A:1") + [PAD]) == "A:1"
  assert tok.step_ids("\n") == (tok.encode("\n")[0],)


def test_tokenizer_unknown_char_is_an_error():
  with pytest.raises(ValueError, match=r"Character 'x' in 'Q:1x2' is not in the tokenizer"):
    CharTokenizer(arithmetic.ALPHABET).encode("Q:1x2")


# ---------------------------------------------------------------- TFDS + seqio


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def task(data_dir):
  return tasks.register_task(TASK, data_dir, LEVELS, COUNTS, SEED)


@pytest.fixture(scope="module")
def splits(task):
  return {s: tasks.load_split(task, s) for s in arithmetic.SPLITS}


def test_import_does_not_import_tensorflow():
  code = ("import sys, ttc_jax.tasks.chain_arithmetic.problems, "
          "ttc_jax.tasks.chain_arithmetic.seqio_tasks; "
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_builder_splits_and_features(task, data_dir):
  builder = tasks.prepare(data_dir, LEVELS, COUNTS, SEED)
  assert builder.info.version == "1.1.0" == seqio_tasks.TFDS_VERSION
  for split, n in COUNTS.items():
    assert builder.info.splits[split].num_examples == n * len(LEVELS)
  features = builder.info.features
  assert set(features.keys()) == {"question", "prompt", "solution", "answer", "level"}
  assert features["answer"].dtype == np.int64 and features["level"].dtype == np.int32
  assert str(builder.data_dir).startswith(
      os.path.join(data_dir, "chain_arithmetic", builder.builder_config.name))


def test_data_from_an_older_generator_is_not_read(tmp_path):
  """Data prepared under another builder version (older generator code) stays where it is
  and is not loaded: today's generator prepares its own folder beside it."""
  data = str(tmp_path)
  builder = tasks.prepare(data, LEVELS, COUNTS, SEED)
  config_dir = os.path.dirname(builder.data_dir)
  os.rename(builder.data_dir, os.path.join(config_dir, "1.0.0"))
  again = tasks.prepare(data, LEVELS, COUNTS, SEED)
  assert again.data_dir == builder.data_dir
  assert sorted(os.listdir(config_dir)) == ["1.0.0", "1.1.0"]


def test_prepare_is_idempotent(task, data_dir):
  builder = tasks.prepare(data_dir, LEVELS, COUNTS, SEED)
  info = os.path.join(builder.data_dir, "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  again = tasks.prepare(data_dir, LEVELS, COUNTS, SEED)
  assert again.data_dir == builder.data_dir
  assert os.stat(info).st_mtime_ns == before
  assert sorted(os.listdir(os.path.join(data_dir, "chain_arithmetic"))) == [
      builder.builder_config.name]


def test_config_name_is_a_function_of_the_settings(task):
  from ttc_jax.tasks.chain_arithmetic.tfds_builder import ChainArithmetic
  name = lambda *a: ChainArithmetic.config(*a).name
  base = name(LEVELS, COUNTS, SEED)
  assert base == name([(2, 1, "+-"), (3, 2, "+-*")], dict(COUNTS), SEED)  # tuples == Difficulty
  assert base != name(LEVELS, COUNTS, SEED + 1)
  assert base != name(LEVELS, {**COUNTS, "test": 6}, SEED)
  assert base != name(LEVELS[:1], COUNTS, SEED)
  with pytest.raises(ValueError, match=r"give a count for exactly \['train', 'validation', "):
    ChainArithmetic.config(LEVELS, {"train": 1, "test": 1}, 0)
  with pytest.raises(ValueError, match=r"num_per_level\['test'\] = 0"):
    ChainArithmetic.config(LEVELS, {**COUNTS, "test": 0}, 0)
  with pytest.raises(ValueError, match="levels is empty"):
    ChainArithmetic.config([], COUNTS, 0)


def test_split_matches_generator_in_order(splits):
  for split, n in COUNTS.items():
    got, ref = splits[split], arithmetic.generate(LEVELS, split, n, SEED)
    assert list(got["question"]) == [p.question for p in ref]
    assert list(got["prompt"]) == [p.prompt for p in ref]
    assert list(got["solution"]) == [p.solution for p in ref]
    np.testing.assert_array_equal(got["answer"], [p.answer for p in ref])
    np.testing.assert_array_equal(got["level"], [p.level for p in ref])
    assert got["answer"].dtype == np.int64 and got["level"].dtype == np.int32


def test_task_inputs_and_targets(splits):
  tok = CharTokenizer(arithmetic.ALPHABET)
  test = splits["test"]
  assert len(test["inputs"]) == len(test["targets"]) == COUNTS["test"] * len(LEVELS)
  for x, y, prompt, solution in zip(test["inputs"], test["targets"], test["prompt"],
                                    test["solution"]):
    assert x.dtype == np.int32 and y.dtype == np.int32
    assert x.tolist() == tok.encode(prompt, bos=True)
    assert y.tolist() == tok.encode(solution, eos=True)
    assert tok.decode(x) == prompt and tok.decode(y) == solution
    assert y[-1] == EOS and EOS not in y[:-1].tolist() and BOS not in y.tolist()


def test_char_vocabulary_matches_tokenizer(task):
  import tensorflow as tf
  vocab = task.output_features["targets"].vocabulary
  tok = CharTokenizer(arithmetic.ALPHABET)
  text = "Q:12*3-4\n12*3=36\n36-4=32\nA:32"
  assert vocab == seqio_tasks.CharVocabulary(tok)
  assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (PAD, BOS, EOS, None)
  assert vocab.vocab_size == tok.vocab_size
  assert list(vocab.encode(text)) == tok.encode(text)
  assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == tok.encode(text)
  ids = tok.encode(text, bos=True, eos=True) + tok.encode("9")
  assert vocab.decode(ids) == text
  assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == text
  batch = tf.constant([tok.encode("12") + [EOS, 7], tok.encode("A:3") + [PAD]])
  assert vocab.decode_tf(batch).numpy().tolist() == [b"12", b"A:3"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="outside the tokenizer alphabet"):
    vocab.encode_tf(tf.constant("Q:1x2"))
  with pytest.raises(ValueError, match=r"Ids \[99\] are outside this vocabulary"):
    vocab.decode([3, 99])


def test_register_again_replaces_the_task(task, data_dir):
  again = tasks.register_task(TASK, data_dir, LEVELS, COUNTS, SEED)
  assert again is not task and tasks.get_task(TASK) is again
  assert len(tasks.load_split(TASK, "validation")["answer"]) == COUNTS["validation"] * len(LEVELS)


def test_unknown_task_and_split_are_errors(task):
  with pytest.raises(ValueError, match=rf"Unknown task 'nope'; registered tasks: .*'{TASK}'"):
    tasks.get_task("nope")
  with pytest.raises(ValueError, match="Unknown task 'nope'"):
    tasks.load_split("nope", "train")
  with pytest.raises(ValueError, match=r"Unknown split 'dev'; choose one of"):
    tasks.load_split(task, "dev")


# ---------------------------------------------------------------- LM arrays


def test_lm_arrays_masks_exactly_the_targets():
  inputs, targets = [[BOS, 5, 6], [BOS, 4]], [[7, EOS], [8, 9, 10, EOS]]
  out = batches.lm_arrays(inputs, targets, 7, PAD)
  np.testing.assert_array_equal(out["tokens"], [[BOS, 5, 6, 7, EOS, PAD, PAD],
                                                [BOS, 4, 8, 9, 10, EOS, PAD]])
  np.testing.assert_array_equal(out["loss_mask"], [[0, 0, 0, 1, 1, 0, 0],
                                                   [0, 0, 1, 1, 1, 1, 0]])
  assert out["tokens"].dtype == np.int32 and out["loss_mask"].dtype == np.float32
  # Exactly full rows are fine.
  assert batches.lm_arrays(inputs, targets, 6, PAD)["tokens"].shape == (2, 6)


def test_lm_arrays_on_a_split(splits):
  train = splits["train"]
  max_len = max(len(x) + len(y) for x, y in zip(train["inputs"], train["targets"]))
  out = batches.lm_arrays(train["inputs"], train["targets"], max_len + 3, PAD,
                          names=train["question"])
  tokens, mask = out["tokens"], out["loss_mask"]
  assert tokens.shape == mask.shape == (len(train["answer"]), max_len + 3)
  for row, m, x, y in zip(tokens, mask, train["inputs"], train["targets"]):
    np.testing.assert_array_equal(row[m == 1], y)
    np.testing.assert_array_equal(row[:len(x)], x)
    assert (row[len(x) + len(y):] == PAD).all() and m.sum() == len(y)


def test_lm_arrays_too_long_is_an_error(splits):
  inputs, targets = [[BOS, 5], [BOS, 5, 6, 7]], [[EOS], [8, EOS]]
  with pytest.raises(ValueError, match=r"Example 1 \(question 'b'\) is 6 tokens .* longer than "
                     r"max_len=5.*at least 6"):
    batches.lm_arrays(inputs, targets, 5, PAD, names=["a", "b"])
  with pytest.raises(ValueError, match="Example 0 is 3 tokens"):
    batches.lm_arrays([[1, 5]], [[2]], 2, PAD)


def test_problem_from_question_round_trips():
  problems = arithmetic.generate([arithmetic.Difficulty(5, 2, "+-*")], "test", 30, seed=3)
  for p in problems:
    assert arithmetic.Problem.from_question(p.question, p.level) == p
  with pytest.raises(ValueError, match="Not a chain-arithmetic question"):
    arithmetic.Problem.from_question("4+")
