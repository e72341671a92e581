"""The whole job on real-model code paths: MATH-500 data, a BPE tokenizer, pretrained (tiny,
random) Qwen2 checkpoints for the policy and the larger model, and an open PRM
(configs/test_math.py; README, "Run on your own model")."""

import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
import config_files  # pylint: disable=g-import-not-at-top

from ttc_jax import pipeline, testing  # pylint: disable=g-import-not-at-top
from ttc_jax.models import convert  # pylint: disable=g-import-not-at-top
from ttc_jax.pipeline import settings  # pylint: disable=g-import-not-at-top
from ttc_jax.pipeline import state  # pylint: disable=g-import-not-at-top
from ttc_jax.pipeline.stages import data as data_stage  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
  return testing.write_math_fixtures(str(tmp_path_factory.mktemp("math_fixtures")))


def _config(fixtures, workdir, **prm):
  c = config_files.load("test_math")
  c.workdir = str(workdir)
  c.task.manual_dir = fixtures["math500"]
  c.policy.checkpoint = fixtures["policy"]
  c.allocator.large_checkpoint = fixtures["larger"]
  c.prm.update(prm)
  return c


@pytest.mark.slow
def test_the_whole_job_runs_on_pretrained_checkpoints_and_an_open_prm(fixtures, tmp_path):
  summary = pipeline.run(_config(fixtures, tmp_path / "run", checkpoint=fixtures["prm"],
                                 format="qwen_prm"))
  assert {"bon", "search", "revisions", "compute_optimal", "flops"} <= set(summary)
  ran = lambda *p: os.path.exists(tmp_path.joinpath("run", *p))
  assert not ran("checkpoints", "base_lm") and not ran("checkpoints", "larger_lm")
  assert not ran("checkpoints", "prm") and ran("checkpoints", "orm") and ran("report.md")
  with open(tmp_path / "run" / "search.jsonl") as f:
    cells = [json.loads(line) for line in f]
  assert {c["cell"]["strategy"] for c in cells} >= {"best_of_n", "beam/beam_width=2"}
  assert all(sum(c["verifier_tokens"]) > 0 for c in cells)
  with open(tmp_path / "run" / "flops.json") as f:
    flops = json.load(f)
  with open(os.path.join(fixtures["prm"], "config.json")) as f:
    hf = json.load(f)
  trunk = convert.config_from_hf({**hf, "architectures": [], "tie_word_embeddings": True})
  d = hf["hidden_size"]
  assert flops["n_verifier"] == trunk.num_params + d * d + d + 2 * d + 2  # trunk + score head


def test_the_run_uses_the_checkpoints_architecture_and_tokenizer(fixtures, tmp_path):
  r = state.Run.create(_config(fixtures, tmp_path / "run"))
  with open(os.path.join(fixtures["policy"], "config.json")) as f:
    hf = json.load(f)
  assert (r.model_cfg.d_model, r.model_cfg.vocab_size, r.model_cfg.qkv_bias) == (
      hf["hidden_size"], hf["vocab_size"], True)
  assert r.model_cfg.max_len == 96  # config.model.max_len
  assert r.tokenizer.eos_id == hf["eos_token_id"] and r.task.name == "math"
  assert r.tokenizer.step_ids("\n\n")
  data = data_stage.run(r)  # policy.chat_template: prompts are the template's user turns
  assert all(e.prompt.startswith("<|im_start|>user\nProblem: ") and
             e.prompt.endswith("<|im_start|>assistant\n") for e in data.train + data.test)


@pytest.mark.parametrize("change, match", [
    (dict(model=dict(max_len=96, d_model=64)), r"config.model sets \['d_model'\], but "
                                               r"policy.checkpoint=.* fixes the architecture"),
    (dict(tokenizer=dict(name="char")), "config.tokenizer is 'char' but policy.checkpoint="),
    (dict(policy=dict(pretrain_tokens=0)), r"policy.pretrain_tokens=0 is invalid; it must be "
                                           r">= 1 with a checkpoint"),
    (dict(allocator=dict(large_pretrain_tokens=0)), "allocator.large_pretrain_tokens=0 is "
                                                    "invalid"),
    (dict(allocator=dict(large_checkpoint="")), "policy.checkpoint is a pretrained model, so the "
                                                "larger model .* must be one too"),
    (dict(policy=dict(checkpoint="gs://bucket/qwen")), r"config.policy.checkpoint='gs://bucket/"
                                                       r"qwen' is not on local disk; .* copy it"),
    (dict(prm=dict(checkpoint="PRM", format="math_shepherd")),
     r"is a \['Qwen2ForProcessRewardModel'\] checkpoint; format 'math_shepherd' reads"),
    (dict(prm=dict(checkpoint="PRM", format="qwen")), r"prm.format='qwen' is invalid; it must "
                                                      r"be one of \['math_shepherd', 'qwen_prm'"),
])
def test_checkpoint_mistakes_are_clear_errors(fixtures, tmp_path, change, match):
  c = _config(fixtures, tmp_path / "run")
  for section, values in change.items():
    if section in ("model", "tokenizer"):
      c[section] = type(c.model)(values)
    else:
      c[section].update({k: fixtures["prm"] if v == "PRM" else v for k, v in values.items()})
  with pytest.raises(ValueError, match=match):
    state.Run.create(c)
  assert not os.path.exists(tmp_path / "run" / "data")


def test_math500_config_parses_with_real_paths(fixtures):
  c = config_files.load("math500")
  c.policy.checkpoint = c.prm.checkpoint = fixtures["policy"]
  c.allocator.large_checkpoint = fixtures["larger"]
  parsed = settings.parse(c)
  assert parsed.search.budgets[-1] == 256 and parsed.prm.format == "qwen_prm"
  assert parsed.allocator.num_bins == 5 and parsed.policy.param_dtype == "bfloat16"
