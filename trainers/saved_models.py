"""Helpers the command-line tools share to run models (no flags defined here).

Loading one signature of an export, reading its context length, and turning a
graph assert's InvalidArgumentError into the sentence a user should see.
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
