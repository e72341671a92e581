"""Stage "data": the task's train and test examples and the base LM's training rows."""

from __future__ import annotations

import dataclasses

from ttc_jax.io import host
from ttc_jax.pipeline import state
from ttc_jax.training import batches


def run(r: state.Run) -> state.Data:
  """Prepares the task's data (once; TFDS for the embedded task) and packs the train split."""
  if host.is_main():  # prepares the task's data once (TFDS writes it on first use)
    r.task.examples("train")
  host.barrier("data prepared")
  train, test = r.task.examples("train"), r.task.examples("test")
  tok = r.tokenizer
  if r.settings.policy.chat_template:  # an instruct policy reads its prompts as chat turns
    chat = lambda e: dataclasses.replace(e, prompt=state.chat_prompt(tok, e.prompt))
    train, test = [chat(e) for e in train], [chat(e) for e in test]
  arrays = batches.lm_arrays([tok.encode(e.prompt, bos=True) for e in train],
                             [tok.encode(e.solution, eos=True) for e in train],
                             r.model_cfg.max_len, tok.pad_id, names=[e.question for e in train])
  r.log("data", f"{len(arrays['tokens'])} train / {len(test)} test examples")
  return state.Data(train=train, test=test, train_arrays=arrays)
