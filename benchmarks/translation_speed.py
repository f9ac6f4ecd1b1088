"""Translation speed of the exported `translate` signature (sentences/s).

Loads exports with tf.saved_model.load (graph mode, no XLA: what TF Serving
runs) and measures sentences per second at beam 1 and 4, batch 1 and 32, on
the first --sentences sentences of test_2016_flickr. The export is
--saved_model_dir, or one written from --model_dir (default: the Multi30k
recipe's run) with --checkpoint. With --baseline_saved_model_dir (e.g. an
export written by an older commit from the same checkpoint), both are
measured in the same process, their timed passes alternated, so load on a
shared machine falls on both alike.

Each figure is the median of --repeats timed passes after one warm-up pass.
Ratios in the same run: beam 4 batch 32 over beam 4 batch 1 (what batching
buys beam search), beam 4 over beam 1 at batch 32, and each figure against
the baseline's. Writes benchmarks/results/translation_speed.json.

  python -m benchmarks.translation_speed --model_dir=runs/multi30k_small \\
      --checkpoint=averaged --baseline_saved_model_dir=/tmp/mt_old/<version>
"""

import json
import os
import statistics
import tempfile
import time

from absl import app, flags

from benchmarks import environment

flags.DEFINE_string("model_dir", "runs/multi30k_small",
                    "A trained seq2seq model_dir (trainers.train).")
flags.DEFINE_string("checkpoint", "best", "The model_dir checkpoint to "
                    "export: best, latest, averaged or a path prefix.")
flags.DEFINE_string("saved_model_dir", "", "An export to measure instead "
                    "of exporting --model_dir.")
flags.DEFINE_string("baseline_saved_model_dir", "", "An export measured "
                    "beside it in the same run (its passes alternated).")
flags.DEFINE_integer("sentences", 64, "Sentences per timed pass.")
flags.DEFINE_integer("repeats", 3, "Timed passes per figure (median).")
flags.DEFINE_string("output_dir", os.path.join(environment.ROOT, "benchmarks",
                                               "results"), "Where JSON goes.")
FLAGS = flags.FLAGS

SETTINGS = [(beam, batch) for beam in (1, 4) for batch in (1, 32)]


def translator(path):
  """(one_pass(beam, batch, sources), card) for the export at path."""
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  longest = card["architecture"]["sequence_length"] - 2
  translate = tf.saved_model.load(path).signatures["translate"]

  def one_pass(beam, batch, sources):
    for start in range(0, len(sources), batch):
      chunk = sources[start:start + batch]
      n = len(chunk)
      translate(source=tf.constant(chunk), beam_size=tf.fill([n], beam),
                max_output_length=tf.fill([n], longest),
                length_penalty=tf.fill([n], 0.6))
  return one_pass, card


def measure(exports, sources, repeats):
  """{name: {(beam, batch): sentences/s}}, passes of the exports alternated."""
  rates = {name: {} for name in exports}
  for beam, batch in SETTINGS:
    times = {name: [] for name in exports}
    for one_pass, _ in exports.values():
      one_pass(beam, batch, sources)  # warm-up
    for _ in range(repeats):
      for name, (one_pass, _) in exports.items():
        start = time.perf_counter()
        one_pass(beam, batch, sources)
        times[name].append(time.perf_counter() - start)
    for name in exports:
      rates[name][beam, batch] = len(sources) / statistics.median(times[name])
      print(f"{name}: beam {beam} batch {batch}: "
            f"{rates[name][beam, batch]:.1f} sentences/s", flush=True)
  return rates


def summarize(rates):
  """The ratios the decoding issue's bars are stated in, per export."""
  return {"beam4_batch32_over_batch1": rates[4, 32] / rates[4, 1],
          "beam4_over_greedy_at_batch32": rates[4, 32] / rates[1, 32],
          "greedy_batch32_over_batch1": rates[1, 32] / rates[1, 1]}


def run_benchmark():
  from benchmarks.request_texts import multi30k_test_sources
  from export.exporter import ExportConfig, export_saved_model
  sources = multi30k_test_sources()[:FLAGS.sentences]
  with tempfile.TemporaryDirectory() as base:
    path = FLAGS.saved_model_dir or export_saved_model(
        ExportConfig(FLAGS.model_dir, base, checkpoint=FLAGS.checkpoint))
    exports = {"export": translator(path)}
    if FLAGS.baseline_saved_model_dir:
      exports["baseline"] = translator(FLAGS.baseline_saved_model_dir)
    rates = measure(exports, sources, FLAGS.repeats)
  results = dict(environment.describe(), model_dir=FLAGS.model_dir,
                 checkpoint=FLAGS.checkpoint, sentences=len(sources),
                 repeats=FLAGS.repeats)
  for name, (_, card) in exports.items():
    results[name] = {
        "git_commit": card.get("git_commit"),
        "parameters": card.get("parameters"),
        "rows": [{"beam_size": beam, "batch_size": batch,
                  "sentences_per_s": rates[name][beam, batch]}
                 for beam, batch in SETTINGS],
        "ratios": summarize(rates[name])}
  if "baseline" in rates:
    results["export_over_baseline"] = {
        f"beam{beam}_batch{batch}": rates["export"][beam, batch] /
        rates["baseline"][beam, batch] for beam, batch in SETTINGS}
  results["command"] = ("python -m benchmarks.translation_speed "
                        f"--model_dir={FLAGS.model_dir} --checkpoint="
                        f"{FLAGS.checkpoint}" +
                        (" --baseline_saved_model_dir=<export of the "
                         "baseline commit>" if "baseline" in rates else ""))
  return results


def main(argv):
  del argv
  results = run_benchmark()
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  path = os.path.join(FLAGS.output_dir, "translation_speed.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  print(json.dumps({k: results[k] for k in results
                    if k in ("export_over_baseline",)} |
                   {n: results[n]["ratios"] for n in ("export", "baseline")
                    if n in results}, indent=2))
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
