"""Task: the one interface a task implements to plug into the trainer.

A task owns everything that differs between kinds of training (the training
loop, the train step, export, evaluation and the tools stay generic):
  data        num_train_examples, new_model_config (learns the vocabulary from
              the run's own files and records labels, languages and warmup
              examples), train_dataset, eval_dataset, describe_eval_data,
              data_report (rows skipped under --skip_bad_rows)
  model       build_model (from the model config, variables created),
              warm_start (--init_checkpoint), warm_start_from_preset
              (--init_from_preset, a keras-hub preset)
  loss        per_example_loss, count_examples, loss_denominator,
              correct_predictions, count_tokens (the train step's sums)
  metrics     primary_metric, higher_is_better, evaluate (a checkpoint's
              predict function over eval_dataset), evaluate_export (an
              exported SavedModel, through its serving signatures),
              print_report; evaluate_checkpoint (a model_dir) by default
              runs `evaluate` on the rebuilt model
  export      `family`: zoo builds its model and export writes its
              signatures (export.exporter's family registry), from the model
              config alone; warmup requests come from the model config's
              "warmup_examples", taken from the run's training data.
Tasks are registered by name in trainers/tasks.py (a plain dict).
"""

import numpy as np
import tensorflow as tf

from trainers.data_files import expand_files
from trainers.errors import UserError
from trainers.train_step import example_count
from zoo import model_config as zoo_model_config

WARMUP_EXAMPLES = 2  # training rows copied into the model config for warmup


class Task:
  """Base class with the parts most tasks share; see the module docstring."""

  name = ""  # the --task value
  family = ""  # zoo/export family: encoder, decoder or seq2seq
  primary_metric = ""  # the dev metric that picks the best checkpoint
  higher_is_better = True
  supports_consistency = False  # implements --consistency_weight (R-Drop)
  supports_packing = False  # implements --pack_examples
  supports_adversarial = False  # implements --adversarial_epsilon
  supports_init_checkpoint = False  # implements --init_checkpoint
  supports_init_from_preset = False  # implements --init_from_preset

  def __init__(self, config):
    self.config = config  # the TrainConfig
    self.model_config = None  # set by use_model_config

  def use_model_config(self, model_config):
    """Binds the run's model config (labels, vocabulary, architecture)."""
    self.model_config = model_config
    return self

  # --- data ---------------------------------------------------------------

  train_files_help = "the training data"  # what --train_files holds, for errors

  def train_paths(self, shard=None):
    """--train_files expanded; UserError if it names nothing. With
    shard=(index, count), one worker's files: every count-th from index."""
    if not self.config.train_files:
      raise UserError(f"--train_files is required: {self.train_files_help} "
                      "(comma-separated paths and globs)")
    return shard_of(expand_files(self.config.train_files, "train_files"),
                    shard)

  def can_shard_files(self, num_workers):
    """Whether each of num_workers workers can read its own files (see
    train_dataset's shard); otherwise every worker reads all of the data
    and keeps its part of each global batch."""
    del num_workers
    return False

  def shuffle_buffer(self):
    """Rows shuffled together: the whole training set when it fits in
    --shuffle_buffer_size rows."""
    return max(1, min(self.num_train_examples(),
                      self.config.shuffle_buffer_size))

  def num_train_examples(self):
    raise NotImplementedError

  def new_model_config(self, model_dir):
    """The model config of a first run; writes the vocabulary to model_dir."""
    raise NotImplementedError

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1, shard=None):
    """Infinite (features, targets) batches of global_batch_size from batch
    skip_batches. shard=(index, count): this pipeline reads only worker
    `index`'s files (train_paths(shard)) and global_batch_size is then the
    batch of this pipeline."""
    raise NotImplementedError

  def eval_dataset(self, tokenizer, batch_size):
    """One pass of (features, targets) batches over the dev data."""
    raise NotImplementedError

  def describe_eval_data(self):
    raise NotImplementedError

  def data_report(self):
    """{"skipped_rows": n, ...}: what reading the training data dropped."""
    return {}

  # --- model --------------------------------------------------------------

  def build_model(self, model_config):
    model = zoo_model_config.build_model(model_config)
    model(zoo_model_config.dummy_inputs(model_config))  # create the variables
    return model

  def warm_start(self, model, init_checkpoint):
    raise UserError(f"--init_checkpoint is not supported by --task={self.name}")

  def warm_start_from_preset(self, model, preset):
    """Copies a keras-hub preset's weights into the built model (its model
    config came from the same preset, see trainers/presets.py)."""
    from trainers.presets import copy_preset_weights
    copy_preset_weights(model, self.model_config, preset)

  # --- loss and training metrics -----------------------------------------

  def per_example_loss(self, targets, logits):
    raise NotImplementedError

  def correct_predictions(self, targets, logits):
    raise NotImplementedError

  def count_tokens(self, features, targets):
    raise NotImplementedError

  def count_examples(self, unused_features, targets):
    """float32: the examples (rows) in a batch."""
    return example_count(targets)

  def loss_denominator(self, features, targets):
    """The loss is a mean over examples: this batch's example count."""
    return self.count_examples(features, targets)

  # --- evaluation ---------------------------------------------------------

  def evaluate(self, predict_fn, dataset):
    """The dev metrics of predict_fn(features) -> logits over dataset."""
    raise NotImplementedError

  def evaluate_checkpoint(self, model_dir, checkpoint, batch_size,
                          **unused_options):
    """The dev metrics of a checkpoint of model_dir (`evaluate` over
    `eval_dataset`); options are decoding settings some tasks take."""
    from export.exporter import load_trained_model
    from export.versioning import ExportError
    try:
      model, tokenizer, _, path = load_trained_model(model_dir, checkpoint)
    except ExportError as e:
      raise UserError(str(e))
    predict = tf.function(lambda features: model(features, training=False))
    metrics = self.evaluate(predict, self.eval_dataset(tokenizer, batch_size))
    return dict(metrics, source=path)

  def evaluate_export(self, saved_model, batch_size, **options):
    """The dev metrics of an exported version, through its signatures."""
    raise NotImplementedError

  def print_report(self, metrics):
    raise NotImplementedError


def shard_of(paths, shard):
  """paths[index::count] for shard=(index, count); all paths for None."""
  if shard is None:
    return paths
  index, count = shard
  return paths[index::count]


def token_metrics(predict_fn, dataset, ids_of=None):
  """Summed token losses, counts and hits per example of a teacher-forced
  model: (losses float[N], counts int[N], hits int[N]) numpy arrays.

  Each batch is (features, targets int32[B, T]); padding (0) is not scored.
  ids_of(features, targets) -> (logits, targets) adapts a task's layout.
  """
  losses, counts, hits = [], [], []
  for features, targets in dataset:
    logits = predict_fn(features)
    if ids_of is not None:
      logits, targets = ids_of(logits, targets)
    mask = (targets != 0).numpy()
    token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32)).numpy()
    losses.append((token_loss * mask).sum(axis=1))
    hits.append(((np.argmax(logits, -1) == targets.numpy()) * mask).sum(1))
    counts.append(mask.sum(axis=1))
  return np.concatenate(losses), np.concatenate(counts), np.concatenate(hits)
