"""Rebuild a zoo model and its tokenizer from a plain model-config dict.

The trainer writes this dict to `model_dir/config.json` under "model"; export
and evaluation call `build_tokenizer` and `build_model` with it, so they never
need the trainer's flags. Keys:
  family: "encoder", "decoder" or "seq2seq"
  head: "classifier" (default) or "masked_lm" (pretraining)
  task: the task name the model was trained for
  preset: the preset name the architecture came from
  architecture: the preset dict, with vocabulary_size set to the real vocabulary
  labels: class names in id order (classifiers)
  vocabulary_file: path relative to the model_dir (or absolute)
  start_text: the character every text is read after (decoders)
"""

import os

from zoo.tasks.causal_lm import build_causal_lm
from zoo.tasks.masked_lm import build_masked_lm
from zoo.tasks.text_classifier import build_text_classifier
from zoo.tasks.translator import build_translator
from zoo.tokenizers import characters
from zoo.tokenizers.sentencepiece import SentencePieceTokenizer
from zoo.tokenizers.wordpiece import WordPieceTokenizer

FAMILIES = ("encoder", "decoder", "seq2seq")


def vocabulary_path(model_config, model_dir):
  path = model_config["vocabulary_file"]
  return path if os.path.isabs(path) else os.path.join(model_dir, path)


def build_tokenizer(model_config, model_dir):
  """The in-graph tokenizer layer of the model described by model_config."""
  family = model_config["family"]
  if family == "encoder":
    return WordPieceTokenizer(
        vocabulary_path(model_config, model_dir),
        sequence_length=model_config["architecture"]["sequence_length"],
        name="tokenizer")
  if family == "decoder":
    return characters.CharacterTokenizer(
        vocabulary_path(model_config, model_dir),
        sequence_length=model_config["architecture"]["sequence_length"],
        start_text=model_config.get("start_text", "\n"), name="tokenizer")
  if family == "seq2seq":
    return SentencePieceTokenizer(
        vocabulary_path(model_config, model_dir),
        sequence_length=model_config["architecture"]["sequence_length"],
        name="tokenizer")
  raise ValueError(f"Unknown model family {family!r}; known: {FAMILIES}")


def build_model(model_config):
  """The (unbuilt) Keras model described by model_config."""
  family = model_config["family"]
  if family == "encoder" and model_config.get("head") == "masked_lm":
    return build_masked_lm(model_config["architecture"])
  if family == "encoder":
    return build_text_classifier(model_config["architecture"],
                                 num_classes=len(model_config["labels"]))
  if family == "decoder":  # padding and unknown are never generated
    return build_causal_lm(model_config["architecture"],
                           suppressed_ids=(characters.PAD_ID,
                                           characters.UNK_ID))
  if family == "seq2seq":
    return build_translator(model_config["architecture"])
  raise ValueError(f"Unknown model family {family!r}; known: {FAMILIES}")


def dummy_inputs(model_config):
  """Zero inputs of the model's shape (a call with them creates the variables)."""
  import tensorflow as tf
  ids = tf.zeros([1, model_config["architecture"]["sequence_length"]], tf.int32)
  if model_config["family"] == "seq2seq":
    return {"source_ids": ids, "target_ids": ids}
  return ids
