"""Open PRMs as verifiers (docs/design.md, "Verifier"): each with the input format and
scoring rule its authors document.

  * `qwen_prm` (Qwen2.5-Math-PRM): Qwen2 trunk + a two-class head `score` (Linear,
    ReLU, Linear); chat template with the system prompt below, the question as the
    user turn and the steps as the assistant turn, each step followed by `<extra_0>`;
    step score = softmax(head logits at each `<extra_0>`)[1].
  * `math_shepherd` (peiyi9979/math-shepherd-mistral-7b-prm): a Mistral LM on
    "question step1 ки\\nstep2 ки\\n..."; step score = P("+") of the softmax over the
    LM logits of "+" and "-" at each step tag "ки".
  * `rlhflow` (RLHFlow/Llama3.1-8B-PRM-*-Data): a Llama 3.1 LM on chat turns, the
    first user turn question + " " + step 1, each later step its own user turn, each
    assistant turn "+"; step score = P("+") over the logits of "+" and "-" at the
    assistant position after each user turn.

A format is text (`PRMFormat`); `spec(format, tokenizer)` turns it into the token
ids of one tokenizer (`Spec`, static under jit). Every step becomes
`step + step_suffix + next_prefix`, scored at the suffix's last token, so
scoring stays incremental: `prefill` encodes the PRM's own prompt (the text before
"{steps}"), `extend` one step plus those fixed tokens (a new step costs its own
tokens and the format's). The readout is a logit whose sigmoid is the step
probability: `l_good - l_bad` (log p1 - log p0 of the two-way softmax).

Deviations from the authors' formats, all forced by scoring the policy's own tokens:
the PRM reads the policy's tokenization of each step (not a re-tokenization of the
joined text); EOS/PAD and each step's trailing whitespace-only tokens (the step
delimiter when it is a token of its own, e.g. "\\n\\n") are dropped, but text
merged with a delimiter (".\\n\\n") stays; a step left empty scores as the previous
one (the PRM sees the same text). Leading whitespace of a step stays (RLHFlow's
template trims each user turn), and the PRM's own tokens (format, prompt) are its
checkpoint tokenizer's when it ships one (Qwen2.5-Math-PRM adds `<extra_0>`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax.models import reward, transformer
from ttc_jax.models import convert
from ttc_jax.models.convert import common, safetensors_files
from ttc_jax.tokenizers.base import Tokenizer

PyTree = Any
READOUTS = ("head2", "lm_pair")
STEPS = "{steps}"  # where the steps go in a format's template or messages
HEAD_TENSORS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
_SENTINEL = "\u2063STEPS\u2063"  # stands for the steps while a chat template renders


@dataclasses.dataclass(frozen=True)
class PRMFormat:
  """An open PRM's documented input format and readout, as text.

  Attributes:
    name: the key in `FORMATS`.
    readout: 'head2' (two-class head `score.*`, class 1 is good) or 'lm_pair' (LM
      logits of the `good` and `bad` tokens).
    step_suffix: text after every step; the step is scored at its last token.
    next_prefix: text between a step's suffix and the next step.
    template: plain-text prompt, the steps at "{steps}" (used when `messages` is empty).
    messages: chat turns `(role, content)` rendered by the chat template; "{question}"
      and "{steps}" in the contents. The PRM's prompt is the text before the steps.
    bos: prepend the tokenizer's BOS to a plain-text prompt (a chat template writes its own).
    good, bad: 'lm_pair' tokens: each text's last id (the authors' `encode(t)[-1]`).
    score_token: the suffix must end in this text's last id (the authors' step tag).
    architectures: the `config.json` architectures the checkpoint may name.
  """

  name: str
  readout: str
  step_suffix: str
  next_prefix: str = ""
  template: str = "{question} {steps}"
  messages: tuple[tuple[str, str], ...] = ()
  bos: bool = False
  good: str = "+"
  bad: str = "-"
  score_token: str | None = None
  architectures: tuple[str, ...] = ()


QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
FORMATS = {
    "qwen_prm": PRMFormat(
        name="qwen_prm", readout="head2", step_suffix="<extra_0>", score_token="<extra_0>",
        messages=(("system", QWEN_SYSTEM), ("user", "{question}"), ("assistant", STEPS)),
        architectures=("Qwen2ForProcessRewardModel",)),
    "math_shepherd": PRMFormat(
        name="math_shepherd", readout="lm_pair", step_suffix=" ки", next_prefix="\n",
        template="{question} {steps}", bos=True, score_token="ки",
        architectures=("MistralForCausalLM",)),
    "rlhflow": PRMFormat(
        name="rlhflow", readout="lm_pair",
        step_suffix="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        next_prefix="+<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
        messages=(("user", "{question} {steps}"),), architectures=("LlamaForCausalLM",)),
}


def get_format(fmt: str | PRMFormat) -> PRMFormat:
  """The format named `fmt` in `FORMATS` (a `PRMFormat` passes through)."""
  if isinstance(fmt, PRMFormat):
    return fmt
  if fmt not in FORMATS:
    raise ValueError(f"Unknown open PRM format {fmt!r}; choose one of {sorted(FORMATS)} "
                     f"(or pass a PRMFormat).")
  return FORMATS[fmt]


# ---- the format in token ids (host) ----

@dataclasses.dataclass(frozen=True)
class Spec:
  """A format in one tokenizer's ids; hashable, so a static jit argument.

  `drop` ids (EOS, PAD) never reach the PRM; `space` ids (whitespace-only tokens)
  are dropped at the end of a step.
  """

  readout: str
  suffix: tuple[int, ...]
  next_prefix: tuple[int, ...]
  good: int = -1
  bad: int = -1
  drop: tuple[int, ...] = ()
  space: tuple[int, ...] = ()
  vocab_size: int = 0

  @property
  def overhead(self) -> int:
    """Fixed tokens the PRM encodes per step."""
    return len(self.suffix) + len(self.next_prefix)


def _piece_ids(tokenizer: Tokenizer, text: str) -> tuple[int, ...]:
  """Ids of `text` as it tokenizes after other text (no SentencePiece prefix space)."""
  if not text:
    return ()
  ctx = tokenizer.encode("a")
  ids = tokenizer.encode("a" + text)
  if ids[:len(ctx)] == ctx:
    return tuple(ids[len(ctx):])
  return tuple(tokenizer.encode(text))


def spec(fmt: str | PRMFormat, tokenizer: Tokenizer, vocab_size: int,
         format_tokenizer: Tokenizer | None = None) -> Spec:
  """`fmt` in ids; ValueError if its tokens are not in the vocabulary.

  The format's own tokens (suffix, prefix, +/-) are `format_tokenizer`'s (the PRM
  checkpoint's, which may add tokens such as `<extra_0>` the policy lacks; default
  `tokenizer`); the step tokens dropped (EOS/PAD, whitespace) are the policy's `tokenizer`'s.
  """
  fmt = get_format(fmt)
  if fmt.readout not in READOUTS:
    raise ValueError(f"PRMFormat.readout={fmt.readout!r}; choose one of {READOUTS}.")
  policy_tokenizer, tokenizer = tokenizer, format_tokenizer or tokenizer
  suffix, nxt = _piece_ids(tokenizer, fmt.step_suffix), _piece_ids(tokenizer, fmt.next_prefix)
  if not suffix:
    raise ValueError(f"Format {fmt.name!r} has an empty step_suffix; a step needs a token to "
                     f"be scored at.")
  if fmt.score_token is not None:
    tag = tokenizer.encode(fmt.score_token)
    if not tag or suffix[-1] != tag[-1]:
      raise ValueError(
          f"Format {fmt.name!r}: the step suffix {fmt.step_suffix!r} encodes to {suffix}, "
          f"which does not end in the id of {fmt.score_token!r} ({tag}); the tokenizer is "
          f"not the PRM's (the PRM must share the policy's vocabulary).")
  good = bad = -1
  if fmt.readout == "lm_pair":
    good, bad = tokenizer.encode(fmt.good)[-1], tokenizer.encode(fmt.bad)[-1]
    if good == bad:
      raise ValueError(f"Format {fmt.name!r}: good {fmt.good!r} and bad {fmt.bad!r} map to the "
                       f"same id {good}.")
  ids = [*suffix, *nxt] + ([good, bad] if fmt.readout == "lm_pair" else [])
  if max(ids) >= vocab_size:
    raise ValueError(f"Format {fmt.name!r} uses token id {max(ids)}, outside the PRM's "
                     f"{vocab_size} embedding rows; the PRM must share the policy's vocabulary.")
  tokenizer = policy_tokenizer
  specials = {tokenizer.eos_id, tokenizer.pad_id}
  space = tuple(i for i in range(tokenizer.vocab_size)
                if i not in specials and (t := tokenizer.token_text(i)) and not t.strip())
  return Spec(readout=fmt.readout, suffix=suffix, next_prefix=nxt, good=int(good),
              bad=int(bad), drop=tuple(sorted(specials)), space=space, vocab_size=vocab_size)


def prefix_ids(fmt: str | PRMFormat, tokenizer: Tokenizer, question: str,
               chat_tokenizer: Any = None) -> list[int]:
  """The PRM's prompt for `question`: the format's text before the steps, in ids.

  Chat formats render `messages` with `chat_tokenizer`'s template (the PRM
  checkpoint's tokenizer; default `tokenizer`), which must have `apply_chat_template`.
  """
  fmt = get_format(fmt)
  if fmt.messages:
    chat = chat_tokenizer or tokenizer
    if not hasattr(chat, "apply_chat_template"):
      raise ValueError(f"Format {fmt.name!r} renders a chat template; pass a tokenizer with "
                       f"one (an HFTokenizer of the PRM checkpoint).")
    msgs = [{"role": r, "content": c.replace("{question}", question).replace(STEPS, _SENTINEL)}
            for r, c in fmt.messages]
    text = chat.apply_chat_template(msgs, add_generation_prompt=False)
    if _SENTINEL not in text:
      raise ValueError(f"Format {fmt.name!r}: the chat template dropped the steps' turn; "
                       f"use the PRM's own tokenizer (its chat template).")
    return tokenizer.encode(text[:text.index(_SENTINEL)])
  if STEPS not in fmt.template:
    raise ValueError(f"Format {fmt.name!r}: template {fmt.template!r} has no {STEPS}.")
  text = fmt.template.replace("{question}", question)
  return tokenizer.encode(text[:text.index(STEPS)], bos=fmt.bos)


def _keep(sp: Spec, step: Sequence[int]) -> list[int]:
  """A step's ids as the PRM reads them: no EOS/PAD, no trailing whitespace-only tokens."""
  ids = [int(i) for i in step if int(i) not in sp.drop]
  space = set(sp.space)
  while ids and ids[-1] in space:
    ids.pop()
  return ids


def format_rows(sp: Spec, prefixes: Sequence[Sequence[int]], rows: np.ndarray,
                ends: np.ndarray, start: np.ndarray, pad_id: int, multiple: int = 64
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Host: full-pass PRM rows for policy rows `[B, T]` with step ends `[B, S]` (-1 padded).

  Row b is `prefixes[b]`, then each step (tokens after the previous end, from
  `start[b]`) + suffix, with `next_prefix` between steps. Returns `(tokens [B, W],
  positions [B, S], lengths [B])`: W a multiple of `multiple`, positions the scored
  index of each step (-1 where `ends` is), lengths the real tokens per row.
  """
  rows, ends = np.asarray(rows), np.asarray(ends)
  out, pos = [], np.full(ends.shape, -1, np.int64)
  for b in range(rows.shape[0]):
    seq, prev = list(prefixes[b]), int(start[b]) - 1
    last = len(seq) - 1
    for s, e in enumerate(ends[b]):
      if e < 0:
        continue
      step = _keep(sp, rows[b, prev + 1:e + 1])
      prev = int(e)
      if step:
        if last >= len(prefixes[b]):  # a step was scored before this one
          seq += sp.next_prefix
        seq += step + list(sp.suffix)
        last = len(seq) - 1
      pos[b, s] = last
    out.append(seq)
  lengths = np.array([len(r) for r in out], np.int64)
  width = max(multiple, -(-int(lengths.max(initial=1)) // multiple) * multiple)
  tokens = np.full((len(out), width), pad_id, np.int32)
  for b, seq in enumerate(out):
    tokens[b, :len(seq)] = seq
  return tokens, pos, lengths


# ---- loading ----

class _Trunk:
  """A checkpoint's tensor names without the head's (`common.load` rejects unused tensors)."""

  def __init__(self, ckpt: safetensors_files.Checkpoint, hidden: str):
    self._ckpt, self._hidden = ckpt, hidden

  @property
  def names(self) -> set[str]:
    return {n for n in self._ckpt.names if not n.startswith(self._hidden)}

  def array(self, name: str) -> np.ndarray:
    return self._ckpt.array(name)


def check_checkpoint(path: str | os.PathLike, fmt: str | PRMFormat
                     ) -> tuple[dict, safetensors_files.Checkpoint]:
  """`(config.json, tensors)` of the open PRM at `path` after the checks that need no weights
  (architecture, config, the head's tensors and shapes); ValueError naming what is wrong."""
  fmt = get_format(fmt)
  path = os.fspath(path)
  hf = common.read_config(path, f"of the {fmt.name} checkpoint")
  archs = hf.get("architectures") or []
  common.check(not fmt.architectures or all(a in fmt.architectures for a in archs),
               f"{path!r} is a {archs} checkpoint; format {fmt.name!r} reads "
               f"{list(fmt.architectures)}.")
  ckpt = safetensors_files.Checkpoint(path)
  if fmt.readout == "lm_pair":
    convert.config_from_hf(hf)
    return hf, ckpt
  cfg = convert.config_from_hf(dict(hf, architectures=[], tie_word_embeddings=True))
  missing = [n for n in HEAD_TENSORS if n not in ckpt.names]
  common.check(not missing, f"{path!r} has no head tensors {missing}; format {fmt.name!r} "
               f"needs the two-class head score = Sequential(Linear(H, H), ReLU, "
               f"Linear(H, 2)) (a {fmt.architectures} checkpoint, not a causal LM).")
  d = cfg.d_model
  want = {"score.0.weight": (d, d), "score.0.bias": (d,), "score.2.weight": (2, d),
          "score.2.bias": (2,)}
  for name, shape in want.items():
    common.check(ckpt.shape(name) == shape, f"Head tensor {name!r} has shape "
                 f"{ckpt.shape(name)}, expected {shape} (hidden_size={d}).")
  return hf, ckpt


def load(path: str | os.PathLike, fmt: str | PRMFormat, max_len: int | None = None,
         dtype: str = "float32", param_dtype: str = "float32", mesh=None
         ) -> tuple[transformer.TransformerConfig, nnx.GraphDef, dict]:
  """`(cfg, trunk graphdef, params)` of the open PRM in checkpoint directory `path`.

  'lm_pair' formats load a causal LM through `convert.load_hf` (params `{'trunk'}`);
  'head2' loads the trunk without an LM head plus `score.*` (params `{'trunk', 'head'}`),
  the head replicated over `mesh` when one is given.
  """
  fmt = get_format(fmt)
  path = os.fspath(path)
  hf, ckpt = check_checkpoint(path, fmt)
  if fmt.readout == "lm_pair":
    cfg, graphdef, state = convert.load_hf(path, max_len, dtype, param_dtype, mesh)
    return cfg, graphdef, {"trunk": state}
  # A process reward model: the family's trunk (no LM head, so tied: embed only) + `score`.
  trunk_hf = dict(hf, architectures=[], tie_word_embeddings=True)
  cfg = convert.config_from_hf(trunk_hf, max_len=max_len, dtype=dtype, param_dtype=param_dtype)
  family = convert._BY_TYPE[hf["model_type"]].NAME  # pylint: disable=protected-access
  graphdef, state = common.load(_Trunk(ckpt, "score."), cfg, family, mesh)
  pd = np.dtype(jnp.dtype(param_dtype))

  def arr(name, transpose=False):
    view = ckpt.array(name).T if transpose else ckpt.array(name)
    if mesh is None:
      return jnp.asarray(np.asarray(view, pd))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.make_array_from_callback(view.shape, replicated,
                                        lambda index: np.asarray(view[index], pd))

  head = {"w0": arr("score.0.weight", True), "b0": arr("score.0.bias"),
          "w1": arr("score.2.weight", True), "b1": arr("score.2.bias")}
  return cfg, graphdef, {"trunk": state, "head": head}


# ---- pure scoring functions over (graphdef, params) ----

def _readout(model: transformer.Transformer, params: dict, sp: Spec, h: jax.Array) -> jax.Array:
  """Logit `l_good - l_bad` (float32) of hidden states `h` [..., d]."""
  h = h.astype(jnp.float32)
  if sp.readout == "head2":
    hd = params["head"]
    z = jax.nn.relu(h @ hd["w0"].astype(jnp.float32) + hd["b0"].astype(jnp.float32))
    two = z @ hd["w1"].astype(jnp.float32) + hd["b1"].astype(jnp.float32)
    return two[..., 1] - two[..., 0]
  cfg = model.cfg
  w = model.embed[...].T if cfg.tie_embeddings else model.lm_head[...]
  pair = h @ w[:, jnp.array([sp.good, sp.bad])].astype(jnp.float32)
  if cfg.final_softcap:
    pair = cfg.final_softcap * jnp.tanh(pair / cfg.final_softcap)
  return pair[..., 0] - pair[..., 1]


def _hidden(graphdef, params, tokens, positions=None, cache=None):
  model = nnx.merge(graphdef, params["trunk"])
  h, cache = model.hidden(tokens, positions, cache)
  return model, h, cache


def _gather(h: jax.Array, idx: jax.Array) -> jax.Array:
  """`h[b, idx[b, s]]` -> [B, S, d]; -1 reads index 0 (mask it)."""
  return jnp.take_along_axis(h, jnp.maximum(idx, 0)[..., None], axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "sp"))
def step_scores(graphdef: nnx.GraphDef, params: dict, sp: Spec, tokens: jax.Array,
                positions: jax.Array) -> jax.Array:
  """Full pass over `format_rows` rows: step probabilities `[B, S]` at `positions`; 0 at -1."""
  model, h, _ = _hidden(graphdef, params, tokens)
  logit = _readout(model, params, sp, _gather(h, positions))
  return jnp.where(positions >= 0, jax.nn.sigmoid(logit), 0.0)


@functools.partial(jax.jit, static_argnames=("graphdef", "sp", "max_len"))
def prefill(graphdef: nnx.GraphDef, params: dict, sp: Spec, tokens: jax.Array,
            lengths: jax.Array, max_len: int) -> reward.ScoreState:
  """Encodes right-padded PRM prompts `[B, P]` into a cache of `max_len` slots."""
  b, p = tokens.shape
  if p > max_len:
    raise ValueError(f"prefill tokens have {p} columns but the cache has max_len={max_len} "
                     f"slots; raise max_len.")
  cfg = nnx.merge(graphdef, params["trunk"]).cfg
  positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  model, h, cache = _hidden(graphdef, params, tokens, positions, cfg.init_cache(b, max_len))
  lengths = lengths.astype(jnp.int32)
  last = _readout(model, params, sp, _gather(h, (lengths - 1)[:, None]))[:, 0]
  return reward.ScoreState(cache=cache, positions=lengths,
                           logit=jnp.where(lengths > 0, last, 0.0),
                           overflow=jnp.zeros((b,), bool), max_len=max_len)


def step_block(sp: Spec, new_tokens: jax.Array, new_lengths: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`[B, T + overhead]` blocks `step + suffix + next_prefix` (see `_keep`), their lengths
  (0 for an empty step) and the index of each block's scored token."""
  b, t = new_tokens.shape
  s, n = len(sp.suffix), len(sp.next_prefix)
  col = jnp.arange(t)[None, :]
  ok = col < new_lengths[:, None]
  ok &= ~jnp.isin(new_tokens, jnp.array(sp.drop, jnp.int32))
  if sp.space:
    space = jnp.zeros((max(sp.vocab_size, max(sp.space) + 1),), bool)
    space = space.at[jnp.array(sp.space)].set(True)
    text = ok & ~space[jnp.clip(new_tokens, 0, space.shape[0] - 1)]
    last_text = jnp.max(jnp.where(text, col, -1), axis=1)
    ok &= col <= last_text[:, None]
  num = ok.sum(1).astype(jnp.int32)
  dest = jnp.where(ok, jnp.cumsum(ok, axis=1) - 1, t + s + n)  # dropped ids: out of range
  block = jnp.zeros((b, t + s + n), jnp.int32)
  block = block.at[jnp.arange(b)[:, None], dest].set(new_tokens.astype(jnp.int32), mode="drop")
  rel = jnp.arange(t + s + n)[None, :] - num[:, None]
  fixed = jnp.array(sp.suffix + sp.next_prefix, jnp.int32)
  block = jnp.where(rel >= 0, fixed[jnp.clip(rel, 0, s + n - 1)], block)
  lengths = jnp.where(num > 0, num + s + n, 0)
  return block, lengths, num + s - 1


@functools.partial(jax.jit, static_argnames=("graphdef", "sp"))
def extend(graphdef: nnx.GraphDef, params: dict, sp: Spec, score_state: reward.ScoreState,
           new_tokens: jax.Array, new_lengths: jax.Array
           ) -> tuple[reward.ScoreState, jax.Array]:
  """Encodes each row's new step (policy ids, right-padded; `new_lengths` 0 = no step) with
  the format's suffix and next prefix; returns the state and the logit at the suffix's end.

  A step with no text left (EOS alone) encodes nothing and keeps the row's logit; as
  in `reward.extend`, a block past the cache's `max_len` marks the row `overflow` (NaN).
  """
  block, lengths, at = step_block(sp, new_tokens, new_lengths.astype(jnp.int32))
  w, max_len = block.shape[1], score_state.max_len
  if w > max_len:
    raise ValueError(f"extend got {w} block columns but the cache has only {max_len} slots; "
                     f"raise prefill's max_len.")
  pos = score_state.positions[:, None] + jnp.arange(w, dtype=jnp.int32)[None, :]
  model, h, cache = _hidden(graphdef, params, block, pos, score_state.cache)
  last = _readout(model, params, sp, _gather(h, at[:, None]))[:, 0]
  overflow = score_state.overflow | (score_state.positions + w > max_len)
  logit = jnp.where(lengths > 0, last, score_state.logit)
  logit = jnp.where(overflow, jnp.nan, logit)
  new = reward.ScoreState(cache=cache, positions=score_state.positions + lengths, logit=logit,
                          overflow=overflow, max_len=max_len)
  return new, logit
