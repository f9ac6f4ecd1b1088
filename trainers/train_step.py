"""The distributed training step: one optimizer update per call.

The forward/backward pass is a separate tf.function that `--jit_compile`
XLA-compiles; the gradient sum across replicas, clipping and the optimizer
update stay outside it, so XLA works under every strategy. The loss is
averaged over the global batch (over its examples or, for translation, its
target tokens, counted across replicas), so the replicas' gradients sum to
the single-device gradient; that sum is clipped by its global norm and applied
by an optimizer that does not sum again (see trainers/optimizer.py).
"""

import tensorflow as tf

from trainers.optimizer import GRADIENT_CLIP_NORM, loss_scale


def make_train_step(strategy, model, optimizer, task, jit_compile):
  """Returns train_step(iterator) -> (loss, correct, tokens), summed over replicas."""

  @tf.function(jit_compile=jit_compile)
  def forward_backward(features, targets, denominator):
    with tf.GradientTape() as tape:
      logits = model(features, training=True)  # [b, ...]
      per_example = task.per_example_loss(targets, logits)  # [b]
      # This replica's share of the global mean: the replicas' losses (and
      # gradients) sum to the single-device ones.
      loss = tf.reduce_sum(per_example) / denominator
      scaled_loss = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    correct = tf.reduce_sum(task.correct_predictions(targets, logits))
    tokens = task.count_tokens(features, targets)
    return loss, correct, tokens, grads

  def replica_step(features, targets):
    replica = tf.distribute.get_replica_context()
    # What the loss averages over (examples or target tokens), counted over
    # the global batch.
    denominator = tf.maximum(replica.all_reduce(
        tf.distribute.ReduceOp.SUM, task.loss_denominator(features, targets)),
                             1.0)
    loss, correct, tokens, grads = forward_backward(features, targets,
                                                    denominator)
    grads = replica.all_reduce(tf.distribute.ReduceOp.SUM,
                               grads)  # identical on every replica
    # Under loss scaling the gradients are scaled too: clip at the scaled
    # norm. Non-finite gradients stay non-finite, so the LossScaleOptimizer
    # still skips the step and lowers the scale.
    grads, _ = tf.clip_by_global_norm(
        grads, GRADIENT_CLIP_NORM * tf.cast(loss_scale(optimizer), tf.float32))
    optimizer.apply(grads, model.trainable_variables)
    return loss, correct, tokens

  @tf.function
  def train_step(iterator):
    outputs = strategy.run(replica_step, args=next(iterator))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)
            for x in outputs]

  return train_step
