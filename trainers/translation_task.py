"""Translation tasks (Multi30k German to English): data, vocabulary, loss.

`--task=multi30k_de_en` trains the seq2seq family on data/multi30k. During
training, checkpoints are chosen by the validation loss (teacher-forced
cross-entropy per target token, lower is better; cheap to compute on CPU);
BLEU and chrF come from `trainers.evaluate`, which decodes with beam search.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from trainers import translation_data as data
from trainers.config import preset_architecture
from trainers.errors import UserError
from trainers.metrics import language_model_metrics
from trainers.train_step import example_count
from zoo import model_config as zoo_model_config
from zoo.tokenizers.sentencepiece import learn_sentencepiece, write_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABULARY_FILE = "spm.model"


@dataclasses.dataclass(frozen=True)
class TranslationSpec:
  name: str  # task name used by --task
  data_folder: str  # folder under data/
  source_language: str  # file suffix of the source side
  target_language: str  # file suffix of the target side
  splits: dict  # split name -> file prefix


MULTI30K_DE_EN = TranslationSpec(
    name="multi30k_de_en", data_folder="multi30k", source_language="de",
    target_language="en",
    splits={"train": "train", "validation": "val",
            "test": "test_2016_flickr"})


class TranslationTask:
  """Everything task-specific the training loop needs for a translator."""

  family = "seq2seq"
  primary_metric = "loss"
  higher_is_better = False
  eval_split = "validation"

  def __init__(self, spec, config):
    self.spec = spec
    self.config = config
    self.data_dir = config.data_dir or os.path.join(REPO_ROOT, "data",
                                                    spec.data_folder)
    self._train = None

  def split_paths(self, split):
    """(source path, target path) of a named split."""
    if split not in self.spec.splits:
      raise UserError(f"unknown split {split!r}; choose one of "
                      f"{sorted(self.spec.splits)}")
    prefix = os.path.join(self.data_dir, self.spec.splits[split])
    return (f"{prefix}.{self.spec.source_language}",
            f"{prefix}.{self.spec.target_language}")

  def read_split(self, split):
    return data.read_parallel(*self.split_paths(split))

  def describe_eval_data(self, split):
    return " / ".join(self.split_paths(split))

  def train_pairs(self):
    if self._train is None:
      self._train = self.read_split("train")
    return self._train

  def num_train_examples(self):
    return len(self.train_pairs()[0])

  def new_model_config(self, model_dir):
    if self.config.init_checkpoint:
      raise UserError("--init_checkpoint is not supported for translation")
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    sources, targets = self.train_pairs()
    model = learn_sentencepiece(sources + targets,
                                architecture["vocabulary_size"])
    write_model(model, os.path.join(model_dir, VOCABULARY_FILE))
    return {"family": self.family, "task": self.spec.name,
            "preset": self.config.preset, "architecture": architecture,
            "vocabulary_file": VOCABULARY_FILE,
            "source_language": self.spec.source_language,
            "target_language": self.spec.target_language}

  def build_model(self, model_config):
    model = zoo_model_config.build_model(model_config)
    model(zoo_model_config.dummy_inputs(model_config))  # create the variables
    return model

  def warm_start(self, model, init_checkpoint):
    raise UserError("--init_checkpoint is not supported for translation")

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1):
    del num_replicas  # batches of examples split evenly without help
    sources, targets = self.train_pairs()
    return data.train_dataset(sources, targets, tokenizer, global_batch_size,
                              self.config.seed, skip_batches)

  def eval_dataset(self, tokenizer, batch_size, split="validation"):
    return data.eval_dataset(*self.read_split(split), tokenizer, batch_size)

  def count_tokens(self, features, unused_targets):
    return (tf.reduce_sum(tf.cast(features["source_ids"] != 0, tf.float32)) +
            tf.reduce_sum(tf.cast(features["target_ids"] != 0, tf.float32)))

  def per_example_loss(self, targets, logits):
    """Each example's loss summed over its target tokens: float32[B]. The
    train step divides the batch's sum by loss_denominator summed over all
    replicas: a mean per target token of the global batch, however it is
    split."""
    logits = tf.cast(logits, tf.float32)  # [B, T, V]
    mask = tf.cast(targets != 0, tf.float32)  # [B, T]
    one_hot = tf.one_hot(targets, tf.shape(logits)[-1])
    token_loss = tf.keras.losses.categorical_crossentropy(
        one_hot, logits, from_logits=True,
        label_smoothing=self.config.label_smoothing)  # [B, T]
    return tf.reduce_sum(token_loss * mask, axis=-1)  # [B]

  def count_examples(self, unused_features, targets):
    """float32: the examples (rows) in a batch."""
    return example_count(targets)

  def loss_denominator(self, unused_features, targets):
    """The loss is a mean over target tokens: this batch's count of them."""
    return tf.reduce_sum(tf.cast(targets != 0, tf.float32))

  def correct_predictions(self, targets, logits):
    """Fraction of each example's target tokens predicted exactly: [B]."""
    mask = tf.cast(targets != 0, tf.float32)
    hits = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == targets,
                   tf.float32) * mask
    return tf.reduce_sum(hits, -1) / tf.maximum(tf.reduce_sum(mask, -1), 1.0)

  def evaluate(self, predict_fn, dataset):
    """Teacher-forced loss per target token (nats), perplexity, accuracy."""
    losses, counts, hits = [], [], []
    for features, targets in dataset:
      logits = predict_fn(features)  # [B, T, V]
      mask = (targets != 0).numpy()
      token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=targets, logits=tf.cast(logits, tf.float32)).numpy()
      losses.append((token_loss * mask).sum(axis=1))
      hits.append(((np.argmax(logits, -1) == targets.numpy()) * mask).sum(1))
      counts.append(mask.sum(axis=1))
    metrics = language_model_metrics(np.concatenate(losses),
                                     np.concatenate(counts),
                                     np.concatenate(hits))
    metrics["target_tokens"] = metrics.pop("characters")
    metrics.pop("bits_per_character")
    metrics["sentences"] = metrics.pop("chunks")
    return metrics
