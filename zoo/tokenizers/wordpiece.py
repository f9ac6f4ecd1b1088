"""WordPiece tokenizer layer and vocabulary learner (tensorflow-text).

The layer maps raw UTF-8 strings to dense, padded token ids inside the graph, so
the tf.data training pipeline and every SavedModel export tokenize identically.
Its vocabulary is a text file (one token a line) that SavedModel export copies
into `assets/`. Unknown words, scripts and emoji become `[UNK]`; empty strings
give only `[CLS]`; long inputs are truncated to `sequence_length`. Nothing a
string can contain raises an error (invalid UTF-8 is replaced first).
"""

import os

import keras
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # PAD must be id 0
PAD_ID = 0


def learn_wordpiece_vocabulary(texts, vocabulary_size, lower_case=True):
  """Learns a WordPiece vocabulary from an iterable of strings.

  Returns a list of tokens beginning with RESERVED_TOKENS. Use only the training
  split: the vocabulary is part of the model.
  """
  dataset = tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024)
  vocabulary = bert_vocab_from_dataset.bert_vocab_from_dataset(
      dataset,
      vocab_size=vocabulary_size,
      reserved_tokens=list(RESERVED_TOKENS),
      bert_tokenizer_params={"lower_case": lower_case},
      learn_params={},
  )
  return vocabulary


def write_vocabulary(vocabulary, path):
  """Writes one token a line (the format BertTokenizer and assets expect)."""
  tmp_path = path + ".tmp"
  with tf.io.gfile.GFile(tmp_path, "w") as f:
    f.write("\n".join(vocabulary) + "\n")
  tf.io.gfile.rename(tmp_path, path, overwrite=True)


def read_vocabulary(path):
  with tf.io.gfile.GFile(path) as f:
    return [line.rstrip("\n") for line in f]


def row_lengths(ids):
  """int[..., T] ids, padded with PAD_ID after the tokens -> int32[...]: the
  token count of each row."""
  return tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32), axis=-1)


def longest_row(ids):
  """int[B, T] ids, padded with PAD_ID after the tokens -> int32 scalar: the
  token count of the longest row (0 for an empty batch)."""
  return tf.reduce_max(tf.concat([row_lengths(ids), [0]], axis=0))


@keras.saving.register_keras_serializable(package="zoo")
class WordPieceTokenizer(keras.layers.Layer):
  """string[B] -> int32[B, sequence_length] token ids, `[CLS]` first, 0-padded."""

  def __init__(self, vocabulary_file, sequence_length, lower_case=True, **kwargs):
    kwargs.setdefault("trainable", False)
    kwargs.setdefault("dtype", "int32")
    super().__init__(**kwargs)
    if not tf.io.gfile.exists(vocabulary_file):
      raise FileNotFoundError(f"Vocabulary file not found: {vocabulary_file}")
    self.vocabulary_file = os.fspath(vocabulary_file)
    self.sequence_length = int(sequence_length)
    self.lower_case = bool(lower_case)
    vocabulary = read_vocabulary(self.vocabulary_file)
    if vocabulary[PAD_ID] != PAD or CLS not in vocabulary or UNK not in vocabulary:
      raise ValueError(
          f"{self.vocabulary_file}: expected {PAD} on line 1 and {CLS}, {UNK} "
          "somewhere in the vocabulary")
    self.vocabulary_size = len(vocabulary)
    self.cls_id = vocabulary.index(CLS)
    self.sep_id = vocabulary.index(SEP) if SEP in vocabulary else None
    self.unk_id = vocabulary.index(UNK)
    self._bert = tf_text.BertTokenizer(
        self.vocabulary_file,
        lower_case=self.lower_case,
        token_out_type=tf.int64,
        unknown_token=UNK,
    )
    self.built = True  # no weights: usable (and exportable) as constructed

  def tokenize(self, strings):
    """Ragged ids without [CLS] or truncation: int64[B, (T)]."""
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    strings = tf.strings.unicode_transcode(  # invalid UTF-8 -> U+FFFD, no error
        strings, "UTF-8", "UTF-8", errors="replace")
    pieces = self._bert.tokenize(strings)  # [B, (words), (pieces)]
    return pieces.merge_dims(-2, -1)  # [B, (T)]

  def call(self, strings):
    ids = self.tokenize(strings)  # [B, (T)]
    cls = tf.fill([ids.nrows(), 1], tf.constant(self.cls_id, tf.int64))  # [B, 1]
    ids = tf.concat([tf.RaggedTensor.from_tensor(cls), ids], axis=1)  # [B, (T+1)]
    ids = ids[:, : self.sequence_length]  # [B, (<=L)]
    dense = ids.to_tensor(default_value=PAD_ID,
                          shape=[None, self.sequence_length])  # [B, L]
    return tf.cast(dense, tf.int32)

  def pair(self, first, second):
    """Sentence pairs, string[B] and string[B] -> (ids int32[B, L], type_ids
    int32[B, L]): `[CLS] first [SEP] second [SEP]`, 0-padded, type 0 up to
    the first [SEP] and 1 after it. Pairs longer than L are cut round-robin
    (a piece off each text in turn from the end), so the shorter text keeps
    what it can, as BERT trims."""
    if self.sep_id is None:
      raise ValueError(f"{self.vocabulary_file} has no {SEP} for pairs")
    trimmer = tf_text.RoundRobinTrimmer(max_seq_length=self.sequence_length - 3)
    pieces = trimmer.trim([self.tokenize(first), self.tokenize(second)])
    ids, types = tf_text.combine_segments(
        pieces, start_of_sequence_id=self.cls_id,
        end_of_segment_id=self.sep_id)  # [B, (<=L)] each
    shape = [None, self.sequence_length]
    return (tf.cast(ids.to_tensor(default_value=PAD_ID, shape=shape), tf.int32),
            tf.cast(types.to_tensor(default_value=0, shape=shape), tf.int32))

  def detokenize(self, ids):
    """int[B, T] -> string[B] of space-joined words (WordPiece merged)."""
    ids = tf.cast(ids, tf.int64)
    ragged = tf.RaggedTensor.from_tensor(ids, padding=PAD_ID)
    words = self._bert.detokenize(ragged)  # [B, (words)]
    return tf.strings.reduce_join(words, axis=-1, separator=" ")

  def compute_output_shape(self, input_shape):
    return tuple(input_shape) + (self.sequence_length,)

  def get_config(self):
    config = super().get_config()
    config.update(vocabulary_file=self.vocabulary_file,
                  sequence_length=self.sequence_length,
                  lower_case=self.lower_case)
    return config
