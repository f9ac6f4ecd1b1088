"""`--task=language_model`: a causal LM on the user's plain text.

The text is every line of `--train_files` (.txt, optionally .gz), in order,
or the `--text_column` of each row of .tsv/.csv/.jsonl files, one a line.
Dev text is `--eval_files`, or else the last 10% of the training text (split
by position, so no dev text leaks into training). The primary metric is the
dev loss in nats per token (lower is better); evaluation also reports
perplexity, bits per character and next-token accuracy.

`--tokenizer=characters` (the default) models code points; the vocabulary is
every character of the first --vocabulary_sample_lines lines.
`--tokenizer=sentencepiece` models subwords: a SentencePiece vocabulary of
--vocabulary_size pieces learned from the same sample, keeping the text
exactly (whitespace and line breaks included), read after BOS.
`--init_from_preset` starts from a keras-hub GPT-2 preset: its byte-level
BPE (zoo.tokenizers.byte_pair), architecture and weights.

The training ids are written to an unlinked file under model_dir
(language_model_data.TokenFile), so the corpus need not fit in memory.
Under multi_worker_mirrored with at least as many training files as
workers, worker i tokenizes and trains on files i, i + n, ... only.
"""

import itertools
import os

import numpy as np
import tensorflow as tf
from absl import logging

from trainers import language_model_data as data
from trainers import presets
from trainers.config import preset_architecture
from trainers.data_files import BadRows, expand_files, read_text_chunks
from trainers.errors import UserError
from trainers.metrics import language_model_metrics
from trainers.task import WARMUP_EXAMPLES, Task, token_metrics
from zoo.tokenizers.characters import (learn_character_vocabulary,
                                       write_character_vocabulary)
from zoo.tokenizers.sentencepiece import learn_sentencepiece, write_model

# --tokenizer -> (the model config's tokenizer, its vocabulary file)
TOKENIZERS = {"characters": ("characters", "vocab.txt"),
              "sentencepiece": ("sentencepiece_lm", "sentencepiece.model")}
DEFAULT_SENTENCEPIECE_SIZE = 4000  # pieces, when --vocabulary_size is 0
WARMUP_PROMPT_CHARACTERS = 24  # of each warmup prompt, from the training text


def warmup_prompts(sample):
  """The export's warmup inputs: the start of the first non-blank lines."""
  prompts = [line.rstrip("\n")[:WARMUP_PROMPT_CHARACTERS]
             for line in sample if line.strip()][:WARMUP_EXAMPLES]
  return {"prompt": prompts}


class LanguageModelTask(Task):
  """Everything task-specific the training loop needs for a causal LM."""

  name = "language_model"
  family = "decoder"
  primary_metric = "loss"
  higher_is_better = False
  train_files_help = "the text to train on (.txt, or a table's --text_column)"
  supports_init_from_preset = True  # GPT-2 (zoo.pretrained.gpt2)

  def __init__(self, config):
    super().__init__(config)
    self.tokenizer_name = config.tokenizer or "characters"
    if self.tokenizer_name not in TOKENIZERS:
      raise UserError(f"--tokenizer={self.tokenizer_name} is not available "
                      f"for language_model; choose one of {list(TOKENIZERS)}")
    self._train_characters = None
    self._file_characters = {}  # path -> characters of its text
    self._skipped = 0  # table rows of the training files skipped (bad)
    self._eval_characters = 0  # of the chunks eval_dataset made last

  def _columns(self):
    return self.config.text_column, self.config.skip_bad_rows

  def _boundary(self):
    """The number of training characters, counted in one streamed pass:
    all of the text with --eval_files, else all but the last 10%."""
    if self._train_characters is None:
      skipped = BadRows()
      for path, _, line in read_text_chunks(
          self.train_paths(), *self._columns(), bad_rows=skipped):
        self._file_characters[path] = (self._file_characters.get(path, 0) +
                                       len(line))
      total = sum(self._file_characters.values())
      self._skipped = skipped.count
      if skipped.count:
        logging.warning("Skipped %d bad training rows, e.g. %s",
                        skipped.count, skipped.examples[0])
      self._train_characters = (total if self.config.eval_files else
                                int(total * (1 - data.VALIDATION_FRACTION)))
      if self._train_characters < 100:
        raise UserError(f"--train_files={self.config.train_files}: only "
                        f"{self._train_characters} characters to train on; "
                        "need at least 100")
    return self._train_characters

  def _pieces(self, train, shard=None):
    """Streams the training text (train=True) or the held-out tail, as str
    pieces in order (lines, and the line the boundary cuts in two); with
    shard=(index, count), only the training text of that worker's files
    (the others are not read)."""
    boundary, seen = self._boundary(), 0
    mine = set(self.train_paths(shard))
    for path in self.train_paths():
      if path not in mine:
        seen += self._file_characters.get(path, 0)
        continue
      for _, _, line in read_text_chunks([path], *self._columns()):
        cut = min(max(boundary - seen, 0), len(line))
        seen += len(line)
        piece = line[:cut] if train else line[cut:]
        if piece:
          yield piece
        elif train and seen >= boundary:
          return

  def can_shard_files(self, num_workers):
    return len(self.train_paths()) >= num_workers

  def num_train_examples(self):
    """Training windows in one pass over the text (for --epochs)."""
    if self.model_config:
      length = self.model_config["architecture"]["sequence_length"]
    else:
      length = preset_architecture(
          self.family, self.config.preset,
          self.config.model_overrides)["sequence_length"]
    return max(1, self._boundary() // length)

  def data_report(self):
    return {"train_characters": self._boundary(),
            "skipped_rows": self._skipped}

  def new_model_config(self, model_dir):
    if self.config.init_checkpoint:
      raise UserError("--init_checkpoint is not supported for language models")
    sample = list(itertools.islice(self._pieces(train=True),
                                   self.config.vocabulary_sample_lines))
    if self.config.init_from_preset:
      return self._preset_model_config(model_dir, sample)
    architecture = preset_architecture(self.family, self.config.preset,
                                       self.config.model_overrides)
    if architecture["sequence_length"] < 2:
      raise UserError("a language model needs sequence_length >= 2")
    tokenizer, vocabulary_file = TOKENIZERS[self.tokenizer_name]
    model_config = {"family": self.family, "task": self.name,
                    "preset": self.config.preset,
                    "architecture": architecture,
                    "vocabulary_file": vocabulary_file,
                    "tokenizer": tokenizer}
    path = os.path.join(model_dir, vocabulary_file)
    if self.tokenizer_name == "characters":
      code_points = learn_character_vocabulary("".join(sample))
      write_character_vocabulary(code_points, path)
      architecture["vocabulary_size"] = len(code_points) + 2
      model_config["start_text"] = "\n"
    else:
      size = self.config.vocabulary_size or DEFAULT_SENTENCEPIECE_SIZE
      try:
        write_model(learn_sentencepiece(sample, size, exact_text=True), path)
      except RuntimeError as e:  # e.g. "Vocabulary size too high (4000) ..."
        raise UserError(
            f"cannot learn a {size}-piece SentencePiece vocabulary from "
            f"--train_files={self.config.train_files} ({e}); pass a smaller "
            "--vocabulary_size") from None
      architecture["vocabulary_size"] = size
    model_config["warmup_examples"] = warmup_prompts(sample)
    return model_config

  def _preset_model_config(self, model_dir, sample):
    """The model config of a run from --init_from_preset (GPT-2): the
    preset's architecture, byte-level BPE tokenizer and end token."""
    if self.config.tokenizer or self.config.vocabulary_size:
      raise UserError("--init_from_preset brings its own tokenizer: leave "
                      "--tokenizer and --vocabulary_size unset")
    preset = presets.open_preset(self.config.init_from_preset, self.family)
    architecture, entries = presets.preset_model_config(
        preset, self.config.model_overrides, model_dir, None)
    return dict(entries, family=self.family, task=self.name,
                preset=preset.class_name, architecture=architecture,
                warmup_examples=warmup_prompts(sample))

  def train_dataset(self, tokenizer, global_batch_size, skip_batches,
                    num_replicas=1, shard=None):
    del num_replicas  # batches of examples split evenly without help
    token_file = data.write_text_ids(
        tokenizer, self._pieces(train=True, shard=shard),
        data.TokenFile(self.config.model_dir))
    if token_file.length <= tokenizer.sequence_length:
      raise UserError(
          f"--train_files={self.config.train_files}: the training text "
          f"{'of this worker ' if shard else ''}has {token_file.length} "
          "tokens; a training window needs sequence_length + 1 = "
          f"{tokenizer.sequence_length + 1}")
    seed = self.config.seed + (shard[0] * 1_000_003 if shard else 0)
    return data.train_dataset(token_file, tokenizer.sequence_length,
                              global_batch_size, seed, skip_batches)

  def eval_text(self):
    if self.config.eval_files:
      return "".join(line for _, _, line in read_text_chunks(
          expand_files(self.config.eval_files, "eval_files"),
          *self._columns()))
    return "".join(self._pieces(train=False))

  def describe_eval_data(self):
    if self.config.eval_files:
      return ",".join(expand_files(self.config.eval_files, "eval_files"))
    return (f"{self.config.train_files} (last "
            f"{data.VALIDATION_FRACTION:.0%})")

  def _eval_chunks(self, sequence_length, token_counts):
    """The dev text cut as data.character_chunks or, for subwords,
    data.line_chunks."""
    tokenizer = (self.model_config.get("tokenizer") if self.model_config
                 else TOKENIZERS[self.tokenizer_name][0])
    if (tokenizer or "characters") == "characters":
      return data.character_chunks(self.eval_text(), sequence_length)
    return data.line_chunks(self.eval_text(), sequence_length, token_counts)

  def eval_dataset(self, tokenizer, batch_size):
    chunks = self._eval_chunks(tokenizer.sequence_length,
                               data.tokenizer_counts(tokenizer))
    self._eval_characters = sum(len(chunk) for chunk in chunks)
    return data.eval_dataset(chunks, tokenizer, batch_size)

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

  def correct_predictions(self, targets, logits):
    """Fraction of each window's next tokens predicted exactly: [B]."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(predicted == targets, tf.float32), axis=-1)

  def evaluate(self, predict_fn, dataset):
    """Loss (nats/token), perplexity, bits/token, accuracy over the dataset.

    Each batch is (ids, ids): position t predicts ids[t + 1]; padding is
    not scored.
    """
    losses, counts, hits = token_metrics(
        predict_fn, dataset,
        lambda logits, ids: (logits[:, :-1], ids[:, 1:]))  # [B, T-1, V], [B, T-1]
    return language_model_metrics(losses, counts, hits,
                                  characters=self._eval_characters)

  def evaluate_export(self, saved_model, batch_size, **unused_options):
    """Language-model metrics from the export's `score` signature."""
    from trainers.saved_models import load_signature, saved_model_context
    score = load_signature(saved_model, "score")

    def token_counts(lines):  # what score reads of each line, capped
      for start in range(0, len(lines), batch_size):
        yield from score(text=tf.constant(lines[start:start + batch_size]))[
            "num_tokens"].numpy().tolist()

    chunks = self._eval_chunks(saved_model_context(saved_model), token_counts)
    losses, counts = [], []
    for start in range(0, len(chunks), batch_size):
      out = score(text=tf.constant(chunks[start:start + batch_size]))
      losses.append(-out["log_likelihood"].numpy())
      counts.append(out["num_tokens"].numpy())
    return language_model_metrics(
        np.concatenate(losses), np.concatenate(counts),
        characters=sum(len(chunk) for chunk in chunks))

  def print_report(self, metrics):
    low, high = metrics["loss_ci95"]
    print(f"model:      {metrics['source']}")
    print(f"data:       {metrics['data']} ({metrics['characters']} "
          f"characters, {metrics['tokens']} tokens)")
    print(f"loss:       {metrics['loss']:.4f} nats/token  (95% CI {low:.4f}-"
          f"{high:.4f})")
    print(f"perplexity: {metrics['perplexity']:.3f}")
    print(f"bits/char:  {metrics['bits_per_character']:.4f}")
    if "accuracy" in metrics:
      print(f"next-token accuracy: {metrics['accuracy']:.4f}")
