"""The accelerator path of benchmarks/sampler.py, run on CPU with its tiny model."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sampler_benchmark_tiny_reports_every_batch_with_bandwidth_and_mfu():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "sampler.py"), "--tiny",
                        "--quick", "--new_tokens=8"], capture_output=True, text=True, env=env,
                       timeout=600, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["device"] == "cpu" and result["dtype"] == "float32"
  for b in (1, 64):
    assert result[f"jax_tokens_per_s_b{b}"] > 0 and result[f"torch_tokens_per_s_b{b}"] > 0
    assert 0 < result[f"mfu_b{b}"] < 1 and result[f"hbm_gb_per_s_b{b}"] > 0
    assert result[f"agree_prefix_b{b}"] == 8  # same weights, float32: the same greedy tokens
  assert result["peak_source"] == "measured float32 jnp.dot"
  assert result["hbm_fraction_b64"] is None  # no published figure for a CPU


def test_published_peaks_and_decode_bytes():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("bench_sampler",
                                                os.path.join(ROOT, "benchmarks", "sampler.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  assert bench.chip_peaks(types.SimpleNamespace(device_kind="NVIDIA H200")) == (989e12, 4.8e12)
  assert bench.chip_peaks(types.SimpleNamespace(device_kind="TPU v5 lite")) == (197e12, 0.819e12)
  assert bench.chip_peaks(types.SimpleNamespace(device_kind="cpu")) == (None, None)
  cfg = types.SimpleNamespace(dtype="bfloat16", num_layers=2, num_kv_heads=2, head_dim=4)
  # 2 steps at contexts 3 and 4: params twice, K and V of 2 layers x 2 heads x 4 dims x 2 bytes.
  assert bench.decode_bytes(cfg, 5, 3, 2, 1000) == 2 * 1000 + 5 * (2 * 2 * 2 * 4 * 2) * (3 + 4)
