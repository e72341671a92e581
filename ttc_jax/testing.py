"""Small fixtures shared by tests, benchmarks and notebooks: a tiny model, a stub LM, a task."""

from __future__ import annotations

import jax.numpy as jnp

from ttc_jax.models import transformer
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tokenizers.char import CharTokenizer


def tiny_transformer(seed: int = 0, max_len: int = 64, **overrides):
  """`(cfg, graphdef, state, tokenizer, sampler)` for a random ~50k-parameter model.

  The tokenizer is the chain-arithmetic alphabet's; steps end at its newline.
  """
  tok = CharTokenizer(chain_arithmetic.ALPHABET)
  kw = dict(vocab_size=tok.vocab_size, d_model=32, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=max_len)
  kw.update(overrides)
  cfg = transformer.TransformerConfig(**kw)
  graphdef, state = transformer.create(cfg, seed)
  return cfg, graphdef, state, tok, Sampler.for_transformer(graphdef, cfg, tok, "\n")


def _stub_apply(params, tokens, positions, cache):
  del positions
  b, t = tokens.shape
  return jnp.broadcast_to(params["logits"], (b, t, params["logits"].shape[-1])), cache


def _stub_cache(batch: int, max_len: int):
  return jnp.zeros((batch, max_len), jnp.float32)


def stub_sampler(eos_id: int = 2, step_id: int = 3, context_len: int = 64) -> Sampler:
  """A sampler over a stub LM whose next-token logits are always `params['logits']`."""
  return Sampler(apply_fn=_stub_apply, init_cache=_stub_cache, eos_id=eos_id,
                 step_ids=(step_id,), pad_id=0, context_len=context_len)


def chain_task() -> chain_arithmetic.ChainArithmetic:
  """The chain-arithmetic task without data (answers and step checks only)."""
  return chain_arithmetic.ChainArithmetic(levels=[(2, 1)], num_per_level={}, seed=0)


# ---- a real-model job in seconds: MATH-500-format data, a BPE tokenizer, tiny Qwen2 models ----

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MATH_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>")


def math_problems(n: int, seed: int) -> list[dict]:
  """`n` MATH-500-format records of levels 1-3: sums of 2-4 numbers, steps a blank line apart."""
  import random  # pylint: disable=g-import-not-at-top
  rng = random.Random(seed)
  out = []
  for i in range(n):
    level = 1 + i % 3
    terms = [rng.randint(1, 20) for _ in range(level + 1)]
    total, steps = terms[0], []
    for t in terms[1:]:
      steps.append(f"{total} + {t} = {total + t}.")
      total += t
    steps.append(f"The answer is $\\boxed{{{total}}}$.")
    out.append({"problem": f"What is ${' + '.join(map(str, terms))}$?",
                "solution": "\n\n".join(steps), "answer": str(total),
                "subject": ("Prealgebra", "Algebra")[i % 2], "level": level,
                "unique_id": f"test/fixture/{seed}_{i}.json"})
  return out


def write_math_fixtures(root: str, num_test: int = 12, num_train: int = 24) -> dict[str, str]:
  """Writes, under `root`, a MATH-500 manual dir (`math500/`), `policy/` and `larger/` (random
  tiny Qwen2 causal LMs) and `prm/` (a random tiny Qwen2.5-Math-PRM: a Qwen2 trunk and the
  two-class head `score`, as `Qwen2ForProcessRewardModel` stores it), all with one
  byte-level BPE tokenizer trained on the problems. Returns the paths. Needs torch and
  transformers (the test extra)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

  out = {k: os.path.join(root, k) for k in ("math500", "policy", "larger", "prm")}
  os.makedirs(out["math500"], exist_ok=True)
  records = {"test": math_problems(num_test, 0), "train": math_problems(num_train, 1)}
  for split, rows in records.items():
    with open(os.path.join(out["math500"], f"{split}.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  texts = [f"Problem: {r['problem']}\n\nSolution:\n\n{r['solution']}\n\n"
           for rows in records.values() for r in rows]
  tok.train_from_iterator(texts * 4, trainers.BpeTrainer(
      vocab_size=300, special_tokens=list(MATH_SPECIALS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  hf_tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
      additional_special_tokens=list(MATH_SPECIALS[1:]))
  hf_tok.chat_template = QWEN_CHAT_TEMPLATE
  vocab = len(hf_tok)
  for name, (d, layers, heads, kv, mlp) in {"policy": (32, 1, 2, 1, 64),
                                            "larger": (64, 2, 4, 2, 192)}.items():
    torch.manual_seed(len(name))
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=mlp, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=hf_tok.eos_token_id,
        bos_token_id=hf_tok.eos_token_id))
    model.save_pretrained(out[name], safe_serialization=True)
    hf_tok.save_pretrained(out[name])
  _write_qwen_prm(out["prm"], transformers.Qwen2Config(
      vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=512,
      eos_token_id=hf_tok.eos_token_id))
  hf_tok.save_pretrained(out["prm"])
  return out


def _write_qwen_prm(path: str, config) -> None:
  """A random Qwen2.5-Math-PRM-architecture checkpoint: `model.*` (Qwen2Model) + `score.*`."""
  import os  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

  torch.manual_seed(3)
  trunk = transformers.Qwen2Model(config)
  h = config.hidden_size
  head = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
  tensors = {f"model.{k}": v for k, v in trunk.state_dict().items()}
  tensors.update({f"score.{k}": v for k, v in head.state_dict().items()})
  os.makedirs(path, exist_ok=True)
  save_file({k: v.contiguous() for k, v in tensors.items()},
            os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  config.architectures = ["Qwen2ForProcessRewardModel"]
  config.save_pretrained(path)
