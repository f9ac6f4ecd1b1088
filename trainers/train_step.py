"""The distributed training step: one optimizer update per call.

The forward/backward pass is a separate tf.function that `--jit_compile`
XLA-compiles; the optimizer update stays outside it, so XLA works under every
strategy (the Keras optimizer all-reduces gradients across replicas itself).
The loss is averaged over the global batch, so replicas' gradients sum to the
single-device gradient.
"""

import tensorflow as tf


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
    optimizer.apply(grads, model.trainable_variables)
    return loss, correct, tokens

  @tf.function
  def train_step(iterator):
    outputs = strategy.run(replica_step, args=next(iterator))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)
            for x in outputs]

  return train_step
