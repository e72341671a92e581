"""HF checkpoints -> ttc_jax, per family (Llama 2/3.x, Qwen2/2.5, Qwen3, Mistral, Gemma 2, Gemma 3):
logits parity with transformers (full pass, KV-cache decode, greedy generate), sharded, bfloat16
and mesh-placed loading, and clear errors for checkpoints we cannot load."""

import dataclasses
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
from ttc_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
from ttc_jax.sampling.sampler import Sampler  # pylint: disable=g-import-not-at-top

VOCAB = 97
ATOL = 1e-4
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
             rms_norm_eps=1e-5)
# One case per conversion detail. Windows of 5 positions and caps of a few units make each
# detail change logits far beyond ATOL on 40-token inputs.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
               "rope_theta": 500_000.0}
FAMILIES = {
    "llama": ("LlamaConfig", dict()),
    "llama_gqa": ("LlamaConfig", dict(num_key_value_heads=1)),
    "llama_gqa_tied": ("LlamaConfig", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_head_dim": ("LlamaConfig", dict(rope_theta=500_000.0, head_dim=32)),
    "llama3": ("LlamaConfig", dict(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                                   rope_parameters=LLAMA3_ROPE)),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=16)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, head_dim=16, sliding_window=5)),
    "gemma2": ("Gemma2Config", dict(num_key_value_heads=2, head_dim=16, sliding_window=5,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                                    query_pre_attn_scalar=24)),
    "gemma3": ("Gemma3TextConfig", dict(
        num_hidden_layers=3, num_key_value_heads=2, head_dim=16, sliding_window=5,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                         "full_attention": {"rope_type": "linear", "factor": 4.0,
                                            "rope_theta": 10_000.0}},
        query_pre_attn_scalar=24)),
}


def _hf_model(family="llama", seed=0, **overrides):
  """A small random fp32 causal LM of `family` with O(1) logits and non-trivial norm scales."""
  config_class, kw = FAMILIES[family]
  config = getattr(transformers, config_class)(**{**SMALL, **kw, **overrides})
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.5 * torch.randn_like(p))  # a swapped norm would show
      elif name.endswith(".bias"):
        p.normal_(0.0, 0.5)
      else:
        p.normal_(0.0, 0.15)
  return model


def _save_and_load(model, path, load=None, **kw):
  model.save_pretrained(path, safe_serialization=True, **kw)
  return convert.load_hf(path, **(load or {}))


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens))).logits.numpy()


def _tokens(batch, length, seed=0):
  return np.random.default_rng(seed).integers(0, VOCAB, (batch, length), dtype=np.int32)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_hf(tmp_path, family):
  model = _hf_model(family)
  cfg, graphdef, state = _save_and_load(model, tmp_path)
  assert cfg.num_kv_heads == model.config.num_key_value_heads
  assert cfg.tie_embeddings == model.config.tie_word_embeddings
  assert cfg.num_params == sum(p.numel() for p in model.parameters())
  tokens = _tokens(3, 40)
  ref = _hf_logits(model, tokens)
  assert np.abs(ref).max() > 1.0  # the comparison is not trivially small
  ours, _ = transformer.apply(graphdef, state, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), ref, atol=ATOL, rtol=0)


def _with_config(cfg, state, **change):
  """The model of `cfg` with `change`, carrying over every parameter the two share."""
  graphdef, fresh = transformer.create(dataclasses.replace(cfg, **change))
  have = dict(nnx.to_flat_state(state))
  return graphdef, nnx.from_flat_state(
      [(p, v.replace(have[p].get_value()) if p in have else v)
       for p, v in nnx.to_flat_state(fresh)])


@pytest.mark.parametrize("family, field, wrong", [
    ("llama_head_dim", "rope_theta", 10_000.0),
    ("llama3", "rope_scaling", "none"),
    ("qwen2", "qkv_bias", False),
    ("qwen3", "qk_norm", False),
    ("mistral", "sliding_window", 0),
    ("gemma2", "attn_softcap", 0.0),
    ("gemma2", "final_softcap", 0.0),
    ("gemma2", "query_scale", 0.0),
    ("gemma2", "sandwich_norm", False),
    ("gemma3", "local_rope_theta", 0.0),
    ("gemma3", "sliding_layers", (0,)),
    ("gemma3", "norm_offset", 0.0),
    ("gemma3", "embed_scale", False),
    ("gemma3", "mlp_activation", "silu"),
])
def test_each_converted_field_matters(tmp_path, family, field, wrong):
  """The field the converter set reaches the model: set wrong, logits move far beyond ATOL."""
  cfg, graphdef, state = _save_and_load(_hf_model(family), tmp_path)
  assert getattr(cfg, field) != wrong
  tokens = jnp.asarray(_tokens(2, 40))
  ours, _ = transformer.apply(graphdef, state, tokens)
  theirs, _ = transformer.apply(*_with_config(cfg, state, **{field: wrong}), tokens)
  assert np.abs(np.asarray(ours) - np.asarray(theirs)).max() > 100 * ATOL


@pytest.mark.parametrize("family", ["llama", "llama3", "qwen2", "qwen3", "mistral", "gemma2",
                                    "gemma3"])
def test_kv_cache_prefill_and_decode_match_hf(tmp_path, family):
  model = _hf_model(family, num_key_value_heads=2)
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


@pytest.mark.parametrize("family", ["llama", "llama3", "qwen2", "qwen3", "mistral", "gemma2",
                                    "gemma3"])
def test_greedy_sampler_matches_hf_generate(tmp_path, family):
  model = _hf_model(family, num_key_value_heads=2)
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


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_state_keeps_logical_axes_per_family(tmp_path, family):
  cfg, _, state = _save_and_load(_hf_model(family), tmp_path)
  _, fresh = transformer.create(cfg)
  meta = lambda s: [(p, v.get_metadata()) for p, v in nnx.to_flat_state(s)]
  assert meta(state) == meta(fresh)


def test_bfloat16_parameters_hold_the_checkpoint_values(tmp_path):
  model = _hf_model("qwen2").to(torch.bfloat16)
  cfg, _, state = _save_and_load(model, tmp_path, load=dict(param_dtype="bfloat16"))
  assert cfg.param_dtype == "bfloat16"
  assert {v.get_value().dtype for _, v in nnx.to_flat_state(state)} == {jnp.dtype("bfloat16")}
  attn = model.model.layers[1].self_attn
  got = state["blocks"][1]["attn"]
  np.testing.assert_array_equal(np.asarray(got["wk"].get_value(), np.float32),
                                attn.k_proj.weight.detach().float().numpy().T)
  np.testing.assert_array_equal(np.asarray(got["bq"].get_value(), np.float32),
                                attn.q_proj.bias.detach().float().numpy())


def test_load_onto_a_mesh_places_every_tensor_by_its_logical_axes(tmp_path):
  mesh = mesh_lib.make_mesh(data=2, model=4)
  model = _hf_model("qwen2")  # 4 heads, mlp 160 split 4 ways; vocab 97 stays replicated
  cfg, graphdef, placed = _save_and_load(model, tmp_path, load=dict(mesh=mesh))
  _, _, host = convert.load_hf(tmp_path)
  want = mesh_lib.param_shardings(host, mesh)
  specs = set()
  for (p, v), (_, h), (_, w) in zip(*(nnx.to_flat_state(t) for t in (placed, host, want))):
    assert v.get_value().sharding == w.get_value(), p
    specs.add(v.get_value().sharding.spec)
    np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(h.get_value()))
  assert jax.sharding.PartitionSpec(None, "model") in specs  # some tensors really are split
  tokens = _tokens(2, 24)
  ours, _ = jax.jit(lambda s, t: transformer.apply(graphdef, s, t))(placed, tokens)
  np.testing.assert_allclose(np.asarray(ours), _hf_logits(model, tokens), atol=ATOL, rtol=0)


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
  with pytest.raises(ValueError, match="attention_bias=True.*no place"):
    convert.load_hf(tmp_path)


def test_bias_tensors_without_config_flag_are_rejected(saved):
  _edit_config(saved, attention_bias=False)
  f = saved / "model.safetensors"
  tensors = load_file(f)
  tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
  save_file(tensors, f)
  with pytest.raises(ValueError, match="bias tensors"):
    convert.load_hf(saved)


def test_missing_tensor_is_rejected(saved):
  f = saved / "model.safetensors"
  tensors = load_file(f)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, f)
  with pytest.raises(ValueError, match=r"missing 1 tensors.*layers\.1\.mlp\.up_proj"):
    convert.load_hf(saved)


def test_shape_mismatch_is_rejected(saved):
  _edit_config(saved, intermediate_size=128)
  with pytest.raises(ValueError, match=r"mlp\..*_proj.* has shape .*160.*expected .*128.*"
                                       r"intermediate_size"):
    convert.load_hf(saved)


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="phi3"), "model_type='phi3' is not supported"),
    (dict(model_type="mistral"), "architectures=.*LlamaForCausalLM.* not supported for "
                                 "model_type='mistral'"),
    (dict(architectures=["LlamaForSequenceClassification"]), "architectures=.* not supported"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}),
     "RoPE scaling 'yarn' .* not supported"),
    (dict(rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0}),
     "RoPE scaling 'dynamic' .* not supported"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),

])
def test_unsupported_config_is_rejected(saved, changes, match):
  _edit_config(saved, **changes)
  with pytest.raises(ValueError, match=match):
    convert.load_hf(saved)


def test_missing_files_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="No config.json"):
    convert.load_hf(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(_hf_model().config.to_dict()))
  with pytest.raises(ValueError, match="No model.safetensors"):
    convert.load_hf(tmp_path)


def test_config_from_hf_max_len():
  hf = _hf_model().config.to_dict()
  assert convert.config_from_hf(hf).max_len == 64
  assert convert.config_from_hf(hf, max_len=16).max_len == 16


def test_config_from_hf_reads_transformers_4_rope_layout():
  hf = _hf_model().config.to_dict()
  del hf["rope_parameters"]
  hf.update(rope_theta=500_000.0, rope_scaling=None)
  assert convert.config_from_hf(hf).rope_theta == 500_000.0


def _transformers_4_layout(hf, **old):
  """`hf` as transformers 4 wrote it: no rope_parameters / layer_types, the older keys."""
  hf = {k: v for k, v in hf.items() if k not in ("rope_parameters", "layer_types")}
  return {**hf, **old}


@pytest.mark.parametrize("family, old", [
    ("llama3", dict(rope_theta=500_000.0, rope_scaling={
        k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"})),
    ("gemma2", dict(rope_theta=10_000.0)),
    ("gemma3", dict(rope_theta=10_000.0, rope_scaling={"rope_type": "linear", "factor": 4.0},
                    rope_local_base_freq=100.0, sliding_window_pattern=3)),
])
def test_transformers_4_configs_convert_alike(family, old):
  hf = _hf_model(family).config.to_dict()
  assert convert.config_from_hf(_transformers_4_layout(hf, **old)) == convert.config_from_hf(hf)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_an_absent_tie_word_embeddings_means_tied(family):
  """transformers 4 writes tie_word_embeddings only when it differs from True (its base
  default), so published Gemma configs lack it: absent is tied."""
  hf = _hf_model(family).config.to_dict()
  del hf["tie_word_embeddings"]
  assert convert.config_from_hf(hf).tie_embeddings


def test_qwen2_sliding_window_layers_from_either_layout():
  hf = _hf_model("qwen2", num_hidden_layers=4, use_sliding_window=True, max_window_layers=1,
                 sliding_window=5).config.to_dict()
  cfg = convert.config_from_hf(hf)
  assert (cfg.sliding_window, cfg.sliding_layers) == (5, (1, 2, 3))
  assert convert.config_from_hf(_transformers_4_layout(hf)) == cfg
  off = convert.config_from_hf({**hf, "use_sliding_window": False, "layer_types": None})
  assert (off.sliding_window, off.sliding_layers) == (0, ())


def test_unknown_layer_type_is_rejected():
  hf = _hf_model("mistral").config.to_dict()
  with pytest.raises(ValueError, match="layer_types=.* must name"):
    convert.config_from_hf({**hf, "layer_types": ["full_attention", "chunked_attention"]})


def test_missing_shard_is_rejected(tmp_path):
  _hf_model().save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
  shards = sorted(tmp_path.glob("model-*.safetensors"))
  shards[-1].unlink()
  with pytest.raises(ValueError, match=f"Shards .*{shards[-1].name}.* missing"):
    convert.load_hf(tmp_path)
