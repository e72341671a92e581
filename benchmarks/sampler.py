"""Decode throughput of the jit sampler vs transformers `generate` (PyTorch, CPU), and MFU.

One random Llama (HF `LlamaForCausalLM`, saved as safetensors and loaded with
`models/convert.py`, so both sides run the same weights) generates exactly
`--new_tokens` greedy tokens per row with no early stop, at batch 1 and batch 64,
timed side by side (reps alternate JAX / torch after a warm-up run of each).

MFU (batch 64) = achieved model FLOP/s / peak FLOP/s, where
  model FLOPs per generated token = 2 * N_matmul + 4 * L * H * head_dim * ctx
    N_matmul = parameters used in matmuls (all but the input-embedding table,
               which is a gather; with tied embeddings the table is the LM head);
    ctx = positions the token's forward pass attends to (prompt + tokens so far),
    4 * L * H * head_dim * ctx = QK^T and PV, 2 FLOPs per multiply-add each;
  prompt prefill is not counted, so the figure slightly understates work done;
  peak = best FLOP/s of a 2048^3 float32 `jnp.dot` measured in the same run.

  python benchmarks/sampler.py [--quick]

Prints progress, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# On a shared (oversubscribed) machine libgomp's spin-waiting made torch's 2-thread
# generate 5-15x slower than 1 thread; passive waiting removes that. Set before torch
# loads libgomp; export OMP_WAIT_POLICY=ACTIVE to override on a quiet machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from ttc_jax.models import convert
from ttc_jax.sampling.sampler import Sampler

# >= 20M parameters (32.0M; 27.8M in matmuls), used for every measurement.
MODEL = dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, head_dim=64,
             max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False)
PROMPT_LEN = 16


def log(msg: str) -> None:
  print(msg, flush=True)


def hf_model(path: str, seed: int = 0) -> transformers.LlamaForCausalLM:
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**MODEL)).float().eval()
  model.save_pretrained(path, safe_serialization=True)
  return model


def model_flops(cfg, batch: int, prompt_len: int, new_tokens: int) -> float:
  """Useful FLOPs to generate `new_tokens` per row (formula in the module docstring)."""
  n_matmul = cfg.num_params - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model)
  attn = sum(4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * (prompt_len + i)
             for i in range(new_tokens))
  return batch * (2 * n_matmul * new_tokens + attn)


def peak_flops(n: int = 2048, reps: int = 5) -> float:
  """Best float32 matmul FLOP/s of one `jnp.dot`."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  best = min(_timed(lambda: dot(a, b).block_until_ready()) for _ in range(reps))
  return 2 * n ** 3 / best


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def run_batch(batch: int, new_tokens: int, reps: int, sampler, state, cfg, model) -> dict:
  """Times both sides at one batch size; returns tokens/s (best rep) and token agreement."""
  prompts = np.random.default_rng(batch).integers(3, cfg.vocab_size, (batch, PROMPT_LEN))
  max_len = PROMPT_LEN + new_tokens

  def jax_gen():
    _, out = sampler.sample(state, prompts.tolist(), jax.random.key(0), max_len=max_len,
                            max_new_tokens=new_tokens, stop="none", temperature=0.0)
    return np.asarray(out.tokens)  # blocks until done

  ids = torch.as_tensor(prompts, dtype=torch.long)
  mask = torch.ones_like(ids)

  def torch_gen():
    with torch.inference_mode():
      out = model.generate(ids, attention_mask=mask, do_sample=False,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           pad_token_id=0)
    return out[:, PROMPT_LEN:].numpy()

  t = time.perf_counter()
  jax_out = jax_gen()
  log(f"  b={batch}: jax compile + first run {time.perf_counter() - t:.1f}s")
  torch_out = torch_gen()
  assert jax_out.shape == torch_out.shape == (batch, new_tokens), (jax_out.shape,
                                                                     torch_out.shape)
  jax_t, torch_t = [], []
  for r in range(reps):
    jax_t.append(_timed(jax_gen))
    torch_t.append(_timed(torch_gen))
    log(f"  b={batch} rep {r}: jax {jax_t[-1]:.2f}s  torch {torch_t[-1]:.2f}s")
  toks = batch * new_tokens
  # Greedy paths agree until a near-tie argmax flips under fp32 rounding differences.
  first_diff = [np.flatnonzero(a != b)[0] if (a != b).any() else new_tokens
                for a, b in zip(jax_out, torch_out)]
  return dict(jax=toks / min(jax_t), torch=toks / min(torch_t),
              jax_median=toks / statistics.median(jax_t),
              torch_median=toks / statistics.median(torch_t),
              jax_best_s=min(jax_t), torch_best_s=min(torch_t),
              agree_prefix=float(np.mean(first_diff)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="1 timed rep instead of 3")
  parser.add_argument("--new_tokens", type=int, default=128)
  args = parser.parse_args()
  reps = 1 if args.quick else 3
  start = time.perf_counter()
  cores = os.cpu_count() or 1
  torch.set_num_threads(cores)
  log(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, "
      f"transformers {transformers.__version__}, {cores} cores, torch threads "
      f"{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
      f"load average {os.getloadavg()[0]:.1f}")

  with tempfile.TemporaryDirectory() as tmp:
    model = hf_model(tmp)
    cfg, graphdef, state = convert.load_hf_llama(tmp, max_len=PROMPT_LEN + args.new_tokens)
  log(f"model: {cfg.num_params / 1e6:.1f}M params, L={cfg.num_layers} d={cfg.d_model} "
      f"H={cfg.num_heads}/{cfg.num_kv_heads} mlp={cfg.mlp_dim} V={cfg.vocab_size}, "
      f"prompt {PROMPT_LEN} + {args.new_tokens} new tokens")
  # stop='none' ignores EOS and step ends; the step id lies outside the vocabulary.
  tok = types.SimpleNamespace(eos_id=model.config.eos_token_id, pad_id=0,
                              step_ids=lambda delimiter: (cfg.vocab_size,))
  sampler = Sampler.for_transformer(graphdef, cfg, tok, "\n")

  peak = peak_flops()
  log(f"matmul peak (2048^3 float32 jnp.dot): {peak / 1e9:.1f} GFLOP/s")
  res = {}
  for batch in (1, 64):
    res[batch] = r = run_batch(batch, args.new_tokens, reps, sampler, state, cfg, model)
    log(f"b={batch}: jax {r['jax']:.0f} tok/s, torch {r['torch']:.0f} tok/s, "
        f"ratio {r['jax'] / r['torch']:.2f} (best of {reps}); greedy outputs agree for "
        f"the first {r['agree_prefix']:.1f} tokens on average")
  peak = max(peak, peak_flops())  # again after the runs; the best is the peak
  achieved = model_flops(cfg, 64, PROMPT_LEN, args.new_tokens) / res[64]["jax_best_s"]
  log(f"b=64 model FLOP/s {achieved / 1e9:.1f} G of peak {peak / 1e9:.1f} G "
      f"-> MFU {achieved / peak:.3f}; total {time.perf_counter() - start:.0f}s")
  print(json.dumps({
      "benchmark": "sampler",
      "ratio_b1": round(res[1]["jax"] / res[1]["torch"], 3),
      "ratio_b64": round(res[64]["jax"] / res[64]["torch"], 3),
      "jax_tokens_per_s_b64": round(res[64]["jax"], 1),
      "torch_tokens_per_s_b64": round(res[64]["torch"], 1),
      "mfu_b64": round(achieved / peak, 4),
      "jax_tokens_per_s_b1": round(res[1]["jax"], 1),
      "torch_tokens_per_s_b1": round(res[1]["torch"], 1),
      "ratio_b64_median": round(res[64]["jax_median"] / res[64]["torch_median"], 3),
      "achieved_gflops_b64": round(achieved / 1e9, 2),
      "peak_gflops": round(peak / 1e9, 2),
      "params": cfg.num_params,
      "new_tokens": args.new_tokens,
      "prompt_len": PROMPT_LEN,
      "reps": reps,
      "cores": cores,
      "seconds": round(time.perf_counter() - start, 1),
      "load_avg_1min_end": round(os.getloadavg()[0], 2),  # > cores: other jobs competed
  }))


if __name__ == "__main__":
  main()
