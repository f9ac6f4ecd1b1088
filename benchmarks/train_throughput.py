"""Training throughput by family, strategy and precision, with MFU and a
keras_hub baseline: `python -m benchmarks.train_throughput`.

For each family (its `small` preset, its recipe's data and batch size:
benchmarks/recipe_flags.py FAMILY_RECIPES) it takes
--batches real training batches from the task's input pipeline and runs them
through each configuration: one pass compiles every batch shape, then passes
are timed until --min_seconds have gone by (keras_hub runs as many timed
passes as our float32 run without XLA did). Every configuration sees the same batches, so
the figures compare:
- ours: trainers.training.prepare_training (the trainer's own model,
  optimizer and distributed train step) under each strategy and precision;
- keras_hub: the same architecture as a stock keras_hub model trained with
  model.fit (benchmarks/keras_hub_baselines.py).
MFU divides model FLOPs (benchmarks/model_flops.py) per second by this
machine's matmul peak in the run's precision, measured in the same process
(each family runs in a process of its own).
Mirrored runs over two logical CPU devices here (one GPU each on a GPU host);
multi-worker runs use trainers.train in two local processes and are not part
of this script (see tests/trainers/test_distributed.py).
Writes benchmarks/results/train_throughput.json and train_throughput.png
(tokens/s by configuration, one panel per family).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from benchmarks.environment import ROOT

flags.DEFINE_list("families", ["encoder", "decoder", "seq2seq"], "Families.")
flags.DEFINE_list("strategies", ["default", "one_device", "mirrored"],
                  "Strategies for the float32 + XLA configuration.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Precisions for the default strategy with XLA.")
flags.DEFINE_integer("batches", 8, "Training batches per pass.")
flags.DEFINE_bool("packed", True, "Tasks that pack (the encoder's "
                  "text_classification): also time the default strategy, "
                  "float32 + XLA, on packed batches (--pack_examples) of the "
                  "same batch size.")
flags.DEFINE_float("min_seconds", 4.0, "Timed passes repeat until they "
                   "have taken at least this long.")
flags.DEFINE_integer("batch_size", 0, "Global batch size; 0 = each family's "
                     "recipe batch size.")
flags.DEFINE_string("model_overrides", "", "Preset fields to override, as "
                    "trainers.train takes them (e.g. 'dropout=0.0').")
flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the peak.")
flags.DEFINE_string("output", "benchmarks/results/train_throughput.json",
                    "Where to write the JSON.")
flags.DEFINE_bool("plot", True, "Also write the PNG next to the JSON.")
FLAGS = flags.FLAGS

# The recipe fields a run takes over: its data (files, columns, labels,
# languages, tokenizer), not its training settings (steps, learning rate,
# regularisation, XLA), which every configuration here sets itself.
DATA_FIELDS = ("train_files", "eval_files", "text_column", "text_pair_column",
               "label_column", "labels", "label_names", "train_source_files",
               "train_target_files", "eval_source_files", "eval_target_files",
               "source_column", "target_column", "source_language",
               "target_language", "tokenizer")

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


def prepare_vocabulary(family, root):
  """Learns the family's vocabulary once, on its recipe's data (a model_dir
  holding config.json and the vocabulary); returns (TrainConfig kwargs,
  that model_dir, the Training built there)."""
  from benchmarks.recipe_flags import FAMILY_RECIPES, recipe_values
  from trainers.config import TrainConfig
  from trainers.training import prepare_training
  recipe = recipe_values(FAMILY_RECIPES[family])
  data = {k: v for k, v in recipe.items() if k in DATA_FIELDS}
  base = dict(data, task=recipe["task"], preset="small",
              batch_size=FLAGS.batch_size or recipe["batch_size"],
              model_overrides=FLAGS.model_overrides, train_steps=1)
  vocab_dir = os.path.join(root, f"{family}_vocab")
  return base, vocab_dir, prepare_training(TrainConfig(model_dir=vocab_dir,
                                                       **base))


def fresh_model_dir(vocab_dir, root, name):
  """A new model_dir with the learned config.json and vocabulary (so the
  trainer builds a fresh model without learning the vocabulary again)."""
  path = os.path.join(root, name)
  shutil.copytree(vocab_dir, path, ignore=shutil.ignore_patterns(
      "checkpoints", "train", "eval", "best", "*.json.tmp"))
  return path


def time_ours(training, batches, min_seconds):
  """(seconds, passes): one untimed pass of our train step over `batches`
  (it compiles every batch shape), then timed passes until min_seconds."""
  import tensorflow as tf
  from benchmarks.keras_hub_baselines import relaxed_signature

  def endless():
    while True:
      yield from batches

  iterator = iter(training.strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_generator(
          endless, output_signature=relaxed_signature(batches[0]))
      .prefetch(2)))
  for _ in batches:
    [float(x) for x in training.train_step(iterator)]
  passes, start = 0, time.perf_counter()
  while passes == 0 or time.perf_counter() - start < min_seconds:
    for _ in batches:
      [float(x) for x in training.train_step(iterator)]
    passes += 1
  return time.perf_counter() - start, passes


def measure(seconds, passes, batches, flops, peak, tokens):
  """Rates over `passes` timed passes of `batches` (flops, tokens: a pass)."""
  return {"tokens_per_second": passes * tokens / seconds,
          "steps_per_second": passes * len(batches) / seconds,
          "model_tflops_per_second": passes * flops / seconds / 1e12,
          "mfu": passes * flops / seconds / peak, "timed_passes": passes,
          "timed_seconds": seconds}


def batch_totals(training, family, arch, batches):
  """(model FLOPs, real tokens) of a pass over `batches`."""
  import tensorflow as tf
  from benchmarks.model_flops import step_flops
  flops = sum(step_flops(family, arch,
                         tf.nest.map_structure(lambda t: t.numpy(), features))
              for features, _ in batches)
  tokens = sum(float(training.task.count_tokens(features, targets))
               for features, targets in batches)
  return flops, tokens


def packed_batches(training, family, arch, examples):
  """The first packed batches of `training` that hold at least `examples`
  examples, with their FLOPs and tokens."""
  batches, held = [], 0.0
  for features, targets in training.train_dataset():
    batches.append((features, targets))
    held += float(training.task.count_examples(features, targets))
    if held >= examples:
      break
  return (batches,) + batch_totals(training, family, arch, batches)


def run_family(family, root, peaks):
  import keras
  import tensorflow as tf
  from benchmarks import keras_hub_baselines
  from trainers.config import TrainConfig
  from trainers.training import prepare_training

  base, vocab_dir, first = prepare_vocabulary(family, root)
  # Every configuration trains on these batches, counted once here.
  batches = list(first.train_dataset().take(FLAGS.batches))
  arch = first.model_config["architecture"]
  flops, tokens = batch_totals(first, family, arch, batches)
  configs = [("default", "float32", False, False)]
  configs += [(s, "float32", True, False) for s in FLAGS.strategies]
  configs += [("default", p, True, False) for p in FLAGS.precisions
              if p != "float32"]
  if first.task.supports_packing and FLAGS.packed:
    configs.append(("default", "float32", True, True))
  rows = []
  for strategy, precision, jit, packed in configs:
    name = (f"{family}_{strategy}_{precision}_{'xla' if jit else 'nojit'}"
            f"{'_packed' if packed else ''}")
    training = prepare_training(TrainConfig(
        model_dir=fresh_model_dir(vocab_dir, root, name),
        distribution_strategy=strategy, mixed_precision=precision,
        jit_compile=jit, pack_examples=packed, **base))
    if packed:  # its own batches: as many examples as `batches` hold
      run_batches, run_flops, run_tokens = packed_batches(
          training, family, arch, sum(
              float(first.task.count_examples(f, t)) for f, t in batches))
    else:
      run_batches, run_flops, run_tokens = batches, flops, tokens
    seconds, passes = time_ours(training, run_batches, FLAGS.min_seconds)
    peak_dtype = {"float32": "float32", "mixed_bfloat16": "bfloat16",
                  "mixed_float16": "float16"}[precision]
    row = dict(family=family, implementation="ours", strategy=strategy,
               precision=precision, jit_compile=jit, packed=packed,
               replicas=training.strategy.num_replicas_in_sync,
               batches=len(run_batches),
               **measure(seconds, passes, run_batches, run_flops,
                         peaks[peak_dtype], run_tokens))
    logging.info("%s", row)
    rows.append(row)
    keras.mixed_precision.set_global_policy("float32")
  passes = rows[0]["timed_passes"]  # as many as ours without XLA took
  for jit in (False, True):
    seconds = keras_hub_baselines.fit_seconds(family, arch, batches, jit,
                                              passes)
    row = dict(family=family, implementation="keras_hub model.fit",
               strategy="default", precision="float32", jit_compile=jit,
               packed=False, replicas=1, batches=len(batches),
               **measure(seconds, passes, batches, flops, peaks["float32"],
                         tokens))
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
        key = (f"{row['family']}_{'xla' if row['jit_compile'] else 'nojit'}"
               f"{'_packed' if row.get('packed') else ''}")
        out[key] = row["tokens_per_second"] / base["tokens_per_second"]
  return out


def label(row):
  if row["implementation"] != "ours":
    return f"keras_hub fit{' XLA' if row['jit_compile'] else ''}"
  precision = {"float32": "fp32", "mixed_bfloat16": "bf16",
               "mixed_float16": "fp16"}[row["precision"]]
  return (f"{row['strategy']} {precision}{' XLA' if row['jit_compile'] else ''}"
          f"{' packed' if row.get('packed') else ''}"
          f" ({row['replicas']} rep.)")


def plot(rows, path):
  """One horizontal bar chart of tokens/s per family, MFU in the labels."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  families = list(dict.fromkeys(row["family"] for row in rows))
  fig, axes = plt.subplots(len(families), 1, squeeze=False,
                           figsize=(8, 2.2 + 0.45 * len(rows) / len(families)
                                    * len(families)))
  for ax, family in zip(axes[:, 0], families):
    mine = [row for row in rows if row["family"] == family]
    values = [row["tokens_per_second"] for row in mine]
    colors = ["tab:gray" if row["implementation"] != "ours" else "tab:blue"
              for row in mine]
    ax.barh([label(row) for row in mine], values, color=colors)
    for y, row in enumerate(mine):
      ax.text(row["tokens_per_second"], y, f" MFU {row['mfu']:.0%}",
              va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_title(f"{family} (small preset): training throughput, 2-core CPU")
    ax.set_xlabel("training tokens per second (real tokens, higher is better)")
    ax.tick_params(axis="y", labelsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def measure_family(family):
  """This process measures one family: the matmul peaks, then its rows."""
  use_two_logical_cpus()
  peaks = {dtype: matmul_peak(dtype, FLAGS.matmul_size)
           for dtype in ("float32", "bfloat16", "float16")}
  logging.info("matmul peaks (FLOP/s): %s", peaks)
  root = tempfile.mkdtemp(prefix="train_throughput_")
  try:
    rows, details = run_family(family, root, peaks)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return rows, dict(details, matmul_peak_flops=peaks)


def measure_in_subprocess(family, folder):
  """Runs this script for one family in a fresh process (a second
  MirroredStrategy in one process reuses the first one's collective keys and
  fails); returns its JSON."""
  output = os.path.join(folder, f"{family}.json")
  command = [sys.executable, "-m", "benchmarks.train_throughput",
             f"--families={family}", f"--output={output}", "--noplot"] + [
                 FLAGS[name].serialize()
                 for name in ("strategies", "precisions", "batches",
                              "batch_size", "min_seconds", "matmul_size",
                              "model_overrides", "packed")]
  subprocess.run(command, check=True, cwd=ROOT)
  with open(output) as f:
    return json.load(f)


def main(argv):
  del argv
  from benchmarks.environment import describe
  rows, families = [], {}
  if len(FLAGS.families) == 1:
    rows, families[FLAGS.families[0]] = measure_family(FLAGS.families[0])
  else:
    folder = tempfile.mkdtemp(prefix="train_throughput_")
    try:
      for family in FLAGS.families:
        child = measure_in_subprocess(family, folder)
        rows += child["rows"]
        families.update(child["families"])
    finally:
      shutil.rmtree(folder, ignore_errors=True)
  result = dict(describe(), benchmark="train_throughput",
                command="python -m benchmarks.train_throughput " + " ".join(
                    FLAGS[name].serialize()
                    for name in ("families", "strategies", "precisions",
                                 "batches", "batch_size", "min_seconds",
                                 "model_overrides", "packed")),
                families=families, rows=rows, ours_over_keras_hub=ratios(rows))
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
  if FLAGS.plot:
    plot(rows, os.path.splitext(FLAGS.output)[0] + ".png")
  print(json.dumps({"ratios": result["ours_over_keras_hub"],
                    "rows": [(r["family"], r["implementation"], r["strategy"],
                              r["precision"], r["jit_compile"],
                              round(r["tokens_per_second"]),
                              round(r["mfu"], 3)) for r in rows]}, indent=1))


if __name__ == "__main__":
  app.run(main)
