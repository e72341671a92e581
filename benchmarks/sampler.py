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

On an accelerator (`--device=gpu` or `tpu`) the model is a 1B-class Llama (the
Llama-3.2-1B shape: 16 layers, d 2048, 32/8 heads, vocab 128,256, tied
embeddings) with bfloat16 parameters and activations on both sides, at batch
1, 64 and 256, and the figures are absolute: decode tokens/s, HBM bandwidth
(parameter bytes + KV-cache bytes read per decode step, over the step time) and
MFU, each against the chip's published peak (`PEAKS`; bfloat16 dense). `--tiny`
runs the same path with a tiny model on any device (the test runs it on CPU).

  python benchmarks/sampler.py [--quick] [--device=cpu|gpu|tpu] [--tiny]

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


def _args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="1 timed rep instead of 3")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--device", choices=("cpu", "gpu", "tpu"), default="cpu")
  parser.add_argument("--tiny", action="store_true", help="a tiny model (tests the code path)")
  return parser.parse_args()


ARGS = _args() if __name__ == "__main__" else None
# Chosen before jax loads: the platform is fixed at import.
os.environ.setdefault("JAX_PLATFORMS", {"gpu": "cuda"}.get(getattr(ARGS, "device", "cpu"),
                                                           getattr(ARGS, "device", "cpu")))
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
# The Llama-3.2-1B shape (1.24B parameters), random weights, for accelerators.
MODEL_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=500000.0,
                tie_word_embeddings=True)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True)
PROMPT_LEN = 16
# Published peaks per chip: (bfloat16 dense FLOP/s, HBM bytes/s), matched on `device_kind`.
PEAKS = {
    "H200": (989e12, 4.8e12), "H100 80GB HBM3": (989e12, 3.35e12), "H100 PCIe": (756e12, 2.0e12),
    "A100-SXM4-80GB": (312e12, 2.039e12), "A100-SXM4-40GB": (312e12, 1.555e12),
    "L4": (121e12, 0.3e12), "TPU v4": (275e12, 1.2e12), "TPU v5 lite": (197e12, 0.819e12),
    "TPU v5p": (459e12, 2.765e12), "TPU v6 lite": (918e12, 1.64e12),
}


def log(msg: str) -> None:
  print(msg, flush=True)


def hf_model(path: str, shape: dict, bf16: bool, seed: int = 0) -> transformers.LlamaForCausalLM:
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).eval()
  model = model.to(torch.bfloat16) if bf16 else model.float()
  model.save_pretrained(path, safe_serialization=True)
  return model


def chip_peaks(device) -> tuple[float | None, float | None]:
  """(FLOP/s, HBM bytes/s) published for `device`, or (None, None) when not in `PEAKS`."""
  kind = getattr(device, "device_kind", "")
  for name, peaks in PEAKS.items():
    if name.lower() in kind.lower():
      return peaks
  return None, None


def decode_bytes(cfg, batch: int, prompt_len: int, new_tokens: int, param_bytes: int) -> float:
  """HBM bytes a decode reads: every matmul parameter once per step, plus the filled KV cache."""
  item = jnp.dtype(cfg.dtype).itemsize
  kv = sum(2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * (prompt_len + i) * item
           for i in range(new_tokens))
  return new_tokens * param_bytes + batch * kv


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


def run_batch(batch: int, new_tokens: int, reps: int, sampler, state, cfg, model,
              torch_device: str = "cpu") -> dict:
  """Times both sides at one batch size; returns tokens/s (best rep) and token agreement."""
  prompts = np.random.default_rng(batch).integers(3, cfg.vocab_size, (batch, PROMPT_LEN))
  max_len = PROMPT_LEN + new_tokens

  def jax_gen():
    _, out = sampler.sample(state, prompts.tolist(), jax.random.key(0), max_len=max_len,
                            max_new_tokens=new_tokens, stop="none", temperature=0.0)
    return np.asarray(out.tokens)  # blocks until done

  ids = torch.as_tensor(prompts, dtype=torch.long, device=torch_device)
  mask = torch.ones_like(ids)

  def torch_gen():
    with torch.inference_mode():
      out = model.generate(ids, attention_mask=mask, do_sample=False,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           pad_token_id=0)
    return out[:, PROMPT_LEN:].cpu().numpy()  # blocks until done

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
  args = ARGS
  reps = 1 if args.quick else 3
  start = time.perf_counter()
  accel = args.device != "cpu"
  cores = os.cpu_count() or 1
  torch.set_num_threads(cores)
  torch_device = "cuda" if args.device == "gpu" else "cpu"  # torch has no TPU backend here
  dev = jax.devices()[0]
  log(f"jax {jax.__version__} ({dev.platform}: {getattr(dev, 'device_kind', '?')}), torch "
      f"{torch.__version__} ({torch_device}), transformers {transformers.__version__}, {cores} "
      f"cores, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average "
      f"{os.getloadavg()[0]:.1f}")
  shape = TINY if args.tiny else (MODEL_1B if accel else MODEL)
  bf16 = accel  # bfloat16 parameters and activations on accelerators, float32 on CPU
  batches = (1, 64, 256) if accel else (1, 64)
  with tempfile.TemporaryDirectory() as tmp:
    model = hf_model(tmp, shape, bf16).to(torch_device)
    cfg, graphdef, state = convert.load_hf(tmp, max_len=PROMPT_LEN + args.new_tokens,
                                                 dtype="bfloat16" if bf16 else "float32")
  if bf16:
    state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), state)
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  if not cfg.tie_embeddings:  # the input table is a gather of B rows per step, not a read
    param_bytes -= cfg.vocab_size * cfg.d_model * jnp.dtype(cfg.dtype).itemsize
  log(f"model: {cfg.num_params / 1e6:.1f}M params ({param_bytes / 1e9:.2f} GB read per step), "
      f"L={cfg.num_layers} d={cfg.d_model} H={cfg.num_heads}/{cfg.num_kv_heads} "
      f"mlp={cfg.mlp_dim} V={cfg.vocab_size}, {'bfloat16' if bf16 else 'float32'}, prompt "
      f"{PROMPT_LEN} + {args.new_tokens} new tokens")
  # stop='none' ignores EOS and step ends; the step id lies outside the vocabulary.
  tok = types.SimpleNamespace(eos_id=model.config.eos_token_id, pad_id=0,
                              step_ids=lambda delimiter: (cfg.vocab_size,))
  sampler = Sampler.for_transformer(graphdef, cfg, tok, "\n")

  measured_peak = peak_flops()
  log(f"matmul peak (2048^3 float32 jnp.dot): {measured_peak / 1e9:.1f} GFLOP/s")
  res = {}
  for batch in batches:
    res[batch] = r = run_batch(batch, args.new_tokens, reps, sampler, state, cfg, model,
                               torch_device)
    log(f"b={batch}: jax {r['jax']:.0f} tok/s, torch {r['torch']:.0f} tok/s, "
        f"ratio {r['jax'] / r['torch']:.2f} (best of {reps}); greedy outputs agree for "
        f"the first {r['agree_prefix']:.1f} tokens on average")
  measured_peak = max(measured_peak, peak_flops())  # again after the runs; the best is the peak
  chip_flops, chip_bw = chip_peaks(dev)
  published = accel and chip_flops is not None
  peak = chip_flops if published else measured_peak
  out = {"benchmark": "sampler", "device": args.device,
         "device_kind": getattr(dev, "device_kind", dev.platform)}
  for batch in batches:
    r = res[batch]
    achieved = model_flops(cfg, batch, PROMPT_LEN, args.new_tokens) / r["jax_best_s"]
    bw = decode_bytes(cfg, batch, PROMPT_LEN, args.new_tokens, param_bytes) / r["jax_best_s"]
    out.update({f"ratio_b{batch}": round(r["jax"] / r["torch"], 3),
                f"jax_tokens_per_s_b{batch}": round(r["jax"], 1),
                f"torch_tokens_per_s_b{batch}": round(r["torch"], 1),
                f"ratio_b{batch}_median": round(r["jax_median"] / r["torch_median"], 3),
                f"mfu_b{batch}": round(achieved / peak, 4),
                f"achieved_gflops_b{batch}": round(achieved / 1e9, 2),
                f"hbm_gb_per_s_b{batch}": round(bw / 1e9, 2),
                f"hbm_fraction_b{batch}": round(bw / chip_bw, 4) if chip_bw else None,
                f"agree_prefix_b{batch}": round(r["agree_prefix"], 1)})
    log(f"b={batch}: model FLOP/s {achieved / 1e9:.1f} G -> MFU {achieved / peak:.3f}; "
        f"{bw / 1e9:.1f} GB/s" + (f" of {chip_bw / 1e9:.0f} GB/s" if chip_bw else ""))
  out.update({
      "peak_gflops": round(peak / 1e9, 2),
      "peak_source": "published (PEAKS)" if published else "measured float32 jnp.dot",
      "measured_matmul_gflops": round(measured_peak / 1e9, 2),
      "published_hbm_gb_per_s": round(chip_bw / 1e9, 1) if chip_bw else None,
      "params": cfg.num_params, "dtype": "bfloat16" if bf16 else "float32",
      "new_tokens": args.new_tokens, "prompt_len": PROMPT_LEN, "reps": reps, "cores": cores,
      "seconds": round(time.perf_counter() - start, 1),
      "load_avg_1min_end": round(os.getloadavg()[0], 2),  # > cores: other jobs competed
  })
  print(json.dumps(out))


if __name__ == "__main__":
  main()
