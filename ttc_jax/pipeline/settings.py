"""Every setting of the job, validated before any compute (docs/design.md, "Configs").

`parse(config)` turns the `ml_collections` config into frozen dataclasses, one per
section, naming any unknown key, missing key or bad value in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

import ml_collections

from ttc_jax.allocator import flops
from ttc_jax.io import configs
from ttc_jax.io import paths
from ttc_jax.models import convert
from ttc_jax.models import open_prm
from ttc_jax.models import reward
from ttc_jax.models import transformer
from ttc_jax.revisions import sequential
from ttc_jax.revisions import trajectories
from ttc_jax.search import base as search_base
from ttc_jax.search import specs
from ttc_jax.tokenizers.base import Tokenizer
from ttc_jax.training import trainer

TOP_LEVEL_KEYS = ("workdir", "seed", "task", "tokenizer", "policy", "model", "train", "eval",
                  "mesh", "prm", "orm", "verifier_eval", "search", "revisions", "allocator")
TOKENIZERS = ("char", "hf")
PARAM_DTYPES = ("float32", "bfloat16", "float16")
LARGE_FIELDS = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim")


def require(section: str, checks: Sequence[tuple[str, Any, bool, str]]) -> None:
  """Raises ValueError on the first `(field, value, ok, what it must be)` that is not ok."""
  for field, value, ok, want in checks:
    if not ok:  # a section's repr spans lines; the error stays one line
      shown = " ".join(repr(value).split())
      raise ValueError(f"{section}.{field}={shown} is invalid; it must be {want}.")


def _positive(section: str, obj: Any, *fields: str) -> None:
  require(section, [(f, getattr(obj, f), getattr(obj, f) >= 1, ">= 1") for f in fields])


def _checkpoint_dir(section: str, field: str, path: str) -> None:
  """A pretrained checkpoint path must be a `save_pretrained` directory (config.json in it)."""
  require(section, [(field, path, isinstance(path, str), "a directory path ('' for none)")])
  if path and not paths.is_local(path):
    raise ValueError(f"config.{section}.{field}={path!r} is not on local disk; checkpoints are "
                     f"read through memory maps, so copy it to a local directory (on every "
                     f"host of a pod) and name that.")
  if path and not paths.exists(paths.join(path, "config.json")):
    what = "does not exist" if not paths.exists(path) else "has no config.json"
    raise ValueError(f"config.{section}.{field}={path!r} {what}; name the directory "
                     f"save_pretrained wrote (config.json, model.safetensors), or '' to train "
                     f"the model on the task.")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """A pretrained policy (config section `policy`, docs/design.md "Checkpoints").

  Attributes:
    checkpoint: a `save_pretrained` directory of a family `models.convert` reads; '' (the
      default) trains the policy from scratch on the task. With one, its config.json sets
      the architecture and config.model only `max_len` (the context) and `dtype`.
    param_dtype: the parameters' dtype on the devices (bfloat16 for real models).
    pretrain_tokens: the tokens it was pretrained on, D_pretrain of the FLOPs exchange
      (paper §7; from its model card); required with a checkpoint.
    chat_template: each task prompt becomes the user turn of the tokenizer's chat template,
      the assistant turn opened (instruct models); needs an 'hf' tokenizer with a template.
  """

  checkpoint: str = ""
  param_dtype: str = "float32"
  pretrain_tokens: int = 0
  chat_template: bool = False

  def __post_init__(self):
    _checkpoint_dir("policy", "checkpoint", self.checkpoint)
    require("policy", [
        ("param_dtype", self.param_dtype, self.param_dtype in PARAM_DTYPES,
         f"one of {list(PARAM_DTYPES)}"),
        ("pretrain_tokens", self.pretrain_tokens,
         self.pretrain_tokens >= 1 or not self.checkpoint,
         ">= 1 with a checkpoint (its pretraining tokens, for the FLOPs exchange)")])


@dataclasses.dataclass(frozen=True)
class PRMConfig:
  """An open PRM in place of the trained one (`config.prm.checkpoint` / `config.prm.format`).

  `checkpoint` '' (the default) trains the PRM on the MC labels; otherwise `format` names
  its scoring rule (`models.open_prm.FORMATS`) and the PRM training is skipped (the labels
  and the ORM still are made: the ORM and the label AUROCs use them).
  """

  checkpoint: str = ""
  format: str = ""
  param_dtype: str = "float32"
  # Weight of the pairwise loss between sibling steps of one question beside the BCE on
  # soft labels (`models.reward.pairwise_sibling_loss`); 0 = the paper's BCE alone.
  ranking_weight: float = 0.0

  def __post_init__(self):
    _checkpoint_dir("prm", "checkpoint", self.checkpoint)
    require("prm", [
        ("ranking_weight", self.ranking_weight,
         isinstance(self.ranking_weight, (int, float)) and not isinstance(
             self.ranking_weight, bool) and 0 <= self.ranking_weight < float("inf"),
         "a finite number >= 0 (0 trains the PRM on the soft labels' BCE alone)"),
        ("format", self.format, bool(self.format) == bool(self.checkpoint),
         f"the open PRM's scoring rule when prm.checkpoint is set (one of "
         f"{sorted(open_prm.FORMATS)}), and '' without one"),
        ("format", self.format, not self.format or self.format in open_prm.FORMATS,
         f"one of {sorted(open_prm.FORMATS)}"),
        ("param_dtype", self.param_dtype, self.param_dtype in PARAM_DTYPES,
         f"one of {list(PARAM_DTYPES)}")])


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_samples: int = 16
  temperature: float = 1.0
  batch_prompts: int = 32

  def __post_init__(self):
    _positive("eval", self, "num_samples", "batch_prompts")
    require("eval", [("temperature", self.temperature, self.temperature >= 0, ">= 0")])


@dataclasses.dataclass(frozen=True)
class PRMLabelConfig:
  """Monte-Carlo soft labels (paper §5.1: 16 solutions x 16 rollouts per step)."""
  num_questions: int = 200
  num_solutions: int = 16
  num_rollouts: int = 16
  shard_size: int = 25
  prefixes_per_batch: int = 64

  def __post_init__(self):
    _positive("prm.labels", self, "num_questions", "num_solutions", "num_rollouts",
              "shard_size", "prefixes_per_batch")
    p = self.prefixes_per_batch
    require("prm.labels", [("prefixes_per_batch", p, not p & (p - 1), "a power of two")])


@dataclasses.dataclass(frozen=True)
class VerifierEvalConfig:
  """Best-of-N on the test split: `max_n` samples per question, scored by PRM and ORM."""
  max_n: int = 64
  budgets: tuple[int, ...] = (4, 16, 64)
  aggregation: str = "last"
  batch_prompts: int = 16
  mc_label_questions: int = 100  # held-out test questions given MC labels for their AUROC

  def __post_init__(self):
    _positive("verifier_eval", self, "max_n", "batch_prompts", "mc_label_questions")
    bad = [n for n in self.budgets if n < 1 or self.max_n % n]
    if bad:
      raise ValueError(f"verifier_eval.budgets {bad} must divide max_n={self.max_n}.")
    if self.aggregation not in reward.AGGREGATIONS:
      raise ValueError(f"verifier_eval.aggregation={self.aggregation!r}; choose one of "
                       f"{reward.AGGREGATIONS}.")


@dataclasses.dataclass(frozen=True)
class SearchSweepConfig:
  """Settings of the search stage (config section `search`)."""

  num_questions: int = 200
  budgets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
  strategies: tuple[str, ...] = ("best_of_n", "beam/beam_width=4", "beam/beam_width=sqrt",
                                 "lookahead/lookahead=1", "dvts/beam_width=4")
  rows_per_batch: int = 1024
  temperature: float = 1.0
  max_step_tokens: int = 16
  max_rounds: int = 40
  compact_rows: bool = False  # SearchConfig.compact_rows; changes no result, only compute

  def __post_init__(self):
    if self.num_questions < 1:
      raise ValueError(f"search.num_questions={self.num_questions} must be >= 1.")
    if not self.budgets or any(not isinstance(b, int) or b < 1 for b in self.budgets):
      raise ValueError(f"search.budgets={self.budgets!r} must be ints >= 1 (e.g. 1, 2, 4 … 256).")
    if self.rows_per_batch < 1:
      raise ValueError(f"search.rows_per_batch={self.rows_per_batch} must be >= 1.")
    _positive("search", self, "max_step_tokens", "max_rounds")
    require("search", [("temperature", self.temperature, self.temperature >= 0,
                        ">= 0 (0 is greedy)"),
                       ("compact_rows", self.compact_rows, isinstance(self.compact_rows, bool),
                        "True or False")])
    if not self.strategies:
      raise ValueError("search.strategies is empty; name at least one, e.g. 'best_of_n'.")
    for spec in self.strategies:
      name, config = specs.parse(spec, self.search_config())  # unknown names and fields fail
      reasons = []
      for b in self.budgets:
        try:
          search_base.check_budget(name, b, config)
          break
        except ValueError as e:
          reasons.append(f"N={b}: {e}")
      else:
        raise ValueError(f"search: strategy {spec!r} can run at none of search.budgets="
                         f"{self.budgets} ({'; '.join(reasons)}); add a budget it can run at "
                         f"or drop the strategy.")

  def search_config(self, **overrides: Any) -> search_base.SearchConfig:
    return search_base.SearchConfig(temperature=self.temperature,
                                    max_step_tokens=self.max_step_tokens,
                                    compact_rows=self.compact_rows,
                                    max_rounds=self.max_rounds, **overrides)


@dataclasses.dataclass(frozen=True)
class RevisionConfig:
  """Every setting of the revision stages (paper §6.1 values in brackets).

  Attributes:
    num_questions: training questions for revision data, spread over the levels.
    samples_per_question: base-LM samples per training question [64].
    max_previous: most previous attempts in a context [4].
    max_chains_per_question: correct samples turned into chains per question (0: all).
    data_shard_size: training questions per data shard.
    context_len: the revision model's window (its TransformerConfig.max_len; RoPE
      lets it exceed the base LM's with the same parameters).
    max_attempt_tokens: most tokens of one attempt, EOS included.
    budgets: generations per test question [up to 256].
    seq_lengths: sequential attempts per chain s; budget N runs as N/s parallel
      chains for every s <= N (1 is all parallel, N all sequential).
    test_per_level: test questions per difficulty level in the sweep.
    sweep_shard_size: test questions per sweep shard (the unit of resumption).
    batch_rows: contexts per sampler call (a power of two).
    temperature: sampling temperature of every attempt.
  """

  num_questions: int = 200
  samples_per_question: int = 64
  max_previous: int = trajectories.MAX_PREVIOUS
  max_chains_per_question: int = 0
  data_shard_size: int = 25
  context_len: int = 320
  max_attempt_tokens: int = 56
  budgets: tuple[int, ...] = (16, 64)
  seq_lengths: tuple[int, ...] = (1, 4, 16, 64)
  test_per_level: int = 20
  sweep_shard_size: int = 50
  batch_rows: int = 512
  temperature: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
    object.__setattr__(self, "seq_lengths", tuple(int(s) for s in self.seq_lengths))
    checks = (
        ("num_questions", self.num_questions >= 1, ">= 1"),
        ("samples_per_question", self.samples_per_question >= 1, ">= 1 (64 in the paper)"),
        ("max_previous", self.max_previous >= 0, ">= 0 (4 in the paper)"),
        ("max_chains_per_question", self.max_chains_per_question >= 0, ">= 0 (0: all)"),
        ("data_shard_size", self.data_shard_size >= 1, ">= 1"),
        ("max_attempt_tokens", self.max_attempt_tokens >= 2, ">= 2"),
        ("context_len", self.context_len > self.max_attempt_tokens,
         f"> max_attempt_tokens={self.max_attempt_tokens}"),
        ("test_per_level", self.test_per_level >= 1, ">= 1"),
        ("sweep_shard_size", self.sweep_shard_size >= 1, ">= 1"),
        ("batch_rows", self.batch_rows >= 1 and not self.batch_rows & (self.batch_rows - 1),
         "a power of two"),
        ("temperature", self.temperature >= 0, ">= 0"),
    )
    for field, ok, want in checks:
      if not ok:
        raise ValueError(f"revisions.{field}={getattr(self, field)!r} is invalid; it must be "
                         f"{want}.")
    try:
      sequential.sweep_ratios(self.budgets, self.seq_lengths)
    except ValueError as e:
      raise ValueError(f"revisions.budgets={self.budgets} / seq_lengths={self.seq_lengths}: "
                       f"{e}") from None

  def check_window(self, tokenizer: Tokenizer,
                   separator: str = trajectories.ATTEMPT_SEPARATOR) -> None:
    """Every attempt is conditioned on at most max_previous earlier ones, so the longest
    context needs room for them; the question's own length is checked per stage."""
    need = trajectories.worst_case_context(tokenizer, 1, self.max_attempt_tokens,
                                           self.max_previous, separator)
    if need > self.context_len:
      raise ValueError(
          f"revisions.context_len={self.context_len} is shorter than {self.max_previous} "
          f"previous attempts + the new one of max_attempt_tokens={self.max_attempt_tokens} "
          f"({need} tokens before the question); raise context_len or lower "
          f"max_attempt_tokens / max_previous.")

  @property
  def chain_lengths(self) -> tuple[int, ...]:
    return sequential.chain_plan(self.budgets, self.seq_lengths)


@dataclasses.dataclass(frozen=True)
class AllocatorConfig:
  """Every setting of the allocator stages (config section `allocator`; paper values in brackets).

  Attributes:
    large_d_model … large_mlp_dim: the larger model's shape; the rest (vocab, max_len, RoPE)
      is the base model's. Paper §7 compares a ~14x larger model.
    large_train: its TrainConfig (same training data as the base LM).
    min_param_ratio: the stage refuses a larger model with fewer times the base's parameters.
    large_samples: temperature-1 samples per question for the larger model's pass@1.
    difficulty_samples: base-LM samples per question for oracle difficulty [2048]; the
      verifier evaluation's samples are reused when it drew at least this many.
    predicted_samples: the first this-many of them, PRM-scored, give predicted difficulty;
      they are counted in the predicted policy's budget (paper §5: predicted bins need no
      ground truth but cost samples).
    num_bins: difficulty levels [5].
    batch_prompts: questions per sampler call.
    temperature: sampling temperature of the difficulty and pass@1 samples.
    baseline: the search strategy spec compared against (best-of-N weighted).
    cv_seed: seeds the 2-fold split inside each bin (paper §3.2).
    interpolate: match budgets on the log2-linear accuracy curve instead of measured points.
    r_values: R = D_inference / D_pretrain of the FLOPs exchange [0.16, 0.79, 22].
    large_checkpoint: a pretrained larger model (a `save_pretrained` directory of the
      policy's family and vocabulary, e.g. a 7B beside a 0.5B) instead of training one; its
      config.json replaces the large_* shape, and large_pretrain_tokens (its model card's
      count, >= 1) its D_pretrain.
  """

  large_d_model: int = 192
  large_num_layers: int = 4
  large_num_heads: int = 8
  large_num_kv_heads: int = 4
  large_head_dim: int = 24
  large_mlp_dim: int = 512
  large_train: trainer.TrainConfig = trainer.TrainConfig(total_steps=1000, batch_size=64)
  min_param_ratio: float = 4.0
  large_samples: int = 4
  difficulty_samples: int = 64
  predicted_samples: int = 16
  num_bins: int = 5
  batch_prompts: int = 16
  temperature: float = 1.0
  baseline: str = "best_of_n"
  cv_seed: int = 0
  interpolate: bool = False
  r_values: tuple[float, ...] = flops.PAPER_R_VALUES
  large_checkpoint: str = ""
  large_pretrain_tokens: int = 0

  def __post_init__(self):
    object.__setattr__(self, "r_values", tuple(float(r) for r in self.r_values))
    _checkpoint_dir("allocator", "large_checkpoint", self.large_checkpoint)
    require("allocator", [("large_pretrain_tokens", self.large_pretrain_tokens,
                           self.large_pretrain_tokens >= 1 or not self.large_checkpoint,
                           ">= 1 with large_checkpoint (its pretraining tokens)")])
    checks = [(f"large_{f}", getattr(self, f"large_{f}") >= 1, ">= 1") for f in LARGE_FIELDS]
    checks += [
        ("large_num_heads", self.large_num_heads % self.large_num_kv_heads == 0,
         f"a multiple of large_num_kv_heads={self.large_num_kv_heads}"),
        ("large_head_dim", self.large_head_dim % 2 == 0, "even (RoPE)"),
        ("large_train", isinstance(self.large_train, trainer.TrainConfig), "a TrainConfig"),
        ("min_param_ratio", self.min_param_ratio >= 1, ">= 1 (paper: ~14)"),
        ("large_samples", self.large_samples >= 1, ">= 1"),
        ("difficulty_samples", self.difficulty_samples >= 1, ">= 1 (paper: 2048)"),
        ("predicted_samples", 1 <= self.predicted_samples <= self.difficulty_samples,
         f"in [1, difficulty_samples={self.difficulty_samples}]"),
        ("num_bins", self.num_bins >= 1, ">= 1 (paper: 5)"),
        ("batch_prompts", self.batch_prompts >= 1, ">= 1"),
        ("temperature", self.temperature > 0, "> 0 (difficulty needs diverse samples)"),
        ("baseline", isinstance(self.baseline, str) and bool(self.baseline),
         "a search strategy spec, e.g. 'best_of_n'"),
        ("r_values", bool(self.r_values) and all(r > 0 and math.isfinite(r)
                                                 for r in self.r_values),
         f"non-empty, each > 0 (paper: {flops.PAPER_R_VALUES})"),
    ]
    for field, ok, want in checks:
      if not ok:
        raise ValueError(f"allocator.{field}={getattr(self, field)!r} is invalid; it must be "
                         f"{want}.")

  def large_model_config(self, base: transformer.TransformerConfig
                         ) -> transformer.TransformerConfig:
    """The larger model: the base's config with this shape, or the config of
    `large_checkpoint` (with the base's context and dtypes); checks `min_param_ratio`."""
    if self.large_checkpoint:
      large = checkpoint_config(self.large_checkpoint, base.max_len, base.dtype,
                                base.param_dtype)
      if large.vocab_size != base.vocab_size:
        raise ValueError(f"allocator.large_checkpoint={self.large_checkpoint!r} has vocab_size "
                         f"{large.vocab_size}, the policy {base.vocab_size}; the FLOPs exchange "
                         f"compares models of one family and tokenizer.")
    else:
      large = dataclasses.replace(base, **{f: getattr(self, f"large_{f}")
                                           for f in LARGE_FIELDS})
    ratio = large.num_params / base.num_params
    if ratio < self.min_param_ratio:
      raise ValueError(f"allocator: the larger model has {large.num_params:,} parameters, "
                       f"{ratio:.2f}x the base's {base.num_params:,}; it must be at least "
                       f"min_param_ratio={self.min_param_ratio}x. Raise large_d_model / "
                       f"large_num_layers / large_mlp_dim.")
    return large


@dataclasses.dataclass(frozen=True)
class Settings:
  """All sections of the config, validated."""

  policy: PolicyConfig
  prm: PRMConfig
  train: trainer.TrainConfig
  eval: EvalConfig
  prm_labels: PRMLabelConfig
  prm_train: trainer.TrainConfig
  orm_train: trainer.TrainConfig
  verifier_eval: VerifierEvalConfig
  search: SearchSweepConfig
  revisions: RevisionConfig
  revision_train: trainer.TrainConfig
  allocator: AllocatorConfig


def parse(config: ml_collections.ConfigDict) -> Settings:
  """Every section of `config` as its dataclass; raises ValueError naming the first problem."""
  unknown = sorted(set(config.keys()) - set(TOP_LEVEL_KEYS))
  if unknown:
    raise ValueError(f"Unknown top-level config key(s) {unknown}; valid: {list(TOP_LEVEL_KEYS)}.")
  for key in ("task", "model", "mesh", "prm.labels", "prm.train", "orm", "orm.train",
              "verifier_eval", "search", "revisions.train", "allocator"):
    section(config, key)
  prm_keys = {f.name for f in dataclasses.fields(PRMConfig)}
  for key, valid in (("prm", {"labels", "train"} | prm_keys), ("orm", {"train"})):
    if set(config[key].keys()) - valid:
      raise ValueError(f"Unknown key(s) {sorted(set(config[key].keys()) - valid)} in "
                       f"config.{key}; valid keys: {sorted(valid)}.")
  workdir = config.get("workdir")
  if not isinstance(workdir, str) or not workdir.strip():
    raise ValueError(f"config.workdir={configs.short_repr(workdir)} must name a directory, e.g. "
                     f"--config.workdir=/tmp/run1.")
  _check_mesh_and_seed(config)
  train = lambda path: trainer.TrainConfig.from_config(section(config, path), path)
  revisions = dict(config.revisions)
  revisions.pop("train")
  allocator = dict(config.allocator)
  if "large_train" in allocator:
    allocator["large_train"] = train("allocator.large_train")
  prm = {k: v for k, v in dict(config.prm).items() if k in prm_keys}
  settings = Settings(
      policy=configs.from_section(PolicyConfig, config.get("policy") or {}, "policy"),
      prm=configs.from_section(PRMConfig, prm, "prm"),
      train=train("train"),
      eval=configs.from_section(EvalConfig, section(config, "eval"), "eval"),
      prm_labels=configs.from_section(PRMLabelConfig, config.prm.labels, "prm.labels"),
      prm_train=train("prm.train"),
      orm_train=train("orm.train"),
      verifier_eval=configs.from_section(VerifierEvalConfig, config.verifier_eval,
                                         "verifier_eval"),
      search=configs.from_section(SearchSweepConfig, config.search, "search"),
      revisions=configs.from_section(RevisionConfig, revisions, "revisions", ("train",)),
      revision_train=train("revisions.train"),
      allocator=configs.from_section(AllocatorConfig, allocator, "allocator"))
  if settings.prm.ranking_weight and settings.prm_train.batch_size % \
      settings.prm_labels.num_solutions:
    raise ValueError(f"prm.ranking_weight > 0 trains on whole questions, so prm.train."
                     f"batch_size={settings.prm_train.batch_size} must be a multiple of "
                     f"prm.labels.num_solutions={settings.prm_labels.num_solutions}.")
  if settings.policy.checkpoint and not settings.allocator.large_checkpoint:
    raise ValueError("policy.checkpoint is a pretrained model, so the larger model of the FLOPs "
                     "exchange must be one too: set allocator.large_checkpoint (a larger model "
                     "of the same family and tokenizer) and allocator.large_pretrain_tokens.")
  if settings.allocator.baseline not in settings.search.strategies:
    raise ValueError(f"allocator.baseline={settings.allocator.baseline!r} is not one of "
                     f"search.strategies {list(settings.search.strategies)}; the allocator "
                     f"compares against it.")
  return settings


def section(config: ml_collections.ConfigDict, path: str) -> Any:
  """`config.<path>` (dotted), which must be a section of keys; else a one-line ValueError."""
  node: Any = config
  for i, key in enumerate(path.split(".")):
    where = ".".join(path.split(".")[:i + 1])
    if not hasattr(node, "keys") or key not in node.keys():
      raise ValueError(f"config.{where} is missing; the job needs the section config.{path} "
                       f"(see configs/demo.py).")
    node = node[key]
  if not hasattr(node, "keys"):
    raise ValueError(f"config.{path} must be a section of keys (a ConfigDict); got "
                     f"{configs.short_repr(node)}.")
  return node


def _check_mesh_and_seed(config: ml_collections.ConfigDict) -> None:
  mesh = dict(config.mesh)
  for key, low in (("data", 0), ("model", 1)):
    value = mesh.get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"config.mesh.{key}={configs.short_repr(value)} must be an int >= {low}"
                       + (" (0: every device)." if key == "data" else "."))
  if set(mesh) - {"data", "model"}:
    raise ValueError(f"Unknown key(s) {sorted(set(mesh) - {'data', 'model'})} in config.mesh; "
                     f"valid keys: ['data', 'model'].")
  if not isinstance(config.get("seed"), int) or isinstance(config.get("seed"), bool):
    raise ValueError(f"config.seed={configs.short_repr(config.get('seed'))} must be an int.")


def checkpoint_config(path: str, max_len: int | None, dtype: str, param_dtype: str
                      ) -> transformer.TransformerConfig:
  """The `TransformerConfig` of a `save_pretrained` directory (its config.json)."""
  with paths.open_file(paths.join(path, "config.json")) as f:
    hf = json.load(f)
  return convert.config_from_hf(hf, max_len=max_len, dtype=dtype, param_dtype=param_dtype)


def model_config(config: ml_collections.ConfigDict, vocab_size: int,
                 policy: PolicyConfig | None = None) -> transformer.TransformerConfig:
  """The policy's config: from `config.model`, or from `policy.checkpoint` (its architecture,
  with `config.model`'s max_len and dtype, and every other key of config.model refused)."""
  if policy is None or not policy.checkpoint:
    return configs.from_section(transformer.TransformerConfig, config.model, "model",
                                vocab_size=vocab_size)
  extra = sorted(set(config.model.keys()) - {"max_len", "dtype"})
  if extra:
    raise ValueError(f"config.model sets {extra}, but policy.checkpoint="
                     f"{policy.checkpoint!r} fixes the architecture; config.model may set only "
                     f"max_len and dtype with a checkpoint.")
  cfg = checkpoint_config(policy.checkpoint, config.model.get("max_len"),
                          config.model.get("dtype", "float32"), policy.param_dtype)
  if vocab_size > cfg.vocab_size:
    raise ValueError(f"The tokenizer has {vocab_size} ids but policy.checkpoint="
                     f"{policy.checkpoint!r} embeds {cfg.vocab_size}; use the checkpoint's own "
                     f"tokenizer (config.tokenizer=dict(name='hf')).")
  return cfg
