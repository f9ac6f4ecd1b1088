"""Export a trained model: `python -m export.export_main --model_dir=DIR --export_base=models/sst2`.

Thin absl entry point around export.exporter.export_saved_model.
"""

import sys

from absl import app, flags, logging

flags.DEFINE_string("model_dir", None, "The trainer's model_dir.")
flags.DEFINE_string("export_base", None,
                    "Base directory; the version goes to <export_base>/<version>.")
flags.DEFINE_integer("version", 0, "Version number; 0 picks a new, larger one.",
                     lower_bound=0)
flags.DEFINE_string("checkpoint", "best",
                    "best, latest, or a checkpoint path prefix.")
flags.DEFINE_string("model_name", "", "Model name used in the warmup requests "
                    "(default: the task name).")
flags.DEFINE_bool("xla_generation", False, "Decoders: XLA-compile the "
                  "generation loop of serving_default and generate. Only "
                  "servers started with --xla_cpu_compilation_enabled run "
                  "it; the default export is XLA-free, as stock TF Serving "
                  "needs.")
flags.mark_flags_as_required(["model_dir", "export_base"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from export.exporter import ExportConfig, export_saved_model
  from export.versioning import ExportError
  try:
    path = export_saved_model(ExportConfig(
        model_dir=FLAGS.model_dir, export_base=FLAGS.export_base,
        version=FLAGS.version, checkpoint=FLAGS.checkpoint,
        model_name=FLAGS.model_name, xla_generation=FLAGS.xla_generation))
  except ExportError as e:
    logging.error("%s", e)
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)
  print(path)


if __name__ == "__main__":
  app.run(main)
