"""The PRM's levers (issue 18, item 1): what closes the gap between the labels and the PRM.

Works on a finished workdir (its data, base LM and, for `--init=large`, larger LM). Two steps:

  # MC soft labels for NQ train questions x NS solutions into WORKDIR/prm_labels_qNQsNS
  python experiments/prm_levers.py labels --config=configs/countdown.py --workdir=W \
      --questions=4800 --solutions=4
  # a PRM trained on them, scored every --eval_every steps
  python experiments/prm_levers.py train --config=configs/countdown.py --workdir=W \
      --labels=prm_labels_q4800s4 --steps=2000 [--init=base|large] [--exact_labels]

The score is the one `summary.json` reports (`prm_first_step_within_question_auroc`): AUROC
of the PRM's first-step score for the task's exact step checker, comparing only siblings of
one question, with its 95% bootstrap interval over questions; here over every test question
x `--samples` base-LM samples, drawn once with a fixed key so variants are compared on the
same solutions. `--exact_labels` trains on the checker's step labels instead of the MC
labels (a diagnostic: is the gap in the labels or in what the PRM learns?). The last line is
one JSON object. Nothing in the workdir is overwritten: labels go to a new folder, and the
PRMs trained here are not saved.
"""

from __future__ import annotations

import argparse
import json
import runpy
import time

import jax
import numpy as np
import optax

from ttc_jax import stats
from ttc_jax.models import reward
from ttc_jax.pipeline import common, state
from ttc_jax.pipeline.stages import data as data_stage
from ttc_jax.pipeline.stages import verifiers
from ttc_jax.sampling import solutions
from ttc_jax.tasks import base as tasks
from ttc_jax.tokenizers import base as tokenizers
from ttc_jax.training import batches, prm_labels, trainer


def load(args, labels: tuple[int, int] | None = None):
  """`(run, data, base LM)` of the finished workdir; `labels` = (questions, solutions)."""
  config = runpy.run_path(args.config)["get_config"]()
  config.workdir = args.workdir
  if labels:
    config.prm.labels.num_questions, config.prm.labels.num_solutions = labels
    config.prm.labels.shard_size = max(50, 800 // labels[1])
  r = state.Run.create(config)
  data = data_stage.run(r)
  lm = common.train_lm(r, data, r.model_cfg, r.settings.train, "base_lm", r.seed)  # restored
  return r, data, lm


def make_labels(args) -> dict:
  r, data, lm = load(args, (args.questions, args.solutions))
  examples = tasks.spread_over_levels(data.train, args.questions)
  name = f"prm_labels_q{args.questions}s{args.solutions}"
  t = time.time()
  common.generate_labels(r, lm, examples, name, r.seed + 100)
  return {"labels": name, "questions": args.questions,
          "distinct_questions": len({e.question for e in examples}),
          "solutions": args.solutions, "seconds": round(time.time() - t)}


def exact_labels(r, d: dict, examples: list) -> np.ndarray:
  """The task's exact step checks of the labelled solutions, in the labels' layout."""
  out = np.zeros_like(d["labels"])
  for i, q in enumerate(d["question_index"]):
    text = r.tokenizer.decode(d["tokens"][i][d["prompt_len"][i]:])
    ok = (r.task.step_correct(examples[q], text) or [])[:int(d["num_steps"][i])]
    out[i, :len(ok)] = np.asarray(ok, np.float32)
  return out


def first_steps(r, lm, examples: list, k: int):
  """`(tokens, first step end, exact check, question)` of k samples of every example."""
  sols = solutions.sample(lm.sampler, lm.params, examples, r.task, r.tokenizer,
                          jax.random.key(12345), num_samples=k, max_len=lm.cfg.max_len)
  ends = tokenizers.find_step_ends(sols.rows, r.tokenizer, r.task.step_delimiter,
                                   sols.prompt_len, max_steps=lm.cfg.max_len)[:, 0]
  keep, ok = [], []
  for i, text in enumerate(sols.texts):
    checks = r.task.step_correct(examples[i // k], text)
    if checks and ends[i] >= 0:
      keep.append(i)
      ok.append(checks[0])
  keep = np.asarray(keep)
  return sols.rows[keep], ends[keep], np.asarray(ok), keep // k


def train(args) -> dict:
  r, data, base_lm = load(args)
  trunk = base_lm
  if args.init == "large":
    large = r.settings.allocator.large_model_config(r.model_cfg)
    trunk = common.train_lm(r, data, large, r.settings.allocator.large_train, "larger_lm",
                            r.seed + 11)  # restored
  graphdef, params = reward.from_lm(trunk.params, trunk.cfg, r.seed)
  d = prm_labels.load_labels(r.path(args.labels))
  questions = int(d["question_index"].max()) + 1
  if args.exact_labels:
    d = dict(d, labels=exact_labels(r, d, tasks.spread_over_levels(data.train, questions)))
  tokens, ends, ok, group = first_steps(r, base_lm, data.test, args.samples)

  score = jax.jit(lambda p, t, e: reward.step_scores(graphdef, p, t, e[:, None])[:, 0])

  def evaluate(p) -> dict:
    s = np.concatenate([np.asarray(score(p, tokens[i:i + 512], ends[i:i + 512]))
                        for i in range(0, len(tokens), 512)])
    ci = stats.within_group_auroc_ci(s, ok, group, rng=np.random.default_rng(0))
    return {"auroc": round(stats.within_group_auroc(s, ok, group), 4),
            "ci": [round(x, 4) for x in ci]}

  arrays = verifiers.prm_arrays(d)
  batch_fn = batches.epoch_batches(arrays, args.batch_size, r.seed)
  cfg = trainer.TrainConfig(total_steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate,
                            warmup_steps=min(50, args.steps // 10))
  tx = trainer.make_optimizer(cfg)
  loss_fn = reward.prm_loss(lambda p, t: reward.apply(graphdef, p, t)[0])

  @jax.jit
  def step(p, opt, batch):
    (_, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt

  opt, history, t = tx.init(params), [], time.time()
  for i in range(args.steps + 1):
    if i % args.eval_every == 0 or i == args.steps:
      history.append({"step": i, **evaluate(params)})
      print(json.dumps(history[-1]), flush=True)
    if i < args.steps:
      params, opt = step(params, opt, batch_fn(i))
  labelled = arrays["labels"][arrays["label_mask"] > 0]
  return {"labels": args.labels, "label_rows": len(d["tokens"]), "questions": questions,
          "exact_labels": args.exact_labels, "label_mean": round(float(labelled.mean()), 4),
          "binary_labels": bool(np.isin(labelled, (0.0, 1.0)).all()), "init": args.init,
          "num_params": verifiers.num_params(params),
          "steps": args.steps, "test_rows": len(tokens), "final": history[-1],
          "best": max(history, key=lambda h: h["auroc"]), "seconds": round(time.time() - t)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", choices=("labels", "train"))
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True, help="a finished run of --config")
  parser.add_argument("--questions", type=int, default=4800)
  parser.add_argument("--solutions", type=int, default=4)
  parser.add_argument("--labels", default="prm_labels", help="a labels folder in --workdir")
  parser.add_argument("--init", choices=("base", "large"), default="base")
  parser.add_argument("--exact_labels", action="store_true")
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--eval_every", type=int, default=500)
  parser.add_argument("--samples", type=int, default=16, help="base-LM samples per test question")
  args = parser.parse_args()
  result = make_labels(args) if args.command == "labels" else train(args)
  print(json.dumps({"experiment": "prm_levers", "command": args.command, **result}))


if __name__ == "__main__":
  main()
