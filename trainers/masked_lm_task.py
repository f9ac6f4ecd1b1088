"""`--task=masked_lm`: masked-LM pretraining of the encoder on the user's text.

The texts are the lines of .txt files or the `--text_column` of TSV/CSV/JSONL
files (labels, if any, unused). Dev text is `--eval_files`, or else the last
10% of the training rows (held out, never trained on). Then
`--task=text_classification --init_checkpoint=<this model_dir>` fine-tunes a
classifier from the pretrained backbone and vocabulary. Masking follows
BERT: 15% of real tokens are chosen, 80% of those become [MASK], 10% a random
token, 10% stay.
"""

import os

import numpy as np
import tensorflow as tf
import keras
from absl import logging

from trainers import classification_data
from trainers.config import preset_architecture
from trainers.data_files import RowReader, expand_files
from trainers.errors import UserError
from trainers.masking import mask_tokens
from trainers.task import WARMUP_EXAMPLES, Task
from zoo.tokenizers.wordpiece import (MASK, PAD_ID, learn_wordpiece_vocabulary,
                                      read_vocabulary, write_vocabulary)

MASK_RATE = 0.15
EVAL_MASK_SEED = 1234  # the dev text's masks are the same for every run
HELD_OUT_FRACTION = 0.1  # of the training rows, when there are no eval files
VOCABULARY_FILE = "vocab.txt"


class MaskedLMTask(Task):
  """Trains and scores a masked LM on streamed text rows."""

  name = "masked_lm"
  family = "encoder"
  primary_metric = "accuracy"  # masked-token accuracy on the dev text
  higher_is_better = True
  train_files_help = "the text to pretrain on"

  def __init__(self, config):
    super().__init__(config)
    self._count = None
    self._skipped = 0  # bad rows of the last full pass (training or dev)
    self._train_skipped = 0  # bad training rows

  def _texts(self, paths, start=0, stop=None):
    """Yields the good texts of `paths` with index in [start, stop)."""
    column = self.config.text_column
    reader = RowReader(paths, [column], self.config.skip_bad_rows,
                       text_column=column)
    index = 0
    for row in reader.rows():
      text = row.values[column]
      if not text.strip():
        reader.bad(f"{row.path}:{row.line}: empty text in column {column!r}; "
                   "write a text there or remove the row")
        continue
      if stop is not None and index >= stop:
        return
      if index >= start:
        yield text
      index += 1
    self._skipped = reader.bad_rows.count

  def _row_count(self):
    if self._count is None:
      self._count = sum(1 for _ in self._texts(self.train_paths()))
      self._train_skipped = self._skipped
      if self._count == 0:
        raise UserError(f"--train_files={self.config.train_files}: no text")
      if self._train_skipped:
        logging.warning("Skipped %d bad training rows", self._train_skipped)
    return self._count

  def _held_out(self):
    """Rows at the end kept for dev when no --eval_files are given."""
    if self.config.eval_files:
      return 0
    return max(1, int(self._row_count() * HELD_OUT_FRACTION))

  def num_train_examples(self):
    return max(1, self._row_count() - self._held_out())

  def data_report(self):
    return {"train_rows": self.num_train_examples(),
            "skipped_rows": self._train_skipped}

  def describe_eval_data(self):
    if self.config.eval_files:
      return ",".join(expand_files(self.config.eval_files, "eval_files"))
    return f"{self.config.train_files} (last {HELD_OUT_FRACTION:.0%} of the rows)"

  def can_shard_files(self, num_workers):
    # Without eval files the dev rows are the last rows of all the files.
    return (bool(self.config.eval_files) and
            len(self.train_paths()) >= num_workers)

  def _dataset(self, train, shard=None):
    if self.config.eval_files and not train:
      paths, start, stop = expand_files(self.config.eval_files,
                                        "eval_files"), 0, None
    elif shard is not None:  # can_shard_files: every training row trains
      paths, start, stop = self.train_paths(shard), 0, None
    elif train:
      paths, start, stop = self.train_paths(), 0, self.num_train_examples()
    else:
      paths, start, stop = self.train_paths(), self.num_train_examples(), None
    if not train:  # a bad dev row: a UserError here, not inside tf.data
      for _ in self._texts(paths, start, stop):
        pass
    texts = tf.data.Dataset.from_generator(
        lambda: self._texts(paths, start, stop),
        output_signature=tf.TensorSpec([], tf.string))
    return texts.map(lambda text: (text, tf.constant(0, tf.int64)))

  def new_model_config(self, model_dir):
    if self.config.init_checkpoint:
      raise UserError("--init_checkpoint is for text_classification; "
                      "masked_lm pretrains from scratch")
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    if self.config.vocabulary_size:
      architecture["vocabulary_size"] = self.config.vocabulary_size
    sample = []
    for text in self._texts(self.train_paths(), 0, min(
        self.num_train_examples(), self.config.vocabulary_sample_lines)):
      sample.append(text)
    vocabulary = learn_wordpiece_vocabulary(sample,
                                            architecture["vocabulary_size"])
    write_vocabulary(vocabulary, os.path.join(model_dir, VOCABULARY_FILE))
    architecture["vocabulary_size"] = len(vocabulary)
    return {"family": self.family, "task": self.name, "head": "masked_lm",
            "preset": self.config.preset, "architecture": architecture,
            "labels": ["unused", "unused"], "vocabulary_file": VOCABULARY_FILE,
            "warmup_examples": {"text": sample[:WARMUP_EXAMPLES]}}

  def count_tokens(self, features, unused_targets):
    """Non-padding input tokens in a batch (for tokens/s)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(features["token_ids"], 0),
                                 tf.float32))

  def build_model(self, model_config):
    from zoo import model_config as zoo_model_config
    model = zoo_model_config.build_model(model_config)
    length = model_config["architecture"]["sequence_length"]
    model({"token_ids": tf.zeros([1, length], tf.int32),
           "mask_positions": tf.zeros([1, max_predictions(length)],
                                      tf.int32)})
    return model

  def _masker(self, tokenizer, seed):
    """(batch index, (ids, labels)) -> (features, targets): BERT masking
    keyed by (seed, batch index) (trainers/masking.py)."""
    vocabulary = read_vocabulary(tokenizer.vocabulary_file)
    special = [i for i, token in enumerate(vocabulary)
               if token.startswith("[") and token.endswith("]")]
    unselectable = sorted(set(special + [PAD_ID]))

    def mask(index, batch):
      ids, _ = batch
      return mask_tokens(ids, index, seed, MASK_RATE,
                         max_predictions(tokenizer.sequence_length),
                         vocabulary.index(MASK), tokenizer.vocabulary_size,
                         unselectable)
    return mask

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1, shard=None):
    del num_replicas  # batches of examples split evenly without help
    ds = classification_data.train_dataset(
        self._dataset(train=True, shard=shard),
        self.shuffle_buffer(),
        tokenizer, global_batch_size, self.config.seed, skip_batches)
    # Batch i of the run is masked by (seed, i), also after a resume.
    seed = self.config.seed + (shard[0] * 1_000_003 if shard else 0)
    return ds.enumerate(start=skip_batches).map(self._masker(tokenizer, seed))

  def eval_dataset(self, tokenizer, batch_size):
    ds = classification_data.eval_dataset(self._dataset(train=False),
                                          tokenizer, batch_size)
    # Every evaluation scores the same masked positions.
    return ds.enumerate().map(self._masker(tokenizer, EVAL_MASK_SEED)).cache()

  def per_example_loss(self, targets, logits):
    """Mean cross-entropy over each example's masked tokens: float32[B]."""
    weights = targets["weights"]  # [B, P]
    token_loss = keras.losses.sparse_categorical_crossentropy(
        targets["ids"], tf.cast(logits, tf.float32), from_logits=True)  # [B, P]
    return tf.reduce_sum(token_loss * weights, axis=-1) / tf.maximum(
        tf.reduce_sum(weights, axis=-1), 1.0)

  def correct_predictions(self, targets, logits):
    """Fraction of each example's masked tokens predicted exactly: float32[B]."""
    weights = targets["weights"]
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # [B, P]
    hits = tf.cast(tf.equal(predicted, tf.cast(targets["ids"], tf.int32)),
                   tf.float32)
    return tf.reduce_sum(hits * weights, axis=-1) / tf.maximum(
        tf.reduce_sum(weights, axis=-1), 1.0)

  def evaluate(self, predict_fn, dataset):
    """Masked-token accuracy and loss (nats) over the dev text."""
    hits = total = loss = 0.0
    for features, targets in dataset:
      logits = predict_fn(features)
      weights = targets["weights"].numpy()
      token_loss = keras.losses.sparse_categorical_crossentropy(
          targets["ids"], tf.cast(logits, tf.float32), from_logits=True).numpy()
      predicted = np.argmax(logits, axis=-1)
      hits += float(((predicted == targets["ids"].numpy()) * weights).sum())
      loss += float((token_loss * weights).sum())
      total += float(weights.sum())
    return {"accuracy": hits / max(total, 1.0), "loss": loss / max(total, 1.0),
            "masked_tokens": int(total)}

  def evaluate_export(self, saved_model, batch_size, **unused_options):
    raise UserError("a masked_lm export serves the encoder's features; "
                    "evaluate the checkpoint (--model_dir) instead")

  def print_report(self, metrics):
    print(f"model:    {metrics['source']}")
    print(f"data:     {metrics['data']} ({metrics['masked_tokens']} masked "
          "tokens)")
    print(f"masked-token accuracy: {metrics['accuracy']:.4f}")
    print(f"masked-token loss:     {metrics['loss']:.4f} nats")


def max_predictions(sequence_length):
  return max(1, int(round(sequence_length * MASK_RATE)))
