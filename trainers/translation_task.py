"""`--task=translation`: an encoder-decoder on the user's parallel text.

Two layouts, as in OpenNMT and keras-hub:
  line-aligned files: --train_source_files / --train_target_files (line i
      of one translates line i of the other; lists and globs pair up in
      order), --eval_source_files / --eval_target_files;
  tables: --train_files / --eval_files (.tsv, .csv, .jsonl) with
      --source_column and --target_column.
Any languages and scripts: one SentencePiece vocabulary is learned over both
sides (the first --vocabulary_sample_lines pairs). --source_language and
--target_language go into the model card. During training, checkpoints are
chosen by the dev loss (teacher-forced cross-entropy per target token, lower
is better; cheap on CPU); BLEU and chrF come from `trainers.evaluate`, which
decodes with the export's beam search.
"""

import itertools
import os

import numpy as np
import tensorflow as tf
from absl import logging

from trainers import translation_data as data
from trainers.config import preset_architecture
from trainers.data_files import RowReader, expand_files, read_text_chunks
from trainers.errors import UserError
from trainers.metrics import language_model_metrics
from trainers.task import WARMUP_EXAMPLES, Task, shard_of, token_metrics
from zoo.tokenizers.sentencepiece import learn_sentencepiece, write_model

VOCABULARY_FILE = "spm.model"


class TranslationTask(Task):
  """Everything task-specific the training loop needs for a translator."""

  name = "translation"
  family = "seq2seq"
  primary_metric = "loss"
  higher_is_better = False

  def __init__(self, config):
    super().__init__(config)
    self._count = None
    self._skipped = 0  # bad pairs seen by every pass so far (train and dev)
    self._train_skipped = 0  # bad training pairs (one pass)

  # --- reading ------------------------------------------------------------

  def _files(self, split):
    """('aligned', source paths, target paths) or ('table', paths, None)."""
    c = self.config
    source, target, table = (
        (c.train_source_files, c.train_target_files, c.train_files)
        if split == "train" else
        (c.eval_source_files, c.eval_target_files, c.eval_files))
    if (source or target) and table:
      raise UserError(f"pass either --{split}_source_files/--{split}_target_"
                      f"files or --{split}_files, not both")
    if table:
      return "table", expand_files(table, f"{split}_files"), None
    if not (source and target):
      raise UserError(
          f"--{split}_source_files and --{split}_target_files are required "
          f"(line-aligned text), or --{split}_files with --source_column and "
          "--target_column")
    sources = expand_files(source, f"{split}_source_files", plain_text=True)
    targets = expand_files(target, f"{split}_target_files", plain_text=True)
    if len(sources) != len(targets):
      raise UserError(f"--{split}_source_files names {len(sources)} files but "
                      f"--{split}_target_files names {len(targets)}; they "
                      "pair up in order")
    return "aligned", sources, targets

  def can_shard_files(self, num_workers):
    return len(self._files("train")[1]) >= num_workers

  def pairs(self, split, shard=None):
    """Yields (source, target) str pairs of a split, checked row by row;
    shard=(index, count): of that worker's files only (every count-th)."""
    layout, first, second = self._files(split)
    first = shard_of(first, shard)
    second = None if second is None else shard_of(second, shard)
    if layout == "table":
      yield from self._table_pairs(first)
    else:
      for source_path, target_path in zip(first, second):
        yield from self._aligned_pairs(source_path, target_path)

  def _bad(self, message):
    if not self.config.skip_bad_rows:
      raise UserError(message + " (or pass --skip_bad_rows to skip such rows)")
    self._skipped += 1

  def _aligned_pairs(self, source_path, target_path):
    sources = read_text_chunks([source_path], plain_text=True)
    targets = read_text_chunks([target_path], plain_text=True)
    for source, target in itertools.zip_longest(sources, targets):
      if source is None or target is None:
        longer, (path, number, _) = ((target_path, target) if source is None
                                     else (source_path, source))
        raise UserError(
            f"{longer}:{number}: this file has more lines than "
            f"{source_path if source is None else target_path}; parallel "
            "files must match line for line")
      _, number, source_line = source
      source_text, target_text = (source_line.rstrip("\r\n"),
                                  target[2].rstrip("\r\n"))
      if not source_text.strip() or not target_text.strip():
        empty = source_path if not source_text.strip() else target_path
        self._bad(f"{empty}:{number}: empty line (line {number} of "
                  f"{source_path} and {target_path} must both hold text); "
                  "write the text there, or remove the line from both files")
        continue
      yield source_text, target_text

  def _table_pairs(self, paths):
    columns = [self.config.source_column, self.config.target_column]
    reader = RowReader(paths, columns, self.config.skip_bad_rows)
    for row in reader.rows():
      source, target = (row.values[c] for c in columns)
      if not source.strip() or not target.strip():
        reader.bad(f"{row.path}:{row.line}: empty text in column "
                   f"{columns[0] if not source.strip() else columns[1]!r}")
        continue
      yield source, target
    self._skipped += reader.bad_rows.count

  def pairs_dataset(self, split, shard=None):
    """A streamed dataset of (source, target) strings. The dev pairs are read
    once in Python first, so that a bad row is a UserError here rather than
    an error inside tf.data (num_train_examples checks the training pairs)."""
    if split == "eval":
      for _ in self.pairs(split):
        pass
    return tf.data.Dataset.from_generator(
        lambda: self.pairs(split, shard),
        output_signature=(tf.TensorSpec([], tf.string),
                          tf.TensorSpec([], tf.string)))

  # --- the Task interface -------------------------------------------------

  def num_train_examples(self):
    if self._count is None:
      before = self._skipped
      self._count = sum(1 for _ in self.pairs("train"))
      self._train_skipped = self._skipped - before
      if self._count == 0:
        raise UserError("the training files hold no sentence pairs")
      if self._train_skipped:
        logging.warning("Skipped %d bad training pairs", self._train_skipped)
    return self._count

  def data_report(self):
    return {"train_rows": self.num_train_examples(),
            "skipped_rows": self._train_skipped}

  def describe_eval_data(self):
    layout, first, second = self._files("eval")
    return ",".join(first) + ("" if second is None else
                              " / " + ",".join(second))

  def new_model_config(self, model_dir):
    if self.config.init_checkpoint:
      raise UserError("--init_checkpoint is not supported for translation")
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    if self.config.vocabulary_size:
      architecture["vocabulary_size"] = self.config.vocabulary_size
    self.num_train_examples()  # checks every pair first
    sample = list(itertools.islice(self.pairs("train"),
                                   self.config.vocabulary_sample_lines))
    sources = [source for source, _ in sample]
    targets = [target for _, target in sample]
    try:
      model = learn_sentencepiece(sources + targets,
                                  architecture["vocabulary_size"])
    except RuntimeError as e:  # e.g. "Vocabulary size too high (6000) ..."
      raise UserError(
          f"cannot learn a {architecture['vocabulary_size']}-piece "
          f"SentencePiece vocabulary from these {len(sample)} sentence pairs "
          f"({e}); pass a smaller --vocabulary_size") from None
    write_model(model, os.path.join(model_dir, VOCABULARY_FILE))
    return {"family": self.family, "task": self.name,
            "preset": self.config.preset, "architecture": architecture,
            "vocabulary_file": VOCABULARY_FILE,
            "source_language": self.config.source_language,
            "target_language": self.config.target_language,
            "warmup_examples": {"source": sources[:WARMUP_EXAMPLES]}}

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1, shard=None):
    del num_replicas  # batches of examples split evenly without help
    return data.train_dataset(
        self.pairs_dataset("train", shard),
        self.shuffle_buffer(),
        tokenizer, global_batch_size, self.config.seed, skip_batches)

  def eval_dataset(self, tokenizer, batch_size):
    return data.eval_dataset(self.pairs_dataset("eval"), tokenizer, batch_size)

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
    metrics = language_model_metrics(*token_metrics(predict_fn, dataset))
    metrics["target_tokens"] = metrics.pop("tokens")
    metrics.pop("characters")
    metrics.pop("bits_per_character")
    metrics["sentences"] = metrics.pop("chunks")
    return metrics

  def evaluate_export(self, saved_model, batch_size, **options):
    """BLEU and chrF of the export's `translate` signature on the dev pairs."""
    from trainers.translation_eval import evaluate_translations
    return evaluate_translations(self, saved_model, "", "best", batch_size,
                                 **options)

  def evaluate_checkpoint(self, model_dir, checkpoint, batch_size, **options):
    """BLEU and chrF of beam search from a checkpoint (as the export runs it)."""
    from trainers.translation_eval import evaluate_translations
    return dict(evaluate_translations(self, "", model_dir, checkpoint,
                                      batch_size, **options),
                source=model_dir)

  def print_report(self, metrics):
    from trainers.translation_eval import print_translation_report
    print_translation_report(metrics)
