"""--init_from_preset: a run that starts from a keras-hub preset.

The trainer's side of zoo.pretrained: reads the preset the user named
(a UserError when it is not one, or is the wrong family for the task),
applies the --model_overrides a pretrained architecture allows, writes the
preset's vocabulary into model_dir, and after the model is built copies the
preset's weights into it. config.json's model config records where the
weights came from ("pretrained"), and so does the export's model card.
"""

from trainers.config import parse_overrides
from trainers.errors import UserError
from zoo import pretrained

# Architecture fields a fine-tuning run may override; the rest are the
# preset's (the weights fix them).
OVERRIDABLE = ("sequence_length", "dropout", "token_dropout", "pooling")


def open_preset(source, family, load_weights=False):
  """The zoo.pretrained.Preset at source, for a task of `family`."""
  try:
    preset = pretrained.read_preset(source, load_weights=load_weights)
  except pretrained.PresetError as e:
    raise UserError(f"--init_from_preset: {e}") from None
  if preset.converter.family != family:
    choices = sorted(name for name, converter in pretrained.CONVERTERS.items()
                     if converter.family == family)
    raise UserError(
        f"--init_from_preset={source} is a {preset.class_name} (the "
        f"{preset.converter.family} family); this task needs a {family} "
        f"preset: one of {choices}")
  return preset


def preset_model_config(preset, model_overrides, model_dir, vocabulary_file):
  """(architecture, model-config entries) of a run from `preset`: the
  preset's architecture with the allowed overrides, and its tokenizer
  (vocabulary written to model_dir/vocabulary_file) and provenance."""
  architecture = preset.converter.architecture(preset.backbone)
  try:
    overrides = parse_overrides(model_overrides, architecture)
  except ValueError as e:
    raise UserError(str(e)) from None
  fixed = sorted(set(overrides) - set(OVERRIDABLE))
  if fixed:
    raise UserError(f"--model_overrides: {fixed} come from --init_from_preset "
                    f"and cannot change; a preset run may override "
                    f"{list(OVERRIDABLE)}")
  architecture.update(overrides)
  longest = architecture.get("max_sequence_length")
  if longest and not 1 < architecture["sequence_length"] <= longest:
    raise UserError(f"--model_overrides: sequence_length="
                    f"{architecture['sequence_length']} must be 2..{longest}, "
                    "the positions the preset was trained with")
  entries = preset.converter.write_tokenizer(preset.tokenizer, model_dir,
                                             vocabulary_file)
  entries["pretrained"] = preset.describe()
  return architecture, entries


def copy_preset_weights(model, model_config, source):
  """Fills a built zoo model with the weights of the preset at source."""
  preset = open_preset(source, model_config["family"], load_weights=True)
  try:
    preset.converter.copy_weights(
        preset.backbone, model, model_config["architecture"]["sequence_length"])
  except pretrained.PresetError as e:
    raise UserError(f"--init_from_preset={source}: {e}") from None
