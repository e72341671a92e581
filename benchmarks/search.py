"""PRM-guided search: beam and lookahead wall time vs best-of-N weighted, verifier tokens, recompiles.

On the demo-size models, side by side in one run at N = 16 and N = 64 over the
same test questions (paper §5.2):
  * best-of-N weighted: N full samples, one full PRM pass;
  * beam search, M = 4: N rows stepped round by round, PRM scored incrementally;
  * lookahead search, k = 1, M = 4, with N beams (budget N·(k+1) generations);
beam and lookahead with row compaction (`SearchConfig.compact_rows`: a round decodes and
scores only its expanding rows) and without it (`_full`). Every strategy is compiled and run once before timing; timed reps alternate
strategies and the median is kept. Compilations are counted over every timed
run. The verifier's block padding is measured by counting the slots each
`extend` call encodes.

  python benchmarks/search.py [--workdir workdir/demo] [--problems 16] [--reps 3]

With `--workdir` (a finished `ttc-jax --config=configs/demo.py` run) the trained
base LM and PRM are restored, so solutions have their real lengths; without it
both are randomly initialised demo-size models. Prints progress, then one JSON
line last:
  beam_over_bon_time_n64 / lookahead_over_bon_time_n64 (and _n16, and _full without
    compaction): wall-time ratios;
  verifier_tokens_per_generated_token: beam search at N = 64, verifier tokens
    (real, as SearchResult counts them) / policy tokens generated;
  verifier_slots_per_generated_token: the same with block padding and the rows each
    `extend` encodes counted (with compaction; _full without);
  recompiles_after_warmup: compilations during the timed runs (a compacted size not met
    in the warm-up run compiles once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from ttc_jax.compilation import count_compilations
from ttc_jax.models import reward, transformer
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import base
from ttc_jax.tasks import base as tasks
from ttc_jax.tasks import chain_arithmetic
from ttc_jax.tasks.chain_arithmetic import problems as arithmetic
from ttc_jax.tokenizers.char import CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg: str) -> None:
  print(msg, flush=True)


class CountingVerifier(base.Verifier):
  """A PRM that also counts the token slots (padding included) its `extend` calls encode."""

  slots = 0

  def extend(self, score_state, new_tokens, new_lengths):
    CountingVerifier.slots += int(np.prod(new_tokens.shape))
    return super().extend(score_state, new_tokens, new_lengths)


def models(workdir: str | None):
  """`(policy, verifier, examples)`: trained from a demo workdir, or random demo-size ones."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "configs", "demo.py"))
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  config = demo.get_config()
  if workdir:
    from ttc_jax.pipeline import state as run_state  # pylint: disable=g-import-not-at-top
    from ttc_jax.pipeline.stages import base_lm, prm_labels, verifiers  # pylint: disable=g-import-not-at-top
    from ttc_jax.pipeline.stages import data as data_stage  # pylint: disable=g-import-not-at-top
    config.workdir = workdir
    r = run_state.Run.create(config)
    data = data_stage.run(r)
    lm = base_lm.run(r, data)  # restored from the finished run's checkpoints
    trained = verifiers.train(r, data, lm, prm_labels.run(r, data, lm))
    return (base.Policy(lm.sampler, lm.params, r.tokenizer, r.task),
            CountingVerifier(trained.prm.graphdef, trained.prm.state), data.test)
  task = chain_arithmetic.ChainArithmetic(config.task.levels, {}, config.task.seed)  # no data
  tok = CharTokenizer(chain_arithmetic.ALPHABET)
  cfg = transformer.TransformerConfig(vocab_size=tok.vocab_size, **config.model)
  graphdef, state = transformer.create(cfg, 0)
  prm_graphdef, prm_state = reward.from_lm(state, cfg, 1)
  rng = np.random.default_rng(0)
  problems = [arithmetic.make_problem(rng, d, i + 1) for _ in range(20)
              for i, d in enumerate(task.levels)]
  examples = [tasks.Example(p.question, p.prompt, p.solution, p.answer, p.level)
              for p in problems]
  return (base.Policy(Sampler.for_transformer(graphdef, cfg, tok, task.step_delimiter), state,
                      tok, task),
          CountingVerifier(prm_graphdef, prm_state), examples)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default=None, help="a finished demo run to restore models from")
  parser.add_argument("--problems", type=int, default=16)
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  start = time.perf_counter()
  policy, verifier, problems = models(args.workdir)
  # The same number of questions from every level.
  by_level = {}
  for p in problems:
    by_level.setdefault(p.level, []).append(p)
  picked = [q for group in zip(*by_level.values()) for q in group][:args.problems]
  prompts = [policy.tokenizer.encode(p.prompt, bos=True) for p in picked]
  full = base.SearchConfig(beam_width=4, lookahead=1, max_step_tokens=16)
  compact = dataclasses.replace(full, compact_rows=True)
  runs = {"bon": ("best_of_n", 1, full), "beam": ("beam", 1, compact),
          "lookahead": ("lookahead", 2, compact), "beam_full": ("beam", 1, full),
          "lookahead_full": ("lookahead", 2, full)}
  out: dict[str, float] = {}
  recompiles = 0
  for n in (16, 64):
    call = {k: (lambda name=name, mult=mult, cfg=cfg, seed=0: base.get(name)(
        prompts, policy, verifier, n * mult, cfg, jax.random.key(seed))) for k, (name, mult, cfg)
        in runs.items()}
    results = {}
    for k, fn in call.items():
      t = time.perf_counter()
      fn()
      log(f"N={n} {k}: compile + first run {time.perf_counter() - t:.1f}s")
    times = {k: [] for k in call}
    with count_compilations() as c:
      for rep in range(args.reps):
        for k, fn in call.items():
          slots = CountingVerifier.slots
          t = time.perf_counter()
          results[k] = fn(seed=rep + 1)
          times[k].append(time.perf_counter() - t)
          results[k].slots = CountingVerifier.slots - slots
        log(f"N={n} rep {rep}: " + "  ".join(f"{k} {times[k][-1]:.2f}s" for k in call))
    recompiles += c.count
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in runs:
      if k != "bon":
        out[k.replace("_full", "") + f"_over_bon_time_n{n}" + ("_full" if "full" in k else "")] = (
            round(med[k] / med["bon"], 3))
    for k, r in results.items():
      gen, ver = int(r.generated_tokens.sum()), int(r.verifier_tokens.sum())
      acc = float(np.mean([policy.task.is_correct(s, e) for s, e in zip(r.selected, picked)]))
      out[f"{k}_s_n{n}"] = round(med[k], 3)
      out[f"{k}_accuracy_n{n}"] = round(acc, 3)
      out[f"{k}_generated_tokens_n{n}"] = gen
      out[f"{k}_verifier_tokens_per_generated_token_n{n}"] = round(ver / gen, 3)
      if k != "bon":
        padded = r.slots + sum(len(p) for p in prompts)  # prompts: prefilled once, unpadded
        out[f"{k}_verifier_slots_per_generated_token_n{n}"] = round(padded / gen, 3)
  summary = {
      "benchmark": "search",
      "beam_over_bon_time_n64": out["beam_over_bon_time_n64"],
      "lookahead_over_bon_time_n64": out["lookahead_over_bon_time_n64"],
      "verifier_tokens_per_generated_token": out["beam_verifier_tokens_per_generated_token_n64"],
      "verifier_slots_per_generated_token": out["beam_verifier_slots_per_generated_token_n64"],
      "beam_over_bon_time_n64_full": out["beam_over_bon_time_n64_full"],
      "verifier_slots_per_generated_token_full": (
          out["beam_full_verifier_slots_per_generated_token_n64"]),
      "recompiles_after_warmup": recompiles,
      "models": "trained (" + args.workdir + ")" if args.workdir else "random init",
      "problems": len(picked), "reps": args.reps, **out,
      "wall_s": round(time.perf_counter() - start, 1),
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
