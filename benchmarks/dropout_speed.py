"""Dropout mask cost: Keras's Dropout against zoo's HashedDropout.

  python -m benchmarks.dropout_speed

Times one training-mode dropout call on a [64, 12, 256] float32 tensor (an
SST-2 batch of hidden states at the small encoder's feed-forward width),
XLA-compiled (what `--jit_compile` training runs) and as a plain tf.function,
for: keras.layers.Dropout (TF's stateless ops, default algorithm), the same
ops with the Philox algorithm named explicitly, zoo's HashedDropout, and no
dropout at all (the floor: the scaling multiply and the sum). Each figure is
the best of --repeats timed runs of --calls calls. Baseline in the same run:
keras.layers.Dropout (the ratio column). Writes
benchmarks/results/dropout_speed.json.
"""

import json
import os
import time

from absl import app, flags

from benchmarks import environment

flags.DEFINE_list("shape", ["64", "12", "256"], "Tensor shape.")
flags.DEFINE_float("rate", 0.2, "Dropout rate.")
flags.DEFINE_integer("calls", 50, "Calls per timed run.")
flags.DEFINE_integer("repeats", 5, "Timed runs per figure (best kept).")
flags.DEFINE_string("output", os.path.join(environment.ROOT, "benchmarks",
                                           "results", "dropout_speed.json"),
                    "Where the JSON goes.")
FLAGS = flags.FLAGS


def implementations(rate):
  """name -> fn(x) applying dropout in training mode, summed to a scalar."""
  import keras
  import tensorflow as tf
  from zoo.layers.hashed_dropout import HashedDropout
  keras_dropout = keras.layers.Dropout(rate, seed=1)
  hashed = HashedDropout(rate, seed=1)
  philox_seed = keras.random.SeedGenerator(1)

  def philox(x):
    keep = tf.random.stateless_uniform(
        tf.shape(x), seed=tf.cast(philox_seed.next(), tf.int32),
        alg="philox") >= rate
    return tf.where(keep, x / (1 - rate), 0.0)

  return {
      "keras.layers.Dropout": lambda x: keras_dropout(x, training=True),
      "stateless_uniform, philox": philox,
      "zoo HashedDropout": lambda x: hashed(x, training=True),
      "no dropout (floor)": lambda x: x / (1 - rate),
  }


def seconds_per_call(fn, x, calls, repeats):
  float(fn(x))  # compiles
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      float(fn(x))
    best = min(best, (time.perf_counter() - start) / calls)
  return best


def run_benchmark():
  import tensorflow as tf
  shape = [int(d) for d in FLAGS.shape]
  x = tf.random.normal(shape)
  rows = []
  for name, body in implementations(FLAGS.rate).items():
    for jit in (True, False):
      fn = tf.function(lambda x, body=body: tf.reduce_sum(body(x)),
                       jit_compile=jit)
      seconds = seconds_per_call(fn, x, FLAGS.calls, FLAGS.repeats)
      rows.append({"implementation": name, "jit_compile": jit,
                   "milliseconds": seconds * 1e3})
      print(f"{name:28s} {'XLA' if jit else 'graph':5s} {seconds * 1e3:8.3f} ms",
            flush=True)
  for row in rows:
    base = next(r for r in rows if r["jit_compile"] == row["jit_compile"]
                and r["implementation"] == "keras.layers.Dropout")
    row["speedup_over_keras"] = base["milliseconds"] / row["milliseconds"]
  return rows


def main(argv):
  del argv
  result = dict(environment.describe(), benchmark="dropout_speed",
                command="python -m benchmarks.dropout_speed", shape=FLAGS.shape,
                rate=FLAGS.rate, rows=run_benchmark())
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  print("wrote", FLAGS.output)


if __name__ == "__main__":
  app.run(main)
