"""The optimizer: AdamW that receives gradients already summed over replicas.

Keras 3's TensorFlow optimizer clips gradients (`global_clipnorm`) before it
all-reduces them, so under a multi-replica strategy each replica clips its
own partial gradient by its own norm, and the update differs from the
single-device one. LossScaleOptimizer likewise takes the first replica's
finiteness check as everyone's. The train step (trainers/train_step.py)
therefore sums gradients across replicas itself, then clips the sum by its
global norm; this optimizer skips its own all-reduce so nothing is summed
twice. Every replica then applies the same update as one device would
(tested: mirrored over two CPUs gives the default strategy's loss curve).
"""

import keras

from trainers.schedules import make_schedule

# Gradients are clipped to this global L2 norm (after the cross-replica sum).
GRADIENT_CLIP_NORM = 1.0


class PreReducedAdamW(keras.optimizers.AdamW):
  """AdamW for gradients that are already the cross-replica sum."""

  def _all_reduce_sum_gradients(self, grads_and_vars):
    return grads_and_vars  # the train step has summed them


def make_optimizer(config, total_steps):
  """AdamW with the config's schedule; wrapped for loss scaling under fp16."""
  schedule = make_schedule(config.lr_schedule, config.learning_rate,
                           config.warmup_steps, total_steps)
  optimizer = PreReducedAdamW(
      learning_rate=schedule, weight_decay=config.weight_decay,
      beta_1=0.9, beta_2=0.98, epsilon=1e-6,
      use_ema=config.ema_momentum > 0,
      ema_momentum=config.ema_momentum or 0.99)
  optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
  if config.mixed_precision == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def loss_scale(optimizer):
  """The factor the loss (and so the gradients) are multiplied by: the
  dynamic loss scale under mixed_float16, else 1."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return optimizer.dynamic_scale
  return 1.0
