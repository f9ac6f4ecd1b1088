"""Pretrained starting points: keras-hub presets turned into zoo models.

A keras-hub preset (a directory that `Backbone.save_to_preset` wrote, or a
preset name keras-hub can download) holds a backbone config, its weights and
its tokenizer. `read_preset` loads them with keras-hub's public API; the
converter registered for the backbone's class (CONVERTERS) then says which
zoo family and architecture the preset is, writes its vocabulary in the form
our in-graph tokenizer reads, and copies its weights into a zoo model by
variable path. Models run as zoo models afterwards (our layers, our exports);
keras-hub is needed only while a run starts from a preset.
"""

import dataclasses

from zoo.pretrained import gpt2, wordpiece_encoders

# keras-hub backbone class name -> its converter.
CONVERTERS = {
    "BertBackbone": wordpiece_encoders.BERT,
    "DistilBertBackbone": wordpiece_encoders.DISTIL_BERT,
    "GPT2Backbone": gpt2.GPT2,
}


class PresetError(ValueError):
  """A preset that cannot be read or converted (the message says why)."""


@dataclasses.dataclass
class Preset:
  source: str  # what the user passed: a directory or a keras-hub preset name
  backbone: object  # the keras_hub.models.Backbone (weights loaded or not)
  tokenizer: object  # the keras_hub tokenizer of the preset
  converter: object  # CONVERTERS[backbone class name]

  @property
  def class_name(self):
    return type(self.backbone).__name__

  def describe(self):
    """What config.json and the model card record about the preset."""
    import keras_hub
    return {"preset": self.source, "backbone": self.class_name,
            "licence": self.converter.licence,
            "keras_hub_version": keras_hub.__version__}


def read_preset(source, load_weights=True):
  """The Preset at `source`; PresetError when it is not one we convert."""
  import keras_hub
  backbone = _read(source, keras_hub.models.Backbone, load_weights=load_weights)
  name = type(backbone).__name__
  if name not in CONVERTERS:
    raise PresetError(f"preset {source!r} is a {name}; presets of "
                      f"{sorted(CONVERTERS)} can be converted")
  tokenizer = _read(source, keras_hub.tokenizers.Tokenizer)
  return Preset(source, backbone, tokenizer, CONVERTERS[name])


def _read(source, keras_hub_class, **options):
  try:
    return keras_hub_class.from_preset(source, **options)
  except Exception as e:  # keras-hub raises ValueError, OSError, KeyError...
    raise PresetError(f"cannot read keras-hub preset {source!r}: "
                      f"{type(e).__name__}: {e}") from e


def copy_weights(rules, source_model, target_model, reshape=None,
                 required="backbone/"):
  """Assigns the weights of source_model to target_model by path.

  rules: (source path regex, target path template) pairs; a template may
  use the regex's groups (\\1); a third element (True) marks a rule
  optional: its weights are dropped when the target has no such path (e.g.
  BERT's pooler under another pooling). reshape(target_path, value) -> value
  adapts a value (e.g. slicing position embeddings). See assign_weights.
  """
  import re
  targets = target_paths(target_model)
  values, unmatched = {}, []
  for weight in source_model.weights:
    for pattern, template, *optional in rules:
      match = re.fullmatch(pattern, weight.path)
      if match:
        path = match.expand(template)
        break
    else:
      unmatched.append(weight.path)
      continue
    if path in targets or not optional:
      value = weight.numpy()
      values[path] = value if reshape is None else reshape(path, value)
  if unmatched:
    raise PresetError(f"preset weights with no place in the model: {unmatched}")
  return assign_weights(values, target_model, required)


def target_paths(model):
  """{path without the model's own name: variable} of a built zoo model."""
  return {w.path.split("/", 1)[-1]: w for w in model.weights}


def assign_weights(values, model, required="backbone/"):
  """Assigns {target path: numpy value} to model's weights (paths without
  the model's own name). Every path must exist with the value's shape, and
  every weight whose path starts with `required` must be given; PresetError
  says what did not fit. Returns the paths written."""
  targets = target_paths(model)
  for path, value in values.items():
    if path not in targets:
      raise PresetError(f"a preset weight maps to {path}, which the model "
                        "does not have")
    if tuple(value.shape) != tuple(targets[path].shape):
      raise PresetError(f"the preset's {path} has shape {value.shape}; the "
                        f"model's has {tuple(targets[path].shape)}")
  missing = sorted(p for p in targets if p.startswith(required)
                   and p not in values)
  if missing:
    raise PresetError(f"model weights the preset does not fill: {missing}")
  for path, value in values.items():
    targets[path].assign(value)
  return set(values)
