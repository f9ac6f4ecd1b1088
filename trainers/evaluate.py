"""Evaluate a model: `python -m trainers.evaluate --model_dir=DIR` or `--saved_model=DIR/<version>`.

The task, its labels and its dev data come from the model itself (the
model_dir's config.json, or the export's model card), and the task scores
it (trainers/task.py):
  from a checkpoint (--model_dir, best by default) with the task's own
  metric, or from an exported SavedModel through its serving signatures, so
  the figure is what a server returns:
    text_classification: accuracy with a 95% bootstrap interval, per-class
      precision, recall and F1, macro F1, the confusion matrix;
    language_model: loss in nats per character with a 95% interval,
      perplexity, bits per character (the export's `score` signature);
    translation: sacreBLEU (cased, detokenized, 13a; signature and a
      bootstrap 95% interval) and chrF of beam-search translations
      (--beam_size, --length_penalty, --max_output_length), from a
      checkpoint or an export; --hypotheses_file saves them.
--eval_files (translation: --eval_source_files/--eval_target_files) scores
other data of the same layout. --output_json writes the metrics.
"""

import sys

from absl import app, flags

from trainers import saved_models
from trainers.config import write_json
from trainers.errors import UserError, run_reporting_user_errors

flags.DEFINE_string("model_dir", "", "Trainer model_dir (checkpoint evaluation).")
flags.DEFINE_string("checkpoint", "best", "best, latest, averaged or a "
                    "checkpoint prefix.")
flags.DEFINE_string("saved_model", "", "An exported version directory.")
flags.DEFINE_string("eval_files", "", "Data to score instead of the run's dev "
                    "data (same columns; globs and lists).")
flags.DEFINE_string("eval_source_files", "", "Translation: sources to score.")
flags.DEFINE_string("eval_target_files", "", "Translation: their references.")
flags.DEFINE_bool("skip_bad_rows", False, "Skip and count bad rows.")
flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_string("hypotheses_file", "", "Translation: write the outputs here.")
flags.DEFINE_integer("beam_size", 4, "Translation beam size.", lower_bound=1)
flags.DEFINE_float("length_penalty", 0.6, "GNMT length penalty alpha.",
                   lower_bound=0.0)
flags.DEFINE_integer("max_output_length", 0, "Translation: longest output in "
                     "pieces; 0 = the model's limit.", lower_bound=0)
flags.DEFINE_string("output_json", "", "Also write the metrics here.")
FLAGS = flags.FLAGS


def run(argv_flags):
  from trainers.tasks import task_for_model
  trainer_config, model_config = saved_models.trained_configs(argv_flags.model_dir,
                                                 argv_flags.saved_model)
  overrides = {"eval_files": argv_flags.eval_files,
               "eval_source_files": argv_flags.eval_source_files,
               "eval_target_files": argv_flags.eval_target_files}
  if bool(argv_flags.eval_source_files) != bool(argv_flags.eval_target_files):
    raise UserError("--eval_source_files and --eval_target_files are required "
                    "together")
  if argv_flags.eval_source_files or argv_flags.eval_target_files:
    overrides["eval_files"] = None
    trainer_config = dict(trainer_config, eval_files="")
  elif argv_flags.eval_files:
    trainer_config = dict(trainer_config, eval_source_files="",
                          eval_target_files="")
  if argv_flags.skip_bad_rows:
    overrides["skip_bad_rows"] = True
  task = task_for_model(trainer_config, model_config, **overrides)
  options = {"beam_size": argv_flags.beam_size,  # decoding tasks' settings
             "length_penalty": argv_flags.length_penalty,
             "max_output_length": argv_flags.max_output_length,
             "hypotheses_file": argv_flags.hypotheses_file}
  if argv_flags.saved_model:
    metrics = dict(task.evaluate_export(argv_flags.saved_model,
                                        argv_flags.batch_size, **options),
                   source=argv_flags.saved_model)
  else:
    metrics = task.evaluate_checkpoint(argv_flags.model_dir,
                                       argv_flags.checkpoint,
                                       argv_flags.batch_size, **options)
  metrics["data"] = task.describe_eval_data()
  metrics["task"] = task.name
  task.print_report(metrics)
  sys.stdout.flush()
  if argv_flags.output_json:
    write_json(argv_flags.output_json, metrics)
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run_reporting_user_errors(run, FLAGS)


if __name__ == "__main__":
  app.run(main)
