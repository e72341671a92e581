"""Exchanging pretraining and test-time FLOPs (paper §7).

The paper's accounting: pretraining costs X = 6·N·D_pretrain and inference Y = 2·N·D_inference
FLOPs for N parameters. A model M× larger (same pretraining tokens, same inference tokens)
costs M·(X + Y). The small model matches that total by generating k× more inference tokens:

  X + k·Y = M·(X + Y)   =>   k = M + 3·(M - 1) / R,   R = D_inference / D_pretrain,

so test-time compute is cheap to exchange when R is large (few pretraining tokens per
inference token) and costly when R is small. The later variant counts the verifier: every
token the small model generates is also scored by a verifier of N_v = v·N parameters,
Y = 2·(N + N_v)·D_inference, while the larger model answers alone (2·M·N·D_inference), so
k = (M + 3·(M - 1) / R) / (1 + v); the paper's same-sized verifier (v = 1) halves k. Our
PRM shares the policy's trunk (v ≈ 1); an open PRM is often larger (a 7B PRM beside a 1.5B
policy: v ≈ 5). `D_inference` counts generated tokens (prompt prefill is not counted, as in
the paper).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PAPER_R_VALUES = (0.16, 0.79, 22.0)


def pretrain_flops(n_params: float, d_pretrain: float) -> float:
  """X = 6·N·D_pretrain (paper §7)."""
  _positive(n_params=n_params, d_pretrain=d_pretrain)
  return 6.0 * n_params * d_pretrain


def inference_flops(n_params: float, d_inference: float, count_verifier: bool = False,
                    n_verifier: float | None = None) -> float:
  """Y = 2·N·D_inference, plus 2·N_v·D_inference with a verifier scoring every token.

  `n_verifier` is the verifier's own parameter count N_v (default N: the paper's same-sized
  verifier, Y = 4·N·D_inference).
  """
  _positive(n_params=n_params)
  _non_negative(d_inference=d_inference)
  n_v = _verifier_params(n_params, n_verifier) if count_verifier else 0.0
  return 2.0 * (n_params + n_v) * d_inference


def total_flops(n_params: float, d_pretrain: float, d_inference: float,
                count_verifier: bool = False, n_verifier: float | None = None) -> float:
  """X + Y of a model with `n_params` parameters (paper §7); Y as in `inference_flops`."""
  return (pretrain_flops(n_params, d_pretrain)
          + inference_flops(n_params, d_inference, count_verifier, n_verifier))


def matching_multiplier(param_ratio: float, r: float, count_verifier: bool = False,
                        verifier_ratio: float = 1.0) -> float:
  """Test-time multiplier k on the small model's inference tokens matching an M× larger model.

  Solves `total(N, D_p, k·D_i) = total(M·N, D_p, D_i)` with `R = D_i / D_p` (paper §7):
  k = M + 3·(M - 1) / R, divided by 1 + v when the small model's verifier (v = N_v / N
  times its size, `verifier_ratio`) is counted; the larger model runs no verifier.
  `param_ratio` is M >= 1.
  """
  _positive(r=r, verifier_ratio=verifier_ratio)
  if not math.isfinite(param_ratio) or param_ratio < 1:
    raise ValueError(f"param_ratio={param_ratio!r} must be >= 1 (the larger model's size in "
                     f"units of the small one; the paper compares a ~14x larger model).")
  k = param_ratio + 3.0 * (param_ratio - 1.0) / r
  return k / (1.0 + verifier_ratio) if count_verifier else k


def equivalent_param_ratio(multiplier: float, r: float, count_verifier: bool = False,
                           verifier_ratio: float = 1.0) -> float:
  """The inverse of `matching_multiplier`: the M whose model costs what k× test-time compute does.

  M = (k' + 3 / R) / (1 + 3 / R) with k' = k, or (1 + v)·k when the verifier is counted.
  """
  _positive(multiplier=multiplier, r=r, verifier_ratio=verifier_ratio)
  k = (1.0 + verifier_ratio) * multiplier if count_verifier else multiplier
  return (k + 3.0 / r) / (1.0 + 3.0 / r)


def exchange_table(n_small: float, n_large: float, d_pretrain: float,
                   r_values: Sequence[float] = PAPER_R_VALUES,
                   n_verifier: float | None = None) -> list[dict]:
  """The FLOPs exchange of paper §7 for each R, without and with the verifier counted.

  One row per (variant, R) with: `variant` ('policy' or 'policy+verifier'), `r`,
  `param_ratio` M = n_large / n_small, `verifier_ratio` v = n_verifier / n_small (0 for the
  'policy' rows; `n_verifier` defaults to n_small, the paper's same-sized verifier),
  `multiplier` k, `d_inference` = R·d_pretrain (the larger model's inference tokens),
  `inference_tokens` = k·d_inference (the small model's matched test-time budget), and both
  models' total FLOPs (`small_flops`, `large_flops`; equal by construction).
  """
  _positive(n_small=n_small, n_large=n_large, d_pretrain=d_pretrain)
  n_v = _verifier_params(n_small, n_verifier)
  if not r_values:
    raise ValueError("r_values is empty; pass ratios D_inference / D_pretrain, e.g. "
                     f"{PAPER_R_VALUES}.")
  m, v = n_large / n_small, n_v / n_small
  rows = []
  for count_verifier in (False, True):
    for r in r_values:
      k = matching_multiplier(m, r, count_verifier, v)
      d_inference = r * d_pretrain
      rows.append({
          "variant": "policy+verifier" if count_verifier else "policy",
          "r": float(r), "param_ratio": m, "verifier_ratio": v if count_verifier else 0.0,
          "multiplier": k,
          "d_inference": d_inference, "inference_tokens": k * d_inference,
          "small_flops": total_flops(n_small, d_pretrain, k * d_inference, count_verifier, n_v),
          "large_flops": total_flops(n_large, d_pretrain, d_inference),
      })
  return rows


def measured_inference_flops(generated_tokens: np.ndarray, verifier_tokens: np.ndarray,
                             n_policy: float, n_verifier: float) -> np.ndarray:
  """Inference FLOPs a strategy actually spent, per question: 2·N_policy·gen + 2·N_verifier·ver.

  Takes `SearchResult.generated_tokens` and `.verifier_tokens` (exact counts, docs/design.md,
  "Compute accounting"); pass `n_verifier=0` for strategies that run no verifier.
  """
  gen = np.asarray(generated_tokens, np.float64)
  ver = np.asarray(verifier_tokens, np.float64)
  if gen.shape != ver.shape:
    raise ValueError(f"generated_tokens {gen.shape} and verifier_tokens {ver.shape} must have "
                     f"the same shape (one count per question).")
  if (gen < 0).any() or (ver < 0).any():
    raise ValueError("Token counts must be >= 0.")
  _positive(n_policy=n_policy)
  _non_negative(n_verifier=n_verifier)
  return 2.0 * n_policy * gen + 2.0 * n_verifier * ver


def _verifier_params(n_params: float, n_verifier: float | None) -> float:
  """The verifier's parameter count: `n_verifier`, or the policy's when None."""
  if n_verifier is None:
    return float(n_params)
  _positive(n_verifier=n_verifier)
  return float(n_verifier)


def _positive(**values: float) -> None:
  for name, v in values.items():
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (
        math.isfinite(v) and v > 0):
      raise ValueError(f"{name}={v!r} must be a finite number > 0.")


def _non_negative(**values: float) -> None:
  for name, v in values.items():
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (
        math.isfinite(v) and v >= 0):
      raise ValueError(f"{name}={v!r} must be a finite number >= 0.")
