"""HFTokenizer: a Hugging Face tokenizer.json behind `tokenizers.base.Tokenizer`.

Every tokenizer here is built with the `tokenizers` library and saved by
transformers' `save_pretrained`, so each directory is what HF writes:
  * "llama3": byte-level BPE with Llama 3's split regex (merges "\\n\\n", ".\\n\\n", "\\n\\n\\n");
  * "gpt2": byte-level BPE with GPT-2's regex ("\\n\\n" before text is two "\\n" tokens);
  * "sp": a SentencePiece-style Unigram ("▁" for spaces, byte fallback: a newline is
    "<0x0A>", "π" two byte tokens), laid out as Llama 2 / Mistral / Gemma are.
transformers' own tokenizer loaded from the same directory is the reference.
"""

from __future__ import annotations

import json
import random
import shutil
import time

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
jinja2 = pytest.importorskip("jinja2")
from tokenizers import (  # pylint: disable=g-import-not-at-top
    decoders, models, normalizers, pre_tokenizers, trainers)

from ttc_jax.models import transformer  # pylint: disable=g-import-not-at-top
from ttc_jax.sampling.sampler import Sampler  # pylint: disable=g-import-not-at-top
from ttc_jax.tokenizers import base  # pylint: disable=g-import-not-at-top
from ttc_jax.tokenizers.hf import HFTokenizer  # pylint: disable=g-import-not-at-top

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
                 "<|im_end|>"]
TEXTS = ["Step 1: x = 3.\n\nStep 2: y = x + 1 = 4.\n\nThe answer is 4.", "π ≈ 3.14",
         "½ of 8 is 4.\n\n\n", "emoji 🙂 and 🧮\n\nok", "a\nb\n\nc", " lead and trail \n",
         "", "\n\n\n\n"]


def _corpus():
  rng = random.Random(0)
  out = []
  for _ in range(300):
    a, b, c = rng.randint(0, 99), rng.randint(0, 99), rng.randint(2, 9)
    out.append(f"Step 1: x = {a} + {b} = {a + b}.\n\nStep 2: multiply by {c}:\n"
               f"y = {(a + b) * c}.\n\n\nSo y = {(a + b) * c}\n\n\nThe answer is {c}.\n\n")
  return out + ["π ≈ 3.14 and ½ = 0.5, so ½π ≈ 1.57.\n\n"] * 20


def _byte_level(split_regex: str | None):
  tok = tokenizers.Tokenizer(models.BPE())
  if split_regex is None:  # GPT-2
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  else:  # Llama 3 / Qwen2: the split regex, then bytes
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(split_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=500, min_frequency=2, show_progress=False,
                                special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_corpus(), trainer)
  tok.add_special_tokens(CHAT_SPECIALS)
  return tok, "<|begin_of_text|>", "<|end_of_text|>"


def _sentencepiece():
  """A Unigram with byte fallback, no "\\n" piece (a newline is "<0x0A>") but "\\n\\n" pieces."""
  pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
  pieces += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
  chars = "▁abcdefghijklmnopqrstuvwxyzSTA0123456789.:=+-*/(),½"
  pieces += [(c, -5.0) for c in chars]
  pieces += [(p, -3.0) for p in ("\n\n", ".\n\n", "\n\n\n", "▁Step", "Step", "▁the", "▁answer",
                                 "▁is", "▁=", "▁+", "▁x", "▁y", "▁1", "▁2", "▁3", ":\n\n")]
  tok = tokenizers.Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  tok.add_special_tokens(["<unk>", "<s>", "</s>"] + CHAT_SPECIALS)
  return tok, "<s>", "</s>"


BUILDERS = {"llama3": lambda: _byte_level(LLAMA3_SPLIT), "gpt2": lambda: _byte_level(None),
            "sp": _sentencepiece}


def _save(kind, path, template=None, **special):
  tok, bos, eos = BUILDERS[kind]()
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos,
                                              eos_token=eos, **special)
  if template is not None:
    fast.chat_template = template
  fast.save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  return {kind: _save(kind, tmp_path_factory.mktemp(kind)) for kind in BUILDERS}


@pytest.fixture(scope="module")
def toks(dirs):
  """kind -> (our tokenizer, transformers' from the same directory)."""
  return {kind: (HFTokenizer.from_dir(d), transformers.AutoTokenizer.from_pretrained(d))
          for kind, d in dirs.items()}


# ---------------------------------------------------------------- loading, ids, text


def test_missing_tokenizer_json_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"^No tokenizer.json in .*; save the tokenizer there "
                     r"with transformers' tokenizer.save_pretrained\(") as err:
    HFTokenizer.from_dir(tmp_path)
  assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", BUILDERS)
def test_ids_and_text_match_transformers(toks, kind):
  tok, ref = toks[kind]
  assert (tok.bos_id, tok.eos_id) == (ref.bos_token_id, ref.eos_token_id)
  assert tok.pad_id == tok.eos_id  # no PAD token: EOS pads
  assert tok.vocab_size == len(ref)  # added tokens included
  for text in TEXTS:
    ids = tok.encode(text)
    assert ids == ref(text, add_special_tokens=False)["input_ids"], text
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True) == text
    assert tok.encode(text, bos=True, eos=True) == [tok.bos_id] + ids + [tok.eos_id]
    assert "".join(tok.token_texts(ids)) == text  # step ends are found on the decoded text
    assert tok.decode([tok.bos_id] + ids + [tok.eos_id] + tok.encode("after EOS")) == text
  with pytest.raises(ValueError, match=rf"Token id {tok.vocab_size} is outside"):
    tok.token_text(tok.vocab_size)


@pytest.mark.parametrize("kind", BUILDERS)
def test_token_text_of_every_id_is_its_decoded_text(toks, kind):
  """After a plain token (so SentencePiece's leading-space strip is out of the way), each id
  adds exactly its token_text to HF's decoded text; partial characters add U+FFFD."""
  tok, ref = toks[kind]
  (a,) = tok.encode("a")[-1:]
  partial = 0
  for i in range(tok.vocab_size):
    want = ref.decode([a, i], skip_special_tokens=True)[len(ref.decode([a])):]
    assert tok.token_text(i) == want, (i, ref.convert_ids_to_tokens(i))
    partial += "\ufffd" in want
  assert partial > (100 if kind == "sp" else 0)  # byte tokens: the test sees partial characters
  assert all(tok.token_text(i) == "" for i in ref.all_special_ids)


def test_sentencepiece_byte_fallback_and_metaspace(toks):
  tok, _ = toks["sp"]
  ids = tok.encode("a π\nb")
  assert [tok.backend.id_to_token(i) for i in ids] == ["▁", "a", "▁", "<0xCF>", "<0x80>",
                                                       "<0x0A>", "b"]
  assert [tok.token_text(i) for i in ids] == [" ", "a", " ", "\ufffd", "\ufffd", "\n", "b"]
  assert tok.token_texts(ids) == ["", "a", " ", "", "π", "\n", "b"]  # as decoded: no " a"
  assert tok.token_texts(ids[:4]) == ["", "a", " ", "\ufffd"]  # a truncated character
  assert tok.token_texts([tok.bos_id] + ids[1:]) == ["", "a", " ", "", "π", "\n", "b"]
  assert tok.token_texts(tok.encode("  x")) == ["", " ", " x"]  # one space stripped, as decoded


# ---------------------------------------------------------------- step boundaries


@pytest.mark.parametrize("kind,merged", [
    ("llama3", {"\n\n", ".\n\n", "\n\n\n", ".\n\n\n"}),
    ("sp", {"\n\n", ".\n\n", "\n\n\n", ":\n\n"}),
    ("gpt2", {"\n\n"})])
def test_step_ids_are_every_token_holding_the_delimiter(toks, kind, merged):
  tok, ref = toks[kind]
  (a,) = tok.encode("a")[-1:]
  holding = {i for i in range(tok.vocab_size)
             if "\n\n" in ref.decode([a, i], skip_special_tokens=True)}
  assert set(tok.step_ids("\n\n")) == holding
  assert merged <= {tok.token_text(i) for i in holding}
  if kind == "llama3":
    assert any(len(tok.token_text(i)) > 3 for i in holding)  # e.g. "4.\n\n" or ".\n\n\n"


def test_step_ids_on_a_150k_vocabulary_take_well_under_a_second(tmp_path):
  alphabet = [c for c in tokenizers.pre_tokenizers.ByteLevel.alphabet()]
  rng = random.Random(0)
  vocab = {c: i for i, c in enumerate(alphabet)}
  while len(vocab) < 150_000:
    vocab.setdefault("".join(rng.choices(alphabet, k=rng.randint(2, 8))), len(vocab))
  vocab["ĊĊ"] = vocab.get("ĊĊ", len(vocab))
  vocab["x.ĊĊ"] = vocab.get("x.ĊĊ", len(vocab))
  tok = tokenizers.Tokenizer(models.BPE(vocab, []))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<|endoftext|>"])
  tok.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
  start = time.perf_counter()
  big = HFTokenizer.from_dir(tmp_path)
  loaded = time.perf_counter()
  ids = big.step_ids("\n\n")
  done = time.perf_counter()
  assert big.vocab_size > 150_000 and {vocab["ĊĊ"], vocab["x.ĊĊ"]} <= set(ids)
  assert done - loaded < 1.0 and loaded - start < 5.0, (loaded - start, done - loaded)


def _rule_on_chars(text, owner, delimiter, eos):
  """The step rule of `tokenizers.base` on the characters of `text`, mapped to tokens by
  `owner` (the token of each character; EOS, when there, is token `max(owner) + 1`).

  Delimiters are found left to right; a step is text up to a delimiter's end, or up to EOS;
  delimiters right after it join it unless the token ending one also holds text after it.
  The step ends at the token of its last delimiter character (at EOS if only delimiters
  follow its text there); a trailing step without a terminator does not count.
  """
  eos_index = max(owner, default=-1) + 1
  in_delim, c = [False] * len(text), text.find(delimiter)
  while c >= 0:
    in_delim[c:c + len(delimiter)] = [True] * len(delimiter)
    c = text.find(delimiter, c + len(delimiter))

  def text_after(e):  # the token of char e - 1 also holds step text from char e on
    return any(owner[k] == owner[e - 1] and not in_delim[k] for k in range(e, len(text)))

  out, has_text, c = [], False, 0
  while c < len(text):
    if not in_delim[c]:
      has_text, c = True, c + 1
      continue
    e = c + len(delimiter)
    while e < len(text) and in_delim[e] and not text_after(e + len(delimiter)):
      e += len(delimiter)
    if has_text:
      out.append(eos_index if eos and e == len(text) else owner[e - 1])
      has_text = False
    c = e
  if has_text and eos:
    out.append(eos_index)
  return out


def _truth(tok, text, delimiter, eos):
  """The rule on `text`, each character owned by the first token after which HF's decoded
  prefix holds it (so the token of its last byte)."""
  ids = tok.encode(text)
  owner, j = [], 0
  for c in range(len(text)):
    while not tok.backend.decode(ids[:j + 1]).startswith(text[:c + 1]):
      j += 1
    owner.append(j)
  assert not text or owner[-1] == len(ids) - 1
  return _rule_on_chars(text, owner, delimiter, eos)


STEP = st.text(alphabet="ab x=+.1 2π½🙂≈\n", min_size=1, max_size=10)
SEP = st.sampled_from(["\n\n", "\n\n\n", "\n\n\n\n", "\n", ".\n\n", " "])


@pytest.mark.parametrize("delimiter", ["\n\n", "\n"])
@pytest.mark.parametrize("kind", BUILDERS)
def test_step_ends_equal_the_rule_on_characters(toks, kind, delimiter):
  tok, _ = toks[kind]
  split = []

  @settings(max_examples=150, deadline=None, database=None)
  @given(steps=st.lists(st.tuples(STEP, SEP), min_size=1, max_size=5),
         tail=st.sampled_from(["", "\n\n", "\n", "\n\n\n"]), eos=st.booleans())
  def check(steps, tail, eos):
    text = "".join(s + sep for s, sep in steps[:-1]) + steps[-1][0] + tail
    ids = tok.encode(text, eos=eos)
    assert tok.step_ends(ids, delimiter) == _truth(tok, text, delimiter, eos), (
        text, [tok.token_text(i) for i in ids])
    pieces = [tok.token_text(i) for i in ids]
    split.append(any(a.endswith("\n") and b.startswith("\n") for a, b in zip(pieces, pieces[1:])))

  check()
  assert sum(split) > 10  # delimiters spanning two tokens do occur


def test_a_delimiter_split_across_tokens_ends_where_it_ends(toks):
  gpt2, _ = toks["gpt2"]
  ids = gpt2.encode("x = 1\n\nx")
  assert [gpt2.token_text(i) for i in ids][-3:] == ["\n", "\n", "x"]  # GPT-2 splits "\n\n"
  assert gpt2.step_ends(ids, "\n\n") == [len(ids) - 2]
  assert gpt2.step_ends(ids[:-1] + [gpt2.eos_id], "\n\n") == [len(ids) - 1]  # then EOS: at EOS
  sp, _ = toks["sp"]
  ids = sp.encode("1\n\n2\n\n\n\n3")  # "\n\n" pieces and "<0x0A>" bytes
  assert sp.step_ends(ids, "\n\n") == _truth(sp, "1\n\n2\n\n\n\n3", "\n\n", False)


def test_a_non_ascii_delimiter_split_across_byte_tokens(toks):
  """"∴" is three byte tokens: only the byte-level text finds it (token_text is U+FFFD each)."""
  tok, _ = toks["sp"]
  text = "a∴b∴c"
  ids = tok.encode(text, eos=True)
  assert [tok.token_text(i) for i in ids].count("\ufffd") == 6
  assert tok.step_ends(ids, "∴") == _truth(tok, text, "∴", True) == [4, 8, 10]
  assert base.Tokenizer.step_ends(tok, ids, "∴") == [10]  # the generic rule on token_text


# ---------------------------------------------------------------- chat templates

LLAMA3_TEMPLATE = (
    r"{{ bos_token }}{% for message in messages %}"
    r"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    r"{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim }}"
    r"{% endgeneration %}{% else %}{{ message['content'] | trim }}{% endif %}"
    r"{{ '<|eot_id|>' }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    r"{% endif %}")

QWEN_TEMPLATE = r"""{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{% for message in messages %}
  {% if message.role not in ['system', 'user', 'assistant'] %}
    {{ raise_exception('Unknown role: ' + message.role) }}
  {% endif %}
  {% if message.role != 'system' %}
<|im_start|>{{ message.role }}
{{ message.content }}{% if message.meta is defined %} {{ message.meta | tojson }}{% endif %}<|im_end|>
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

CHATS = [
    [{"role": "user", "content": "What is ½ + ½?"}],
    [{"role": "system", "content": "Solve step by step."},
     {"role": "user", "content": " π ≈ ? ", "meta": {"k": "π<b>&"}},
     {"role": "assistant", "content": "3.14\n\n", "meta": None},
     {"role": "user", "content": "More 🙂"}],
]


@pytest.mark.parametrize("where", ["chat_template.jinja", "tokenizer_config.json"])
@pytest.mark.parametrize("template", [LLAMA3_TEMPLATE, QWEN_TEMPLATE], ids=["llama3", "qwen"])
def test_chat_template_matches_transformers(tmp_path, template, where):
  path = _save("llama3", tmp_path, template=template)
  if where == "tokenizer_config.json":  # as Hub snapshots of Llama 3 / Qwen2.5 have it
    (path / "chat_template.jinja").unlink()
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}))
  tok, ref = HFTokenizer.from_dir(path), transformers.AutoTokenizer.from_pretrained(path)
  for chat in CHATS:
    for prompt in (True, False):
      want = ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)
      assert tok.apply_chat_template(chat, add_generation_prompt=prompt) == want
  rendered = tok.apply_chat_template(CHATS[1])
  assert tok.encode(rendered) == ref(rendered, add_special_tokens=False)["input_ids"]
  if template is QWEN_TEMPLATE:
    assert '{"k": "π<b>&"}' in rendered and "\n\n<|im_start|>" not in rendered
    with pytest.raises(jinja2.exceptions.TemplateError, match="Unknown role: tool"):
      tok.apply_chat_template([{"role": "tool", "content": "4"}])


def test_no_chat_template_is_a_clear_error(toks):
  tok, _ = toks["llama3"]
  with pytest.raises(ValueError, match=r"has no chat template \(no chat_template.jinja, no "
                     r"chat_template in tokenizer_config.json\).*pass chat_template="):
    tok.apply_chat_template(CHATS[0])
  assert tok.apply_chat_template(CHATS[0], chat_template="{{ messages[0].content }}") == \
      "What is ½ + ½?"


# ---------------------------------------------------------------- identity, special-id fallbacks


def test_equal_and_hashed_by_directory_and_contents(dirs, tmp_path):
  a, b = HFTokenizer.from_dir(dirs["llama3"]), HFTokenizer.from_dir(str(dirs["llama3"]))
  assert a == b and hash(a) == hash(b) and a.backend is not b.backend
  traces = []
  g = jax.jit(lambda tok, x: traces.append(tok) or x + tok.eos_id, static_argnums=0)
  g(a, 1), g(b, 2)
  assert len(traces) == 1  # an equal tokenizer reuses the compiled function
  copy = shutil.copytree(dirs["llama3"], tmp_path / "copy")
  before = HFTokenizer.from_dir(copy)
  assert before != a  # another directory
  cfg = json.loads((copy / "tokenizer_config.json").read_text())
  (copy / "tokenizer_config.json").write_text(json.dumps({**cfg, "pad_token": "<|eot_id|>"}))
  after = HFTokenizer.from_dir(copy)  # same directory, other special ids: not equal
  assert after != before and hash(after) != hash(before) and after.pad_id != before.pad_id
  assert HFTokenizer.from_dir(copy) == after


def test_special_ids_fall_back_to_model_configs(dirs, tmp_path):
  """Qwen2.5-like: no BOS in tokenizer_config.json; config.json has ids and a larger vocab."""
  path = shutil.copytree(dirs["llama3"], tmp_path / "qwen")
  cfg = json.loads((path / "tokenizer_config.json").read_text())
  del cfg["bos_token"]
  (path / "tokenizer_config.json").write_text(json.dumps(cfg))
  tok = HFTokenizer.from_dir(path)
  assert tok.bos_id == tok.pad_id == tok.eos_id  # no BOS, no PAD anywhere: EOS
  size = tok.vocab_size
  im_end = tok.backend.token_to_id("<|im_end|>")
  (path / "config.json").write_text(json.dumps({"bos_token_id": 0, "vocab_size": size + 64}))
  (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end, 1]}))
  del cfg["eos_token"]
  (path / "tokenizer_config.json").write_text(json.dumps(cfg))
  tok = HFTokenizer.from_dir(path)
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (0, im_end, im_end, size + 64)
  assert tok.token_text(size + 10) == "" and tok.decode([size + 10] + tok.encode("hi")) == "hi"
  (path / "generation_config.json").unlink()
  with pytest.raises(ValueError, match=r"names no EOS token"):
    HFTokenizer.from_dir(path)


# ---------------------------------------------------------------- the jit sampler


def test_sampler_stops_at_step_ends_with_merged_delimiters(toks):
  tok, _ = toks["llama3"]
  cfg = transformer.TransformerConfig(vocab_size=tok.vocab_size, d_model=32, num_layers=1,
                                      num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64,
                                      max_len=64)
  graphdef, state = transformer.create(cfg, seed=0)
  sampler = Sampler.for_transformer(graphdef, cfg, tok, "\n\n")
  sampler.check_tokenizer(tok, "\n\n")
  prompts = [tok.encode("Step 1: x = 3.\n\n", bos=True), tok.encode("π ≈", bos=True)]
  new = 24
  _, out = sampler.sample(state, prompts, jax.random.key(0), num_samples=64, max_len=64,
                          max_new_tokens=new, stop="step", temperature=2.0)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  stops = set(tok.step_ids("\n\n")) | {tok.eos_id}
  at_step = set()
  for row, n in zip(tokens, lengths):
    assert n >= 1 and not stops & set(row[:n - 1].tolist()), row  # nothing stops it earlier
    assert row[n - 1] in stops or n == new, row
    assert (row[n:] == tok.pad_id).all()
    if row[n - 1] in stops and row[n - 1] != tok.eos_id:
      at_step.add(tok.token_text(int(row[n - 1])))
  assert len(at_step) >= 2 and at_step - {"\n\n"}, at_step  # merged delimiters stop too
