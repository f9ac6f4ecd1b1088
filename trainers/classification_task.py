"""Sentence classification tasks (SST-2): data, vocabulary, loss and metrics.

A task object tells the generic training loop (trainers/loop.py) what to train
on and how to score it; the model itself comes from zoo.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
import keras

from trainers import classification_data, example_packing
from trainers.errors import UserError
from trainers.config import config_path, preset_architecture, read_json
from trainers.metrics import classification_metrics
from trainers.train_step import example_count
from zoo import model_config as zoo_model_config
from zoo.tokenizers.wordpiece import (learn_wordpiece_vocabulary,
                                      write_vocabulary)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABULARY_FILE = "vocab.txt"


@dataclasses.dataclass(frozen=True)
class ClassificationSpec:
  name: str  # task name used by --task
  data_folder: str  # folder under data/ with train.tsv and dev.tsv
  label_values: tuple  # label strings as written in the TSV, in id order
  labels: tuple  # human-readable class names, in id order


SST2 = ClassificationSpec(name="sst2", data_folder="sst2",
                          label_values=("0", "1"),
                          labels=("negative", "positive"))


class ClassificationTask:
  """Everything task-specific the training loop needs for a classifier."""

  family = "encoder"
  supports_consistency = True  # implements --consistency_weight (R-Drop)
  supports_packing = True  # implements --pack_examples
  supports_adversarial = True  # implements --adversarial_epsilon
  primary_metric = "accuracy"
  higher_is_better = True
  eval_split = "dev"

  def __init__(self, spec, config):
    self.spec = spec
    self.config = config
    self.data_dir = config.data_dir or os.path.join(REPO_ROOT, "data",
                                                    spec.data_folder)
    self._train = None

  def split_path(self, split):
    return os.path.join(self.data_dir, f"{split}.tsv")

  def describe_eval_data(self, split_or_path):
    return (split_or_path if split_or_path.endswith(".tsv")
            else self.split_path(split_or_path))

  def read_split(self, split_or_path):
    path = (split_or_path if split_or_path.endswith(".tsv")
            else self.split_path(split_or_path))
    return classification_data.read_labeled_tsv(path, self.spec.label_values)

  def train_examples(self):
    if self._train is None:
      self._train = self.read_split("train")
    return self._train

  def num_train_examples(self):
    return len(self.train_examples()[0])

  def new_model_config(self, model_dir):
    """The model config of a first run; writes model_dir/vocab.txt.

    The vocabulary is learned from the training split, or copied from the
    --init_checkpoint model_dir together with its architecture.
    """
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    vocabulary_path = os.path.join(model_dir, VOCABULARY_FILE)
    if self.config.init_checkpoint:
      pretrained = pretrained_model_config(self.config.init_checkpoint)
      # The pretrained shape; this preset's regularisation for fine-tuning.
      architecture.update({k: v for k, v in pretrained["architecture"].items()
                           if "dropout" not in k})
      tf.io.gfile.copy(zoo_model_config.vocabulary_path(
          pretrained, self.config.init_checkpoint), vocabulary_path,
          overwrite=True)
    else:
      sentences, _ = self.train_examples()
      vocabulary = learn_wordpiece_vocabulary(sentences,
                                              architecture["vocabulary_size"])
      write_vocabulary(vocabulary, vocabulary_path)
      architecture["vocabulary_size"] = len(vocabulary)
    return {"family": self.family, "task": self.spec.name,
            "preset": self.config.preset, "architecture": architecture,
            "labels": list(self.spec.labels),
            "vocabulary_file": VOCABULARY_FILE}

  def build_model(self, model_config):
    model = zoo_model_config.build_model(model_config)
    length = model_config["architecture"]["sequence_length"]
    model(tf.zeros([1, length], tf.int32))  # create the variables
    return model

  def warm_start(self, model, init_checkpoint):
    """Loads the backbone weights of a pretraining run into model.backbone."""
    warm_start_backbone(model, init_checkpoint)

  @property
  def _pairs(self):
    """True under R-Drop (--consistency_weight > 0): every training example
    appears twice, in adjacent rows, so a replica's share of the batch keeps
    each pair together and the two rows get different dropout masks."""
    return self.config.consistency_weight > 0

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1):
    sentences, labels = self.train_examples()
    if self.config.pack_examples:  # rows of several examples, no R-Drop
      return example_packing.packed_train_dataset(
          sentences, labels, tokenizer, global_batch_size, num_replicas,
          self.config.seed, skip_batches)
    ds = classification_data.train_dataset(
        sentences, labels, tokenizer, global_batch_size, self.config.seed,
        skip_batches)
    if self._pairs:  # [B, W] -> [2B, W]: x0, x0, x1, x1, ...
      ds = ds.map(lambda ids, y: (tf.repeat(ids, 2, axis=0),
                                  tf.repeat(y, 2, axis=0)))
    return ds

  def eval_dataset(self, tokenizer, batch_size, split_or_path="dev"):
    sentences, labels = self.read_split(split_or_path)
    return classification_data.eval_dataset(sentences, labels, tokenizer,
                                            batch_size)

  def count_tokens(self, features, unused_targets):
    """Non-padding input tokens in a batch (for tokens/s)."""
    ids = features["token_ids"] if isinstance(features, dict) else features
    return tf.reduce_sum(tf.cast(tf.not_equal(ids, 0), tf.float32))

  def per_example_loss(self, labels, logits):
    """float32[B] cross-entropy, with optional label smoothing; under R-Drop
    plus the consistency term (each row of a pair carries half of it).
    Packed batches (labels int64[R, S], logits [R, S, C]) give float32[R*S],
    0 for the empty slots (label -1)."""
    num_classes = len(self.spec.labels)
    labels, logits, valid = _flat_examples(labels, logits)  # [B], [B, C], [B]
    one_hot = tf.one_hot(labels, num_classes)  # [B, C]
    loss = keras.losses.categorical_crossentropy(
        one_hot, logits, from_logits=True,
        label_smoothing=self.config.label_smoothing)  # [B]
    if self._pairs:
      loss += self.config.consistency_weight * tf.repeat(
          pair_divergence(logits), 2) / 2  # [B]
    return loss * valid

  def count_examples(self, unused_features, targets):
    """float32: the examples in a batch (packed: the filled slots)."""
    if self.config.pack_examples:
      return tf.reduce_sum(tf.cast(targets >= 0, tf.float32))
    return example_count(targets)

  def loss_denominator(self, features, targets):
    """The loss is a mean over examples: this batch's example count."""
    return self.count_examples(features, targets)

  def correct_predictions(self, labels, logits):
    """float32[B]: 1 where argmax(logits) == label (a training metric); under
    R-Drop 1/2 a row, so that a batch's sum still counts examples; packed,
    0 for the empty slots."""
    labels, logits, valid = _flat_examples(labels, logits)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int64)
    correct = tf.cast(tf.equal(predicted, labels), tf.float32) * valid
    return correct / 2 if self._pairs else correct

  def evaluate(self, predict_fn, dataset):
    """Runs predict_fn(ids) -> logits over dataset; returns the metric dict."""
    y_true, y_pred = [], []
    for ids, labels in dataset:
      logits = predict_fn(ids)
      y_pred.append(np.argmax(logits, axis=-1))
      y_true.append(labels.numpy())
    return classification_metrics(np.concatenate(y_true),
                                  np.concatenate(y_pred), list(self.spec.labels))



def _flat_examples(labels, logits):
  """labels int64[B] or [R, S] (-1 = empty slot), logits [..., C] ->
  (labels int64[N] with empty slots as 0, float32 logits [N, C],
  valid float32[N])."""
  num_classes = tf.shape(logits)[-1]
  labels = tf.reshape(labels, [-1])  # [N]
  logits = tf.reshape(tf.cast(logits, tf.float32), [-1, num_classes])  # [N, C]
  valid = tf.cast(labels >= 0, tf.float32)  # [N]
  return tf.maximum(labels, 0), logits, valid


def pair_divergence(logits):
  """float32[2N, C] logits of N adjacent pairs -> float32[N]: the symmetric
  KL divergence KL(p||q) + KL(q||p) between each pair's two distributions."""
  log_probs = tf.nn.log_softmax(logits, axis=-1)  # [2N, C]
  pairs = tf.reshape(log_probs, [-1, 2, tf.shape(logits)[-1]])  # [N, 2, C]
  p, q = pairs[:, 0], pairs[:, 1]  # [N, C]
  return tf.reduce_sum((tf.exp(p) - tf.exp(q)) * (p - q), axis=-1)  # [N]


def pretrained_model_config(init_checkpoint):
  path = config_path(init_checkpoint)
  if not tf.io.gfile.exists(path):
    raise UserError(f"--init_checkpoint={init_checkpoint}: no config.json there "
                    "(pass the model_dir of a pretraining run)")
  return read_json(path)["model"]


def warm_start_backbone(model, init_checkpoint):
  """Restores model.backbone from the latest checkpoint of a model_dir."""
  path = tf.train.latest_checkpoint(os.path.join(init_checkpoint, "checkpoints"))
  if path is None:
    raise UserError(f"--init_checkpoint={init_checkpoint} has no checkpoint")
  source = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone))
  source.restore(path).expect_partial().assert_existing_objects_matched()
