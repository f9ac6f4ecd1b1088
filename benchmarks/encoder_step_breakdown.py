"""Where the small encoder's XLA training step spends its time, and the MFU
it would reach if everything but its matmuls were free:
`python -m benchmarks.encoder_step_breakdown`.

On the batches benchmarks/train_throughput.py times (the SST-2 recipe's batch
size, --batches real training batches), each part compiled with XLA on its own:
- step: the trainer's whole train step (forward, backward, gradient
  clipping, AdamW), timed as train_throughput times it;
- forward: the training-mode forward pass and the loss;
- forward_backward: the same plus every gradient;
- optimizer: AdamW's update of every variable from fixed gradients;
- matmuls: only the step's matmuls, at the shapes the step runs them
  (padded to the batch's width): each projection x @ W forward and its two
  gradient products (dy @ W^T and x^T @ dy), and the attention scores and
  weighted sums with their gradients.
Each part's MFU is the step's model FLOPs (benchmarks/model_flops.py, real
tokens only) over the part's time, against the float32 matmul peak measured
in the same process. The matmuls row is the ceiling on the step's MFU: what
it would reach if layer norms, softmax, GELU, dropout, the embedding and the
optimizer cost nothing. Writes benchmarks/results/encoder_step_breakdown.json.
"""

import json
import os
import shutil
import tempfile
import time

from absl import app, flags, logging

from benchmarks import train_throughput
from benchmarks.environment import ROOT

# train_throughput's flags (--batches, --min_seconds, --batch_size,
# --model_overrides, --matmul_size, --output) mean the same here.
FLAGS = flags.FLAGS
FLAGS.set_default("output", "benchmarks/results/encoder_step_breakdown.json")


def step_matmul_shapes(arch, batch, width):
  """The matmuls of one training step of the encoder on a [batch, width]
  batch, as (count, batch_dims, m, k, n): `count` products of [m, k] x [k, n]
  over leading dimensions `batch_dims`."""
  d, ff = arch["hidden_dim"], arch["intermediate_dim"]
  heads = arch["num_heads"]
  head_dim = d // heads
  tokens = batch * width
  shapes = []
  for k, n in [(d, d)] * 4 + [(d, ff), (ff, d)]:  # Q, K, V, output; FFN
    shapes += [(1, (), tokens, k, n),   # x @ W
               (1, (), tokens, n, k),   # dy @ W^T
               (1, (), k, tokens, n)]   # x^T @ dy
  attention = (batch, heads)
  # Scores s = q @ k^T and weighted sum o = p @ v, forward; then
  # dp = do @ v^T, dv = p^T @ do, dq = ds @ k and dk = ds^T @ q.
  shapes += [(2, attention, width, head_dim, width),   # s, dp
             (4, attention, width, width, head_dim)]   # o, dv, dq, dk
  return [(count * arch["num_layers"], dims, m, k, n)
          for count, dims, m, k, n in shapes]


def shapes_flops(shapes):
  total = 0
  for count, dims, m, k, n in shapes:
    leading = 1
    for size in dims:
      leading *= size
    total += count * leading * 2 * m * k * n
  return total


def matmuls_only(shapes):
  """An XLA function running exactly the products of `shapes`, in the best
  case for them: the operands of each shape are made once and stay hot in
  cache, and nothing else runs. Repeats of a shape run in a while loop that
  changes one element of an operand per iteration (so XLA can neither hoist
  nor merge them)."""
  import tensorflow as tf
  groups = [(count, tf.random.normal(list(dims) + [m, k]),
             tf.random.normal(list(dims) + [k, n]))
            for count, dims, m, k, n in shapes]

  def repeated_product(count, a, b):
    corner = [[0] * len(a.shape)]

    def body(i, a, total):
      a = tf.tensor_scatter_nd_update(a, corner, [total * 1e-30])
      return i + 1, a, total + tf.reduce_sum(tf.matmul(a, b))

    return tf.while_loop(lambda i, a, total: i < count, body,
                         (0, a, 0.0))[2]

  @tf.function(jit_compile=True)
  def run(groups):
    return tf.add_n([repeated_product(count, a, b) for count, a, b in groups])

  return lambda: run(groups)


def time_calls(calls, min_seconds):
  """Seconds per pass over `calls` (each returns a tensor): one untimed pass
  compiles, then passes repeat until min_seconds."""
  for call in calls:
    call().numpy()
  passes, start = 0, time.perf_counter()
  while passes == 0 or time.perf_counter() - start < min_seconds:
    for call in calls:
      call().numpy()
    passes += 1
  return (time.perf_counter() - start) / passes


def measure():
  import tensorflow as tf
  from benchmarks.model_flops import step_flops
  from trainers.config import TrainConfig
  from trainers.training import prepare_training

  train_throughput.use_two_logical_cpus()  # as train_throughput runs
  peak = train_throughput.matmul_peak("float32", FLAGS.matmul_size)
  root = tempfile.mkdtemp(prefix="encoder_step_breakdown_")
  try:
    base, vocab_dir, _ = train_throughput.prepare_vocabulary("encoder", root)
    training = prepare_training(TrainConfig(
        model_dir=train_throughput.fresh_model_dir(vocab_dir, root, "xla"),
        jit_compile=True, **base))  # as train_throughput's best row
    batches = list(training.train_dataset().take(FLAGS.batches))
    model, optimizer, task = training.model, training.optimizer, training.task
    arch = training.model_config["architecture"]
    flops = sum(step_flops("encoder", arch, features.numpy())
                for features, _ in batches)

    @tf.function(jit_compile=True)
    def forward(features, targets):
      return tf.reduce_sum(task.per_example_loss(
          targets, model(features, training=True)))

    @tf.function(jit_compile=True)
    def forward_backward(features, targets):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(task.per_example_loss(
            targets, model(features, training=True)))
      grads = tape.gradient(loss, model.trainable_variables)
      # The embedding's gradient stays sparse (IndexedSlices), as the step
      # hands it to the optimizer.
      return tf.add_n([tf.reduce_sum(getattr(g, "values", g)) for g in grads])

    grads = [tf.fill(v.shape, 1e-6) for v in model.trainable_variables]

    @tf.function(jit_compile=True)
    def optimizer_update():
      optimizer.apply(grads, model.trainable_variables)
      return tf.constant(0.0)

    step_seconds, step_passes = train_throughput.time_ours(
        training, batches, FLAGS.min_seconds)
    parts = {"step": step_seconds / step_passes}
    parts["forward"] = time_calls(
        [lambda f=f, t=t: forward(f, t) for f, t in batches], FLAGS.min_seconds)
    parts["forward_backward"] = time_calls(
        [lambda f=f, t=t: forward_backward(f, t) for f, t in batches],
        FLAGS.min_seconds)
    parts["optimizer"] = time_calls([optimizer_update] * len(batches),
                                    FLAGS.min_seconds)
    shapes = [step_matmul_shapes(arch, *f.shape) for f, _ in batches]
    parts["matmuls"] = time_calls([matmuls_only(s) for s in shapes],
                                  FLAGS.min_seconds)
    padded_flops = sum(shapes_flops(s) for s in shapes)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  rows = {name: {"ms_per_step": seconds / len(batches) * 1000,
                 "mfu": flops / seconds / peak}
          for name, seconds in parts.items()}
  rows["matmuls"]["flops_per_second_padded"] = padded_flops / parts["matmuls"]
  return {"architecture": arch, "batch_size": int(batches[0][0].shape[0]),
          "batches": len(batches),
          "batch_widths": [int(f.shape[1]) for f, _ in batches],
          "model_flops_per_pass": flops,
          "matmul_flops_per_pass_padded": padded_flops,
          # What padding leaves of any MFU: the share of the matmul work
          # spent on real tokens.
          "real_token_share_of_matmul_flops": flops / padded_flops,
          "matmul_peak_flops": peak, "parts": rows}


def main(argv):
  del argv
  from benchmarks.environment import describe
  results = dict(describe(), benchmark="encoder_step_breakdown",
                 command="python -m benchmarks.encoder_step_breakdown " + " ".join(
                     FLAGS[name].serialize() for name in (
                         "batches", "min_seconds", "batch_size",
                         "model_overrides", "matmul_size")),
                 **measure())
  output = os.path.join(ROOT, FLAGS.output)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  with open(output, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  logging.info("%s", json.dumps(results["parts"], indent=2))


if __name__ == "__main__":
  app.run(main)
