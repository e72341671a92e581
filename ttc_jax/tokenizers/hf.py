"""A Hugging Face tokenizer (tokenizer.json: Llama 3, Qwen2.5, Gemma, Mistral) as a `Tokenizer`.

`HFTokenizer.from_dir(path)` reads what `save_pretrained` writes: `tokenizer.json`
(the `tokenizers` library's model), `tokenizer_config.json` (special tokens, chat
template), and, when present, `chat_template.jinja`, `special_tokens_map.json`,
`generation_config.json` and `config.json`. Paths may be local or `gs://`.

Token text. Each id's bytes are computed once from the vocabulary by the
tokenizer's own decoder chain: ByteLevel (GPT-2 / Llama 3 / Qwen: "Ġ" is a space,
"Ċ" a newline), Replace / Metaspace ("▁" is a space) and ByteFallback ("<0x0A>" is
byte 0x0A); Fuse joins tokens, and a Strip after it (or Metaspace's prefix) drops
the leading space of a SentencePiece text. A token that is only part of a UTF-8
character has no text of its own: `token_text(id)` is U+FFFD for each such byte,
consistently, so `step_ids` (the generic rule on `token_text`) never sees a
delimiter in it. `step_ends` works on bytes instead (`token_texts`): a sequence's
bytes are concatenated and decoded, each character belongs to the token holding
its last byte, and the leading strip is applied, so the text is exactly
`decode`'s, and a delimiter or character split across tokens ends where it ends.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import functools
import hashlib
import json
import re
from typing import Any, Callable, Sequence

import numpy as np

from ttc_jax.io import paths
from ttc_jax.tokenizers import base

# Files read, in this order; all but the first are optional. Their bytes key the tokenizer.
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                "generation_config.json", "config.json")


def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's ByteLevel map: the printable character that stands for each byte."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


_BYTE_OF = _byte_level_alphabet()
_BYTE_LEVEL_TABLE = str.maketrans({c: chr(b) for c, b in _BYTE_OF.items()})
_NOT_BYTE_LEVEL = re.compile("[^" + re.escape("".join(_BYTE_OF)) + "]")
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _flat(decoder: dict) -> list[dict]:
  if decoder.get("type") == "Sequence":
    return [d for sub in decoder["decoders"] for d in _flat(sub)]
  return [decoder]


def _decoder_plan(decoder: dict | None, where: str) -> tuple[list[Callable], tuple[str, int]]:
  """A tokenizer.json `decoder` as per-token functions (text or bytes -> text or bytes) and
  the characters it strips off the start of a whole sequence: `(char, at most how many)`."""
  if decoder is None:
    raise ValueError(f"{where} has no decoder; HFTokenizer needs one of ByteLevel, Metaspace, "
                     f"Replace, ByteFallback, Fuse, Strip (what LLM tokenizers use).")
  on_text = lambda f: lambda t: f(t) if isinstance(t, str) else t
  steps, strip, fused = [], (" ", 0), False
  for d in _flat(decoder):
    kind = d.get("type")
    if kind == "ByteLevel":
      # As `tokenizers` does: a token of ByteLevel characters maps to its bytes, any other as is.
      steps.append(on_text(lambda t: t.encode() if _NOT_BYTE_LEVEL.search(t)
                           else t.translate(_BYTE_LEVEL_TABLE).encode("latin-1")))
    elif kind == "Metaspace":
      replacement = d.get("replacement", "▁")
      steps.append(on_text(lambda t, r=replacement: t.replace(r, " ")))
      if d.get("prepend_scheme", "always") != "never" and d.get("add_prefix_space", True):
        strip = (" ", 1)  # the first token's prefix space
    elif kind == "Replace":
      pattern, content = d["pattern"], d["content"]
      if "String" in pattern:
        steps.append(on_text(lambda t, a=pattern["String"], b=content: t.replace(a, b)))
      else:
        steps.append(on_text(lambda t, r=re.compile(pattern["Regex"]), b=content: r.sub(b, t)))
    elif kind == "ByteFallback":
      steps.append(on_text(lambda t: bytes([int(m[1], 16)]) if (m := _BYTE_FALLBACK.fullmatch(t))
                           else t))
    elif kind == "Fuse":  # joins the tokens: a later Strip acts on the whole sequence
      fused = True
    elif kind == "Strip" and fused and not d.get("stop"):
      strip = (d["content"], d["start"])
    else:
      raise ValueError(f"{where} has a {kind!r} decoder (in {decoder.get('type')!r}), which "
                       f"HFTokenizer does not support; it supports ByteLevel, Metaspace, "
                       f"Replace, ByteFallback, Fuse, and Strip after Fuse.")
  return steps, strip


def _token_bytes(token: str, steps) -> bytes:
  for step in steps:
    token = step(token)
  return token if isinstance(token, bytes) else token.encode()


def _token_name(value: Any) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _first_id(value: Any) -> int | None:
  """An id of config.json / generation_config.json: an int or a list of them (take the first)."""
  if isinstance(value, list):
    value = value[0] if value else None
  return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclasses.dataclass(frozen=True)
class HFTokenizer(base.Tokenizer):
  """A `tokenizers` tokenizer from a directory; equal (and hashed) by path and file contents.

  Build it with `from_dir`. BOS / EOS / PAD are tokenizer_config.json's (or
  special_tokens_map.json's) tokens, else generation_config.json's /
  config.json's `*_token_id` (the first of a list). A model without a PAD token
  (Llama 3, Mistral) pads with EOS, and one without a BOS (Qwen2.5) names EOS as its
  `bos_id` but `encode(bos=True)` prepends nothing. `vocab_size` covers every id of the vocabulary and added tokens, and
  config.json's `vocab_size` when larger (embedding rows past the vocabulary, as
  in Qwen2.5, have no text).
  """

  path: str
  digest: str  # sha256 over the files read
  backend: Any = dataclasses.field(compare=False, repr=False)  # the tokenizers.Tokenizer
  special_ids: tuple[int, int, int] = dataclasses.field(compare=False, repr=False)  # pad bos eos
  special_tokens: dict = dataclasses.field(compare=False, repr=False)  # e.g. bos_token -> text
  chat_template: str | None = dataclasses.field(compare=False, repr=False)
  token_bytes: tuple[bytes, ...] = dataclasses.field(compare=False, repr=False)  # b"" = no text
  texts: tuple[str, ...] = dataclasses.field(compare=False, repr=False)
  strip: tuple[str, int] = dataclasses.field(compare=False, repr=False)  # off a text's start
  has_bos: bool = dataclasses.field(default=True, compare=False, repr=False)  # a BOS of its own

  @classmethod
  def from_dir(cls, path: paths.PathLike) -> "HFTokenizer":
    """Loads the tokenizer a `save_pretrained(path)` (or a Hub snapshot) left in `path`."""
    import tokenizers  # pylint: disable=g-import-not-at-top

    root = paths.as_path(path)
    main = root / TOKENIZER_FILE
    if not main.exists():
      raise ValueError(f"No {TOKENIZER_FILE} in {root}; save the tokenizer there with "
                       f"transformers' tokenizer.save_pretrained({str(root)!r}).")
    raw = {TOKENIZER_FILE: main.read_bytes()}
    for name in CONFIG_FILES:
      if (root / name).exists():
        raw[name] = (root / name).read_bytes()
    digest = hashlib.sha256()
    for name, data in raw.items():
      digest.update(f"{name}:{len(data)}:".encode() + data)
    cfg = {name: json.loads(data) for name, data in raw.items() if name.endswith(".json")}
    backend = tokenizers.Tokenizer.from_str(raw[TOKENIZER_FILE].decode())
    tok_cfg = cfg.get("tokenizer_config.json", {})

    # ---- the id space and each id's bytes ----
    vocab = backend.get_vocab(with_added_tokens=True)
    model_cfg = cfg.get("config.json", {})
    model_vocab = model_cfg.get("vocab_size") or model_cfg.get("text_config", {}).get("vocab_size")
    size = max(max(vocab.values()) + 1, model_vocab or 0)
    added = backend.get_added_tokens_decoder()
    steps, strip = _decoder_plan(cfg[TOKENIZER_FILE]["decoder"], str(main))
    table = [b""] * size
    for token, i in vocab.items():
      if not (i in added and added[i].special):
        table[i] = _token_bytes(token, steps)

    # ---- special tokens ----
    names, ids = {}, {}
    gen_cfg = cfg.get("generation_config.json", {})
    for kind in ("bos", "eos", "pad", "unk"):
      key = f"{kind}_token"
      name = (_token_name(tok_cfg.get(key))
              or _token_name(cfg.get("special_tokens_map.json", {}).get(key)))
      if name is not None:
        names[key] = name
        if backend.token_to_id(name) is None:
          raise ValueError(f"{key} {name!r} of {root} is not in its {TOKENIZER_FILE} "
                           f"vocabulary; fix tokenizer_config.json.")
        ids[kind] = backend.token_to_id(name)
      else:
        ids[kind] = (_first_id(gen_cfg.get(f"{kind}_token_id"))
                     if _first_id(gen_cfg.get(f"{kind}_token_id")) is not None
                     else _first_id(model_cfg.get(f"{kind}_token_id")))
    if ids["eos"] is None:
      raise ValueError(f"{root} names no EOS token (tokenizer_config.json eos_token, or "
                       f"eos_token_id in generation_config.json / config.json); add one.")
    pad = ids["pad"] if ids["pad"] is not None else ids["eos"]
    bos = ids["bos"] if ids["bos"] is not None else ids["eos"]
    for i in (pad, bos, ids["eos"]):
      table[i] = b""

    # ---- chat template: chat_template.jinja wins over tokenizer_config.json, as in HF ----
    template = raw["chat_template.jinja"].decode() if "chat_template.jinja" in raw else None
    if template is None:
      template = tok_cfg.get("chat_template")
      if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = {t["name"]: t["template"] for t in template}.get("default")

    return cls(path=str(root), digest=digest.hexdigest(), backend=backend,
               special_ids=(pad, bos, ids["eos"]), special_tokens=names,
               chat_template=template, token_bytes=tuple(table),
               texts=tuple(b.decode("utf-8", errors="replace") for b in table), strip=strip,
               has_bos=ids["bos"] is not None)

  @property
  def pad_id(self) -> int:
    return self.special_ids[0]

  @property
  def bos_id(self) -> int:
    return self.special_ids[1]

  @property
  def eos_id(self) -> int:
    return self.special_ids[2]

  @property
  def vocab_size(self) -> int:
    return len(self.token_bytes)

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Ids of `text` (special-token text in it, e.g. of a chat template, maps to its id).

    `bos` prepends the BOS only where the model has one of its own (not Qwen's EOS
    stand-in) and `text` does not already start with it (a rendered chat template).
    """
    ids = self.backend.encode(text, add_special_tokens=False).ids
    bos = bos and self.has_bos and ids[:1] != [self.bos_id]
    return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of `ids` up to the first EOS, special tokens dropped (the HF decoder's text)."""
    ids = self._checked(ids)
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self.backend.decode([i for i in ids if self.token_bytes[i]], skip_special_tokens=True)

  def token_text(self, token_id: int) -> str:
    """The id's text; '' for special tokens, U+FFFD for each byte of a partial character."""
    if not 0 <= token_id < len(self.texts):
      self._checked([token_id])  # raises, naming it
    return self.texts[token_id]

  def token_texts(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    """The text each token of a sequence completes: `decode`'s text (up to EOS), with each
    character given to the token holding its last byte (U+FFFD for bad bytes)."""
    ids = self._checked(ids)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [decoder.decode(self.token_bytes[i]) for i in ids]
    tail = decoder.decode(b"", final=True)  # a truncated character
    if tail:
      last = max(j for j, i in enumerate(ids) if self.token_bytes[i])
      out[last] += tail
    char, n = self.strip  # e.g. SentencePiece's leading space, as the decoder drops it
    for j, piece in enumerate(out):
      cut = len(piece[:n]) - len(piece[:n].lstrip(char))
      out[j], n = piece[cut:], n - cut
      if out[j] or not n:
        break
    return out

  def step_ends(self, ids: Sequence[int] | np.ndarray, delimiter: str) -> list[int]:
    """The generic rule of `tokenizers.base` on the text of `token_texts` (see the module doc)."""
    ids = self._checked(ids)
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id) + 1]
    view = _Pieces(tuple(self.token_texts(ids)))
    keys = [_Pieces.EOS if i == self.eos_id else _Pieces.BOS if i == self.bos_id
            else _Pieces.PAD if i == self.pad_id else j for j, i in enumerate(ids)]
    return base.Tokenizer.step_ends(view, keys, delimiter)

  def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                          chat_template: str | None = None, **kwargs) -> str:
    """The prompt text of `messages`, rendered as transformers' `apply_chat_template(...,
    tokenize=False)` does (sandboxed jinja2); encode it with `bos=False`: it holds the BOS."""
    template = chat_template or self.chat_template
    if template is None:
      raise ValueError(f"{self.path} has no chat template (no chat_template.jinja, no "
                       f"chat_template in tokenizer_config.json); use the instruct model's "
                       f"tokenizer or pass chat_template=.")
    variables = {**self.special_tokens, "tools": None, "documents": None, **kwargs}
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    return _compile(template).render(messages=messages,
                                     add_generation_prompt=add_generation_prompt, **variables)

  def _checked(self, ids: Sequence[int] | np.ndarray) -> list[int]:
    ids = np.asarray(ids).tolist()
    bad = [i for i in ids if not 0 <= i < len(self.token_bytes)]
    if bad:
      raise ValueError(f"Token id {bad[0]} is outside this tokenizer's vocabulary "
                       f"[0, {len(self.token_bytes)}) ({self.path}); decode ids of the same "
                       f"tokenizer.")
    return ids


@dataclasses.dataclass(frozen=True)
class _Pieces:
  """A sequence's per-token texts behind the id view `base.Tokenizer.step_ends` reads: id j is
  the j-th token, negative ids the specials."""

  PAD, BOS, EOS = -1, -2, -3
  pieces: tuple[str, ...]
  pad_id, bos_id, eos_id = PAD, BOS, EOS

  def token_text(self, j: int) -> str:
    return self.pieces[j]


def _raise_exception(message: str):
  import jinja2  # pylint: disable=g-import-not-at-top
  raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
  """HF's `tojson`: plain JSON (no HTML escaping), non-ASCII kept."""
  return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def _compile(template: str):
  """A chat template in the environment transformers renders it in."""
  import jinja2  # pylint: disable=g-import-not-at-top
  from jinja2 import ext, sandbox  # pylint: disable=g-import-not-at-top

  class Generation(ext.Extension):
    """`{% generation %}...{% endgeneration %}` (HF's assistant-mask marker): renders its body."""
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
      return caller()

  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                              extensions=[Generation, ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)
