"""Evaluate a classifier: `python -m trainers.evaluate --task=sst2 --model_dir=DIR`.

From a checkpoint (--model_dir, best by default) or from an exported
SavedModel (--saved_model=DIR/<version>, through its serving_default
signature, so the figure is what a server returns), on the dev split or any
`sentence<TAB>label` TSV (--eval_file). Prints accuracy with a 95% bootstrap
interval, precision, recall, F1 and the confusion matrix; --output_json writes
them.
"""

import json
import sys

from absl import app, flags

from trainers.config import TrainConfig, write_json
from trainers.errors import UserError, run_reporting_user_errors
from trainers.tasks import TASK_NAMES

flags.DEFINE_enum("task", "sst2", TASK_NAMES, "Task the model was trained for.")
flags.DEFINE_string("model_dir", "", "Trainer model_dir (checkpoint evaluation).")
flags.DEFINE_string("checkpoint", "best", "best, latest or a checkpoint prefix.")
flags.DEFINE_string("saved_model", "", "An exported version directory.")
flags.DEFINE_string("data_dir", "", "Task data folder (default: bundled data).")
flags.DEFINE_string("eval_file", "", "A sentence<TAB>label TSV (default: dev split).")
flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_string("output_json", "", "Also write the metrics here.")
FLAGS = flags.FLAGS


def evaluate_checkpoint(task, model_dir, checkpoint, split_or_path, batch_size):
  import tensorflow as tf
  from export.exporter import load_trained_model
  from export.versioning import ExportError
  try:
    model, tokenizer, _, path = load_trained_model(model_dir, checkpoint)
  except ExportError as e:
    raise UserError(str(e))
  predict = tf.function(lambda ids: model(ids, training=False))
  metrics = task.evaluate(predict, task.eval_dataset(tokenizer, batch_size,
                                                     split_or_path))
  return dict(metrics, source=path)


def evaluate_saved_model(task, saved_model, split_or_path, batch_size):
  import numpy as np
  import tensorflow as tf
  import tensorflow_text  # noqa: F401  (the export's tokenizer ops)
  from trainers.metrics import classification_metrics
  try:
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f"cannot load SavedModel {saved_model}: {e}")
  sentences, labels = task.read_split(split_or_path)
  predicted = []
  for start in range(0, len(sentences), batch_size):
    batch = tf.constant(sentences[start:start + batch_size])
    predicted.append(serve(text=batch)["label_id"].numpy())
  metrics = classification_metrics(labels, np.concatenate(predicted),
                                   list(task.spec.labels))
  return dict(metrics, source=saved_model)


def run(argv_flags):
  from trainers.tasks import get_task
  task = get_task(TrainConfig(task=argv_flags.task,
                              data_dir=argv_flags.data_dir))
  split_or_path = argv_flags.eval_file or "dev"
  if bool(argv_flags.model_dir) == bool(argv_flags.saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  if argv_flags.saved_model:
    metrics = evaluate_saved_model(task, argv_flags.saved_model, split_or_path,
                                   argv_flags.batch_size)
  else:
    metrics = evaluate_checkpoint(task, argv_flags.model_dir,
                                  argv_flags.checkpoint, split_or_path,
                                  argv_flags.batch_size)
  metrics["data"] = (split_or_path if split_or_path.endswith(".tsv")
                     else task.split_path(split_or_path))
  print_report(metrics)
  if argv_flags.output_json:
    write_json(argv_flags.output_json, metrics)
  return metrics


def print_report(metrics):
  low, high = metrics["accuracy_ci95"]
  print(f"model:     {metrics['source']}")
  print(f"data:      {metrics['data']} ({metrics['examples']} examples)")
  print(f"accuracy:  {metrics['accuracy']:.4f}  (95% CI {low:.4f}-{high:.4f})")
  print(f"precision: {metrics['precision']:.4f}")
  print(f"recall:    {metrics['recall']:.4f}")
  print(f"f1:        {metrics['f1']:.4f}")
  labels = metrics["labels"]
  width = max(len(label) for label in labels + ["true \\ pred"]) + 2
  print("confusion matrix (rows: true, columns: predicted)")
  print("true \\ pred".ljust(width) + "".join(l.rjust(width) for l in labels))
  for label, row in zip(labels, metrics["confusion_matrix"]):
    print(label.ljust(width) + "".join(str(n).rjust(width) for n in row))
  sys.stdout.flush()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run_reporting_user_errors(run, FLAGS)


if __name__ == "__main__":
  app.run(main)
