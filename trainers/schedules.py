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


@keras.saving.register_keras_serializable(package="zoo")
class WarmupInverseSquareRoot(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup to `peak` over `warmup_steps`, then peak * sqrt(warmup /
  step) (the Transformer paper's schedule, peak-normalised as in fairseq)."""

  def __init__(self, peak, warmup_steps):
    self.peak = float(peak)
    self.warmup_steps = max(int(warmup_steps), 1)

  def __call__(self, step):
    step = ops.maximum(ops.cast(step, "float32"), 1.0)
    warmup = float(self.warmup_steps)
    return self.peak * ops.minimum(step / warmup, ops.sqrt(warmup / step))

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps}


SCHEDULES = ("linear", "inverse_sqrt")


def make_schedule(name, peak, warmup_steps, total_steps):
  """The learning-rate schedule `name` (one of SCHEDULES)."""
  if name == "linear":
    return WarmupLinearDecay(peak, warmup_steps, total_steps)
  if name == "inverse_sqrt":
    return WarmupInverseSquareRoot(peak, warmup_steps)
  raise ValueError(f"Unknown schedule {name!r}; choose one of {SCHEDULES}")
