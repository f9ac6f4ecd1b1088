"""Character-level language modelling (tiny-shakespeare): data, loss, metrics.

`--task=shakespeare` trains the decoder family. The primary metric is the
validation loss in nats per character (lower is better); evaluation also
reports perplexity, bits per character and next-character accuracy.
"""

import os

import numpy as np
import tensorflow as tf

from trainers import language_model_data as data
from trainers.config import preset_architecture
from trainers.errors import UserError
from trainers.metrics import language_model_metrics
from trainers.train_step import example_count
from zoo import model_config as zoo_model_config
from zoo.tokenizers.characters import (learn_character_vocabulary,
                                       write_character_vocabulary)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABULARY_FILE = "vocab.txt"


class LanguageModelTask:
  """Everything task-specific the training loop needs for a causal LM."""

  family = "decoder"
  primary_metric = "loss"
  higher_is_better = False
  eval_split = "validation"  # the last 10% of the text

  def __init__(self, name, data_folder, file_name, config):
    self.name = name
    self.config = config
    self.data_dir = config.data_dir or os.path.join(REPO_ROOT, "data",
                                                    data_folder)
    self.path = os.path.join(self.data_dir, file_name)
    self._splits = None

  def splits(self):
    if self._splits is None:
      self._splits = data.split_text(data.read_text(self.path))
    return self._splits

  def num_train_examples(self):
    """Training windows in one pass over the text (for --epochs)."""
    length = preset_architecture(self.family, self.config.preset,
                                 self.config.model_overrides)["sequence_length"]
    return max(1, len(self.splits()[0]) // length)

  def new_model_config(self, model_dir):
    if self.config.init_checkpoint:
      raise UserError("--init_checkpoint is not supported for language models")
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    if architecture["sequence_length"] < 2:
      raise UserError("a language model needs sequence_length >= 2")
    code_points = learn_character_vocabulary(self.splits()[0])
    write_character_vocabulary(code_points,
                               os.path.join(model_dir, VOCABULARY_FILE))
    architecture["vocabulary_size"] = len(code_points) + 2
    return {"family": self.family, "task": self.name,
            "preset": self.config.preset, "architecture": architecture,
            "vocabulary_file": VOCABULARY_FILE, "start_text": "\n"}

  def build_model(self, model_config):
    model = zoo_model_config.build_model(model_config)
    length = model_config["architecture"]["sequence_length"]
    model(tf.zeros([1, length], tf.int32))  # create the variables
    return model

  def warm_start(self, model, init_checkpoint):
    raise UserError("--init_checkpoint is not supported for language models")

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1):
    del num_replicas  # batches of examples split evenly without help
    ids = data.text_ids(tokenizer, self.splits()[0]).numpy()
    if len(ids) <= tokenizer.sequence_length:
      raise UserError(
          f"{self.path}: the training split has {len(ids)} characters; a "
          f"training window needs sequence_length + 1 = "
          f"{tokenizer.sequence_length + 1}")
    return data.train_dataset(ids, tokenizer.sequence_length,
                              global_batch_size, self.config.seed, skip_batches)

  def eval_text(self, split_or_path="validation"):
    if split_or_path == "validation":
      return self.splits()[1]
    return data.read_text(split_or_path)

  def describe_eval_data(self, split_or_path):
    if split_or_path == "validation":
      return f"{self.path} (last {data.VALIDATION_FRACTION:.0%})"
    return split_or_path

  def eval_dataset(self, tokenizer, batch_size, split_or_path="validation"):
    return data.eval_dataset(self.eval_text(split_or_path), tokenizer,
                             batch_size)

  def count_tokens(self, features, unused_targets):
    return tf.cast(tf.size(features), tf.float32)

  def per_example_loss(self, targets, logits):
    """Mean next-token cross-entropy of each window: float32[B]."""
    logits = tf.cast(logits, tf.float32)  # [B, T, V]
    if self.config.label_smoothing:
      one_hot = tf.one_hot(targets, tf.shape(logits)[-1])
      token_loss = tf.keras.losses.categorical_crossentropy(
          one_hot, logits, from_logits=True,
          label_smoothing=self.config.label_smoothing)
    else:
      token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=targets, logits=logits)  # [B, T]
    return tf.reduce_mean(token_loss, axis=-1)

  def count_examples(self, unused_features, targets):
    """float32: the examples (rows) in a batch."""
    return example_count(targets)

  def loss_denominator(self, features, targets):
    """The loss is a mean over examples: this batch's example count."""
    return self.count_examples(features, targets)

  def correct_predictions(self, targets, logits):
    """Fraction of each window's next characters predicted exactly: [B]."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(predicted == targets, tf.float32), axis=-1)

  def evaluate(self, predict_fn, dataset):
    """Loss (nats/char), perplexity, bits/char, accuracy over the dataset.

    Each batch is (ids, ids): position t predicts ids[t + 1]; padding is
    not scored.
    """
    losses, counts, hits = [], [], []
    for ids, _ in dataset:
      logits = predict_fn(ids)[:, :-1]  # [B, T-1, V]
      targets = ids[:, 1:]  # [B, T-1]
      mask = (targets != 0).numpy()
      token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=targets, logits=tf.cast(logits, tf.float32)).numpy()
      losses.append((token_loss * mask).sum(axis=1))
      hits.append(((np.argmax(logits, -1) == targets.numpy()) * mask).sum(1))
      counts.append(mask.sum(axis=1))
    return language_model_metrics(np.concatenate(losses),
                                  np.concatenate(counts), np.concatenate(hits))
