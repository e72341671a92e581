"""The MATH task (paper §5.1): TFDS from a manual dir, boxed answers, math-verify grading."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from hypothesis import given, settings, strategies as st, HealthCheck
import pytest

from ttc_jax.tasks import base
from ttc_jax.tasks import math as math_task
from ttc_jax.tasks.math import answers, grader, tfds_builder

LIMIT_S = 1.0  # per-answer limit in these tests
SLACK_S = 0.3  # pipe round trip and scheduling on a busy machine

# (split, subject dir, id, type, level, solution): 2 subjects, levels 1, 2, 3, 5 and one "?".
HENDRYCKS = [
    ("train", "algebra", 1, "Algebra", "Level 1", r"So $x = \boxed{2}$."),
    ("train", "algebra", 2, "Algebra", "Level 2", "First.\n\nThen $\\boxed{\\frac{1}{2}}$."),
    ("train", "algebra", 3, "Algebra", "Level 2", r"Hence \boxed{\{1,2\}}."),
    ("train", "geometry", 4, "Geometry", "Level 3", r"The angle is $\boxed{30^\circ}$."),
    ("train", "geometry", 5, "Geometry", "Level ?", r"Unknown level: $\boxed{7}$."),
    ("train", "geometry", 6, "Geometry", "Level 5", r"Area $\fbox{6\sqrt{3}}$"),
    ("train", "algebra", 7, "Algebra", "Level 1", r"Sum: $\boxed{-3}$"),
    ("train", "algebra", 8, "Algebra", "Level 3", r"$\boxed{\dfrac{3}{4}}$"),
    ("test", "algebra", 10, "Algebra", "Level 1", r"$\boxed{5}$"),
    ("test", "algebra", 11, "Algebra", "Level 3", r"We get $\boxed{(0,1]}$."),
    ("test", "geometry", 12, "Geometry", "Level 2", r"$\boxed{10\text{ cm}}$"),
    ("test", "geometry", 13, "Geometry", "Level 5", r"$\boxed{\begin{pmatrix}1\\2\end{pmatrix}}$"),
]
MATH500 = [
    {"problem": "What is 1+1?", "solution": r"It is $\boxed{2}$.", "answer": "2",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Half of one?", "solution": r"$\boxed{\frac12}$", "answer": r"\frac{1}{2}",
     "subject": "Algebra", "level": 4, "unique_id": "test/algebra/2.json"},
    {"problem": "Which day?", "solution": r"$\boxed{\text{Monday}}$", "answer": r"\text{Monday}",
     "subject": "Counting & Probability", "level": 2, "unique_id": "test/counting/3.json"},
]


def write_hendrycks(root, rows=HENDRYCKS):
  for split, sub, i, typ, level, sol in rows:
    d = root / "MATH" / split / sub
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{i}.json").write_text(json.dumps(
        {"problem": f"Problem {i} ({typ})?", "level": level, "type": typ, "solution": sol}))
  return root


def write_math500(root, rows=MATH500):
  root.mkdir(parents=True, exist_ok=True)
  (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return root


@pytest.fixture(scope="module")
def hendrycks(tmp_path_factory):
  raw = write_hendrycks(tmp_path_factory.mktemp("raw"))
  data = tmp_path_factory.mktemp("tfds")
  return base.create({"name": "math", "manual_dir": str(raw), "validation_fraction": 0.3},
                     str(data))


@pytest.fixture(scope="module")
def math500(tmp_path_factory):
  raw = write_math500(tmp_path_factory.mktemp("raw500"))
  data = tmp_path_factory.mktemp("tfds500")
  return base.create({"name": "math", "source": "math500", "manual_dir": str(raw),
                      "grade_timeout_s": LIMIT_S}, str(data))


@pytest.fixture(scope="module")
def fast_grader():
  g = grader.Grader(timeout_s=LIMIT_S)
  yield g
  g.close()


def _answer(sol):
  return answers.extract(sol)


# ---------------------------------------------------------------- data


def test_hendrycks_splits_levels_subjects_answers(hendrycks):
  train_rows = [r for r in HENDRYCKS if r[0] == "train" and r[4] != "Level ?"]
  train, val = hendrycks.examples("train"), hendrycks.examples("validation")
  uid = {f"Problem {r[2]} ({r[3]})?": f"train/{r[1]}/{r[2]}.json" for r in train_rows}
  # validation = the hash slice of train, train = the rest, and nothing else
  assert {e.question for e in val} == {q for q, u in uid.items()
                                       if math_task.in_validation(u, 0.3)}
  assert {e.question for e in train} | {e.question for e in val} == set(uid)
  assert val and train and not {e.question for e in train} & {e.question for e in val}
  # "Level ?" is dropped; levels and answers are kept
  want = {f"Problem {r[2]} ({r[3]})?": (int(r[4][-1]), _answer(r[5])) for r in train_rows}
  assert {e.question: (e.level, e.answer) for e in train + val} == want
  test = hendrycks.examples("test")
  assert [(e.level, e.answer) for e in test] == [
      (1, "5"), (2, r"10\text{ cm}"), (3, "(0,1]"), (5, r"\begin{pmatrix}1\\2\end{pmatrix}")]
  assert hendrycks.subjects("test") == ["Algebra", "Geometry", "Algebra", "Geometry"]
  for split in base.SPLITS:  # grouped by level, in a fixed order
    levels = [e.level for e in hendrycks.examples(split)]
    assert levels == sorted(levels)
  assert base.first_per_level(test, 1) == test


def test_prompt_solution_and_task_attributes(hendrycks):
  e = next(e for e in hendrycks.examples("train") + hendrycks.examples("validation")
           if e.question == "Problem 2 (Algebra)?")
  assert e.prompt == "Problem: Problem 2 (Algebra)?\n\nSolution:\n\n"
  assert e.solution.split(hendrycks.step_delimiter) == ["First.", r"Then $\boxed{\frac{1}{2}}$."]
  assert hendrycks.step_delimiter == "\n\n" and hendrycks.alphabet is None
  assert hendrycks.attempt_separator not in e.solution
  assert hendrycks.grade(e.solution, e)
  assert isinstance(hash(e.answer), int)


def test_math500_source_keeps_answer_field_and_levels(math500):
  test = math500.examples("test")
  assert [(e.level, e.answer) for e in test] == [(1, "2"), (2, r"\text{Monday}"),
                                                 (4, r"\frac{1}{2}")]
  assert math500.subjects("test") == ["Prealgebra", "Counting & Probability", "Algebra"]
  assert math500.examples("train") == [] and math500.examples("validation") == []
  assert math500.grade(r"so \boxed{0.5}", test[2]) and not math500.grade(r"\boxed{2}", test[2])


def test_prepared_data_is_reused_without_manual_dir(tmp_path):
  raw, data = write_math500(tmp_path / "raw"), str(tmp_path / "tfds")
  first = base.create({"name": "math", "source": "math500", "manual_dir": str(raw)}, data)
  n = len(first.examples("test"))
  (raw / "test.jsonl").unlink()
  again = base.create({"name": "math", "source": "math500", "data_dir": data}, "unused")
  assert len(again.examples("test")) == n == 3
  assert os.path.isdir(os.path.join(data, "competition_math", "math500", "1.0.0"))


def test_caps_spread_over_levels_and_level_filter(tmp_path):
  raw = write_hendrycks(tmp_path / "raw")
  task = base.create({"name": "math", "manual_dir": str(raw), "levels": (2, 3, 5),
                      "num_examples": {"test": 2}}, str(tmp_path / "tfds"))
  assert [e.level for e in task.examples("test")] == [2, 3]
  assert {e.level for e in task.examples("train")} <= {2, 3, 5}


@pytest.mark.parametrize("source, make", [("hendrycks", None), ("math500", None),
                                          ("hendrycks", "empty"), ("math500", "wrong")])
def test_missing_or_empty_manual_dir_is_one_line_value_error(tmp_path, source, make):
  manual = tmp_path / "manual"
  if make == "empty":
    manual.mkdir()
  elif make == "wrong":
    write_hendrycks(manual)  # the other layout
  task = base.create({"name": "math", "source": source, "manual_dir": str(manual)},
                     str(tmp_path / "tfds"))
  with pytest.raises(ValueError) as err:
    task.examples("test")
  msg = str(err.value)
  assert "\n" not in msg and str(manual) in msg
  assert ("test.jsonl" if source == "math500" else "MATH/train/<subject>/<id>.json") in msg


@pytest.mark.parametrize("settings, match", [
    ({"source": "gsm8k"}, "source"), ({"levels": (0, 1)}, "levels"),
    ({"num_examples": {"dev": 3}}, "num_examples"), ({"validation_fraction": 1.0}, "validation"),
    ({"grade_timeout_s": 0}, "grade_timeout_s"), ({"seed": 1}, "Unknown key")])
def test_settings_are_checked(settings, match):
  with pytest.raises(ValueError, match=match):
    base.create({"name": "math", **settings}, "data")


def test_bad_level_is_an_error_and_unknown_level_is_dropped():
  assert tfds_builder.parse_level("Level 4", "f") == 4 and tfds_builder.parse_level(2, "f") == 2
  assert tfds_builder.parse_level("Level ?", "f") is None
  with pytest.raises(ValueError, match="f: level 'Level 9'"):
    tfds_builder.parse_level("Level 9", "f")


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("text, want", [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
    (r"\boxed{1} then \boxed{2}", "2"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5$", "5"),
    (r"\boxed{\boxed{3}}", "3"),
    (r"\boxed{\dfrac{1}{2} }", r"\frac{1}{2}"),
    (r"\boxed{\left( 0, 1 \right]}", "( 0, 1 ]"),
    (r"\boxed{10,\!000}", "10,000"),
    (r"\boxed{3} and \boxed{4", "3"),  # a box cut off by the length limit does not count
    (r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    (r"\boxed{\$5}", r"\$5"),
    (r"\boxed{\text{\}}} is the brace", r"\text{\}}"),  # an escaped brace does not close
    ("\\boxed{3\\", None),
    ("no box here: 42", None), (r"\boxed{}", None), (r"\boxed{ $ $ }", None),
    (r"\boxedx{3}", None), (r"\boxed{3", None),
])
def test_extract_answer(text, want):
  assert answers.extract(text) == want


# ---------------------------------------------------------------- grading

EQUIVALENT = [  # (gold, prediction, graded correct)
    (r"\frac{1}{2}", "0.5", True), (r"\frac{1}{2}", "1/2", True), (r"\frac12", r"\dfrac{1}{2}", True),
    (r"\frac{1}{2}", "0.6", False), (r"\frac{1}{3}", "0.333", False),
    ("2", "2.0", True), ("0.25", r"\frac14", True), ("3.14", r"\pi", False),
    ("(0,1]", "[0,1]", False), ("(0,1]", r"\left(0,1\right]", True), ("(0,1]", "(0,1)", False),
    ("10", r"10\text{ cm}", True), (r"30^\circ", "30", True), ("30", r"30^{\circ}", True),
    ("30", "60^\\circ", False),
    (r"\{1,2\}", r"\{2,1\}", True), (r"\{1,2\}", r"\{1,3\}", False),
    (r"2\sqrt{2}", r"\sqrt{8}", True), (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}", True),
    (r"\sqrt{2}", r"\sqrt{3}", False),
    ("-3", "-3", True), ("-3", "3", False),
    (r"50\%", "50", True), (r"50\%", "0.5", True), (r"50\%", "5", False),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", True),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}2\\1\end{pmatrix}", False),
    (r"\text{Monday}", r"\text{Monday}", True), (r"\text{Monday}", r"\text{Tuesday}", False),
    (r"\text{(C)}", "C", True), ("10000", "10,000", True), ("x^2+2x+1", "(x+1)^2", True),
    ("5", "", False), ("5", "garbage}{", False),
]


@pytest.mark.parametrize("gold, pred, want", EQUIVALENT)
def test_grading_equivalences(math500, gold, pred, want):
  example = base.Example(question="q", prompt="p", solution="s", answer=answers.canonical(gold),
                         level=1)
  assert math500.grade(f"Thus the answer is $\\boxed{{{pred}}}$.", example) is want


def test_is_correct_rejects_none_and_non_strings(math500):
  example = math500.examples("test")[0]
  assert not math500.is_correct(None, example) and not math500.is_correct(2, example)


PATHOLOGICAL = [r"9^{9^{9^{9}}}", r"10^{10^{10}}", r"{99999999}!"]


@pytest.mark.parametrize("pred", PATHOLOGICAL)
def test_time_limit_holds_in_a_thread(fast_grader, pred):
  out = {}

  def run():
    t = time.monotonic()
    out["ok"] = fast_grader.equivalent("3", pred)
    out["s"] = time.monotonic() - t

  fast_grader.equivalent("1", "1.0")  # the worker has started
  killed = fast_grader.stats["timeouts"]
  thread = threading.Thread(target=run)
  thread.start()
  thread.join(30)
  assert out["ok"] is False and out["s"] < LIMIT_S + SLACK_S, out
  # The worker's own timer ended it (math-verify's signal timeouts are off there), so
  # the worker lives on; the hard limit is for what that timer cannot stop.
  assert fast_grader.stats["timeouts"] == killed


def test_hard_limit_kills_a_stuck_worker_from_threads(tmp_path):
  # A worker that starts and then never answers (stuck in C, say): the caller's own
  # deadline ends each call, and the worker is replaced.
  stuck = [sys.executable, "-c", "import sys, time; print('{\"ready\": true}', flush=True); "
           "time.sleep(600)"]
  g = grader.Grader(timeout_s=0.5, max_workers=2, worker_argv=stuck)
  times, results = [], []

  def run(i):
    t = time.monotonic()
    results.append(g.equivalent("1", str(i)))
    times.append(time.monotonic() - t)

  assert g.equivalent("0", "0") is False  # graded by the stuck worker: times out too
  threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
  for th in threads:
    th.start()
  for th in threads:
    th.join(30)
  assert results == [False, False] and g.stats["timeouts"] == 3 and g.stats["restarts"] == 3
  assert max(times) < 0.5 + 1.5  # the limit, plus a fresh worker's start for the second caller
  assert g.stats["max_grade_s"] < 0.5 + SLACK_S
  g.close()


def test_a_worker_that_cannot_start_is_a_clear_error():
  g = grader.Grader(timeout_s=1, worker_argv=[sys.executable, "-c",
                                              "print('{\"error\": \"no math_verify\"}')"])
  with pytest.raises(RuntimeError, match="no math_verify"):
    g.equivalent("1", "2")


def test_results_are_cached(fast_grader):
  fast_grader.equivalent("7", r"\frac{14}{2}")
  calls = fast_grader.stats["calls"]
  assert fast_grader.equivalent("7", r"\frac{14}{2}") is True
  assert fast_grader.stats["calls"] == calls


FRAGMENTS = [r"\boxed{", r"\fbox{", "{", "}", r"\{", r"\}", r"\frac", r"\dfrac", r"\sqrt", "^",
             "9", "0", "x", "-", "+", "=", ",", ".", "!", r"\%", "%", "$", r"\\", "&", "(", ")",
             "[", "]", r"\left(", r"\right)", r"\text{", " cm", r"^\circ", r"\pi", r"\infty",
             r"\begin{pmatrix}", r"\end{pmatrix}", r"\cdot", r"\le", "\n\n", " ", r"\\boxed", "\\"]
LATEX = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join)
TEXTS = st.one_of(st.text(max_size=60), LATEX,  # mostly texts with a box somewhere
                  st.tuples(LATEX, st.one_of(LATEX, st.text(max_size=20)), LATEX).map(
                      lambda t: f"{t[0]}\\boxed{{{t[1]}}}{t[2]}"))


def test_fuzz_extract_and_grade_never_raise_and_stay_in_the_limit(fast_grader):
  times = []

  @settings(max_examples=300, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow])
  @given(text=TEXTS, gold=st.sampled_from([r"\frac{1}{2}", "3", r"(0,1]", r"\{1,2\}", "x^2"]))
  def one(text, gold):
    answer = answers.extract(text)
    assert answer is None or isinstance(answer, str) and isinstance(hash(answer), int)
    # The extracted answer, and the raw text as if it were a box's content.
    for pred in ([answer] if answer else []) + [text]:
      waited = fast_grader.stats["start_wait_s"]
      t = time.monotonic()
      ok = fast_grader.equivalent(gold, pred)
      # A call right after a kill also waits for the replacement worker's start (not limited).
      took = time.monotonic() - t - (fast_grader.stats["start_wait_s"] - waited)
      assert isinstance(ok, bool)
      times.append(took)
      assert took < LIMIT_S + SLACK_S

  one()
  print(f"fuzz: {len(times)} grading calls, max {max(times):.3f} s per call, grader "
        f"{fast_grader.stats}", file=sys.stderr)
  assert len(times) >= 300 and fast_grader.stats["calls"] >= 200 and fast_grader.stats["max_grade_s"] < LIMIT_S + SLACK_S


def test_task_pickles_without_its_workers(math500):
  import pickle  # pylint: disable=g-import-not-at-top
  example = math500.examples("test")[2]
  assert math500.grade(r"\boxed{0.5}", example)
  copy = pickle.loads(pickle.dumps(math500))
  assert copy._grader is None and copy.grade(r"\boxed{1/2}", example)
