"""Milliseconds per decoding step of both decoders, by position and batch.

  python -m benchmarks.decoding_step_profile

One step is what the exported generation loops run per token: the decoder's
`step` (one position of every row through every block, with the
key/value cache) plus the tied output projection; for the translator,
`step` with the source's cross-attention memory (computed once per
search, outside the step) and the output projection. Each step runs as one
tf.function (graph mode, no XLA: what TF Serving runs) on a cache whose
positions before the step are filled, so its cost is the cost at that
position. Models are the `small` presets with random weights (step cost does
not depend on the weights):
  decoder   the character LM preset at its 288-token context and at
            --long_context (a preset override, same width), batch 1 and 16;
  seq2seq   the translation preset (64-token context), a 20-piece source,
            batch 1, 32 and 128 rows (32 sentences x beam 4).
The figure of the issue is the ratio of a step at position 32 with the long
context to the same step with the 288-token context, per batch (goal: at
most 1.5). Each time is the median of --repeats timed runs of --steps steps
after a warm-up. Writes benchmarks/results/decoding_step_profile.json.
"""

import json
import os
import statistics
import time

from absl import app, flags

from benchmarks import environment

GOAL_RATIO = 1.5


def define_flags():
  flags.DEFINE_integer("long_context", 2048, "The long decoder context.")
  flags.DEFINE_integer("steps", 20, "Steps per timed run.")
  flags.DEFINE_integer("repeats", 5, "Timed runs per figure (median).")
  flags.DEFINE_string("output", os.path.join(
      environment.ROOT, "benchmarks", "results", "decoding_step_profile.json"),
      "Where the JSON goes.")


def step_ms(step, args, steps, repeats):
  """Median milliseconds of one call of `step(*args)`."""
  step(*args)  # trace
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step(*args)
    times.append((time.perf_counter() - start) / steps * 1000)
  return statistics.median(times)


def decoder_rows(context, batches, positions, steps, repeats):
  import tensorflow as tf
  from zoo.presets import get_preset
  from zoo.tasks.causal_lm import build_causal_lm
  preset = dict(get_preset("decoder", "small"), vocabulary_size=67,
                sequence_length=context)
  model = build_causal_lm(preset)
  model(tf.zeros([1, 8], tf.int32))
  backbone = model.backbone

  @tf.function
  def step(ids, position, cache):
    hidden, cache = backbone.step(ids, position, cache)  # [B, D]
    return backbone.logits(hidden), cache

  rows = []
  for batch in batches:
    cache = backbone.empty_cache(batch)
    ids = tf.ones([batch], tf.int32)
    for position in positions:
      if position >= context:
        continue
      ms = step_ms(step, (ids, tf.constant(position), cache), steps, repeats)
      rows.append({"model": "decoder", "context": context, "batch": batch,
                   "position": position, "ms_per_step": round(ms, 3)})
      print(rows[-1], flush=True)
  return rows


def seq2seq_rows(batches, positions, steps, repeats, source_length=20):
  import tensorflow as tf
  from zoo.presets import get_preset
  from zoo.tasks.translator import build_translator
  preset = dict(get_preset("seq2seq", "small"), dropout=0.0)
  model = build_translator(preset)
  zeros = tf.zeros([1, 8], tf.int32)
  model({"source_ids": zeros, "target_ids": zeros})
  backbone = model.backbone

  @tf.function
  def step(ids, position, cache, memory, mask):
    hidden, cache = backbone.step(ids, position, cache, memory, mask)
    return backbone.logits(hidden), cache  # [B, V]

  rows = []
  for batch in batches:
    source_ids = tf.fill([batch, source_length], 5)
    source, mask = backbone.encode(source_ids, training=False)
    memory = backbone.cross_attention_memory(source)
    cache = backbone.empty_cache(batch)
    ids = tf.ones([batch], tf.int32)
    for position in positions:
      ms = step_ms(step, (ids, tf.constant(position), cache, memory, mask),
                   steps, repeats)
      rows.append({"model": "seq2seq", "context": preset["sequence_length"],
                   "batch": batch, "position": position,
                   "ms_per_step": round(ms, 3)})
      print(rows[-1], flush=True)
  return rows


def ratios(rows, long_context):
  """ms at position 32, long context / 288 context, per batch."""
  at = {(r["context"], r["batch"]): r["ms_per_step"] for r in rows
        if r["model"] == "decoder" and r["position"] == 32}
  out = {}
  for (context, batch), ms in at.items():
    if context == long_context and (288, batch) in at:
      out[f"batch_{batch}"] = round(ms / at[(288, batch)], 3)
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  positions = [1, 32, 128, 287, 1024, 2047]
  rows = (decoder_rows(288, [1, 16], positions, f.steps, f.repeats) +
          decoder_rows(f.long_context, [1, 16], positions, f.steps, f.repeats)
          + seq2seq_rows([1, 32, 128], [1, 8, 32, 62], f.steps, f.repeats))
  long_over_short = ratios(rows, f.long_context)
  result = dict(
      environment.describe(), benchmark="decoding_step_profile",
      command="python -m benchmarks.decoding_step_profile",
      baseline="the same step at position 32 with the 288-token context, "
               "measured in the same run",
      long_context=f.long_context, goal_ratio=GOAL_RATIO,
      position_32_long_over_288=long_over_short,
      meets_goal=all(r <= GOAL_RATIO for r in long_over_short.values()),
      rows=rows)
  with open(f.output, "w") as out:
    json.dump(result, out, indent=2)
    out.write("\n")
  print("position 32, long / 288 context:", long_over_short)
  print("wrote", f.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
