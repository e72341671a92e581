"""Sample full solutions of a batch of questions, decode and grade them (paper §3.1: pass@1).

The one sample -> decode -> grade step of every evaluation (base-LM accuracy,
verifier evaluation, difficulty samples, the larger model): each prompt is
BOS + the example's prompt, prefilled once and broadcast to its samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from ttc_jax.parallel import mesh as mesh_lib
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.tasks.base import Answer, Example, Task
from ttc_jax.tokenizers.base import Tokenizer


@dataclasses.dataclass
class Solutions:
  """`num_samples` solutions per example, example-major (`row = example * k + sample`).

  Attributes:
    rows: `[B, max_len]` prompt + solution tokens, as the sampler left them.
    prompt_len: `[B]` prompt tokens of each row (BOS included).
    lengths: `[B]` generated tokens of each row.
    answers: `[B]` the task's answer of each solution (None when it has none).
    correct: `[B]` bool, whether that answer is the example's.
    texts: `[B]` decoded solutions.
  """

  rows: np.ndarray
  prompt_len: np.ndarray
  lengths: np.ndarray
  answers: list[Answer | None]
  correct: np.ndarray
  texts: list[str]


def sample(sampler: Sampler, params: Any, examples: Sequence[Example], task: Task,
           tokenizer: Tokenizer, key: jax.Array, *, num_samples: int = 1,
           max_len: int | None = None, temperature: float = 1.0,
           mesh: Mesh | None = None) -> Solutions:
  """Samples, decodes and grades `num_samples` solutions (stop at EOS) of each example."""
  prompts = [tokenizer.encode(e.prompt, bos=True) for e in examples]
  state, out = sampler.sample(params, prompts, key, num_samples=num_samples, max_len=max_len,
                              stop="eos", temperature=temperature, mesh=mesh)
  rows, lengths, generated = mesh_lib.to_host((state.tokens, out.lengths, out.tokens))
  texts = [tokenizer.decode(g) for g in generated]
  answers = [task.extract_answer(t) for t in texts]
  correct = np.asarray([task.is_correct(a, examples[r // num_samples])
                        for r, a in enumerate(answers)], bool)
  return Solutions(rows=rows, prompt_len=np.repeat([len(p) for p in prompts], num_samples),
                   lengths=np.asarray(lengths), answers=answers, correct=correct, texts=texts)
