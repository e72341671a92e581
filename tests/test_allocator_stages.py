"""Allocator stages: the pure tables (ttc_jax/allocator/tables.py) with known answers, then the
larger-model, allocator and report stages (ttc_jax/pipeline/stages/) on a `state.Run`."""

import dataclasses
import json
import os
import types

import numpy as np
import pytest

import config_files
from ttc_jax.allocator import flops
from ttc_jax.allocator import tables
from ttc_jax.models import transformer
from ttc_jax.pipeline import artifacts
from ttc_jax.pipeline import common
from ttc_jax.pipeline import settings
from ttc_jax.pipeline import state
from ttc_jax.pipeline.stages import allocator
from ttc_jax.pipeline.stages import larger_model
from ttc_jax.pipeline.stages import report
from ttc_jax.tasks import base as tasks
from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.training import batches
from ttc_jax.training import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = dict(strategies=("best_of_n", "beam/beam_width=2"), budgets=(1, 4))


def _config(workdir):
  c = config_files.load("test")
  c.workdir = str(workdir)
  c.search.update(**SEARCH)  # a small grid keeps the fixture to seconds
  return c


def _allocator_cfg(section=None, **overrides):
  """`config.allocator` (of configs/test.py unless `section`) as validated by the job."""
  config = config_files.load("test")
  if section is not None:
    config.allocator = section
  if overrides:
    config.allocator = dict(config.allocator, **overrides)
  return settings.parse(config).allocator


def _example(question, level):
  p = arithmetic.Problem.from_question(question, level)
  return tasks.Example(p.question, p.prompt, p.solution, p.answer, p.level)


def _row(strategy, budget, questions, correct, gen=None, ver=None):
  n = len(questions)
  return {"cell": {"strategy": strategy, "budget": budget}, "question": list(questions),
          "correct": list(correct),
          "generated_tokens": list(gen if gen is not None else [10 * budget] * n),
          "verifier_tokens": list(ver if ver is not None else [10 * budget] * n)}


# ---- config ----

def test_config_files_are_valid_and_large_enough():
  for name in ("test", "demo", "paper", "countdown", "test_countdown"):
    config = config_files.load(name)
    cfg = settings.parse(config).allocator
    base = transformer.TransformerConfig(vocab_size=22, **config.model)
    large = cfg.large_model_config(base)
    assert large.max_len == base.max_len and large.d_model == cfg.large_d_model
    assert large.num_params / base.num_params >= max(4, cfg.min_param_ratio)
    if not name.startswith("test"):  # same data, as many steps as the base LM or more (§7)
      assert cfg.large_train.total_steps >= config.train.total_steps


@pytest.mark.parametrize("key, value, match", [
    ("predicted_samples", 9, r"allocator.predicted_samples=9 is invalid; it must be in \[1, "
                             r"difficulty_samples=8\]"),
    ("large_num_heads", 3, r"large_num_heads=3 is invalid; it must be a multiple of "
                           r"large_num_kv_heads=2"),
    ("r_values", (0.16, 0.0), r"r_values=\(0.16, 0.0\) is invalid"),
    ("bogus", 1, r"Unknown key\(s\) \['bogus'\] in config.allocator"),
])
def test_bad_config_is_a_clear_error(key, value, match):
  section = config_files.load("test").allocator
  section.unlock()
  section[key] = value
  with pytest.raises(ValueError, match=match):
    _allocator_cfg(section)


def test_bad_large_train_names_its_section():
  section = config_files.load("test").allocator
  section.large_train.warmup_steps = 50
  with pytest.raises(ValueError, match=r"TrainConfig.warmup_steps=50"):
    _allocator_cfg(section)


def test_too_small_larger_model_is_refused():
  cfg = _allocator_cfg()
  base = transformer.TransformerConfig(vocab_size=22, d_model=48, num_layers=2, num_heads=4,
                                       num_kv_heads=2, head_dim=12, mlp_dim=128, max_len=48)
  with pytest.raises(ValueError, match=r"1.00x the base's .*min_param_ratio=4.0x"):
    cfg.large_model_config(base)


# ---- pure parts ----

def test_strategy_table_aligns_by_question_text():
  qs = ["a", "b", "c"]
  rows = [_row("best_of_n", 4, ["c", "a", "b", "extra"], [1, 0, 1, 1]),
          _row("beam", 4, ["a", "b"], [1, 1])]
  with pytest.raises(ValueError, match=r"beam@4 lacks 1 of the 3 questions \(e.g. 'c'\)"):
    tables.strategy_table(rows, qs)
  table, skipped = tables.strategy_table(rows, qs, ("correct", "generated_tokens"),
                                         strict=False)
  np.testing.assert_array_equal(table["correct"]["best_of_n"][4], [0, 1, 1])
  assert skipped == ["beam@4"] and "beam" not in table["correct"]
  with pytest.raises(ValueError, match="appears in two rows"):
    tables.strategy_table([rows[0], rows[0]], qs)


def test_compute_optimal_summary_picks_per_bin_and_counts_predicted_samples():
  # Bin 1 (questions 0-3) is solved by A at N=4, bin 2 (4-7) by B; best-of-N needs N=16.
  q = 8
  results = {
      "best_of_n": {4: np.zeros(q), 16: np.ones(q)},
      "A": {4: np.r_[np.ones(4), np.zeros(4)], 16: np.r_[np.ones(4), np.zeros(4)]},
      "B": {4: np.r_[np.zeros(4), np.ones(4)], 16: np.r_[np.zeros(4), np.ones(4)]},
  }
  bins = np.r_[np.ones(4), 2 * np.ones(4)].astype(int)
  out = tables.compute_optimal_summary(results, bins, bins, "best_of_n", predicted_samples=4)
  json.dumps(out)  # JSON-able for summary.json
  assert out["oracle"]["accuracy"] == {"4": 1.0, "16": 1.0}
  assert out["oracle"]["choices"]["4"] == {"1": ["A", "A"], "2": ["B", "B"]}
  assert out["oracle"]["samples_ratio_vs_bon"] == 4.0  # 16 / 4
  assert out["predicted"]["samples_ratio_vs_bon"] == 2.0  # 16 / (4 + 4 scored samples)
  assert out["predicted"]["samples_ratio_vs_bon_uncounted"] == 4.0
  assert out["baseline_accuracy"] == {"4": 0.0, "16": 1.0} and out["baseline_self_ratio"] == 1.0
  # Every resample keeps each bin's questions, so the routing, curves and ratios never move.
  assert out["num_boot"] == 1000
  assert out["oracle"]["samples_ratio_vs_bon_ci"] == [4.0, 4.0]
  assert out["predicted"]["samples_ratio_vs_bon_ci"] == [2.0, 2.0]
  assert out["oracle"]["never_matched_fraction"] == 0.0
  assert out["oracle"]["accuracy_ci"] == {"4": [1.0, 1.0], "16": [1.0, 1.0]}
  assert out["baseline_accuracy_ci"] == {"4": [0.0, 0.0], "16": [1.0, 1.0]}
  assert tables.ratio_ci_text(out["oracle"]) == \
      "4.00x (95% CI 4.00x–4.00x; never matched in 0% of resamples)"
  assert tables.ratio_ci_text({"samples_ratio_vs_bon": None}) == "never matches"  # older files
  # Bins that mix the questions cannot route them: no budget-4 match.
  mixed = np.tile([1, 2], 4)
  worse = tables.compute_optimal_summary(results, mixed, mixed, "best_of_n", 4)
  assert worse["oracle"]["accuracy"]["4"] < 1.0
  lo, hi = worse["oracle"]["accuracy_ci"]["4"]
  assert lo <= worse["oracle"]["accuracy"]["4"] <= hi and lo < hi


def test_search_vs_baseline_recovers_a_known_paired_difference():
  rng = np.random.default_rng(0)
  q = 200
  base = (rng.random(q) < 0.5).astype(float)
  better = base.copy()
  better[np.flatnonzero(base == 0)[:30]] = 1.0  # right on 30 more questions: +0.15
  results = {"best_of_n": {4: base, 16: base}, "beam": {4: better, 64: better},
             "same": {4: base}}
  out = tables.search_vs_baseline(results, rng.random(q), "best_of_n", num_boot=500)
  json.dumps(out)
  assert sorted(out["strategies"]) == ["beam", "same"]
  assert list(out["strategies"]["beam"]) == ["4"]  # 64 is not shared with the baseline
  cell = out["strategies"]["beam"]["4"]["all"]
  assert cell["mean"] == 0.15 and 0 < cell["ci"][0] < 0.15 < cell["ci"][1]
  assert out["strategies"]["same"]["4"]["all"] == {"mean": 0.0, "ci": [0.0, 0.0]}
  again = tables.search_vs_baseline(results, rng.random(q), "best_of_n", num_boot=500)
  assert again["strategies"]["beam"]["4"]["all"]["ci"] == cell["ci"]  # seeded
  with pytest.raises(ValueError, match=r"pass_at_1 has shape \(3,\)"):
    tables.search_vs_baseline(results, np.ones(3), "best_of_n")


def test_search_vs_baseline_harder_half_is_strictly_below_the_median_pass_at_1():
  # pass@1 median 0.5; the two questions at the median are left out of the harder half.
  pass1 = np.array([0.1, 0.9, 0.5, 0.1, 0.9, 0.5, 0.1, 0.9])
  hard = pass1 < 0.5
  results = {"best_of_n": {4: np.zeros(8)}, "beam": {4: hard * 1.0}}
  out = tables.search_vs_baseline(results, pass1, "best_of_n", num_boot=200)
  assert out["harder_half"] == {"definition": "oracle pass@1 strictly below its median",
                                "median_pass@1": 0.5, "num_questions": 3}
  cell = out["strategies"]["beam"]["4"]
  assert cell["harder_half"] == {"mean": 1.0, "ci": [1.0, 1.0]}
  assert cell["all"]["mean"] == 0.375
  same = tables.search_vs_baseline(results, np.full(8, 0.5), "best_of_n", num_boot=10)
  assert same["harder_half"]["num_questions"] == 0
  assert same["strategies"]["beam"]["4"]["harder_half"] is None


def test_applied_strategy_uses_the_other_folds_choice():
  q = 8
  results = {"best_of_n": {4: np.zeros(q)},
             "A": {4: np.r_[np.ones(4), np.zeros(4)]}, "B": {4: np.r_[np.zeros(4), np.ones(4)]}}
  bins = np.r_[np.ones(4), 2 * np.ones(4)].astype(int)
  assert tables.applied_strategy(results, bins, "best_of_n")[4] == ["A"] * 4 + ["B"] * 4


def test_flops_matched_budget_follows_the_exchange_formula():
  q = 4
  qs = [str(i) for i in range(q)]
  # Best-of-N spends 10 tokens per generation and its verifier scores as many.
  rows = [_row("best_of_n", n, qs, [n >= 16] * q) for n in (1, 4, 16, 64)]
  table, _ = tables.strategy_table(rows, qs, ("correct", "generated_tokens", "verifier_tokens"))
  large = {"num_params": 4000, "greedy_correct": [1, 0, 1, 0], "pass@1": [0.5] * 4,
           "greedy_tokens": [10] * 4}
  out = tables.flops_matched(table, np.ones(q, int), large, n_small=1000, n_verifier=1000,
                             d_pretrain=1e6, r_values=(0.16, 0.79, 22.0))
  json.dumps(out)
  by = {(r["variant"], r["r"]): r for r in out["table"]}
  # M = 4: k = 4 + 9/R generations of 10 tokens -> 60.25, 15.39, 4.41.
  for r, want in ((0.16, 16), (0.79, 4), (22.0, 4)):
    row = by[("policy", r)]
    assert row["multiplier"] == pytest.approx(4 + 9 / r, rel=1e-3)
    assert row["matched_budget"] == want, row
  # Counting the verifier doubles the spend per generation: budgets halve (4 fits k=15.4/2).
  assert by[("policy+verifier", 0.16)]["matched_budget"] == 16
  assert by[("policy+verifier", 0.79)]["matched_budget"] == 4
  assert by[("policy+verifier", 22.0)]["matched_budget"] == 1
  assert by[("policy", 0.16)]["small_accuracy"] == 1.0
  assert by[("policy", 22.0)]["small_accuracy"] == 0.0
  assert out["per_bin"]["large_greedy"] == {"1": 0.5}
  assert out["per_bin"]["small_matched"]["policy"]["0.16"] == {"budget": 16,
                                                               "small": {"1": 1.0}}
  # A larger model answering with fewer tokens leaves no budget that fits.
  # A verifier 3x the policy's size: 10 + 30 token-equivalents per generation, so k / 4
  # generations fit: 15.06 at R = 0.16 (budget 4 of 16), 1.10 at R = 22 (budget 1).
  big = tables.flops_matched(table, np.ones(q, int), large, n_small=1000, n_verifier=3000,
                             d_pretrain=1e6, r_values=(0.16, 22.0))
  by_big = {(r["variant"], r["r"]): r for r in big["table"]}
  assert by_big[("policy+verifier", 0.16)]["multiplier"] == pytest.approx((4 + 9 / .16) / 4,
                                                                         rel=1e-3)
  assert by_big[("policy+verifier", 0.16)]["matched_budget"] == 4
  assert by_big[("policy", 0.16)]["matched_budget"] == 16  # the policy variant is unchanged
  tiny = dict(large, greedy_tokens=[0.1] * 4)
  none = tables.flops_matched(table, np.ones(q, int), tiny, n_small=1000, n_verifier=1000,
                              d_pretrain=1e6, r_values=(22.0,))
  assert none["table"][0]["matched_budget"] is None and not none["per_bin"]["small_matched"]


def test_bins_summary_uses_the_first_predicted_samples():
  correct = np.asarray([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
  # The first two scores rank the questions like their pass@1; the last two reverse them.
  scores = np.asarray([[.9, .9, .0, .0], [.6, .6, .3, .3], [.1, .1, .9, .9], [.3, .3, .6, .6]])
  out = tables.bins_summary(list("abcd"), [1, 1, 2, 2], correct, scores, 2, num_bins=4)
  assert out["oracle_bins"] == [1, 2, 4, 3]
  assert out["predicted_bins"] == out["oracle_bins"] and out["agreement"]["exact"] == 1.0
  reversed_ = tables.bins_summary(list("abcd"), [1, 1, 2, 2], correct, scores[:, ::-1], 2, 4)
  assert reversed_["agreement"]["spearman"] < 0
  with pytest.raises(ValueError, match=r"predicted_samples=5 must be in \[1, S=4\]"):
    tables.bins_summary(list("abcd"), [1] * 4, correct, scores, 5, 4)


def test_pretrain_tokens_counts_non_pad_tokens():
  arrays = {"tokens": np.asarray([[1, 5, 6, 0], [1, 5, 0, 0]])}
  cfg = trainer.TrainConfig(total_steps=10, batch_size=4, warmup_steps=1)
  assert batches.pretrain_tokens(arrays["tokens"], 0, cfg.total_steps,
                                 cfg.batch_size) == 10 * 4 * 2.5


# ---- the stages on a run (configs/test.py) ----

@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """A run through the search stage: its `Run` and the stage outputs the allocator takes."""
  from ttc_jax.pipeline.stages import base_lm
  from ttc_jax.pipeline.stages import data as data_stage
  from ttc_jax.pipeline.stages import prm_labels
  from ttc_jax.pipeline.stages import search
  from ttc_jax.pipeline.stages import verifiers as verifiers_stage
  r = state.Run.create(_config(tmp_path_factory.mktemp("alloc")))
  data = data_stage.run(r)
  lm = base_lm.run(r, data)
  labels = prm_labels.run(r, data, lm)
  verifiers = verifiers_stage.train(r, data, lm, labels)  # no verifier eval: difficulty samples anew
  search.run(r, data, lm, verifiers)
  return types.SimpleNamespace(r=r, data=data, lm=lm, verifiers=verifiers)


def _one_line_error(excinfo, stage):
  """A missing input names, in one line, the stage (module) to run first."""
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  assert f"run the {stage!r} stage first (ttc_jax.pipeline.stages.{stage})" in msg, msg


@pytest.mark.slow
def test_stages_write_their_outputs_and_rerun_skips(job, tmp_path):
  r, data, lm, verifiers = job.r, job.data, job.lm, job.verifiers
  cfg = _allocator_cfg()
  assert r.settings.allocator == cfg
  examples = common.search_examples(r, data)
  rows = common.search_rows(r, examples)
  assert {(row["cell"]["strategy"], row["cell"]["budget"]) for row in rows} == {
      ("best_of_n", 1), ("best_of_n", 4), ("beam/beam_width=2", 4)}
  # A stage whose input file is missing names the stage to run first, in one line.
  with pytest.raises(ValueError, match=r"difficulty.json does not exist; run the 'allocator' "
                                       r"stage first") as excinfo:
    report.run(r, data)
  _one_line_error(excinfo, "allocator")
  fresh = state.Run.create(_config(tmp_path / "fresh"))
  with pytest.raises(ValueError, match=r"search.jsonl does not exist; run the 'search' "
                                       r"stage first") as excinfo:
    common.search_rows(fresh, examples)
  _one_line_error(excinfo, "search")

  large = larger_model.run(r, data)
  q = r.settings.search.num_questions
  assert large["param_ratio"] >= 4 and len(large["greedy_correct"]) == q
  assert all(0 <= p <= 1 for p in large["pass@1"]) and min(large["greedy_tokens"]) >= 1
  assert os.path.isdir(os.path.join(r.workdir, "checkpoints", "larger_lm", "10"))

  diff = allocator.difficulty_bins(r, data, lm, verifiers)
  assert diff["samples_from"] == "sampled"  # no verifier_samples.npz in this run
  with np.load(os.path.join(r.workdir, "difficulty.npz")) as f:
    assert f["correct"].shape == f["final_scores"].shape == (q, cfg.difficulty_samples)
    np.testing.assert_allclose(diff["pass@1"], f["correct"].mean(1), atol=1e-4)
    assert ((f["final_scores"] >= 0) & (f["final_scores"] <= 1)).all()
  assert len(diff["oracle_bins"]) == len(diff["predicted_bins"]) == q

  # A revision row for only some questions is skipped and listed, not misaligned.
  qs = [e.question for e in examples]
  assert len(qs) == q
  rev = [_row("revisions/seq_length=2", 4, qs, [1] * q), _row("revisions/seq_length=4", 4,
                                                                   qs[:2], [1, 1])]
  strategy, skipped = tables.merged(qs, rows, rev, allocator.FIELDS, cfg.baseline)
  opt = allocator.allocate(r, diff, strategy, skipped)
  assert opt["skipped_rows"] == ["revisions/seq_length=4@4"]
  assert "revisions/seq_length=2" in opt["strategies"]
  assert opt["oracle"]["in_sample_accuracy"]["4"] == 1.0  # the always-right revision wins
  summary = json.load(open(os.path.join(r.workdir, "summary.json")))
  assert summary["compute_optimal"]["oracle"]["samples_ratio_vs_bon"] == \
      opt["oracle"]["samples_ratio_vs_bon"]
  assert "samples_ratio_vs_bon" in summary["compute_optimal"]["predicted"]
  for name in ("oracle", "predicted"):
    entry = summary["compute_optimal"][name]
    assert {"samples_ratio_vs_bon_ci", "never_matched_fraction", "accuracy_ci"} <= set(entry)
    assert set(entry["accuracy_ci"]) == set(entry["accuracy"])
  assert set(summary["compute_optimal"]["baseline_accuracy_ci"]) == \
      set(summary["compute_optimal"]["baseline_accuracy"])
  paired = summary["compute_optimal"]["search_vs_baseline"]
  assert paired["baseline"] == cfg.baseline and paired["num_questions"] == q
  assert set(paired["strategies"]) == set(opt["strategies"]) - {cfg.baseline}
  assert set(paired["strategies"]["beam/beam_width=2"]["4"]) == {"all", "harder_half"}

  # The report needs flops.json too.
  with pytest.raises(ValueError, match=r"flops.json does not exist") as excinfo:
    report.run(r, data)
  _one_line_error(excinfo, "allocator")
  fl = allocator.flops_exchange(r, diff, large, strategy, skipped, r.model_cfg.num_params)
  assert fl["n_verifier"] == r.model_cfg.num_params
  assert fl["skipped_rows"] == ["revisions/seq_length=4@4"]
  assert {(row["variant"], row["r"]) for row in fl["table"]} == {
      (v, rv) for v in ("policy", "policy+verifier") for rv in flops.PAPER_R_VALUES}
  assert "flops" in json.load(open(os.path.join(r.workdir, "summary.json")))

  report_path = report.run(r, data)
  text = open(report_path).read()
  for name in ("accuracy_vs_budget", "difficulty_bars", "compute_optimal_vs_bon"):
    assert f"figures/{name}.png" in text
    assert os.path.getsize(os.path.join(r.workdir, "figures", name + ".png")) > 1000
    assert os.path.exists(os.path.join(r.workdir, "figures", name + ".csv"))
  assert "fewer samples" in text and "FLOPs exchange" in text
  assert "(95% CI " in text and "of resamples)" in text
  assert "Strategies vs best_of_n, question by question" in text

  # Rerun: the compute stages are skipped (same JSON, no new training metrics).
  metrics = open(r.metrics_path).read()
  assert larger_model.run(r, data) == large
  assert allocator.difficulty_bins(r, data, lm, verifiers) == diff
  assert open(r.metrics_path).read() == metrics
  changed = _allocator_cfg(difficulty_samples=4, predicted_samples=2)
  rerun = dataclasses.replace(r, settings=dataclasses.replace(r.settings, allocator=changed))
  with pytest.raises(ValueError, match=r"holds 8 samples per question but "
                                       r"allocator.difficulty_samples=4"):
    allocator.difficulty_bins(rerun, data, lm, verifiers)


# ---- the notebook ----

def _code_cells(path):
  with open(path) as f:
    nb = json.load(f)
  return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(job, tmp_path, monkeypatch):
  """colabs/demo.ipynb, on a copy of the fixture's workdir (finished stages are skipped).

  Executed with nbclient when installed, else its code cells in order in one namespace.
  """
  import shutil
  workdir = tmp_path / "nb"
  shutil.copytree(job.r.workdir, workdir)
  # The fixture ran its stages directly, not as a job: say what made them, as a job's
  # config.json does (the job checks a workdir without provenance against it).
  (workdir / "config.json").write_text(_config(workdir).to_json_best_effort(indent=2))
  monkeypatch.setenv("TTC_DEMO_WORKDIR", str(workdir))
  monkeypatch.setenv("TTC_DEMO_SEARCH", json.dumps(SEARCH))
  path = os.path.join(ROOT, "colabs", "demo.ipynb")
  try:
    import nbclient
    import nbformat
  except ImportError:
    namespace = {"__name__": "__main__"}
    for source in _code_cells(path):
      exec(compile(source, path, "exec"), namespace)  # pylint: disable=exec-used
  else:
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": ROOT}}).execute()
  assert os.path.exists(workdir / "report.md")
  summary = json.load(open(workdir / "summary.json"))
  assert "samples_ratio_vs_bon" in summary["compute_optimal"]["oracle"]


def test_revision_rows_per_question():
  from ttc_jax import testing
  from ttc_jax.revisions import sequential
  from ttc_jax.tasks import chain_arithmetic
  from ttc_jax.tokenizers.char import CharTokenizer
  rev_cfg = settings.parse(config_files.load("test")).revisions
  task, tok = testing.chain_task(), CharTokenizer(chain_arithmetic.ALPHABET)
  examples = [_example("1+2", 1), _example("5-3", 2)]
  lengths = rev_cfg.chain_lengths
  rows = [(p, c, t) for p in range(2) for c, n in enumerate(lengths) for t in range(n)]
  problem, chain, step = (np.asarray(x) for x in zip(*rows))
  # Every attempt of question 0 answers 3 (right), of question 1 answers 7 (wrong): 5 tokens
  # each (the answer line and EOS); answers are read from the tokens by the task.
  attempt = {p: tok.encode(f"A:{a}\n", eos=True) for p, a in ((0, 3), (1, 7))}
  assert {len(a) for a in attempt.values()} == {5}
  arrays = {"problem": problem, "chain": chain, "step": step,
            "tokens": np.asarray([attempt[int(p)] for p in problem], np.int32),
            "lengths": np.full(len(rows), 5), "orm": np.full(len(rows), 0.5)}
  grids = sequential.attempt_grids(arrays, lengths, examples, task, tok)
  out = tables.revision_rows(grids, examples, task, rev_cfg.budgets, rev_cfg.seq_lengths,
                             lengths)
  cells = {(r["cell"]["strategy"], r["cell"]["budget"]) for r in out}
  assert ("revisions/seq_length=2,selection=orm_hierarchical", 4) in cells
  assert ("revisions/seq_length=8,selection=majority", 8) in cells
  assert ("revisions/seq_length=8,selection=majority", 4) not in cells  # s > N
  for r in out:
    n = r["cell"]["budget"]
    assert r["correct"] == [1.0, 0.0] and r["generated_tokens"] == [5.0 * n] * 2
    want = 0.0 if r["cell"]["strategy"].endswith("majority") else 5.0 * n
    assert r["verifier_tokens"] == [want] * 2
  table, _ = tables.strategy_table(out, ["5-3", "1+2"])
  assert table["correct"]["revisions/seq_length=1,selection=majority"][4].tolist() == [0, 1]


def test_difficulty_reuses_the_verifier_samples_only_when_they_suffice(tmp_path):
  """`verifier_samples.npz` rows are matched by question text; too few samples, a missing
  question or another temperature mean new samples (None)."""
  config = _config(tmp_path)
  config.allocator = dict(config.allocator, difficulty_samples=2, predicted_samples=1)
  r = state.Run.create(config)  # validates, builds nothing that costs compute
  with_cfg = lambda **kw: dataclasses.replace(r, settings=dataclasses.replace(
      r.settings, allocator=_allocator_cfg(**kw)))
  examples = [_example(q, 1) for q in ("1+2", "3-1")]
  assert allocator._verifier_samples(r, examples) is None  # no file yet
  np.savez(tmp_path / artifacts.VERIFIER_SAMPLES, question=np.asarray(["3-1", "9+9", "1+2"]),
           correct=np.asarray([[1, 0, 1], [0, 0, 0], [1, 1, 0]], bool),
           prm_final=np.asarray([[.5, .1, .7], [0, 0, 0], [.9, .8, .2]], np.float32),
           generated_tokens=np.asarray([[5, 6, 7], [1, 1, 1], [8, 9, 10]], np.int32))
  correct, final, gen = allocator._verifier_samples(r, examples)
  np.testing.assert_array_equal(correct, [[1, 1], [1, 0]])
  np.testing.assert_allclose(final, [[.9, .8], [.5, .1]])
  np.testing.assert_array_equal(gen, [[8, 9], [5, 6]])
  more = with_cfg(difficulty_samples=4, predicted_samples=1)
  assert allocator._verifier_samples(more, examples) is None
  colder = with_cfg(difficulty_samples=2, predicted_samples=1, temperature=0.5)
  assert allocator._verifier_samples(colder, examples) is None
  other = [_example("2+2", 1)]
  assert allocator._verifier_samples(r, other) is None
