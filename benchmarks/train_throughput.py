"""Training throughput by family, strategy and precision, with MFU and a
keras_hub baseline: `python -m benchmarks.train_throughput`.

For each family (its `small` preset and its recipe's batch size) it takes
--batches real training batches from the task's input pipeline, then runs
them twice through each configuration: the first pass compiles every batch
shape, the second is timed. Every configuration sees the same batches, so
the figures compare:
- ours: trainers.training.prepare_training (the trainer's own model,
  optimizer and distributed train step) under each strategy and precision;
- keras_hub: the same architecture as a stock keras_hub model trained with
  model.fit (benchmarks/keras_hub_baselines.py).
MFU divides model FLOPs (benchmarks/model_flops.py) per second by this
machine's matmul peak in the run's precision, measured in the same process.
Mirrored runs over two logical CPU devices here (one GPU each on a GPU host);
multi-worker runs use trainers.train in two local processes and are not part
of this script (see tests/trainers/test_distributed.py).
Writes benchmarks/results/train_throughput.json.
"""

import json
import os
import shutil
import tempfile
import time

from absl import app, flags, logging

flags.DEFINE_list("families", ["encoder", "decoder", "seq2seq"], "Families.")
flags.DEFINE_list("strategies", ["default", "one_device", "mirrored"],
                  "Strategies for the float32 + XLA configuration.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Precisions for the default strategy with XLA.")
flags.DEFINE_integer("batches", 12, "Training batches per pass.")
flags.DEFINE_integer("batch_size", 0, "Global batch size; 0 = each family's "
                     "recipe batch size.")
flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the peak.")
flags.DEFINE_string("output", "benchmarks/results/train_throughput.json",
                    "Where to write the JSON.")
FLAGS = flags.FLAGS

# family -> (task, the recipe flagfile whose batch size we use)
FAMILY_TASKS = {"encoder": ("sst2", "trainers/configs/sst2_small.flags"),
                "decoder": ("shakespeare", "trainers/configs/shakespeare_small.flags"),
                "seq2seq": ("multi30k_de_en", "trainers/configs/multi30k_small.flags")}


def use_two_logical_cpus():
  """Splits the CPU into two logical devices (mirrored's two replicas);
  must run before anything starts the TF runtime."""
  import tensorflow as tf
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def matmul_peak(dtype_name, size, repeats=10):
  """Best FLOP/s of a size x size matmul in `dtype_name` on this machine."""
  import tensorflow as tf
  dtype = tf.as_dtype(dtype_name)
  a = tf.random.normal([size, size], dtype=tf.float32)
  a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
  matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(
      tf.linalg.matmul(x, y)[:1, :1], tf.float32)))
  matmul(a, b)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    float(matmul(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best


def recipe_batch_size(flagfile):
  with open(flagfile) as f:
    for line in f:
      if line.startswith("--batch_size="):
        return int(line.split("=", 1)[1])
  raise ValueError(f"{flagfile} sets no --batch_size")


def prepare_vocabulary(family, root):
  """Learns the family's vocabulary once (a model_dir holding config.json
  and the vocabulary); returns (TrainConfig kwargs, that model_dir)."""
  from trainers.config import TrainConfig
  from trainers.training import prepare_training
  task, flagfile = FAMILY_TASKS[family]
  base = dict(task=task, preset="small",
              batch_size=FLAGS.batch_size or recipe_batch_size(flagfile),
              train_steps=1)
  vocab_dir = os.path.join(root, f"{family}_vocab")
  prepare_training(TrainConfig(model_dir=vocab_dir, **base))
  return base, vocab_dir


def fresh_model_dir(vocab_dir, root, name):
  """A new model_dir with the learned config.json and vocabulary (so the
  trainer builds a fresh model without learning the vocabulary again)."""
  path = os.path.join(root, name)
  shutil.copytree(vocab_dir, path, ignore=shutil.ignore_patterns(
      "checkpoints", "train", "eval", "best", "*.json.tmp"))
  return path


def host_batches(training, count):
  """The first `count` training batches, as eager tensors."""
  dataset = training.task.train_dataset(training.tokenizer,
                                        training.config.batch_size,
                                        skip_batches=0)
  return list(dataset.take(count))


def time_ours(training, batches):
  """Seconds for the second of two passes of our train step over batches."""
  import tensorflow as tf
  signature = tf.nest.map_structure(
      lambda t: tf.TensorSpec([None] * len(t.shape), t.dtype), batches[0])
  dataset = tf.data.Dataset.from_generator(lambda: iter(batches * 2),
                                           output_signature=signature)
  iterator = iter(training.strategy.experimental_distribute_dataset(
      dataset.prefetch(2)))
  for _ in batches:
    [float(x) for x in training.train_step(iterator)]
  start = time.perf_counter()
  for _ in batches:
    [float(x) for x in training.train_step(iterator)]
  return time.perf_counter() - start


def measure(seconds, batches, flops, peak, tokens):
  return {"tokens_per_second": tokens / seconds,
          "steps_per_second": len(batches) / seconds,
          "model_tflops_per_second": flops / seconds / 1e12,
          "mfu": flops / seconds / peak}


def run_family(family, root, peaks):
  import keras
  from benchmarks import keras_hub_baselines
  from benchmarks.model_flops import step_flops
  from trainers.config import TrainConfig
  from trainers.training import prepare_training

  base, vocab_dir = prepare_vocabulary(family, root)
  configs = [("default", "float32", False)]
  configs += [(s, "float32", True) for s in FLAGS.strategies]
  configs += [("default", p, True) for p in FLAGS.precisions if p != "float32"]
  rows, batches, arch = [], None, None
  for strategy, precision, jit in configs:
    name = f"{family}_{strategy}_{precision}_{'xla' if jit else 'nojit'}"
    training = prepare_training(TrainConfig(
        model_dir=fresh_model_dir(vocab_dir, root, name),
        distribution_strategy=strategy, mixed_precision=precision,
        jit_compile=jit, **base))
    if batches is None:
      batches = host_batches(training, FLAGS.batches)
      arch = training.model_config["architecture"]
      flops = sum(step_flops(family, arch, f.numpy() if hasattr(f, "numpy")
                             else {k: v.numpy() for k, v in f.items()})
                  for f, _ in batches)
      tokens = sum(float(training.task.count_tokens(f, t)) for f, t in batches)
    seconds = time_ours(training, batches)
    peak_dtype = {"float32": "float32", "mixed_bfloat16": "bfloat16",
                  "mixed_float16": "float16"}[precision]
    row = dict(family=family, implementation="ours", strategy=strategy,
               precision=precision, jit_compile=jit,
               replicas=training.strategy.num_replicas_in_sync,
               **measure(seconds, batches, flops, peaks[peak_dtype],
                         tokens))
    logging.info("%s", row)
    rows.append(row)
    keras.mixed_precision.set_global_policy("float32")
  for jit in (False, True):
    seconds = keras_hub_baselines.fit_seconds(family, arch, batches, jit)
    row = dict(family=family, implementation="keras_hub model.fit",
               strategy="default", precision="float32", jit_compile=jit,
               replicas=1, **measure(seconds, batches, flops,
                                     peaks["float32"], tokens))
    logging.info("%s", row)
    rows.append(row)
  return rows, {"batch_size": base["batch_size"], "batches": len(batches),
                "tokens_per_pass": tokens, "model_flops_per_pass": flops,
                "architecture": arch}


def ratios(rows):
  """ours / keras_hub tokens/s at the same precision and jit setting."""
  out = {}
  for row in rows:
    if row["implementation"] != "ours" or row["strategy"] != "default" or (
        row["precision"] != "float32"):
      continue
    for base in rows:
      if (base["implementation"] != "ours" and base["family"] == row["family"]
          and base["jit_compile"] == row["jit_compile"]):
        key = f"{row['family']}_{'xla' if row['jit_compile'] else 'nojit'}"
        out[key] = row["tokens_per_second"] / base["tokens_per_second"]
  return out


def main(argv):
  del argv
  use_two_logical_cpus()
  from benchmarks.environment import describe
  peaks = {dtype: matmul_peak(dtype, FLAGS.matmul_size)
           for dtype in ("float32", "bfloat16", "float16")}
  logging.info("matmul peaks (FLOP/s): %s", peaks)
  root = tempfile.mkdtemp(prefix="train_throughput_")
  rows, families = [], {}
  try:
    for family in FLAGS.families:
      family_rows, families[family] = run_family(family, root, peaks)
      rows += family_rows
  finally:
    shutil.rmtree(root, ignore_errors=True)
  result = dict(describe(), benchmark="train_throughput",
                command="python -m benchmarks.train_throughput " + " ".join(
                    f"--{name}={FLAGS[name].serialize().split('=', 1)[1]}"
                    for name in ("families", "strategies", "precisions",
                                 "batches", "batch_size")),
                matmul_peak_flops=peaks, families=families, rows=rows,
                ours_over_keras_hub=ratios(rows))
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps({"peaks": peaks, "ratios": result["ours_over_keras_hub"],
                    "rows": [(r["family"], r["implementation"], r["strategy"],
                              r["precision"], r["jit_compile"],
                              round(r["tokens_per_second"]),
                              round(r["mfu"], 3)) for r in rows]}, indent=1))


if __name__ == "__main__":
  app.run(main)
