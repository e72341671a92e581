"""HF Llama -> ttc_jax conversion: logits parity with transformers (full pass, KV cache, greedy
sampling), sharded and bfloat16 checkpoints, and clear errors for checkpoints we cannot load."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top

from ttc_jax.models import convert, transformer  # pylint: disable=g-import-not-at-top
from ttc_jax.sampling.sampler import Sampler  # pylint: disable=g-import-not-at-top

VOCAB = 97
ATOL = 1e-4


def _hf_model(seed=0, **overrides):
  """A small random fp32 LlamaForCausalLM with O(1) logits and non-trivial norm scales."""
  kw = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
            rms_norm_eps=1e-5)
  kw.update(overrides)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.5 * torch.randn_like(p))  # a swapped norm would show
      else:
        p.normal_(0.0, 0.15)
  return model


def _save_and_load(model, path, **kw):
  model.save_pretrained(path, safe_serialization=True, **kw)
  return convert.load_hf_llama(path)


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens))).logits.numpy()


def _tokens(batch, length, seed=0):
  return np.random.default_rng(seed).integers(0, VOCAB, (batch, length), dtype=np.int32)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(num_key_value_heads=1),                      # GQA: 4 query heads share 1 kv head
    dict(num_key_value_heads=2, tie_word_embeddings=True),
    dict(rope_theta=500_000.0, head_dim=32),          # head_dim != hidden/heads
], ids=["mha", "gqa", "gqa_tied", "rope_theta_head_dim"])
def test_logits_match_hf(tmp_path, overrides):
  model = _hf_model(**overrides)
  cfg, graphdef, state = _save_and_load(model, tmp_path)
  assert cfg.num_kv_heads == model.config.num_key_value_heads
  assert cfg.tie_embeddings == bool(overrides.get("tie_word_embeddings", False))
  assert cfg.num_params == sum(p.numel() for p in model.parameters())
  tokens = _tokens(3, 40)
  ref = _hf_logits(model, tokens)
  assert np.abs(ref).max() > 1.0  # the comparison is not trivially small
  ours, _ = transformer.apply(graphdef, state, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), ref, atol=ATOL, rtol=0)


def test_rope_theta_is_used(tmp_path):
  """The non-default theta reaches the model: the default theta gives different logits."""
  model = _hf_model(rope_theta=500_000.0)
  cfg, graphdef, state = _save_and_load(model, tmp_path)
  assert cfg.rope_theta == 500_000.0
  tokens = jnp.asarray(_tokens(2, 40))
  wrong = transformer.TransformerConfig(**{**cfg.__dict__, "rope_theta": 10_000.0})
  wrong_graphdef, _ = transformer.create(wrong)
  ours, _ = transformer.apply(graphdef, state, tokens)
  theirs, _ = transformer.apply(wrong_graphdef, state, tokens)
  assert np.abs(np.asarray(ours) - np.asarray(theirs)).max() > 100 * ATOL


def test_kv_cache_prefill_and_decode_match_hf(tmp_path):
  model = _hf_model(num_key_value_heads=2)
  cfg, graphdef, state = _save_and_load(model, tmp_path)
  tokens = _tokens(4, 21, seed=1)
  n_prompt = 13
  with torch.no_grad():
    out = model(torch.as_tensor(tokens[:, :n_prompt]), use_cache=True)
    ref_prefill, past = out.logits.numpy(), out.past_key_values
    ref_steps = []
    for t in range(n_prompt, tokens.shape[1]):
      out = model(torch.as_tensor(tokens[:, t:t + 1]), past_key_values=past, use_cache=True)
      ref_steps.append(out.logits.numpy())
      past = out.past_key_values

  step = jax.jit(lambda s, tok, pos, c: transformer.apply(graphdef, s, tok, pos, c))
  pos = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  cache = cfg.init_cache(4, 32)
  logits, cache = step(state, tokens[:, :n_prompt], pos[:, :n_prompt], cache)
  np.testing.assert_allclose(np.asarray(logits), ref_prefill, atol=ATOL, rtol=0)
  for i, t in enumerate(range(n_prompt, tokens.shape[1])):
    logits, cache = step(state, tokens[:, t:t + 1], pos[:, t:t + 1], cache)
    np.testing.assert_allclose(np.asarray(logits), ref_steps[i], atol=ATOL, rtol=0)


def test_greedy_sampler_matches_hf_generate(tmp_path):
  model = _hf_model(num_key_value_heads=2)
  cfg, graphdef, state = _save_and_load(model, tmp_path)
  tok = types.SimpleNamespace(eos_id=VOCAB, step_ids=lambda delimiter: (VOCAB,),
                              pad_id=0)  # ids never sampled
  sampler = Sampler.for_transformer(graphdef, cfg, tok, "\n")
  assert sampler.step_ids == (VOCAB,)
  prompts = _tokens(2, 9, seed=2)
  new = 12
  _, out = sampler.sample(state, prompts.tolist(), jax.random.key(0), max_len=32,
                          max_new_tokens=new, stop="none", temperature=0.0)
  with torch.no_grad():
    ref = model.generate(torch.as_tensor(prompts), do_sample=False, max_new_tokens=new,
                         min_new_tokens=new, eos_token_id=None, pad_token_id=0)
  np.testing.assert_array_equal(np.asarray(out.tokens), ref[:, prompts.shape[1]:].numpy())


def test_sharded_checkpoint(tmp_path):
  model = _hf_model(num_key_value_heads=2)
  _, graphdef, state = _save_and_load(model, tmp_path, max_shard_size="40KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  tokens = _tokens(2, 16)
  ours, _ = transformer.apply(graphdef, state, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), _hf_logits(model, tokens), atol=ATOL, rtol=0)


def test_bfloat16_checkpoint_loads_exact_values(tmp_path):
  model = _hf_model().to(torch.bfloat16)
  _, _, state = _save_and_load(model, tmp_path)
  want = model.model.layers[1].self_attn.k_proj.weight.detach().float().numpy().T
  got = state["blocks"][1]["attn"]["wk"].get_value()
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(got), want)


def test_state_keeps_logical_axes(tmp_path):
  cfg, _, state = _save_and_load(_hf_model(num_key_value_heads=2), tmp_path)
  _, fresh = transformer.create(cfg)
  assert jax.tree.structure(state) == jax.tree.structure(fresh)
  meta = lambda s: [(p, v.get_metadata()) for p, v in nnx.to_flat_state(s)]
  assert meta(state) == meta(fresh)


# ---- checkpoints we cannot load give clear errors ----


def _edit_config(path, **changes):
  with open(path / "config.json") as f:
    hf = json.load(f)
  hf.update(changes)
  with open(path / "config.json", "w") as f:
    json.dump(hf, f)


@pytest.fixture
def saved(tmp_path):
  _hf_model(num_key_value_heads=2).save_pretrained(tmp_path, safe_serialization=True)
  return tmp_path


def test_attention_bias_is_rejected(tmp_path):
  _hf_model(attention_bias=True).save_pretrained(tmp_path, safe_serialization=True)
  with pytest.raises(ValueError, match="attention_bias=True.*no bias"):
    convert.load_hf_llama(tmp_path)


def test_bias_tensors_without_config_flag_are_rejected(saved):
  _edit_config(saved, attention_bias=False)
  f = saved / "model.safetensors"
  tensors = load_file(f)
  tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
  save_file(tensors, f)
  with pytest.raises(ValueError, match="bias tensors"):
    convert.load_hf_llama(saved)


def test_missing_tensor_is_rejected(saved):
  f = saved / "model.safetensors"
  tensors = load_file(f)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, f)
  with pytest.raises(ValueError, match=r"missing 1 tensors.*layers\.1\.mlp\.up_proj"):
    convert.load_hf_llama(saved)


def test_shape_mismatch_is_rejected(saved):
  _edit_config(saved, intermediate_size=128)
  with pytest.raises(ValueError, match=r"mlp\..*_proj.* has shape .*160.*expected .*128.*"
                                       r"intermediate_size"):
    convert.load_hf_llama(saved)


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="mistral"), "model_type='mistral' is not supported"),
    (dict(architectures=["LlamaForSequenceClassification"]), "architectures=.* not supported"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
     "RoPE scaling is not supported"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "RoPE scaling is not supported"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
])
def test_unsupported_config_is_rejected(saved, changes, match):
  _edit_config(saved, **changes)
  with pytest.raises(ValueError, match=match):
    convert.load_hf_llama(saved)


def test_missing_files_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="No config.json"):
    convert.load_hf_llama(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(_hf_model().config.to_dict()))
  with pytest.raises(ValueError, match="No model.safetensors"):
    convert.load_hf_llama(tmp_path)


def test_config_from_hf_max_len():
  hf = _hf_model().config.to_dict()
  assert convert.config_from_hf(hf).max_len == 64
  assert convert.config_from_hf(hf, max_len=16).max_len == 16


def test_config_from_hf_reads_transformers_4_rope_layout():
  hf = _hf_model().config.to_dict()
  del hf["rope_parameters"]
  hf.update(rope_theta=500_000.0, rope_scaling=None)
  assert convert.config_from_hf(hf).rope_theta == 500_000.0


def test_missing_shard_is_rejected(tmp_path):
  _hf_model().save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
  shards = sorted(tmp_path.glob("model-*.safetensors"))
  shards[-1].unlink()
  with pytest.raises(ValueError, match=f"Shards .*{shards[-1].name}.* missing"):
    convert.load_hf_llama(tmp_path)
