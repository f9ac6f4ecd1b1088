"""Translation speed of the exported `translate` signature (sentences/s).

Exports --model_dir (default: the Multi30k recipe's run) to a temporary
directory, loads it with tf.saved_model.load (graph mode, no XLA: what TF
Serving runs) and measures sentences per second at beam 1 and 4, batch 1
and 32, on the first sentences of test_2016_flickr. Baseline in the same run:
beam 1 at batch 1 (the ratio column). Each figure is the median of --repeats
timed passes over --sentences sentences after one warm-up call. Writes
benchmarks/results/translation_speed.json.

  python -m benchmarks.translation_speed --model_dir=runs/multi30k_small
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
flags.DEFINE_integer("sentences", 64, "Sentences per timed pass.")
flags.DEFINE_integer("repeats", 3, "Timed passes per figure (median).")
flags.DEFINE_string("output_dir", os.path.join(environment.ROOT, "benchmarks",
                                               "results"), "Where JSON goes.")
FLAGS = flags.FLAGS


def run_benchmark(model_dir):
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  from benchmarks.request_texts import multi30k_test_sources
  from export.exporter import ExportConfig, export_saved_model

  sources = multi30k_test_sources()[:FLAGS.sentences]
  rows = []
  with tempfile.TemporaryDirectory() as base:
    path = export_saved_model(ExportConfig(model_dir, base))
    with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
      card = json.load(f)
    longest = card["architecture"]["sequence_length"] - 2
    translate = tf.saved_model.load(path).signatures["translate"]
    for beam in (1, 4):
      for batch in (1, 32):
        def one_pass(beam=beam, batch=batch):
          for start in range(0, len(sources), batch):
            chunk = sources[start:start + batch]
            n = len(chunk)
            translate(source=tf.constant(chunk),
                      beam_size=tf.fill([n], beam),
                      max_output_length=tf.fill([n], longest),
                      length_penalty=tf.fill([n], 0.6))
        one_pass()  # warm-up
        times = []
        for _ in range(FLAGS.repeats):
          start_time = time.perf_counter()
          one_pass()
          times.append(time.perf_counter() - start_time)
        rate = len(sources) / statistics.median(times)
        rows.append({"beam_size": beam, "batch_size": batch,
                     "sentences_per_s": rate})
        print(f"beam {beam} batch {batch}: {rate:.1f} sentences/s", flush=True)
  baseline = rows[0]["sentences_per_s"]
  for row in rows:
    row["vs_beam1_batch1"] = row["sentences_per_s"] / baseline
  return dict(environment.describe(), model_dir=model_dir, rows=rows,
              sentences=len(sources), repeats=FLAGS.repeats,
              parameters=card.get("parameters"),
              command="python -m benchmarks.translation_speed --model_dir=" +
              model_dir)


def main(argv):
  del argv
  results = run_benchmark(FLAGS.model_dir)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  path = os.path.join(FLAGS.output_dir, "translation_speed.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
