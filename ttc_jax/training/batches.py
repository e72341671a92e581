"""Training rows and batches: prompt + target token rows with a loss mask, and epoch batches."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def lm_arrays(inputs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], max_len: int,
              pad_id: int, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Rows of inputs + targets right-padded with `pad_id`, for next-token training.

  Returns `tokens` [N, max_len] int32 and `loss_mask` [N, max_len] float32, 1
  exactly at the target positions; the loss on predicting tokens[:, t] from
  tokens[:, :t] uses loss_mask[:, t]. `names` (e.g. the questions) name a row
  that is too long in the error.
  """
  if int(max_len) != max_len or max_len < 2:
    raise ValueError(f"max_len must be an integer >= 2, got {max_len!r}.")
  if len(inputs) != len(targets):
    raise ValueError(f"Got {len(inputs)} inputs but {len(targets)} targets; they must pair up "
                     "one to one.")
  lengths = np.asarray([len(x) + len(y) for x, y in zip(inputs, targets)], np.int64)
  if len(lengths) and lengths.max() > max_len:
    i = int(np.argmax(lengths))
    what = f" (question {str(names[i])!r})" if names is not None else ""
    raise ValueError(
        f"Example {i}{what} is {lengths[i]} tokens (inputs {len(inputs[i])} + targets "
        f"{len(targets[i])}), longer than max_len={max_len}; {int((lengths > max_len).sum())} "
        f"example(s) are too long. Raise max_len (config.model.max_len) to at least "
        f"{lengths.max()} or use easier difficulty levels.")
  n = len(lengths)
  tokens = np.full((n, max_len), pad_id, np.int32)
  loss_mask = np.zeros((n, max_len), np.float32)
  for i, (x, y) in enumerate(zip(inputs, targets)):
    nx, ny = len(x), len(y)
    tokens[i, :nx] = x
    tokens[i, nx:nx + ny] = y
    loss_mask[i, nx:nx + ny] = 1.0
  return {"tokens": tokens, "loss_mask": loss_mask}


def epoch_batches(arrays: dict[str, np.ndarray], batch_size: int,
                  seed: int) -> Callable[[int], dict[str, np.ndarray]]:
  """`batch_fn(step)` over `arrays`: a fresh permutation per epoch, fixed by (seed, epoch).

  A pure function of the step, so a resumed training run sees the same batches.
  """
  n = len(next(iter(arrays.values())))

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    epoch, offset = divmod(step * batch_size, n)
    idx = np.concatenate([np.random.default_rng([seed, e]).permutation(n)
                          for e in range(epoch, epoch + 1 + batch_size // n + 1)])
    idx = idx[offset:offset + batch_size]
    return {k: v[idx] for k, v in arrays.items()}
  return batch_fn


def group_batches(arrays: dict[str, np.ndarray], groups: np.ndarray, batch_size: int,
                  seed: int) -> Callable[[int], dict[str, np.ndarray]]:
  """`batch_fn(step)` of whole groups (e.g. all solutions of a question), groups shuffled per epoch.

  Every group must have `batch_size / groups_per_batch` rows: `batch_size` a multiple of the
  group size. A pure function of the step, like `epoch_batches`.
  """
  groups = np.asarray(groups)
  order = np.argsort(groups, kind="stable")
  keys, starts, sizes = np.unique(groups[order], return_index=True, return_counts=True)
  size = int(sizes[0]) if len(sizes) else 0
  if not len(keys) or (sizes != size).any() or batch_size % size:
    raise ValueError(f"Group batches need groups of one size dividing batch_size={batch_size}; "
                     f"got sizes {sorted(set(sizes.tolist()))[:5]}. Make the batch size a "
                     f"multiple of the rows per group (e.g. prm.labels.num_solutions).")
  rows = order[starts[:, None] + np.arange(size)[None, :]]             # [groups, size]
  per_batch = batch_size // size
  picks = epoch_batches({"g": np.arange(len(keys))}, per_batch, seed)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    idx = rows[picks(step)["g"]].reshape(-1)
    return {k: v[idx] for k, v in arrays.items()}
  return batch_fn


def pretrain_tokens(tokens: np.ndarray, pad_id: int, total_steps: int, batch_size: int) -> int:
  """D_pretrain (paper §7): steps x batch x mean non-pad tokens per training row."""
  tokens = np.asarray(tokens)
  per_example = float((tokens != pad_id).sum() / len(tokens))
  return int(round(total_steps * batch_size * per_example))
