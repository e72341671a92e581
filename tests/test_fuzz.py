"""Random input for config validation and the answer/step parsers: a clear ValueError or a result,
never another exception, never a hang (hypothesis, with a per-example deadline)."""

import os
import string

import ml_collections
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import config_files
from ttc_jax.pipeline import settings as settings_lib
from ttc_jax.pipeline import state
from ttc_jax.tasks import base as tasks
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tasks.chain_arithmetic import problems
from ttc_jax.tokenizers import base as tokenizers
from ttc_jax.tokenizers.char import CharTokenizer

TOK = CharTokenizer(chain_arithmetic.ALPHABET)
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=2000, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["best_of_n", "beam/beam_width=x", "last", "sqrt", "char"]))
values = st.one_of(scalars, st.lists(scalars, max_size=4).map(tuple),
                   st.dictionaries(st.text(string.ascii_letters, max_size=6), scalars,
                                   max_size=3))


def _leaves(node, prefix=()):
  for key, value in node.items():
    if isinstance(value, dict):
      yield from _leaves(value, prefix + (key,))
    yield prefix + (key,)


BASE = config_files.load("test").to_dict()
PATHS = sorted(_leaves(BASE))


def _config_with(path, value):
  d = config_files.load("test").to_dict()
  node = d
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value
  return ml_collections.ConfigDict(d, type_safe=False)


@FUZZ
@given(path=st.sampled_from(PATHS), value=values)
def test_config_validation_raises_only_clear_value_errors(path, value):
  config = _config_with(path, value)
  try:
    parsed = settings_lib.parse(config)
    task = tasks.create(config.task, "/nonexistent")  # builds no data
    tokenizer = state.make_tokenizer(config.get("tokenizer", {}), task)
    parsed.revisions.check_window(tokenizer)
    parsed.allocator.large_model_config(settings_lib.model_config(config, tokenizer.vocab_size))
  except ValueError as e:
    assert str(e) and "\n" not in str(e), e


@FUZZ
@given(st.text(alphabet=chain_arithmetic.ALPHABET + "xé", max_size=80))
def test_answer_and_step_parsers_never_crash(text):
  answer = problems.extract_answer(text)
  assert answer is None or isinstance(answer, int)
  task = chain_arithmetic.ChainArithmetic([(2, 1)], {})
  problem = problems.Problem.from_question("12+3-4")
  example = tasks.Example(problem.question, problem.prompt, problem.solution, problem.answer, 1)
  ok = task.step_correct(example, text)
  assert len(ok) == len(problems.split_steps(text)) and all(isinstance(v, bool) for v in ok)
  assert task.grade(text, example) in (True, False)


@FUZZ
@given(st.text(alphabet=string.digits + "+-*= Q:Ax", max_size=30))
def test_question_parser_rebuilds_or_raises_value_error(text):
  try:
    problem = problems.Problem.from_question(text)
  except ValueError:
    return
  assert problem.question == text and problem.steps[-1] == f"A:{problem.answer}"


@FUZZ
@given(st.text(max_size=40))
def test_encode_is_ids_or_a_value_error(text):
  try:
    ids = TOK.encode(text, bos=True, eos=True)
  except ValueError:
    return
  assert TOK.decode(ids[1:]) == text


@FUZZ
@given(ids=st.lists(st.integers(-3, TOK.vocab_size + 3), max_size=60),
       delimiter=st.sampled_from(["\n", "\n\n", "=", "A:"]))
def test_step_ends_of_any_ids_are_positions_or_a_value_error(ids, delimiter):
  try:
    ends = TOK.step_ends(ids, delimiter)
    generic = tokenizers.Tokenizer.step_ends(TOK, ids, delimiter)
  except ValueError:
    assert any(not 0 <= i < TOK.vocab_size for i in ids)
    return
  assert ends == generic
  assert ends == sorted(set(ends)) and all(0 <= e < len(ids) for e in ends)
  rows = np.asarray([ids + [0] * (60 - len(ids))], np.int64)
  assert tokenizers.find_step_ends(rows, TOK, delimiter, 0)[0][:len(ends)].tolist() == ends
