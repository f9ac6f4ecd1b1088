"""`--task=text_classification`: any labels, from the user's TSV/CSV/JSONL files.

Rows have a text column (`--text_column`) and a label column
(`--label_column`). The label set is `--labels` in that order (any other
label is an error), or else every label of the training files, sorted; at
least two. `--label_names` gives display names in id order: what the export
returns as `label` (SST-2's recipe maps 0, 1 to negative, positive). Both go
into config.json and the model card. Without `--eval_files` there is no dev
set to pick a best checkpoint with, so they are required.
"""

import os

import numpy as np
import tensorflow as tf
import keras
from absl import logging

from trainers import classification_data, example_packing
from trainers.data_files import RowReader, expand_files
from trainers.errors import UserError
from trainers import presets
from trainers.config import config_path, preset_architecture, read_json
from trainers.metrics import classification_metrics
from trainers.task import WARMUP_EXAMPLES, Task
from trainers.train_step import example_count
from zoo import model_config as zoo_model_config
from zoo import model_dir as layout
from zoo.tokenizers.wordpiece import (learn_wordpiece_vocabulary,
                                      write_vocabulary)

VOCABULARY_FILE = "vocab.txt"


def parse_list(text):
  """'a,b , c' -> ['a', 'b', 'c'] (empty items dropped)."""
  return [item.strip() for item in text.split(",") if item.strip()]


class TrainingScan:
  """What one streamed pass over the training files found."""

  def __init__(self, count, labels_seen, sample, skipped):
    self.count = count  # good rows
    self.labels_seen = labels_seen  # set of label strings
    self.sample = sample  # the first --vocabulary_sample_lines texts
    self.skipped = skipped  # rows dropped under --skip_bad_rows


class TextClassificationTask(Task):
  """Everything task-specific the training loop needs for a classifier."""

  name = "text_classification"
  family = "encoder"
  supports_consistency = True
  supports_packing = True
  supports_adversarial = True
  supports_init_checkpoint = True
  supports_init_from_preset = True
  primary_metric = "accuracy"
  higher_is_better = True
  train_files_help = "the training data (.tsv, .csv, .jsonl)"

  def __init__(self, config):
    super().__init__(config)
    if not config.label_column:
      raise UserError("--label_column names no column")
    self._scan = None
    self._given_labels = parse_list(config.labels)
    if config.labels and len(self._given_labels) < 2:
      raise UserError(f"--labels={config.labels}: a classifier needs at "
                      "least two labels")
    if len(set(self._given_labels)) != len(self._given_labels):
      raise UserError(f"--labels={config.labels} repeats a label")
    if config.text_pair_column and config.pack_examples:
      raise UserError("--pack_examples packs single texts; it does not take "
                      "--text_pair_column")

  # --- reading ------------------------------------------------------------

  def columns(self):
    pair = [self.config.text_pair_column] if self.config.text_pair_column else []
    return [self.config.text_column, *pair, self.config.label_column]

  def reader(self, paths):
    return RowReader(paths, self.columns(), self.config.skip_bad_rows)

  def eval_paths(self):
    if not self.config.eval_files:
      raise UserError("--eval_files is required for text_classification: "
                      "the dev data that picks the best checkpoint")
    return expand_files(self.config.eval_files, "eval_files")

  def examples(self, reader, label_index):
    """Yields (text, label) or (text, pair, label) of reader's good rows;
    label is an id when label_index (label -> id) is given, else the string."""
    text_column, label_column = self.config.text_column, self.config.label_column
    pair_column = self.config.text_pair_column
    for row in reader.rows():
      text = row.values[text_column]
      where = f"{row.path}:{row.line}"
      if not text.strip():
        reader.bad(f"{where}: empty text in column {text_column!r}; write a "
                   "text there or remove the row")
        continue
      if pair_column and not row.values[pair_column].strip():
        reader.bad(f"{where}: empty text in column {pair_column!r}; write a "
                   "text there or remove the row")
        continue
      label = row.values[label_column].strip()
      if not label:
        reader.bad(f"{where}: empty label in column {label_column!r}; write "
                   "a label there or remove the row")
        continue
      if label_index is not None:
        if label not in label_index:
          reader.bad(f"{where}: label {label!r} is not one of "
                     f"{list(label_index)}" + (
                         " (the --labels list); add it to --labels or "
                         "correct the row" if self._given_labels else
                         " (the labels of the training files); correct the "
                         "row, or pass --labels with every label"))
          continue
        label = label_index[label]
      yield (text, row.values[pair_column], label) if pair_column else (
          text, label)

  def scan(self):
    """One streamed pass over the training files (cached): counts and checks
    every row, collects the label set and the vocabulary sample."""
    if self._scan is None:
      reader = self.reader(self.train_paths())
      given = ({label: i for i, label in enumerate(self._given_labels)}
               if self._given_labels else None)
      count, seen, sample = 0, set(), []
      limit = self.config.vocabulary_sample_lines
      for example in self.examples(reader, given):
        count += 1
        seen.add(self._given_labels[example[-1]] if given else example[-1])
        if count <= limit:  # the first rows (both texts of a pair)
          sample.extend(example[:-1])
      if count == 0:
        raise UserError(f"--train_files={self.config.train_files}: no "
                        "usable rows")
      self._scan = TrainingScan(count, seen, sample, reader.bad_rows.count)
      if reader.bad_rows.count:
        logging.warning("Skipped %d bad training rows, e.g. %s",
                        reader.bad_rows.count, reader.bad_rows.examples[0])
    return self._scan

  def label_values(self):
    """The label strings of the data, in id order."""
    if self.model_config is not None:
      return self.model_config.get("label_values", self.model_config["labels"])
    if self._given_labels:
      return list(self._given_labels)
    labels = sorted(self.scan().labels_seen)
    if len(labels) < 2:
      raise UserError(
          f"--train_files={self.config.train_files}: every row has the label "
          f"{labels[0]!r}; a classifier needs at least two labels: add rows "
          "of the other labels (is "
          f"--label_column={self.config.label_column} the right column?)")
    return labels

  def label_names(self):
    """Display names in id order (the export's `label`)."""
    if self.model_config is not None:
      return self.model_config["labels"]
    values = self.label_values()
    if not self.config.label_names:
      return values
    names = parse_list(self.config.label_names)
    if len(names) != len(values):
      raise UserError(f"--label_names gives {len(names)} names for the "
                      f"{len(values)} labels {values}")
    return names

  def label_index(self):
    return {label: i for i, label in enumerate(self.label_values())}

  def examples_dataset(self, paths, check_first=False):
    """A streamed tf.data.Dataset of (text string, [pair string,] label int64).
    check_first: read the files once in Python first, so that a bad row is a
    UserError here, not an error inside tf.data (the training files were
    checked by scan())."""
    index = self.label_index()
    if check_first:
      for _ in self.examples(self.reader(paths), index):
        pass
    signature = [tf.TensorSpec([], tf.string)] * (
        2 if self.config.text_pair_column else 1) + [tf.TensorSpec([], tf.int64)]
    return tf.data.Dataset.from_generator(
        lambda: self.examples(self.reader(paths), index),
        output_signature=tuple(signature))

  # --- the Task interface -------------------------------------------------

  def num_train_examples(self):
    return self.scan().count

  def data_report(self):
    return {"train_rows": self.scan().count,
            "skipped_rows": self.scan().skipped}

  def describe_eval_data(self):
    return ",".join(self.eval_paths())

  def new_model_config(self, model_dir):
    """Learns the WordPiece vocabulary from the training texts (or copies the
    --init_checkpoint's with its architecture); writes model_dir/vocab.txt."""
    if self.config.init_from_preset:
      return self._preset_model_config(model_dir)
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    if self.config.vocabulary_size:
      architecture["vocabulary_size"] = self.config.vocabulary_size
    if self.config.text_pair_column:
      architecture["num_token_types"] = 2  # the first text and the second
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
      vocabulary = learn_wordpiece_vocabulary(self.scan().sample,
                                              architecture["vocabulary_size"])
      write_vocabulary(vocabulary, vocabulary_path)
      architecture["vocabulary_size"] = len(vocabulary)
    return self._model_config(self.config.preset, architecture,
                              {"vocabulary_file": VOCABULARY_FILE})

  def _preset_model_config(self, model_dir):
    """The model config of a run from --init_from_preset: the preset's
    architecture, vocabulary and tokenizer settings."""
    if self.config.vocabulary_size or self.config.init_checkpoint:
      raise UserError("--init_from_preset brings its own vocabulary and "
                      "weights: leave --vocabulary_size and --init_checkpoint "
                      "unset")
    preset = presets.open_preset(self.config.init_from_preset, self.family)
    architecture, entries = presets.preset_model_config(
        preset, self.config.model_overrides, model_dir, VOCABULARY_FILE)
    return self._model_config(preset.class_name, architecture, entries)

  def _model_config(self, preset_name, architecture, entries):
    model_config = dict(
        entries, family=self.family, task=self.name, preset=preset_name,
        architecture=architecture, labels=list(self.label_names()),
        label_values=list(self.label_values()),
        warmup_examples=self.warmup_examples())
    if self.config.text_pair_column:
      model_config["text_pair"] = True
    return model_config

  def warmup_examples(self):
    """The first training rows, as the export's inputs."""
    rows = []
    for example in self.examples(self.reader(self.train_paths()), None):
      rows.append(example)
      if len(rows) == WARMUP_EXAMPLES:
        break
    warmup = {"text": [row[0] for row in rows]}
    if self.config.text_pair_column:
      warmup["text_pair"] = [row[1] for row in rows]
    return warmup

  def warm_start(self, model, init_checkpoint):
    """Loads the backbone weights of a pretraining run into model.backbone."""
    warm_start_backbone(model, init_checkpoint)

  @property
  def _pairs(self):
    """True under R-Drop (--consistency_weight > 0): every training example
    appears twice, in adjacent rows, so a replica's share of the batch keeps
    each pair together and the two rows get different dropout masks."""
    return self.config.consistency_weight > 0

  def can_shard_files(self, num_workers):
    # Packing plans batches over the whole training set at once.
    return (not self.config.pack_examples and
            len(self.train_paths()) >= num_workers)

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1, shard=None):
    examples = self.examples_dataset(self.train_paths(shard))
    if self.config.pack_examples:  # rows of several examples, no R-Drop
      texts, labels = [], []
      for text, label in examples.as_numpy_iterator():
        texts.append(text)
        labels.append(label)
      return example_packing.packed_train_dataset(
          texts, np.asarray(labels, np.int64), tokenizer, global_batch_size,
          num_replicas, self.config.seed, skip_batches)
    ds = classification_data.train_dataset(
        examples, self.shuffle_buffer(), tokenizer, global_batch_size,
        self.config.seed, skip_batches)
    if self._pairs:  # [B, W] -> [2B, W]: x0, x0, x1, x1, ...
      ds = ds.map(lambda ids, y: (tf.nest.map_structure(
          lambda t: tf.repeat(t, 2, axis=0), ids), tf.repeat(y, 2, axis=0)))
    return ds

  def eval_dataset(self, tokenizer, batch_size):
    return classification_data.eval_dataset(
        self.examples_dataset(self.eval_paths(), check_first=True), tokenizer,
        batch_size)

  def count_tokens(self, features, unused_targets):
    """Non-padding input tokens in a batch (for tokens/s)."""
    ids = classification_data.token_ids(features)
    return tf.reduce_sum(tf.cast(tf.not_equal(ids, 0), tf.float32))

  def per_example_loss(self, labels, logits):
    """float32[B] cross-entropy, with optional label smoothing; under R-Drop
    plus the consistency term (each row of a pair carries half of it).
    Packed batches (labels int64[R, S], logits [R, S, C]) give float32[R*S],
    0 for the empty slots (label -1)."""
    num_classes = tf.shape(logits)[-1]
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

  def correct_predictions(self, labels, logits):
    """float32[B]: 1 where argmax(logits) == label (a training metric); under
    R-Drop 1/2 a row, so that a batch's sum still counts examples; packed,
    0 for the empty slots."""
    labels, logits, valid = _flat_examples(labels, logits)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int64)
    correct = tf.cast(tf.equal(predicted, labels), tf.float32) * valid
    return correct / 2 if self._pairs else correct

  def evaluate(self, predict_fn, dataset):
    """Runs predict_fn(features) -> logits over dataset; the metric dict."""
    y_true, y_pred = [], []
    for features, labels in dataset:
      logits = predict_fn(features)
      y_pred.append(np.argmax(logits, axis=-1))
      y_true.append(labels.numpy())
    return classification_metrics(np.concatenate(y_true),
                                  np.concatenate(y_pred),
                                  list(self.label_names()))

  def evaluate_export(self, saved_model, batch_size, **unused_options):
    """The metrics of the export's serving_default on the eval files."""
    from trainers.saved_models import load_signature
    serve = load_signature(saved_model, "serving_default")
    y_true, y_pred = [], []
    for batch in self.examples_dataset(self.eval_paths(),
                                       check_first=True).batch(batch_size):
      inputs = {"text": batch[0]}
      if self.config.text_pair_column:
        inputs["text_pair"] = batch[1]
      y_pred.append(serve(**inputs)["label_id"].numpy())
      y_true.append(batch[-1].numpy())
    return classification_metrics(np.concatenate(y_true),
                                  np.concatenate(y_pred),
                                  list(self.label_names()))

  def print_report(self, metrics):
    low, high = metrics["accuracy_ci95"]
    print(f"model:     {metrics['source']}")
    print(f"data:      {metrics['data']} ({metrics['examples']} examples)")
    print(f"accuracy:  {metrics['accuracy']:.4f}  (95% CI {low:.4f}-{high:.4f})")
    print(f"precision: {metrics['precision']:.4f}")
    print(f"recall:    {metrics['recall']:.4f}")
    print(f"f1:        {metrics['f1']:.4f}   macro F1: {metrics['macro_f1']:.4f}")
    labels = metrics["labels"]
    width = max(len(label) for label in labels + ["true \\ pred"]) + 2
    print("per class: precision recall f1 support")
    for label in labels:
      c = metrics["per_class"][label]
      print(f"  {label.ljust(width)} {c['precision']:.4f} {c['recall']:.4f} "
            f"{c['f1']:.4f} {c['support']}")
    print("confusion matrix (rows: true, columns: predicted)")
    print("true \\ pred".ljust(width) + "".join(l.rjust(width) for l in labels))
    for label, row in zip(labels, metrics["confusion_matrix"]):
      print(label.ljust(width) + "".join(str(n).rjust(width) for n in row))


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
  path = tf.train.latest_checkpoint(layout.path(init_checkpoint,
                                               layout.CHECKPOINTS))
  if path is None:
    raise UserError(f"--init_checkpoint={init_checkpoint} has no checkpoint")
  source = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone))
  source.restore(path).expect_partial().assert_existing_objects_matched()
