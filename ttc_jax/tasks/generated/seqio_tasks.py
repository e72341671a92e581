"""seqio tasks over a generated task's TFDS data (chain arithmetic, countdown).

Data flow: `prepare` writes the task's TFDS dataset (its `tfds_builder.GeneratedBuilder`)
into a data dir once; `register_task` puts a `seqio.Task` over it that maps each example to
`inputs` = BOS + prompt and `targets` = solution + EOS (char ids); `load_split` reads a whole
split into numpy.

TensorFlow is only the data loader (docs/design.md, "Data stack"): it is
imported on first use, quietly, with GPUs hidden from it, so importing this
module does not import TensorFlow and TF never takes device memory from JAX.
`CharVocabulary` is therefore created on first access (module `__getattr__`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ttc_jax.io import paths
from ttc_jax.io import tensorflow_setup
from ttc_jax.tasks.base import SPLITS
from ttc_jax.tokenizers.char import BOS, EOS, PAD, CharTokenizer

if TYPE_CHECKING:
  import seqio
  import tensorflow_datasets as tfds

TFDS_VERSION = "1.1.0"  # GeneratedBuilder.VERSION
# ---------------------------------------------------------------- TensorFlow set-up


@functools.cache
def _tf():
  """Imports TensorFlow, TFDS and seqio once: quiet, and with no GPU visible to TF."""
  tf = tensorflow_setup.quiet_import("tensorflow_datasets", "seqio")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  return tf


# ---------------------------------------------------------------- vocabulary


def __getattr__(name: str) -> Any:  # PEP 562: build the seqio class on first access.
  if name == "CharVocabulary":
    return _char_vocabulary_cls()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _char_vocabulary_cls() -> type:
  tf = _tf()
  import seqio  # pylint: disable=g-import-not-at-top

  class CharVocabulary(seqio.Vocabulary):
    """`CharTokenizer` as a `seqio.Vocabulary`: PAD 0, BOS 1, EOS 2, no UNK.

    An unknown character is an error (in Python and in TF), never a silent UNK.
    """

    def __init__(self, tokenizer: CharTokenizer):
      super().__init__(extra_ids=0)
      self.tokenizer = tokenizer
      # Dense tables: code point -> id (-1: not in the alphabet), char id -> code point.
      cps = [ord(c) for c in tokenizer.chars]
      char_to_id = np.full(max(cps) + 2, -1, np.int32)
      char_to_id[cps] = np.arange(3, 3 + len(cps), dtype=np.int32)
      self._char_to_id = char_to_id
      self._id_to_cp = np.asarray(cps, np.int32)

    def __eq__(self, other):
      return type(other) is type(self) and other.tokenizer == self.tokenizer

    def __hash__(self):
      return hash((type(self).__name__, self.tokenizer))

    @property
    def bos_id(self) -> int:
      return BOS

    @property
    def eos_id(self) -> int:
      return EOS

    @property
    def pad_id(self) -> int:
      return PAD

    @property
    def unk_id(self) -> None:
      return None

    @property
    def _base_vocab_size(self) -> int:
      return self.tokenizer.vocab_size

    def _encode(self, s: str) -> list[int]:
      return self.tokenizer.encode(s)

    def _decode(self, ids: Sequence[int]) -> str:
      ids = [int(i) for i in ids]
      bad = [i for i in ids if not 0 <= i < self._base_vocab_size]
      if bad:
        raise ValueError(f"Ids {bad} are outside this vocabulary [0, {self._base_vocab_size}); "
                         "pass ids from the same CharTokenizer alphabet.")
      return self.tokenizer.decode(ids)

    def _encode_tf(self, s):
      table = tf.constant(self._char_to_id)
      message = (f"Text has a character outside the tokenizer alphabet "
                 f"{self.tokenizer.chars!r}; pass a CharTokenizer with it added. Text:")

      def lookup(cps):
        # The table's last entry is -1, so every code point past it maps to -1.
        ids = tf.gather(table, tf.minimum(cps, table.shape[0] - 1))
        ok = tf.debugging.Assert(tf.reduce_all(ids >= 0), [message, s])
        with tf.control_dependencies([ok]):
          return tf.identity(ids)

      # unicode_decode is ragged for a batch of strings; map_flat_values covers both.
      return tf.ragged.map_flat_values(lookup, tf.strings.unicode_decode(s, "UTF-8"))

    def _decode_tf(self, ids):
      # The base class has already replaced everything after the first EOS by PAD.
      ids = tf.convert_to_tensor(ids)
      chars = tf.ragged.boolean_mask(ids, ids >= 3)  # drops PAD, BOS, EOS; ragged if rank > 1
      cps = tf.ragged.map_flat_values(lambda i: tf.gather(self._id_to_cp, i - 3), chars)
      return tf.strings.unicode_encode(cps, "UTF-8")

  CharVocabulary.__module__ = __name__
  CharVocabulary.__qualname__ = "CharVocabulary"
  return CharVocabulary


# ---------------------------------------------------------------- TFDS + seqio


def prepare(builder_cls: type, data_dir: str, levels: Sequence[Any],
            num_per_level: Mapping[str, int], seed: int = 0) -> tfds.core.DatasetBuilder:
  """Generates `builder_cls`'s TFDS data into `data_dir` once; returns its builder.

  Idempotent: a config already prepared (same levels, counts and seed, so same
  config-name hash) is reused, not regenerated. TFDS writes to a temporary folder
  and renames it when complete, so an interrupted run leaves nothing half-made.
  """
  _tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  config = builder_cls.config(levels, num_per_level, seed)
  data_dir = os.fspath(paths.as_path(data_dir))  # gs:// kept as it is
  builder = builder_cls(config=config, data_dir=data_dir)
  # (`builder.is_prepared()` logs a warning when the answer is no.)
  if not (builder.data_path / "dataset_info.json").exists():
    # TFDS prints "Downloading and preparing ..." banners; nothing is downloaded.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def register_task(name: str, builder_cls: type, alphabet: str, data_dir: str,
                  levels: Sequence[Any], num_per_level: Mapping[str, int],
                  seed: int = 0) -> seqio.Task:
  """Prepares the data (see `prepare`) and registers a `seqio.Task` named `name` over it.

  Features: `inputs` = BOS + prompt, `targets` = solution + EOS (int32 ids of the
  character tokenizer over `alphabet`), plus `inputs_pretokenized`/`targets_pretokenized`
  (prompt/solution text), `question`, `answer` and `level`. Registering a name again
  replaces the task.
  """
  tf = _tf()
  import seqio  # pylint: disable=g-import-not-at-top

  builder = prepare(builder_cls, data_dir, levels, num_per_level, seed)
  vocab = _char_vocabulary_cls()(CharTokenizer(alphabet))
  source = seqio.TfdsDataSource(
      tfds_name=f"{builder.name}/{builder.builder_config.name}:{TFDS_VERSION}",
      tfds_data_dir=builder.data_dir_root, read_only=True)
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=[_to_inputs_targets, seqio.preprocessors.tokenize, _prepend_bos,
                     seqio.preprocessors.append_eos_after_trim],
      output_features={
          "inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
          "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
      })


def _to_inputs_targets(ds):
  return ds.map(lambda ex: {"inputs": ex["prompt"], "targets": ex["solution"],
                            "question": ex["question"], "answer": ex["answer"],
                            "level": ex["level"]})


def _prepend_bos(ds):
  tf = _tf()
  bos = tf.constant([BOS], tf.int32)
  return ds.map(lambda ex: {**ex, "inputs": tf.concat([bos, ex["inputs"]], axis=0)})


def get_task(name: str) -> seqio.Task:
  """The registered seqio task `name`; the error lists the registered ones."""
  _tf()
  import seqio  # pylint: disable=g-import-not-at-top
  names = sorted(seqio.TaskRegistry.names())
  if name not in names:
    raise ValueError(f"Unknown task {name!r}; registered tasks: {names}. Register it first "
                     "with register_task(name, builder, alphabet, data_dir, levels, ...).")
  return seqio.TaskRegistry.get(name)


def load_split(task_or_name: seqio.Task | str, split: str) -> dict[str, np.ndarray]:
  """Reads a whole split through the seqio task, in stored (= generation) order.

  Returns N-long arrays: `inputs`, `targets` (object arrays of int32 id arrays,
  ragged), `prompt`, `solution`, `question` (str), `answer` (int64), `level`
  (int32, 1-based).
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
  task = get_task(task_or_name) if isinstance(task_or_name, str) else task_or_name
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
  cols: dict[str, list] = {k: [] for k in ("inputs", "targets", "prompt", "solution",
                                           "question", "answer", "level")}
  for ex in ds.as_numpy_iterator():
    cols["inputs"].append(ex["inputs"].astype(np.int32))
    cols["targets"].append(ex["targets"].astype(np.int32))
    cols["prompt"].append(ex["inputs_pretokenized"].decode())
    cols["solution"].append(ex["targets_pretokenized"].decode())
    cols["question"].append(ex["question"].decode())
    cols["answer"].append(ex["answer"])
    cols["level"].append(ex["level"])
  out = {k: _object_array(cols[k]) for k in ("inputs", "targets")}
  out.update({k: np.asarray(cols[k], dtype=str) for k in ("prompt", "solution", "question")})
  out["answer"] = np.asarray(cols["answer"], np.int64)
  out["level"] = np.asarray(cols["level"], np.int32)
  return out


def _object_array(items: list) -> np.ndarray:
  # np.asarray would make a 2-D array when all rows have the same length.
  out = np.empty(len(items), dtype=object)
  for i, x in enumerate(items):
    out[i] = x
  return out
