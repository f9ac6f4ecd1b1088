"""Where the engine's key/value cache lives: variables in the session, or
carried through each call.

  python -m benchmarks.engine_cache_placement

The character LM's `small` preset (288 positions, 4 blocks of width 256,
random weights: step cost does not depend on them) is exported with the
engine signatures and loaded the way our server and TF Serving load it (a
TF1 Session, runs by tensor name through TF_SessionRun). Measured per slot
count S, with every slot at position --position:
  variables  one `engine_step` of --tokens_per_step tokens (the cache stays
             in slot-indexed variables, written in place:
             zoo/decoding/slots.py);
  carried    what a step whose cache travels through the call adds on top:
             feeding the 2 x blocks cache tensors float[T, S, H, Dh] into a
             session run, one row written in place, and fetching them back
             (the same data movement a cache-in, cache-out step makes).
Times are medians of --repeats runs of --steps calls, each run after a
prefill that puts every slot back at --position. Writes
benchmarks/results/engine_cache_placement.json.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app, flags

from benchmarks import environment


def define_flags():
  flags.DEFINE_string("slots", "1,8,32", "Slot counts to measure.")
  flags.DEFINE_integer("position", 160, "Position every slot is at.")
  flags.DEFINE_integer("steps", 10, "Calls per timed run.")
  flags.DEFINE_integer("tokens_per_step", 4, "Tokens each call advances a "
                       "slot by (the server's --generation_tokens_per_step).")
  flags.DEFINE_integer("repeats", 5, "Timed runs per figure (median).")
  flags.DEFINE_string("output", os.path.join(
      os.path.dirname(__file__), "results", "engine_cache_placement.json"),
      "Where the JSON goes.")


def _export(path):
  import keras
  from export import decoder_export
  from zoo import presets
  from zoo.tasks.causal_lm import build_causal_lm
  from zoo.tokenizers import characters
  keras.mixed_precision.set_global_policy("float32")
  with open(os.path.join(os.path.dirname(__file__), "..", "data",
                         "tinyshakespeare", "input.txt"),
            encoding="utf-8") as f:
    code_points = characters.learn_character_vocabulary(f.read())
  vocab = os.path.join(path, "vocab.txt")
  characters.write_character_vocabulary(code_points, vocab)
  preset = presets.get_preset("decoder", "small")
  preset["vocabulary_size"] = len(code_points) + 2
  tokenizer = characters.CharacterTokenizer(
      vocab, sequence_length=preset["sequence_length"])
  model = build_causal_lm(preset, suppressed_ids=characters.NEVER_GENERATED)
  import tensorflow as tf
  model(tf.zeros([1, preset["sequence_length"]], tf.int32))
  archive, _ = decoder_export.build_archive(model, tokenizer, {})
  export_dir = os.path.join(path, "export")
  archive.write_out(export_dir, verbose=False)
  return export_dir, preset


def _median_ms(fn, steps, repeats, reset=None):
  """Median over `repeats` timed runs of ms per call of fn (`steps` calls a
  run, each run after reset())."""
  if reset is not None:
    reset()
  fn()
  times = []
  for _ in range(repeats):
    if reset is not None:
      reset()
    start = time.perf_counter()
    for _ in range(steps):
      fn()
    times.append((time.perf_counter() - start) / steps * 1000)
  return statistics.median(times)


def _carry_graph(preset, slots, position):
  """A TF1 graph: cache tensors in, one row written in place, cache out."""
  import tensorflow as tf
  heads = preset["num_heads"]
  shape = [preset["sequence_length"], slots, heads,
           preset["hidden_dim"] // heads]
  graph = tf.Graph()
  with graph.as_default():
    feeds = [tf.compat.v1.placeholder(tf.float32, shape)
             for _ in range(2 * preset["num_layers"])]
    row = tf.ones([1] + shape[1:])
    outs = [tf.raw_ops.InplaceUpdate(x=tf.identity(x), i=[position],
                                     v=row) for x in feeds]
  return graph, feeds, outs, shape


def main(argv):
  del argv
  import numpy as np
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  from serving import servable as servable_lib
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    export_dir, preset = _export(tmp)
    servable = servable_lib.Servable("lm", 1, export_dir)
    signatures = servable.signature_defs

    def run(key, inputs):
      signature = signatures[key]
      aliases = sorted(signature.outputs)
      return servable.run_unbatched(
          {signature.inputs[k].name: v for k, v in inputs.items()},
          [signature.outputs[a].name for a in aliases])

    for slots in [int(s) for s in FLAGS.slots.split(",")]:
      run("engine_init", {"slot": np.arange(slots, dtype=np.int32)})
      prompt = "x" * (FLAGS.position - 1)
      budget = (FLAGS.steps + 1) * FLAGS.tokens_per_step + 1
      if FLAGS.position + budget >= preset["sequence_length"]:
        raise app.UsageError("--position + (--steps + 1) x --tokens_per_step "
                             "must stay inside the context")

      def prefill():  # every slot back at --position, with tokens to go
        run("engine_prefill", {
            "prompt": np.array([prompt.encode()] * slots, object),
            "slot": np.arange(slots, dtype=np.int32),
            "max_new_tokens": np.full([slots], budget, np.int32),
            "temperature": np.ones([slots], np.float32),
            "top_k": np.zeros([slots], np.int32),
            "top_p": np.ones([slots], np.float32),
            "seed": np.arange(slots, dtype=np.int64)})

      step_inputs = {"active": np.ones([slots], bool),
                     "steps": np.full([slots], FLAGS.tokens_per_step, np.int32)}
      variables_ms = _median_ms(lambda: run("engine_step", step_inputs),
                                FLAGS.steps, FLAGS.repeats, reset=prefill)
      graph, feeds, outs, shape = _carry_graph(preset, slots,
                                                FLAGS.position)
      with tf.compat.v1.Session(graph=graph) as session:
        values = [np.random.rand(*shape).astype(np.float32) for _ in feeds]
        feed = dict(zip(feeds, values))
        carried_ms = _median_ms(lambda: session.run(outs, feed), FLAGS.steps,
                                FLAGS.repeats)
      cache_mb = 4 * np.prod(shape) * len(feeds) / 1e6
      rows.append({"slots": slots, "cache_mb": round(float(cache_mb), 1),
                   "variables_step_ms": round(variables_ms, 2),
                   "carry_overhead_ms": round(carried_ms, 2),
                   "carried_over_variables": round(
                       (variables_ms + carried_ms) / variables_ms, 2)})
      print(rows[-1])
    servable.retire_and_close()
  result = {"benchmark": "engine_cache_placement", "preset": "small",
            "position": FLAGS.position,
            "tokens_per_step": FLAGS.tokens_per_step, "rows": rows,
            "environment": environment.describe()}
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result["rows"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
