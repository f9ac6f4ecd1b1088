"""Learning-rate schedules (Keras LearningRateSchedule, serializable)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `peak` over `warmup_steps`, then linear decay to 0
  at `total_steps` (BERT's schedule)."""

  def __init__(self, peak, warmup_steps, total_steps):
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.total_steps = max(int(total_steps), 1)

  def __call__(self, step):
    step = ops.cast(step, "float32")
    warmup = ops.maximum(float(self.warmup_steps), 1.0)
    rising = self.peak * step / warmup
    decay_span = ops.maximum(float(self.total_steps - self.warmup_steps), 1.0)
    falling = self.peak * ops.maximum(
        0.0, 1.0 - (step - self.warmup_steps) / decay_span)
    return ops.where(step < self.warmup_steps, rising, falling)

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps}
