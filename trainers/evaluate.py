"""Evaluate a model: `python -m trainers.evaluate --task=sst2 --model_dir=DIR`.

From a checkpoint (--model_dir, best by default) or from an exported
SavedModel (--saved_model=DIR/<version>, through its serving signatures, so
the figure is what a server returns).
  Classifiers (sst2): on the dev split or any `sentence<TAB>label` TSV
    (--eval_file); accuracy with a 95% bootstrap interval, precision, recall,
    F1 and the confusion matrix.
  Translators (multi30k_de_en): translate --split (validation or test) or
    --source_file against --reference_file with beam search (--beam_size,
    --length_penalty, --max_output_length), report sacreBLEU (cased,
    detokenized, 13a; with its signature and a bootstrap 95% interval) and
    chrF; --hypotheses_file saves the translations.
  Language models (shakespeare): on the validation text (the last 10%) or any
    UTF-8 text file (--eval_file); loss in nats per character with a 95%
    bootstrap interval, perplexity and bits per character. The export is
    scored through its `score` signature.
--output_json writes the metrics.
"""

import sys

from absl import app, flags

from trainers.config import TrainConfig, write_json
from trainers.errors import UserError, run_reporting_user_errors
from trainers.saved_models import (load_signature, model_sequence_length,
                                   saved_model_context)
from trainers.tasks import TASK_NAMES

flags.DEFINE_enum("task", "sst2", TASK_NAMES, "Task the model was trained for.")
flags.DEFINE_string("model_dir", "", "Trainer model_dir (checkpoint evaluation).")
flags.DEFINE_string("checkpoint", "best", "best, latest or a checkpoint prefix.")
flags.DEFINE_string("saved_model", "", "An exported version directory.")
flags.DEFINE_string("data_dir", "", "Task data folder (default: bundled data).")
flags.DEFINE_string("eval_file", "", "A sentence<TAB>label TSV for classifiers, "
                    "a text file for language models (default: the task's "
                    "dev/validation split).")
flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_string("split", "", "Translation: validation or test (default "
                    "validation) when no --source_file is given.")
flags.DEFINE_string("source_file", "", "Translation: sources, one a line.")
flags.DEFINE_string("reference_file", "", "Translation: references, one a line.")
flags.DEFINE_string("hypotheses_file", "", "Translation: write the outputs here.")
flags.DEFINE_integer("beam_size", 4, "Translation beam size.", lower_bound=1)
flags.DEFINE_float("length_penalty", 0.6, "GNMT length penalty alpha.",
                   lower_bound=0.0)
flags.DEFINE_integer("max_output_length", 0, "Translation: longest output in "
                     "pieces; 0 = the model's limit.", lower_bound=0)
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
  if task.family == "decoder":
    return score_saved_model(task, saved_model, split_or_path, batch_size)
  import numpy as np
  import tensorflow as tf
  from trainers.metrics import classification_metrics
  serve = load_signature(saved_model, "serving_default")
  sentences, labels = task.read_split(split_or_path)
  predicted = []
  for start in range(0, len(sentences), batch_size):
    batch = tf.constant(sentences[start:start + batch_size])
    predicted.append(serve(text=batch)["label_id"].numpy())
  metrics = classification_metrics(labels, np.concatenate(predicted),
                                   list(task.spec.labels))
  return dict(metrics, source=saved_model)


def score_saved_model(task, saved_model, split_or_path, batch_size):
  """Language-model metrics from the export's `score` signature."""
  import numpy as np
  import tensorflow as tf
  from trainers.language_model_data import evaluation_chunks
  from trainers.metrics import language_model_metrics
  score = load_signature(saved_model, "score")
  chunks = evaluation_chunks(task.eval_text(split_or_path),
                             saved_model_context(saved_model))
  losses, counts = [], []
  for start in range(0, len(chunks), batch_size):
    out = score(text=tf.constant(chunks[start:start + batch_size]))
    losses.append(-out["log_likelihood"].numpy())
    counts.append(out["num_tokens"].numpy())
  return dict(language_model_metrics(np.concatenate(losses),
                                     np.concatenate(counts)),
              source=saved_model)


def evaluate_translation(task, argv_flags):
  """BLEU/chrF of beam-search translations from a checkpoint or an export."""
  from trainers import translation_data
  from trainers.translation_eval import (bleu_metrics, load_translate_fn,
                                         translate_all)
  if argv_flags.source_file or argv_flags.reference_file:
    if not (argv_flags.source_file and argv_flags.reference_file):
      raise UserError("pass both --source_file and --reference_file")
    paths = (argv_flags.source_file, argv_flags.reference_file)
  else:
    paths = task.split_paths(argv_flags.split or task.eval_split)
  sources, references = translation_data.read_parallel(*paths)
  translate = load_translate_fn(argv_flags.model_dir, argv_flags.saved_model,
                                argv_flags.checkpoint)
  max_output_length = argv_flags.max_output_length or (
      model_sequence_length(argv_flags.model_dir, argv_flags.saved_model) - 2)
  hypotheses = translate_all(translate, sources, argv_flags.batch_size,
                             argv_flags.beam_size, max_output_length,
                             argv_flags.length_penalty)
  if argv_flags.hypotheses_file:
    with open(argv_flags.hypotheses_file, "w", encoding="utf-8") as f:
      f.write("\n".join(hypotheses) + "\n")
  metrics = bleu_metrics(hypotheses, references)
  metrics.update(source=argv_flags.saved_model or argv_flags.model_dir,
                 data=" / ".join(paths), beam_size=argv_flags.beam_size,
                 length_penalty=argv_flags.length_penalty,
                 max_output_length=max_output_length,
                 examples=[{"source": s, "reference": r, "hypothesis": h}
                           for s, r, h in list(zip(sources, references,
                                                   hypotheses))[:5]])
  return metrics


def print_translation_report(metrics):
  low, high = metrics["bleu_ci95"]
  print(f"model: {metrics['source']}")
  print(f"data:  {metrics['data']} ({metrics['sentences']} sentences)")
  print(f"beam {metrics['beam_size']}, length penalty "
        f"{metrics['length_penalty']}")
  print(f"BLEU:  {metrics['bleu']:.2f}  (95% CI {low:.2f}-{high:.2f})  "
        f"{metrics['bleu_signature']}")
  print(f"chrF:  {metrics['chrf']:.2f}  {metrics['chrf_signature']}")
  for example in metrics["examples"][:3]:
    print(f"  {example['source']}\n  -> {example['hypothesis']}\n"
          f"  (ref {example['reference']})")
  sys.stdout.flush()


def run(argv_flags):
  from trainers.tasks import get_task
  task = get_task(TrainConfig(task=argv_flags.task,
                              data_dir=argv_flags.data_dir))
  if task.family == "seq2seq":
    if bool(argv_flags.model_dir) == bool(argv_flags.saved_model):
      raise UserError("pass exactly one of --model_dir or --saved_model")
    metrics = evaluate_translation(task, argv_flags)
    print_translation_report(metrics)
    if argv_flags.output_json:
      write_json(argv_flags.output_json, metrics)
    return metrics
  split_or_path = argv_flags.eval_file or task.eval_split
  if bool(argv_flags.model_dir) == bool(argv_flags.saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  if argv_flags.saved_model:
    metrics = evaluate_saved_model(task, argv_flags.saved_model, split_or_path,
                                   argv_flags.batch_size)
  else:
    metrics = evaluate_checkpoint(task, argv_flags.model_dir,
                                  argv_flags.checkpoint, split_or_path,
                                  argv_flags.batch_size)
  metrics["data"] = task.describe_eval_data(split_or_path)
  if task.family == "decoder":
    print_language_model_report(metrics)
  else:
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


def print_language_model_report(metrics):
  low, high = metrics["loss_ci95"]
  print(f"model:      {metrics['source']}")
  print(f"data:       {metrics['data']} ({metrics['characters']} characters)")
  print(f"loss:       {metrics['loss']:.4f} nats/char  (95% CI {low:.4f}-"
        f"{high:.4f})")
  print(f"perplexity: {metrics['perplexity']:.3f}")
  print(f"bits/char:  {metrics['bits_per_character']:.4f}")
  if "accuracy" in metrics:
    print(f"next-char accuracy: {metrics['accuracy']:.4f}")
  sys.stdout.flush()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run_reporting_user_errors(run, FLAGS)


if __name__ == "__main__":
  app.run(main)
