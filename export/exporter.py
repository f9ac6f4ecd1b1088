"""export_saved_model(ExportConfig): model_dir -> export_base/<version>/.

Rebuilds the model from model_dir/config.json with zoo (never trainer flags),
restores the best checkpoint (or the latest, or a given one), writes the
family's signatures with a keras ExportArchive in float32 without XLA (unless
asked for an XLA generation loop), then the method-name patch, the warmup file
and the model card, runs the static checks, and renames the finished directory
into place.
"""

import dataclasses
import os

import keras
import tensorflow as tf

from export import (checks, decoder_export, encoder_export, model_card,
                    seq2seq_export, signature_patch, warmup)
from export.versioning import ExportError, next_version, write_version_atomically
from zoo import model_config as zoo_model_config
from zoo import model_dir as layout

# The family registry. Each module has build_archive(model, tokenizer,
# model_config, **options) (options: xla_generation=True, only where the
# module's XLA_GENERATION says it has a generation loop to compile),
# warmup_logs(model_name, model_config) (from the model config's
# "warmup_examples", the run's own data) and limits(model_config).
FAMILY_EXPORTS = {"encoder": encoder_export, "decoder": decoder_export,
                  "seq2seq": seq2seq_export}


@dataclasses.dataclass
class ExportConfig:
  model_dir: str  # a trainer's model_dir (config.json, vocab, checkpoints)
  export_base: str  # versions are written to export_base/<version>/
  version: int = 0  # 0 = a new, larger version (a timestamp)
  checkpoint: str = "best"  # best, latest, averaged, or a checkpoint path prefix
  model_name: str = ""  # model name in warmup requests; '' = the task name
  # XLA-compile the generation loop (decoders): for servers started with
  # --xla_cpu_compilation_enabled only; stock TF Serving refuses it otherwise
  xla_generation: bool = False


def load_trained_model(model_dir, checkpoint="best"):
  """(model, tokenizer, model_config, checkpoint path), restored, float32."""
  try:
    trainer_config = layout.read_config(model_dir)
    checkpoint_path = layout.resolve_checkpoint(model_dir, checkpoint)
  except layout.ModelDirError as e:
    raise ExportError(str(e)) from e
  model_config = trainer_config["model"]
  keras.mixed_precision.set_global_policy("float32")
  tokenizer = zoo_model_config.build_tokenizer(model_config, model_dir)
  model = zoo_model_config.build_model(model_config)
  model(zoo_model_config.dummy_inputs(model_config))  # create the variables
  status = tf.train.Checkpoint(model=model).restore(checkpoint_path)
  status.expect_partial().assert_existing_objects_matched()
  return model, tokenizer, trainer_config, checkpoint_path


def export_saved_model(config: ExportConfig):
  """Writes one version; returns its path."""
  model, tokenizer, trainer_config, checkpoint_path = load_trained_model(
      config.model_dir, config.checkpoint)
  model_config = trainer_config["model"]
  model_name = config.model_name or model_config["task"]
  family = FAMILY_EXPORTS.get(model_config["family"])
  if family is None:
    raise ExportError(f"no exporter for family {model_config['family']!r}")
  if config.xla_generation and not family.XLA_GENERATION:
    raise ExportError(f"an XLA generation loop applies to decoders only; "
                      f"{config.model_dir} is a {model_config['family']} model")
  options = {"xla_generation": True} if config.xla_generation else {}
  try:  # before anything is written: an older model config has no examples
    warmup_logs = family.warmup_logs(model_name, model_config)
  except ValueError as e:
    raise ExportError(f"cannot write the warmup requests of "
                      f"{config.model_dir}: {e}") from e
  version = config.version or next_version(config.export_base)

  def write(path):
    archive, method_names = family.build_archive(model, tokenizer, model_config,
                                                 **options)
    archive.write_out(path, verbose=False)
    signature_patch.set_method_names(path, method_names)
    warmup.write_warmup_file(path, warmup_logs)
    card = model_card.build_model_card(
        path, trainer_config, layout.checkpoint_metrics(config.model_dir, config.checkpoint),
        os.path.relpath(checkpoint_path, config.model_dir),
        family.limits(model_config), parameters=model.count_params())
    # Which server flag the export needs (none for the default export).
    card["server_flags_required"] = (["--xla_cpu_compilation_enabled"]
                                     if config.xla_generation else [])
    model_card.write_model_card(path, card)
    problems = checks.check_saved_model(
        path, allow_xla_functions=config.xla_generation)
    if problems:
      raise ExportError("export failed the TF Serving checks:\n  " +
                        "\n  ".join(problems))

  return write_version_atomically(config.export_base, version, write)
