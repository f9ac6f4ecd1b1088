"""Generation speed of the exported decoder: KV cache vs none vs keras-hub.

In one run, for the model in --model_dir (default: the tiny-shakespeare
recipe's run), this measures tokens/s (new tokens per second, all rows
together) of:
  export     the exported `generate` signature, loaded with
             tf.saved_model.load (graph mode, no XLA: what TF Serving runs);
  export_xla the same from an export made with --xla_generation (its token
             loop XLA-compiled: for servers started with
             --xla_cpu_compilation_enabled; --noxla_export skips it);
  no_cache   the same model and settings decoding without a cache (every step
             recomputes the whole context), as an in-process tf.function;
  keras_hub  keras_hub's GPT2CausalLM.generate for a randomly initialised
             model of the same size (layers, width, heads, context,
             vocabulary), once with jit_compile=True (XLA, what a user who
             generates in-process would switch on) and once with
             jit_compile=False; its generate cannot be exported, so it runs
             in-process.
at batch 1 and 16 for 256 new tokens after a 32-character prompt, sampling
with temperature 0.8 and top_k 40 (keras-hub: its TopKSampler with the same
settings). Each figure is the median of --repeats timed calls after one
warm-up call. Also tokens/s vs the number of new tokens at batch 1 (export and
no_cache), for the plot. Writes benchmarks/results/generation.json and
generation.png (--output_name). --intra_op_threads / --inter_op_threads set
TensorFlow's thread pools for everything measured (what a server's
--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism set);
the JSON records them and whether oneDNN was on.

  python -m benchmarks.generation --model_dir=runs/shakespeare_small
"""

import json
import os
import statistics
import tempfile
import time

from absl import app, flags

from benchmarks import environment

flags.DEFINE_string("model_dir", "runs/shakespeare_small",
                    "A trained decoder model_dir (trainers.train).")
flags.DEFINE_integer("new_tokens", 256, "Tokens to generate per row.")
flags.DEFINE_multi_integer("batch_sizes", [1, 16], "Batch sizes to measure.")
flags.DEFINE_multi_integer("lengths", [32, 64, 128, 256],
                           "New-token counts for the tokens/s vs length curve.")
flags.DEFINE_integer("repeats", 3, "Timed calls per figure (median).")
flags.DEFINE_bool("keras_hub", True, "Also measure keras_hub GPT2CausalLM.")
flags.DEFINE_bool("xla_export", True, "Also measure an export made with "
                  "--xla_generation (an XLA-compiled token loop).")
flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow's intra-op threads for "
                     "everything measured (0 = TensorFlow's default).")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow's inter-op threads (0 = "
                     "TensorFlow's default).")
flags.DEFINE_string("output_name", "generation", "JSON/PNG file name stem.")
flags.DEFINE_string("output_dir", os.path.join(environment.ROOT, "benchmarks",
                                               "results"), "Where JSON/PNG go.")
FLAGS = flags.FLAGS

PROMPT = "ROMEO:\nBut soft, what light thr"  # 31 characters + start = 32
assert len(PROMPT) == 31
TEMPERATURE, TOP_K = 0.8, 40


def median_seconds(fn, repeats):
  fn()  # warm-up: tracing, compilation, caches
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def ours(signature, batch_size, new_tokens):
  """A call of our generate (export or in-process) for batch_size rows."""
  import tensorflow as tf
  inputs = dict(
      prompt=tf.constant([PROMPT] * batch_size),
      max_new_tokens=tf.fill([batch_size], new_tokens),
      temperature=tf.fill([batch_size], TEMPERATURE),
      top_k=tf.fill([batch_size], TOP_K),
      top_p=tf.ones([batch_size]),
      seed=tf.range(batch_size, dtype=tf.int64))

  def call():
    out = signature(**inputs)
    produced = int(out["num_tokens"].numpy().sum())
    assert produced == batch_size * new_tokens, produced
  return call


def keras_hub_call(architecture, batch_size, new_tokens, jit_compile):
  """A GPT2CausalLM.generate call of the same size."""
  import keras_hub
  import numpy as np
  backbone = keras_hub.models.GPT2Backbone(
      vocabulary_size=architecture["vocabulary_size"],
      num_layers=architecture["num_layers"],
      num_heads=architecture["num_heads"],
      hidden_dim=architecture["hidden_dim"],
      intermediate_dim=architecture["intermediate_dim"],
      max_sequence_length=architecture["sequence_length"], dropout=0.0)
  causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone,
                                            preprocessor=None)
  causal_lm.compile(sampler=keras_hub.samplers.TopKSampler(
      k=TOP_K, temperature=TEMPERATURE, seed=0), jit_compile=jit_compile)
  prompt_length = len(PROMPT) + 1
  length = prompt_length + new_tokens
  rng = np.random.default_rng(0)
  token_ids = np.zeros([batch_size, length], np.int32)
  token_ids[:, :prompt_length] = rng.integers(
      2, architecture["vocabulary_size"], [batch_size, prompt_length])
  mask = np.zeros([batch_size, length], bool)
  mask[:, :prompt_length] = True
  inputs = {"token_ids": token_ids, "padding_mask": mask}

  def call():
    causal_lm.generate(inputs, stop_token_ids=None)
  return call, bool(causal_lm.jit_compile)


def run_benchmark(model_dir):
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
  from export.decoder_export import generate_text
  from export.exporter import ExportConfig, export_saved_model, load_trained_model

  model, tokenizer, config, _ = load_trained_model(model_dir)
  architecture = config["model"]["architecture"]
  with tempfile.TemporaryDirectory() as base:
    export_path = export_saved_model(ExportConfig(model_dir, base))
    exported = tf.saved_model.load(export_path).signatures["generate"]
    ours_to_time = [("export", exported)]
    if FLAGS.xla_export:
      xla_path = export_saved_model(ExportConfig(model_dir, base,
                                                 xla_generation=True))
      ours_to_time.append(
          ("export_xla", tf.saved_model.load(xla_path).signatures["generate"]))
    no_cache = tf.function(lambda **kw: generate_text(
        model, tokenizer, use_cache=False, **kw))
    results = {"batches": [], "lengths": []}
    for batch_size in FLAGS.batch_sizes:
      row = {"batch_size": batch_size, "new_tokens": FLAGS.new_tokens}
      tokens = batch_size * FLAGS.new_tokens
      for name, signature in ours_to_time + [("no_cache", no_cache)]:
        seconds = median_seconds(ours(signature, batch_size, FLAGS.new_tokens),
                                 FLAGS.repeats)
        row[f"{name}_tokens_per_s"] = tokens / seconds
        print(f"batch {batch_size} {name}: {tokens / seconds:.1f} tokens/s",
              flush=True)
      row["cache_speedup"] = row["export_tokens_per_s"] / row["no_cache_tokens_per_s"]
      for jit in ((True, False) if FLAGS.keras_hub else ()):
        name = "keras_hub_xla" if jit else "keras_hub"
        call, used = keras_hub_call(architecture, batch_size,
                                    FLAGS.new_tokens, jit)
        assert used == jit
        seconds = median_seconds(call, FLAGS.repeats)
        row[f"{name}_tokens_per_s"] = tokens / seconds
        for ours_name, _ in ours_to_time:
          row[f"{ours_name}_vs_{name}"] = (row[f"{ours_name}_tokens_per_s"] /
                                           (tokens / seconds))
        print(f"batch {batch_size} {name}: {tokens / seconds:.1f} tokens/s",
              flush=True)
      results["batches"].append(row)
    for new_tokens in FLAGS.lengths:
      point = {"new_tokens": new_tokens}
      for name, signature in (("export", exported), ("no_cache", no_cache)):
        seconds = median_seconds(ours(signature, 1, new_tokens), FLAGS.repeats)
        point[f"{name}_tokens_per_s"] = new_tokens / seconds
      results["lengths"].append(point)
      print(f"length {new_tokens}: {point}", flush=True)
  results.update(
      environment.describe(), model_dir=model_dir, architecture=architecture,
      parameters=model.count_params(), prompt_characters=len(PROMPT),
      sampling={"temperature": TEMPERATURE, "top_k": TOP_K},
      repeats=FLAGS.repeats, intra_op_threads=FLAGS.intra_op_threads,
      inter_op_threads=FLAGS.inter_op_threads,
      onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
      command=" ".join(["python -m benchmarks.generation",
                        f"--model_dir={model_dir}"] + [
          f"--{name}={FLAGS[name].value}" for name in (
              "intra_op_threads", "inter_op_threads", "output_name",
              "xla_export")
          if FLAGS[name].present]))
  return results


def plot(results, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  lengths = [p["new_tokens"] for p in results["lengths"]]
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, label in (("export", "exported generate (KV cache)"),
                      ("no_cache", "same model, no cache")):
    ax.plot(lengths, [p[f"{name}_tokens_per_s"] for p in results["lengths"]],
            marker="o", label=label)
  ax.set_xlabel("new tokens per request (batch 1)")
  ax.set_ylabel("tokens / second")
  ax.set_yscale("log")
  ax.set_title("Decoder generation speed, 2-core CPU")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  results = run_benchmark(FLAGS.model_dir)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  path = os.path.join(FLAGS.output_dir, FLAGS.output_name + ".json")
  with open(path, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  plot(results, os.path.join(FLAGS.output_dir, FLAGS.output_name + ".png"))
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
