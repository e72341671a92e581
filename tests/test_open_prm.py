"""Open PRMs (Qwen2.5-Math-PRM, Math-Shepherd, RLHFlow): step scores match a transformers
reference run on each authors' documented input, incremental scoring matches the full pass,
search runs end to end with them, and bad inputs fail with one clear error.

Each reference is a tiny random model of the real class (Qwen2Model + the two-class torch
head; MistralForCausalLM; LlamaForCausalLM) fed the authors' text format tokenized by
transformers as their model cards do; ours sees the policy's token ids. Steps start with
digits, so joint and piecewise tokenization agree (see models/open_prm.py, deviations).
"""

from __future__ import annotations

import dataclasses
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

from ttc_jax import testing  # pylint: disable=g-import-not-at-top
from ttc_jax.models import open_prm as prm_lib  # pylint: disable=g-import-not-at-top
from ttc_jax.models import transformer  # pylint: disable=g-import-not-at-top
from ttc_jax.sampling.sampler import Sampler  # pylint: disable=g-import-not-at-top
from ttc_jax.search import base, open_prm  # pylint: disable=g-import-not-at-top
from ttc_jax.tokenizers import base as tok_base  # pylint: disable=g-import-not-at-top
from ttc_jax.tokenizers.hf import HFTokenizer  # pylint: disable=g-import-not-at-top

ATOL = 1e-4
TASK = testing.chain_task()
DELIM = TASK.step_delimiter  # "\n"
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")  # Llama 3 / Qwen2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>", "<|begin_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
TEMPLATES = {  # Qwen2.5's and Llama 3's chat formats, reduced to what the formats use
    "qwen_prm": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}"),
    "rlhflow": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
                "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>"
                "\n\n{% endif %}"),
    "math_shepherd": None,
}
CLASSES = {"qwen_prm": "Qwen2Config", "math_shepherd": "MistralConfig",
           "rlhflow": "LlamaConfig"}
QUESTIONS = ["What is 12 + 3 then times 2?", "Compute 7 * 6 minus 2."]
SOLUTIONS = [["12 + 3 = 15", "15 * 2 = 30", "30"], ["7 * 6 = 42", "42 - 2 = 40"]]


# ---- a tiny tokenizer, checkpoints and the authors' reference scoring ----

def _bpe(vocab_size=400, seed=0):
  rng = random.Random(seed)
  corpus = [f"Step {rng.randint(1, 9)}: {rng.randint(0, 99)} + {rng.randint(0, 99)} = "
            f"{rng.randint(0, 199)} ки\nWhat is the answer? Compute times minus then.\n\n"
            for _ in range(300)]
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                special_tokens=SPECIALS,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(corpus, trainer)
  tok.add_tokens(["ки"])  # Math-Shepherd's step tag: one token, as in its vocabulary
  return tok


def _save_tokenizer(path, fmt, vocab_size=400, seed=0):
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=_bpe(vocab_size, seed), bos_token="<|begin_of_text|>",
      eos_token="<|endoftext|>")
  if TEMPLATES[fmt]:
    fast.chat_template = TEMPLATES[fmt]
  fast.save_pretrained(path)
  return fast


class TorchQwenPRM(torch.nn.Module):
  """Qwen2ForProcessRewardModel's layout: `model` (Qwen2Model) + `score` two-class head."""

  def __init__(self, config):
    super().__init__()
    h = config.hidden_size
    self.model = transformers.Qwen2Model(config)
    self.score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(),
                                     torch.nn.Linear(h, 2))

  def forward(self, ids):
    return self.score(self.model(ids).last_hidden_state)


def _randomize(model, seed):
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.5 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.normal_(0.0, 0.5)
      else:
        p.normal_(0.0, 0.2)
  return model.float().eval()


def _save_model(path, fmt, vocab, seed=0, head=True):
  config = getattr(transformers, CLASSES[fmt])(
      vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
      rms_norm_eps=1e-5)
  if fmt != "qwen_prm":
    model = _randomize(transformers.AutoModelForCausalLM.from_config(config), seed)
    model.save_pretrained(path, safe_serialization=True)
    return model
  model = _randomize(TorchQwenPRM(config), seed)
  tensors = {k: v.contiguous() for k, v in model.state_dict().items()
             if head or not k.startswith("score.")}
  save_file(tensors, str(path / "model.safetensors"))
  config.architectures = ["Qwen2ForProcessRewardModel"]
  config.save_pretrained(path)
  return model


def _reference(fmt, model, hf_tok, question, steps):
  """Step probabilities by the authors' documented code (model cards), on their text."""
  enc = lambda t: hf_tok(t, add_special_tokens=False)["input_ids"]
  if fmt == "qwen_prm":
    msgs = [{"role": "system", "content": prm_lib.QWEN_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    ids = enc(hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False))
    with torch.no_grad():
      probs = model(torch.tensor([ids]))[0].softmax(-1)[:, 1].numpy()
    return probs[np.array(ids) == enc("<extra_0>")[0]]
  if fmt == "math_shepherd":
    text = f"{question} " + "".join(f"{s} ки\n" for s in steps)
    ids = [hf_tok.bos_token_id] + enc(text)
    at = np.array(ids) == enc("ки")[-1]
  else:
    conv = []
    for k, s in enumerate(steps):
      conv += [{"role": "user", "content": f"{question} {s}" if k == 0 else s},
               {"role": "assistant", "content": "+"}]
    ids = enc(hf_tok.apply_chat_template(conv, tokenize=False))
    plus, eot = enc("+")[-1], enc("<|eot_id|>")[0]
    at = np.zeros(len(ids), bool)  # the position predicting each assistant "+"
    at[:-2] = (np.array(ids[1:-1]) == plus) & (np.array(ids[2:]) == eot)
  cand = [enc("+")[-1], enc("-")[-1]]
  with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0][:, cand]
  return logits.softmax(-1)[:, 0].numpy()[at]


@pytest.fixture(scope="module", params=list(CLASSES))
def case(request, tmp_path_factory):
  """(format, checkpoint dir, policy tokenizer, HF tokenizer, torch reference model)."""
  fmt = request.param
  path = tmp_path_factory.mktemp(fmt)
  hf_tok = _save_tokenizer(path, fmt)
  tok = HFTokenizer.from_dir(path)
  model = _save_model(path, fmt, tok.vocab_size)
  return fmt, path, tok, hf_tok, model


def _policy_rows(tok):
  """Policy prompts and rows (prompt + steps joined by the task's delimiter + EOS)."""
  prompts = [tok.encode(f"Q: {q}\nA:\n", bos=True) for q in QUESTIONS]
  sols = [tok.encode("".join(s + DELIM for s in steps)) + [tok.eos_id] for steps in SOLUTIONS]
  width = max(len(p) + len(s) for p, s in zip(prompts, sols)) + 3
  rows = np.full((len(prompts), width), tok.pad_id, np.int32)
  for i, (p, s) in enumerate(zip(prompts, sols)):
    rows[i, :len(p) + len(s)] = p + s
  prompt_len = np.array([len(p) for p in prompts])
  ends = tok_base.find_step_ends(rows, tok, DELIM, prompt_len)
  return prompts, rows, ends, prompt_len, np.array([len(s) for s in sols])


def _verifier(case):
  fmt, path, tok, _, _ = case
  prompts = _policy_rows(tok)[0]
  return open_prm.from_checkpoint(path, fmt, tok, prompts, QUESTIONS)


# ---- parity ----

def test_full_pass_matches_the_authors_reference(case):
  fmt, _, tok, hf_tok, model = case
  verifier = _verifier(case)
  _, rows, ends, prompt_len, lengths = _policy_rows(tok)
  assert [int((e >= 0).sum()) for e in ends] == [len(s) for s in SOLUTIONS]
  vrows, vends, count = verifier.score_rows(rows, ends, prompt_len, lengths)
  ours = np.asarray(verifier.step_scores(jnp.asarray(vrows), jnp.asarray(vends)))
  for i, (q, steps) in enumerate(zip(QUESTIONS, SOLUTIONS)):
    ref = _reference(fmt, model, hf_tok, q, steps)
    assert len(ref) == len(steps)
    assert ref.std() > 1e-3  # scores differ between steps: a wrong position would show
    np.testing.assert_allclose(ours[i, :len(steps)], ref, atol=ATOL, rtol=0)
  assert (ours[ends < 0] == 0).all()
  assert (count > prompt_len).all()


def test_incremental_scoring_matches_the_full_pass(case):
  _, _, tok, _, _ = case
  verifier = _verifier(case)
  prompts, rows, ends, prompt_len, lengths = _policy_rows(tok)
  vrows, vends, _ = verifier.score_rows(rows, ends, prompt_len, lengths)
  full = np.asarray(verifier.step_scores(jnp.asarray(vrows), jnp.asarray(vends)))
  toks, lens = _policy_rows(tok)[1][:, :1], np.array([len(p) for p in prompts])
  vtoks, vlens, slots = verifier.search_prompts(prompts, toks, lens, rows.shape[1], 16, 8)
  state = verifier.prefill(jnp.asarray(vtoks), jnp.asarray(vlens), slots)
  assert (np.asarray(state.positions) == [len(verifier.prefix(p)) for p in prompts]).all()
  starts = prompt_len.copy()
  for s in range(ends.shape[1]):
    block = np.zeros((len(rows), 16), np.int32)  # wider than any step: padding is ignored
    new = np.zeros(len(rows), np.int32)
    for b in range(len(rows)):
      if ends[b, s] >= 0:
        step = rows[b, starts[b]:ends[b, s] + 1]
        block[b, :len(step)], new[b] = step, len(step)
        starts[b] = ends[b, s] + 1
    before = np.asarray(state.positions)
    state, logit = verifier.extend(state, jnp.asarray(block), jnp.asarray(new))
    got = np.asarray(jax.nn.sigmoid(logit))
    for b in range(len(rows)):
      if new[b]:
        np.testing.assert_allclose(got[b], full[b, s], atol=ATOL, rtol=0)
      else:
        assert np.asarray(state.positions)[b] == before[b]  # no step: nothing encoded
  assert not np.asarray(state.overflow).any()
  # The rows end where the full pass's rows do, plus the trailing next prefix.
  _, _, count = verifier.score_rows(rows, ends, prompt_len, lengths)
  assert (np.asarray(state.positions) == count + len(verifier.spec.next_prefix)).all()


def test_empty_step_keeps_the_previous_score(case):
  """A step of EOS (or whitespace) alone encodes nothing and scores as the step before."""
  _, _, tok, _, _ = case
  verifier = _verifier(case)
  prompts = _policy_rows(tok)[0]
  toks = np.zeros((2, 1), np.int32)
  vtoks, vlens, slots = verifier.search_prompts(prompts, toks, np.array([9, 9]), 40, 8, 4)
  state = verifier.prefill(jnp.asarray(vtoks), jnp.asarray(vlens), slots)
  step = tok.encode("12 + 3 = 15" + DELIM)
  block = np.zeros((2, 8), np.int32)
  block[:, :len(step)] = step
  state, first = verifier.extend(state, jnp.asarray(block), jnp.full((2,), len(step)))
  pos = np.asarray(state.positions)
  empty = np.zeros((2, 8), np.int32)
  empty[0, 0], empty[1, :2] = tok.eos_id, tok.encode(DELIM * 2)[:1] * 2
  state, again = verifier.extend(state, jnp.asarray(empty), jnp.array([1, 2]))
  np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
  np.testing.assert_array_equal(np.asarray(state.positions), pos)


# ---- search end to end ----

def test_beam_and_best_of_n_run_with_the_open_verifier(case):
  _, _, tok, _, _ = case
  verifier = _verifier(case)
  prompts = _policy_rows(tok)[0]
  cfg = transformer.TransformerConfig(vocab_size=tok.vocab_size, d_model=32, num_layers=1,
                                      num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64,
                                      max_len=64)
  graphdef, state = transformer.create(cfg, seed=3)
  policy = base.Policy(Sampler.for_transformer(graphdef, cfg, tok, DELIM), state, tok, TASK)
  config = base.SearchConfig(beam_width=2, max_rounds=3, max_step_tokens=8, max_len=48)
  prefix = np.array([len(verifier.prefix(p)) for p in prompts])
  over = verifier.spec.overhead

  res = base.get("beam")(prompts, policy, verifier, 4, config, jax.random.key(0))
  assert (res.samples > 0).all() and (res.budget_used <= 4).all()
  assert (res.verifier_tokens > prefix).all()
  assert (res.verifier_tokens <= prefix + res.generated_tokens + res.samples * over).all()
  for per_step, scores in zip(res.step_scores, res.scores):
    done = per_step[~np.isnan(per_step)]
    assert done.size and ((done > 0) & (done < 1)).all() and np.isfinite(scores).all()

  # One round: the pool is every row's first step, so the count is exact.
  one = dataclasses.replace(config, max_rounds=1)
  res = base.get("beam")(prompts, policy, verifier, 4, one, jax.random.key(2))
  kept = [len(prm_lib._keep(verifier.spec, t[:n]))  # pylint: disable=protected-access
          for ts, ls in zip(res.tokens, res.lengths) for t, n in zip(ts, ls)]
  per_row = np.array([k + over * (k > 0) for k in kept]).reshape(-1, 4).sum(1)
  np.testing.assert_array_equal(res.verifier_tokens, prefix + per_row)

  res = base.get("best_of_n")(prompts, policy, verifier, 4, config, jax.random.key(1))
  assert (res.samples == 4).all()
  # Exactly the PRM rows' tokens: its prompt, the kept step tokens and the format's.
  rows = [np.concatenate([p, t[:n]]) for p, ts, ls in zip(prompts, res.tokens, res.lengths)
          for t, n in zip(ts, ls)]
  width = max(map(len, rows))
  padded = np.stack([np.pad(r, (0, width - len(r)), constant_values=tok.pad_id) for r in rows])
  plen = np.repeat([len(p) for p in prompts], 4)
  ends = tok_base.find_step_ends(padded, tok, DELIM, plen)
  vrows, vends, count = verifier.score_rows(padded, ends, plen, np.concatenate(res.lengths))
  np.testing.assert_array_equal(res.verifier_tokens, count.reshape(-1, 4).sum(1))
  full = np.asarray(verifier.step_scores(jnp.asarray(vrows), jnp.asarray(vends)))
  assert (ends >= 0).any()  # some steps were scored
  for q, per_step in enumerate(res.step_scores):  # the PRM's rows were scored, not the policy's
    want = np.where(ends[4 * q:4 * q + 4] >= 0, full[4 * q:4 * q + 4], np.nan)
    np.testing.assert_allclose(per_step, want[:, :per_step.shape[1]], atol=ATOL)
    done = per_step[~np.isnan(per_step)]
    assert ((done > 0) & (done < 1)).all()


# ---- clear errors ----

def test_unknown_format_name():
  with pytest.raises(ValueError, match=r"Unknown open PRM format 'qwen'; choose one of "
                     r"\['math_shepherd', 'qwen_prm', 'rlhflow'\]"):
    prm_lib.get_format("qwen")


def test_vocab_mismatch_is_refused(case, tmp_path):
  fmt, path, tok, _, _ = case
  _save_tokenizer(tmp_path, fmt, vocab_size=360, seed=1)  # another vocabulary
  for name in ("config.json", "model.safetensors"):
    (tmp_path / name).write_bytes((path / name).read_bytes())
  with pytest.raises(ValueError, match=r"The PRM's tokenizer at .* differs from the policy's "
                     r"in \d+ tokens.*must share the policy's vocabulary"):
    open_prm.from_checkpoint(tmp_path, fmt, tok)
  small = tmp_path / "small"
  small.mkdir()
  _save_model(small, fmt, vocab=tok.vocab_size - 20)
  with pytest.raises(ValueError, match=r"embeds only \d+; an open PRM must share the policy's"):
    open_prm.from_checkpoint(small, fmt, tok)


def test_format_tokens_missing_from_the_vocabulary_are_refused(case):
  _, _, tok, _, _ = case
  with pytest.raises(ValueError, match=r"does not end in the id of .*must share the policy"):
    prm_lib.spec(prm_lib.PRMFormat(name="x", readout="head2", step_suffix="<extra_1>",
                                   score_token="<extra_1>x"), tok, tok.vocab_size)


def test_missing_head_tensors_and_wrong_architecture(tmp_path, case):
  fmt, _, tok, _, _ = case
  _save_tokenizer(tmp_path, fmt)
  if fmt != "qwen_prm":  # a process reward model read as an LM
    _save_model(tmp_path, "qwen_prm", tok.vocab_size)
    with pytest.raises(ValueError, match=rf"is a \['Qwen2ForProcessRewardModel'\] checkpoint; "
                       rf"format '{fmt}' reads"):
      open_prm.from_checkpoint(tmp_path, fmt, tok)
    return
  _save_model(tmp_path, fmt, tok.vocab_size, head=False)
  with pytest.raises(ValueError, match=r"has no head tensors \['score.0.weight', "
                     r"'score.0.bias', 'score.2.weight', 'score.2.bias'\]; format 'qwen_prm' "
                     r"needs the two-class head"):
    open_prm.from_checkpoint(tmp_path, fmt, tok)


def test_prompt_without_a_question_is_refused(case):
  _, _, tok, _, _ = case
  verifier = _verifier(case)
  with pytest.raises(ValueError, match=r"no prompt for a policy prompt of 3 tokens.*question"):
    verifier.prefix([1, 2, 3])
  more = verifier.with_questions([[1, 2, 3]], ["What is 1?"])
  assert more.prefix([1, 2, 3]) == tuple(prm_lib.prefix_ids(
      verifier.fmt, tok, "What is 1?", verifier.chat_tokenizer))


def test_the_prms_own_tokens_come_from_its_tokenizer(case, tmp_path):
  """A PRM tokenizer may add a special token the policy lacks (Qwen2.5-Math-PRM's `<extra_0>`
  beside a stock Qwen2.5 policy): the format's ids are the PRM tokenizer's, not a split of
  its text by the policy's."""
  fmt, path, tok, _, _ = case
  if fmt != "qwen_prm":
    pytest.skip("one chat format suffices")
  fast = transformers.AutoTokenizer.from_pretrained(str(path))
  fast.add_special_tokens({"additional_special_tokens": ["<extra_9>"]})
  fast.save_pretrained(tmp_path)
  _save_model(tmp_path, fmt, vocab=tok.vocab_size + 1)
  new_id = fast.convert_tokens_to_ids("<extra_9>")
  assert new_id == tok.vocab_size and len(tok.encode("<extra_9>")) > 1  # the policy splits it
  own = dataclasses.replace(prm_lib.FORMATS[fmt], step_suffix="<extra_9>",
                            score_token="<extra_9>")
  prompts, rows, ends, prompt_len, lengths = _policy_rows(tok)
  open_prm.check_checkpoint(tmp_path, own, tok)
  verifier = open_prm.from_checkpoint(tmp_path, own, tok, prompts, QUESTIONS)
  assert verifier.spec.suffix == (new_id,)
  scores = np.asarray(verifier.step_scores(*verifier.score_rows(rows, ends, prompt_len,
                                                                lengths)[:2]))
  assert np.isfinite(scores[ends >= 0]).all()
