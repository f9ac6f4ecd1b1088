"""The distributed training step: one optimizer update per call.

The loss is averaged over the global batch (over its examples or, for
translation, its target tokens, counted across replicas), so the replicas'
gradients sum to the single-device gradient; that sum is clipped by its
global norm and applied by an optimizer that does not sum again (see
trainers/optimizer.py).

`--jit_compile` XLA-compiles the whole step (forward, backward, clipping and
the optimizer update) under the default strategy. Under any other strategy
only the forward/backward pass is compiled: the cross-replica sums and the
optimizer's merge_call-based update stay outside XLA, so XLA works under
every strategy. XLA compiles once per batch shape (bucketed widths).
"""

import tensorflow as tf

from trainers import adversarial
from trainers.optimizer import GRADIENT_CLIP_NORM, loss_scale


def example_count(targets):
  """float32 count of the examples in a batch of targets (any structure whose
  tensors lead with the batch dimension): loss_denominator of the tasks whose
  loss is a mean over examples."""
  return tf.cast(tf.shape(tf.nest.flatten(targets)[0])[0], tf.float32)


def make_train_step(strategy, model, optimizer, task, jit_compile,
                    adversarial_epsilon=0.0):
  """Returns train_step(iterator) -> (loss, correct, tokens, examples),
  summed over replicas. adversarial_epsilon > 0: adversarial training
  (trainers/adversarial.py); the returned loss is then the clean one."""
  replicated = strategy.num_replicas_in_sync > 1 or isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy)
  # The whole step goes under XLA only without a strategy scope: a strategy's
  # optimizer update calls merge_call, which a nested tf.function refuses.
  fused = jit_compile and strategy is tf.distribute.get_strategy()

  def sum_over_replicas(value):
    if not replicated:
      return value
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, value)

  def forward_backward(features, targets, denominator):
    with tf.GradientTape() as tape:
      # This replica's share of the global mean: the replicas' losses (and
      # gradients) sum to the single-device ones.
      loss_of = lambda logits: tf.reduce_sum(
          task.per_example_loss(targets, logits)) / denominator  # [b] -> []
      if adversarial_epsilon > 0:
        logits, loss, adversarial_loss = (
            adversarial.clean_and_adversarial_losses(
                model, features, loss_of, adversarial_epsilon,
                tf.cast(loss_scale(optimizer), tf.float32)))
      else:
        logits = model(features, training=True)  # [b, ...]
        loss, adversarial_loss = loss_of(logits), 0.0
      scaled_loss = optimizer.scale_loss(loss + adversarial_loss)
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    correct = tf.reduce_sum(task.correct_predictions(targets, logits))
    tokens = task.count_tokens(features, targets)
    examples = task.count_examples(features, targets)
    return loss, correct, tokens, examples, grads

  def update(features, targets, forward_backward_fn):
    # What the loss averages over (examples or target tokens), counted over
    # the global batch.
    denominator = tf.maximum(
        sum_over_replicas(task.loss_denominator(features, targets)), 1.0)
    loss, correct, tokens, examples, grads = forward_backward_fn(
        features, targets, denominator)
    grads = sum_over_replicas(grads)  # identical on every replica
    # Under loss scaling the gradients are scaled too: clip at the scaled
    # norm. Non-finite gradients stay non-finite, so the LossScaleOptimizer
    # still skips the step and lowers the scale.
    grads, _ = tf.clip_by_global_norm(
        grads, GRADIENT_CLIP_NORM * tf.cast(loss_scale(optimizer), tf.float32))
    optimizer.apply(grads, model.trainable_variables)
    return loss, correct, tokens, examples

  if fused:
    replica_step = tf.function(
        lambda features, targets: update(features, targets, forward_backward),
        jit_compile=True)
  else:
    compiled = tf.function(forward_backward, jit_compile=jit_compile)
    replica_step = lambda features, targets: update(features, targets, compiled)

  @tf.function(reduce_retracing=True)
  def train_step(iterator):
    outputs = strategy.run(replica_step, args=next(iterator))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)
            for x in outputs]

  return train_step
