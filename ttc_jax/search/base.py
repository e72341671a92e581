"""The search API shared by every test-time search strategy (paper §5).

One signature for every strategy, registered by name so sweeps, figures and the
FLOPs tables pick up a new strategy from one file and one decorator:

  @register("my_search")
  def search(prompts, policy, verifier, budget, config, rng) -> SearchResult: ...

  result = get("beam")(prompts, policy, verifier, budget=16, config=SearchConfig(), rng=key)

`prompts` are token prompts, one per problem (many problems per call).
`SearchResult` carries the candidates, their per-step verifier scores, the
selected answers and exact compute counts (docs/design.md, "Compute accounting"):
what the strategy spent, never a formula guessed from the config. All
validation (`validate_*`) runs on the host before any compute.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Protocol, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ttc_jax.models import reward
from ttc_jax.sampling.sampler import Sampler
from ttc_jax.search import selection
from ttc_jax.tasks.base import Task
from ttc_jax.tokenizers.base import Tokenizer

Answer = Hashable | None
SELECTIONS = ("weighted", "naive", "majority")


# ---- bundles ----

@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
  """The base LM that proposes solutions: a `Sampler`, its params, tokenizer and task.

  The task's step delimiter marks the steps a PRM scores, and its `extract_answer`
  reads each candidate's final answer.
  """

  sampler: Sampler
  params: Any
  tokenizer: Tokenizer
  task: Task


@dataclasses.dataclass(frozen=True, eq=False)
class Verifier:
  """A PRM (paper §5.1): `(graphdef, state)` of `models.reward` and the step aggregation.

  Search calls only the three methods below, so a test (or another verifier
  family) subclasses this and overrides them; `aggregation` ('last', 'min',
  'prod'; the paper uses 'last') turns per-step scores into a solution score.
  """

  graphdef: nnx.GraphDef | None
  state: Any
  aggregation: str = "last"

  def step_scores(self, tokens: jax.Array, step_ends: jax.Array) -> jax.Array:
    """Full pass: scores `[B, S]` in [0, 1] at `step_ends` (-1 padded) of rows `[B, T]`."""
    return reward.step_scores(self.graphdef, self.state, tokens, step_ends)

  def prefill(self, tokens: jax.Array, lengths: jax.Array, max_len: int) -> reward.ScoreState:
    """Encodes right-padded prompts once (incremental scoring, docs/design.md, "Verifier")."""
    return reward.prefill(self.graphdef, self.state, tokens, lengths, max_len)

  def extend(self, score_state: reward.ScoreState, new_tokens: jax.Array,
             new_lengths: jax.Array) -> tuple[reward.ScoreState, jax.Array]:
    """Encodes only each row's new tokens; returns the state and the logit at its last one."""
    return reward.extend(self.graphdef, self.state, score_state, new_tokens, new_lengths)

  # ---- host hooks: a verifier with its own input format (search/open_prm.py) overrides them ----

  def search_prompts(self, prompts: Sequence[Sequence[int]], tokens: np.ndarray,
                     lengths: np.ndarray, max_len: int, max_step_tokens: int, max_steps: int
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Tree search: the rows `prefill` encodes for `prompts` and its cache slots per row.

    `tokens`/`lengths` are the policy's right-padded `prompts`, `max_len` its
    prompt + solution tokens, each step a block of up to `max_step_tokens`, at most
    `max_steps` steps scored per row. Default: the policy's rows, `max_len + max_step_tokens`.
    """
    del prompts, max_steps
    return tokens, lengths, max_len + max_step_tokens

  def score_rows(self, rows: np.ndarray, ends: np.ndarray, prompt_len: np.ndarray,
                 lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best-of-N: `(tokens, step_ends, num_tokens)` for `step_scores` from the policy's rows.

    `rows` [B, T] are prompt + solution, `ends` [B, S] the step ends (-1 padded),
    `prompt_len`/`lengths` [B] the prompt and solution tokens. Default: the rows as
    they are; the verifier encodes `prompt_len + lengths` real tokens of each.
    """
    return rows, ends, prompt_len + lengths


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Static settings of a search; each strategy reads the fields that concern it.

  Attributes:
    temperature, top_k, top_p: sampling of every generation (`top_k=0` disables it).
    max_len: prompt + solution tokens per candidate (None: the policy's context window).
    selection: final pick over the candidates (paper §5.1): 'weighted' best-of-N
      (the paper's choice), 'naive' best-of-N, or 'majority' vote.
    beam_width: M of beam search (paper §5.2), an int or 'sqrt' for M = √N.
    max_rounds: beam search stops after this many steps (40 in the paper).
    max_step_tokens: most tokens one beam-search step may generate.
    lookahead: k of lookahead search (paper §5.2: k ∈ {1, 3}), the greedy
      rollout steps whose end scores the current step.
    mesh: problems (each with all its samples/beams) shard over this mesh's
      `data` axis; None runs on the default device.
    compact_rows: tree search decodes and scores only the rows that expand in a round
      (rounded up to an eighth of the rows; docs/design.md, "Tree search without idle
      rows"). It compiles a shape per size a run meets, so it pays where a step costs more
      than a compile (real models); off, every round runs the full batch (one shape).
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_len: int | None = None
  selection: str = "weighted"
  beam_width: int | str = 4
  max_rounds: int = 40
  max_step_tokens: int = 32
  lookahead: int = 1
  mesh: Mesh | None = None
  compact_rows: bool = False


@dataclasses.dataclass
class SearchResult:
  """What a search found and spent, per problem (lists / arrays of length num_problems).

  Attributes:
    tokens: per problem, `[K, L]` int32 generated tokens of its K final candidates
      (prompt excluded, PAD after each candidate's end).
    lengths: per problem, `[K]` generated tokens of each candidate.
    texts, answers: per problem, each candidate's decoded text and parsed answer.
    step_scores: per problem, `[K, S]` float32 verifier score of each step (NaN padded).
    scores: per problem, `[K]` solution score (the verifier's aggregation of its steps).
    selected: per problem, the answer picked by `config.selection`.
    samples: `[P]` generations started (full solutions for best-of-N, steps for beam search).
    generated_tokens: `[P]` tokens the policy generated (discarded candidates included).
    verifier_tokens: `[P]` real (non-padding) tokens the verifier encoded.
    budget_used: `[P]` the most generations spent in one round (best-of-N: N,
      its one round); never more than the budget the strategy was given.
  """

  tokens: list[np.ndarray]
  lengths: list[np.ndarray]
  texts: list[list[str]]
  answers: list[list[Answer]]
  step_scores: list[np.ndarray]
  scores: list[np.ndarray]
  selected: list[Answer]
  samples: np.ndarray
  generated_tokens: np.ndarray
  verifier_tokens: np.ndarray
  budget_used: np.ndarray

  @classmethod
  def empty(cls, samples: np.ndarray, generated_tokens: np.ndarray,
            verifier_tokens: np.ndarray, budget_used: np.ndarray) -> "SearchResult":
    """A result with its counts and no problems yet (fill it with `add_problem`)."""
    return cls(tokens=[], lengths=[], texts=[], answers=[], step_scores=[], scores=[],
               selected=[], samples=np.asarray(samples, np.int64),
               generated_tokens=np.asarray(generated_tokens, np.int64),
               verifier_tokens=np.asarray(verifier_tokens, np.int64),
               budget_used=np.asarray(budget_used, np.int64))

  def add_problem(self, gen: np.ndarray, lengths: np.ndarray, per_step: np.ndarray,
                  num_steps: np.ndarray, verifier: "Verifier", policy: Policy,
                  config: "SearchConfig") -> None:
    """Appends one problem's final candidates: scores, texts, answers and the selection."""
    scores = reward.aggregate(per_step, num_steps, verifier.aggregation)
    texts = [policy.tokenizer.decode(g[:n]) for g, n in zip(gen, lengths)]
    answers = [policy.task.extract_answer(t) for t in texts]
    self.tokens.append(gen)
    self.lengths.append(np.asarray(lengths, np.int64))
    self.texts.append(texts)
    self.answers.append(answers)
    self.step_scores.append(per_step)
    self.scores.append(scores)
    self.selected.append(select(answers, scores, config.selection))


class SearchFn(Protocol):

  def __call__(self, prompts: Sequence[Sequence[int]], policy: Policy, verifier: Verifier,
               budget: int, config: SearchConfig, rng: jax.Array) -> SearchResult:
    ...


# ---- registry ----

BudgetCheck = Callable[[int, "SearchConfig"], None]
_REGISTRY: dict[str, SearchFn] = {}
_CHECKS: dict[str, BudgetCheck] = {}


def register(name: str, check: BudgetCheck | None = None) -> Callable[[SearchFn], SearchFn]:
  """Decorator: makes a search function available as `get(name)`.

  `check(budget, config)`, if given, raises ValueError when the strategy cannot
  run at that budget (e.g. beam search with N not a multiple of M); sweeps call
  it through `check_budget` to skip such cells without spending compute.
  """
  def wrap(fn: SearchFn) -> SearchFn:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"A search strategy named {name!r} is already registered "
                       f"({_REGISTRY[name].__module__}); pick another name.")
    _REGISTRY[name] = fn
    if check is not None:
      _CHECKS[name] = check
    return fn
  return wrap


def check_budget(name: str, budget: int, config: "SearchConfig") -> None:
  """Raises ValueError if strategy `name` cannot run with `budget` and `config`."""
  get(name)
  validate_budget(budget)
  if name in _CHECKS:
    _CHECKS[name](budget, config)


def get(name: str) -> SearchFn:
  """The search function registered as `name`."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown search strategy {name!r}; registered: {registered()}.")
  return _REGISTRY[name]


def registered() -> list[str]:
  """Names of all registered strategies, sorted."""
  return sorted(_REGISTRY)


# ---- validation (host-side, before any compute) ----

def validate(prompts: Sequence[Sequence[int]], policy: Policy, verifier: Verifier,
             budget: int, config: SearchConfig) -> int:
  """Checks what every strategy needs; returns the total length `max_len` to decode into."""
  validate_budget(budget)
  if not len(prompts):
    raise ValueError("search() needs at least one problem prompt.")
  if config.selection not in SELECTIONS:
    raise ValueError(f"selection={config.selection!r}; choose one of {SELECTIONS}.")
  if verifier.aggregation not in reward.AGGREGATIONS:
    raise ValueError(f"Verifier aggregation={verifier.aggregation!r}; choose one of "
                     f"{reward.AGGREGATIONS}.")
  if config.temperature < 0:
    raise ValueError(f"temperature={config.temperature} must be >= 0 (0 is greedy).")
  if config.top_k < 0:
    raise ValueError(f"top_k={config.top_k} must be >= 0 (0 disables top-k).")
  if not 0 < config.top_p <= 1:
    raise ValueError(f"top_p={config.top_p} must be in (0, 1].")
  max_len = config.max_len or policy.sampler.context_len
  if max_len > policy.sampler.context_len:
    raise ValueError(f"max_len={max_len} exceeds the policy's context window "
                     f"({policy.sampler.context_len}); lower SearchConfig.max_len.")
  for i, p in enumerate(prompts):
    if len(p) < 1:
      raise ValueError(f"Prompt {i} is empty; every prompt needs at least one token (e.g. BOS).")
    if len(p) >= max_len:
      raise ValueError(f"Prompt {i} has {len(p)} tokens, leaving no room to generate within "
                       f"max_len={max_len}; shorten it or raise SearchConfig.max_len.")
  return max_len


def validate_budget(budget: int) -> None:
  if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
    raise ValueError(f"budget={budget!r}: the number of generations N must be an int >= 1 "
                     f"(the paper sweeps 1 … 256).")


def beam_width(budget: int, config: SearchConfig) -> int:
  """M for budget N (paper §5.2: M = 4 or M = √N); raises unless M divides N."""
  m = config.beam_width
  if m == "sqrt":
    m = math.isqrt(budget)
    if m * m != budget:
      raise ValueError(f"beam_width='sqrt' needs a square budget, got N={budget}; use "
                       f"N in (1, 4, 16, 64, 256) or an int beam_width.")
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
    raise ValueError(f"beam_width={config.beam_width!r}; use an int >= 1 or 'sqrt'.")
  if budget < m:
    raise ValueError(f"budget N={budget} is smaller than the beam width M={m}; beam search "
                     f"keeps N/M beams, so use N >= M (e.g. N={m}).")
  if budget % m:
    raise ValueError(f"budget N={budget} is not divisible by the beam width M={m}; beam "
                     f"search keeps N/M beams, so use N a multiple of M "
                     f"(e.g. N={budget - budget % m} or {budget - budget % m + m}).")
  if config.max_rounds < 1:
    raise ValueError(f"max_rounds={config.max_rounds} must be >= 1 (40 in the paper).")
  if config.max_step_tokens < 1:
    raise ValueError(f"max_step_tokens={config.max_step_tokens} must be >= 1.")
  return int(m)


def pad_problems(prompts: Sequence[Sequence[int]],
                 mesh: Mesh | None) -> list[Sequence[int]]:
  """Prompts padded with copies of the last one to a multiple of the mesh's `data` axis.

  Every device then holds whole problems (each with all its rows); callers drop
  the copies' results and counts.
  """
  d = mesh.shape["data"] if mesh is not None else 1
  return list(prompts) + [prompts[-1]] * (-len(prompts) % d)


# ---- shared helpers ----

def select(answers: Sequence[Answer], scores: Sequence[float], how: str) -> Answer:
  """The final pick among candidates by `how` in SELECTIONS (paper §5.1)."""
  if how == "weighted":
    return selection.weighted_best_of_n(answers, scores)
  if how == "naive":
    return selection.best_of_n(answers, scores)
  return selection.majority_vote(answers)


