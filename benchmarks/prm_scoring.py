"""PRM scoring during search: incremental (KV cache, prefill/extend) vs re-encoding every prefix.

A batch of 64 random 10-step solutions (steps of 8-12 tokens, the last ending in
EOS) is scored step by step, as beam search does (paper §5.2): after each step
every row needs the PRM score of its new step end.
  * incremental: `reward.prefill` the prompts once, then `reward.extend` each
    step's new tokens at each row's position (cost: the new tokens only);
  * full recompute: at each step, encode the whole prefix so far and read the
    logit at the new step end.
Both run the same jitted model with static shapes, so blocks are right-padded:
the step block to the step's longest row and the full prefix to the longest
prefix, each rounded up to a multiple of `--pad_multiple` (4 keeps the padding
small while bounding the number of compiled shapes). Padding counts as encoded.
Both methods are compiled and run once before timing; timed reps alternate.

  python benchmarks/prm_scoring.py

Prints progress, then one JSON line last:
  speedup = full-recompute time / incremental time,
  tokens_encoded_ratio = tokens encoded incrementally (padding included) /
                         tokens in the solutions (prompt + steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from ttc_jax.models import reward, transformer
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tasks.chain_arithmetic import problems
from ttc_jax.tokenizers.char import CharTokenizer

CFG = transformer.TransformerConfig(vocab_size=22, d_model=96, num_layers=3, num_heads=4,
                                    num_kv_heads=2, head_dim=24, mlp_dim=256, max_len=160)


def log(msg: str) -> None:
  print(msg, flush=True)


def round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def make_solutions(rng: np.random.Generator, tok: CharTokenizer, batch: int, steps: int):
  """Prompts [BOS, 7-13 chars, '\\n'] and `steps` steps of 8-12 tokens ('\\n' / EOS last)."""
  content = np.array(tok.encode("0123456789+-="))
  (step_id,) = tok.step_ids(problems.STEP_DELIMITER)
  prompts = [[tok.bos_id] + list(rng.choice(content, rng.integers(7, 14))) + [step_id]
             for _ in range(batch)]
  sols = []
  for _ in range(batch):
    row = [list(rng.choice(content, rng.integers(7, 12))) + [step_id] for _ in range(steps)]
    row[-1][-1] = tok.eos_id
    sols.append(row)
  return prompts, sols


def build_inputs(prompts, sols, pad: int, fill: int):
  """Padded device arrays for both methods, and the token counts each encodes."""
  b, steps = len(prompts), len(sols[0])
  p_len = np.array([len(p) for p in prompts])
  step_len = np.array([[len(s) for s in row] for row in sols])  # [B, steps]
  ends = p_len[:, None] + np.cumsum(step_len, axis=1) - 1       # [B, steps] step-end index
  total = int(p_len.sum() + step_len.sum())

  p = round_up(int(p_len.max()), pad)
  prompt_tokens = np.full((b, p), fill, np.int32)
  for i, pr in enumerate(prompts):
    prompt_tokens[i, :len(pr)] = pr
  blocks = []
  for k in range(steps):
    t = round_up(int(step_len[:, k].max()), pad)
    blk = np.full((b, t), fill, np.int32)
    for i, row in enumerate(sols):
      blk[i, :len(row[k])] = row[k]
    blocks.append((jnp.asarray(blk), jnp.asarray(step_len[:, k], jnp.int32)))
  incremental_encoded = b * p + sum(b * blk.shape[1] for blk, _ in blocks)

  width = round_up(int(ends.max()) + 1, pad)
  full_tokens = np.full((b, width), fill, np.int32)
  for i, (pr, row) in enumerate(zip(prompts, sols)):
    seq = pr + sum(row, [])
    full_tokens[i, :len(seq)] = seq
  prefixes = []
  for k in range(steps):
    w = round_up(int(ends[:, k].max()) + 1, pad)
    prefixes.append((jnp.asarray(full_tokens[:, :w]), jnp.asarray(ends[:, k:k + 1], jnp.int32)))
  full_encoded = sum(b * pre.shape[1] for pre, _ in prefixes)
  cache_len = round_up(int(ends.max()) + 1 + max(blk.shape[1] for blk, _ in blocks), pad)
  return dict(prompt=(jnp.asarray(prompt_tokens), jnp.asarray(p_len, jnp.int32)), blocks=blocks,
              prefixes=prefixes, total=total, incremental_encoded=incremental_encoded,
              full_encoded=full_encoded, cache_len=cache_len)


def score_incremental(graphdef, state, inputs) -> jax.Array:
  st = reward.prefill(graphdef, state, *inputs["prompt"], inputs["cache_len"])
  out = []
  for blk, lens in inputs["blocks"]:
    st, logit = reward.extend(graphdef, state, st, blk, lens)
    out.append(jax.nn.sigmoid(logit))
  return jax.block_until_ready(jnp.stack(out, axis=1))


def score_full(graphdef, state, inputs) -> jax.Array:
  out = [reward.step_scores(graphdef, state, pre, end)[:, 0] for pre, end in inputs["prefixes"]]
  return jax.block_until_ready(jnp.stack(out, axis=1))


def timed(fn) -> tuple[float, jax.Array]:
  t = time.perf_counter()
  out = fn()
  return time.perf_counter() - t, out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--pad_multiple", type=int, default=4)
  args = parser.parse_args()
  start = time.perf_counter()
  tok = CharTokenizer(chain_arithmetic.ALPHABET)
  assert tok.vocab_size == CFG.vocab_size
  graphdef, state = reward.create(CFG, seed=0)
  log(f"jax {jax.__version__} ({jax.devices()[0].platform}), {os.cpu_count()} cores; reward "
      f"model {CFG.num_params / 1e6:.2f}M params (L={CFG.num_layers} d={CFG.d_model}); "
      f"batch {args.batch} x {args.steps} steps")
  prompts, sols = make_solutions(np.random.default_rng(0), tok, args.batch, args.steps)
  inputs = build_inputs(prompts, sols, args.pad_multiple, tok.pad_id)
  if inputs["cache_len"] > CFG.max_len:
    raise ValueError(f"Solutions need a cache of {inputs['cache_len']} slots, more than "
                     f"max_len={CFG.max_len}; use fewer or shorter steps.")
  log(f"tokens in solutions {inputs['total']}, encoded: incremental "
      f"{inputs['incremental_encoded']}, full recompute {inputs['full_encoded']} "
      f"(cache {inputs['cache_len']} slots)")

  inc = lambda: score_incremental(graphdef, state, inputs)
  full = lambda: score_full(graphdef, state, inputs)
  t_inc, s_inc = timed(inc)
  t_full, s_full = timed(full)
  log(f"compile + first run: incremental {t_inc:.1f}s, full recompute {t_full:.1f}s")
  max_diff = float(jnp.abs(s_inc - s_full).max())
  log(f"max |score difference| between the methods: {max_diff:.2e}")
  if max_diff > 1e-4:
    raise AssertionError(f"incremental and full scores differ by {max_diff}")

  inc_t, full_t = [], []
  for r in range(args.reps):
    inc_t.append(timed(inc)[0])
    full_t.append(timed(full)[0])
    log(f"rep {r}: incremental {inc_t[-1] * 1e3:.1f} ms, full recompute {full_t[-1] * 1e3:.1f} ms")
  speedup = statistics.median(full_t) / statistics.median(inc_t)
  log(f"median: incremental {statistics.median(inc_t) * 1e3:.1f} ms, full recompute "
      f"{statistics.median(full_t) * 1e3:.1f} ms -> speedup {speedup:.2f}x; "
      f"total {time.perf_counter() - start:.0f}s")
  print(json.dumps({
      "benchmark": "prm_scoring",
      "speedup": round(speedup, 3),
      "tokens_encoded_ratio": round(inputs["incremental_encoded"] / inputs["total"], 3),
      "tokens_encoded_ratio_full": round(inputs["full_encoded"] / inputs["total"], 3),
      "incremental_ms": round(statistics.median(inc_t) * 1e3, 2),
      "full_recompute_ms": round(statistics.median(full_t) * 1e3, 2),
      "speedup_best": round(min(full_t) / min(inc_t), 3),
      "solution_tokens": inputs["total"],
      "incremental_tokens_encoded": inputs["incremental_encoded"],
      "full_tokens_encoded": inputs["full_encoded"],
      "max_score_diff": max_diff,
      "batch": args.batch,
      "steps": args.steps,
      "pad_multiple": args.pad_multiple,
      "reps": args.reps,
      "platform": jax.devices()[0].platform,
      "seconds": round(time.perf_counter() - start, 1),
  }))


if __name__ == "__main__":
  main()
