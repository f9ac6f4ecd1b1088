"""Helpers the command-line tools share to run models (no flags defined here).

Loading one signature of an export, reading its context length, the trainer
and model configs of a model_dir or an export, and turning a graph assert's
InvalidArgumentError into the sentence a user should see.
"""

import json
import os
import re

from trainers.errors import UserError


def load_signature(saved_model, key):
  """Signature `key` of the SavedModel at `saved_model`; UserError if absent."""
  import tensorflow as tf
  import tensorflow_text  # noqa: F401  (the export's tokenizer ops)
  try:
    return tf.saved_model.load(saved_model).signatures[key]
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f"cannot load signature {key!r} of SavedModel "
                    f"{saved_model}: {e!r}")


def saved_model_context(saved_model):
  """The sequence length recorded in an export's model card."""
  path = os.path.join(saved_model, "assets.extra", "model_card.json")
  try:
    with open(path) as f:
      return json.load(f)["architecture"]["sequence_length"]
  except (OSError, KeyError, ValueError) as e:
    raise UserError(f"{path}: cannot read the context length ({e!r})")


def model_sequence_length(model_dir="", saved_model=""):
  """The sequence length of a trained model_dir or of an export."""
  if saved_model:
    return saved_model_context(saved_model)
  from zoo import model_dir as layout
  try:
    return layout.read_config(model_dir)["model"]["architecture"][
        "sequence_length"]
  except layout.ModelDirError as e:
    raise UserError(str(e))


def assertion_message(message):
  """The readable part of a graph assert's error ('... must be ...')."""
  found = re.search(r"assertion failed: \[([^\]]*)\]", message)
  return found.group(1) if found else message.strip().splitlines()[0]


def trained_configs(model_dir="", saved_model=""):
  """(TrainConfig dict, model config) of a model_dir or of an export."""
  if bool(model_dir) == bool(saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  if model_dir:
    from zoo import model_dir as layout
    try:
      saved = layout.read_config(model_dir)
    except layout.ModelDirError as e:
      raise UserError(str(e))
    return saved["train"], saved["model"]
  card_path = os.path.join(saved_model, "assets.extra", "model_card.json")
  try:
    with open(card_path) as f:
      card = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{saved_model}: cannot read its model card {card_path} "
                    f"({e})")
  model_config = {k: card.get(k) for k in (
      "family", "task", "preset", "architecture", "tokenizer", "labels",
      "label_values", "text_pair", "source_language", "target_language")}
  return card.get("training_flags") or {}, model_config
