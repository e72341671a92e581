"""The countdown task (issue 18, item 2): generator, checkers, settings, a whole job."""

import json
import os
import time

import ml_collections
import pytest
from hypothesis import given, settings, strategies as st

import config_files
from ttc_jax import pipeline
from ttc_jax.tasks import base as tasks
from ttc_jax.tasks import countdown
from ttc_jax.tasks.countdown import problems

LEVELS = (problems.Difficulty(3, 9), problems.Difficulty(5, 25))
COUNTS = dict(train=20, validation=3, test=5)
# 2 3 4 -> 20 is reached only through 2+3=5, then 5*4=20: every other first move is a dead end.
QUESTION = "2 3 4>20"
EXAMPLE = tasks.Example(QUESTION, f"Q:{QUESTION}\n", "3+2=5\n5*4=20\nA:20", (20, (2, 3, 4)), 1)
TASK = countdown.Countdown([(3, 9)], {})


def test_generate_is_deterministic_per_seed():
  a = problems.generate(LEVELS, "train", 20, seed=1)
  assert a == problems.generate(LEVELS, "train", 20, seed=1)
  assert [p.question for p in a] != [p.question for p in problems.generate(LEVELS, "train", 20, 2)]
  assert [p.level for p in a] == [1] * 20 + [2] * 20


def test_train_and_eval_questions_are_disjoint():
  levels = [problems.Difficulty(2, 6)]  # few distinct questions: without the rule they collide
  train = {p.question for p in problems.generate(levels, "train", 40, seed=0)}
  for split in ("validation", "test"):
    assert not train & {p.question for p in problems.generate(levels, split, 40, seed=0)}, split


def test_eval_questions_are_distinct_and_a_too_small_level_is_named():
  levels = [problems.Difficulty(2, 6), problems.Difficulty(2, 7)]
  test = [p.question for p in problems.generate(levels, "test", 30, seed=0)]
  assert len(set(test)) == len(test) == 60
  train = [p.question for p in problems.generate(levels, "train", 200, seed=0)]
  assert len(set(train)) < len(train)  # training rows may repeat a question
  with pytest.raises(ValueError, match=r"Level 1 \(Difficulty\(count=2, max_number=3\)\) "
                                       r"yields fewer than num_per_level.test=40 distinct"):
    problems.generate([problems.Difficulty(2, 3)], "test", 40, seed=0)


def test_reference_solutions_are_correct_at_every_step():
  for p in problems.generate(LEVELS, "test", 50, seed=0):
    example = tasks.Example(p.question, p.prompt, p.solution, p.answer, p.level)
    assert p.prompt == f"Q:{p.question}\n" and set(p.prompt + p.solution) <= set(countdown.ALPHABET)
    assert problems.parse_question(p.question) == (p.numbers, p.target)
    assert TASK.answer(p.question, p.target) == p.answer == (p.target, tuple(sorted(p.numbers)))
    assert TASK.grade(p.solution, example)
    assert TASK.step_correct(example, p.solution) == [True] * len(p.numbers)


@pytest.mark.parametrize("text,answer", [
    ("3+2=5\n5*4=20\nA:20", (20, (2, 3, 4))),
    ("2+3=5\n4*5=20\nA:20\n", (20, (2, 3, 4))),
    ("3+2=5\n5*5=25\nA:25", (25, (2, 3, 5))),   # a result used once, the other 5 is a leaf
    ("3+2=5\n5*3=15\nA:15", (15, (2, 3, 3))),   # 3 used twice: wrong leaves, graded wrong
    ("3+2=5\nA:5", (5, (2, 3))),                # 4 unused: wrong leaves
    ("3+2=6\n6*4=24\nA:24", None),              # wrong arithmetic
    ("3+2=5\n4*2=8\nA:8", None),                # two values left
    ("3+2=5\n5*4=20", None),                    # no answer line
    ("3+2=5\n5*4=20\nA:21", None),              # answer line not the value left
    ("3+2=5\nA:5\n5*4=20", None),               # a step after the answer line
    ("A:20", None), ("", None), ("2-3=1\nA:1", None), ("03+2=5\n5*4=20\nA:20", None),
])
def test_extract_answer(text, answer):
  assert problems.extract_answer(text) == answer
  assert TASK.grade(text, EXAMPLE) == (answer == EXAMPLE.answer)


@pytest.mark.parametrize("text,labels", [
    ("3+2=5\n5*4=20\nA:20", [True, True, True]),
    ("2*3=6\n6*4=24\nA:24", [False, False, False]),  # a valid move into a dead end
    ("4-3=1\n2+1=3\nA:3", [False, False, False]),
    ("3+2=5\n5+4=9\nA:9", [True, False, False]),
    ("3+2=5\n5*4=20\nA:21", [True, True, False]),
    ("3+3=6\n6*4=24\nA:24", [False, False, False]),  # 3 is not there twice
    ("3+2=5\n5*5=25\nA:25", [True, False, False]),   # 5 is not there twice
    ("3+2=5\nA:5", [True, False]),
    ("3+2=5\n5*4=20\nA:20\nA:20", [True, True, True, False]),
    ("3+2=5\nx\n5*4=20", [True, False, False]),
    ("3+2=5\n5*4=20", [True, True]),
])
def test_step_correct_finds_dead_ends(text, labels):
  assert TASK.step_correct(EXAMPLE, text) == labels


def test_reachable_is_exact_and_fast():
  assert problems.reachable((2, 3, 4), 20) and not problems.reachable((2, 3, 5), 40)
  assert problems.reachable((1, 2, 3, 4), 24) and problems.reachable((4, 5), 1)
  problems.reachable.cache_clear()
  start = time.perf_counter()
  assert not problems.reachable((3, 7, 11, 13, 17, 23), 999_983)  # six numbers, every order
  assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("level,match", [
    ((1, 9), r"count must be in 2..6, got 1"), ((7, 9), r"count must be in 2..6, got 7"),
    ((3, 1), r"max_number must be in 2..99, got 1"), ((3, 100), r"max_number must be in 2..99"),
    (("3", 9), r"count='3' must be an int"),
])
def test_difficulty_validation(level, match):
  with pytest.raises(ValueError, match=match):
    problems.Difficulty(*level)


@pytest.mark.parametrize("settings_,match", [
    (dict(levels=((3, 9),), num_per_level=COUNTS, extra=1), r"Unknown key\(s\) \['extra'\]"),
    (dict(levels=((3, 9, 1),), num_per_level=COUNTS),
     r"config.task.levels=.*\(count, max_number\)"),
    (dict(levels=(), num_per_level=COUNTS), r"must be a non-empty tuple"),
    (dict(levels=((3, 9),), num_per_level=dict(train=1, test=1)), r"exactly \['train', "),
    (dict(levels=((3, 9),), num_per_level=COUNTS, seed="x"),
     r"config.task.seed='x' must be an int"),
    (dict(levels=((3, 0),), num_per_level=COUNTS), r"max_number must be in 2..99, got 0"),
])
def test_settings_validation(settings_, match, tmp_path):
  with pytest.raises(ValueError, match=match) as e:
    tasks.create({"name": "countdown", **settings_}, str(tmp_path))
  assert "\n" not in str(e.value)


def test_parse_question_rejects_other_text():
  with pytest.raises(ValueError, match="Not a countdown question"):
    problems.parse_question("2 3+4")


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=2000, derandomize=True)
@given(st.text(alphabet=countdown.ALPHABET + "x", max_size=60))
def test_checkers_never_raise_on_random_text(text):
  answer = problems.extract_answer(text)
  assert answer is None or (isinstance(answer[0], int) and isinstance(answer[1], tuple))
  labels = TASK.step_correct(EXAMPLE, text)
  assert len(labels) == len(problems.split_steps(text)) and all(v in (True, False) for v in labels)
  assert TASK.grade(text, EXAMPLE) in (True, False)


def test_tfds_splits_match_the_generator(tmp_path):
  task = countdown.Countdown(LEVELS, COUNTS, 3, str(tmp_path))
  for split, n in COUNTS.items():
    ref = problems.generate(LEVELS, split, n, 3)
    got = task.examples(split)
    assert [(e.question, e.prompt, e.solution, e.answer, e.level) for e in got] == [
        (p.question, p.prompt, p.solution, p.answer, p.level) for p in ref]
  assert os.listdir(tmp_path / "countdown")


@pytest.mark.slow  # 136-190 s on a shared 2-core CPU
def test_the_test_job_runs_on_countdown(tmp_path):
  config = config_files.load("test_countdown")
  config.workdir = str(tmp_path / "run")
  summary = pipeline.run(config)

  task = tasks.create(config.task, str(tmp_path / "run" / "data"))
  questions = {e.question for e in task.examples("test")}
  rows = [json.loads(line) for line in open(tmp_path / "run" / "search.jsonl")]
  assert rows and all(set(row["question"]) <= questions for row in rows)
  assert set(summary["base_lm"]["pass@1"]) == {"1", "2"}
  assert summary["prm_step_auroc"] is None or 0 <= summary["prm_step_auroc"] <= 1
  assert set(summary["search"]) == set(config.search.strategies)
  for key in ("revisions", "compute_optimal", "flops"):
    assert key in summary
  assert os.path.exists(tmp_path / "run" / "report.md")
