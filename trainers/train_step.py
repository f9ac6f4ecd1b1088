"""The distributed training step: one optimizer update per call.

The forward/backward pass is a separate tf.function that `--jit_compile`
XLA-compiles; the gradient sum across replicas, clipping and the optimizer
update stay outside it, so XLA works under every strategy. The loss is
averaged over the global batch, so the replicas' gradients sum to the
single-device gradient; that sum is clipped by its global norm and applied
by an optimizer that does not sum again (see trainers/optimizer.py).
"""

import tensorflow as tf

from trainers.optimizer import GRADIENT_CLIP_NORM, loss_scale


def make_train_step(strategy, model, optimizer, task, global_batch_size,
                    jit_compile):
  """Returns train_step(iterator) -> (loss, correct, tokens), summed over replicas."""

  @tf.function(jit_compile=jit_compile)
  def forward_backward(features, targets):
    with tf.GradientTape() as tape:
      logits = model(features, training=True)  # [b, ...]
      per_example = task.per_example_loss(targets, logits)  # [b]
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=global_batch_size)
      scaled_loss = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    correct = tf.reduce_sum(task.correct_predictions(targets, logits))
    tokens = task.count_tokens(features, targets)
    return loss, correct, tokens, grads

  def replica_step(features, targets):
    loss, correct, tokens, grads = forward_backward(features, targets)
    grads = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, grads)  # identical on every replica
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
