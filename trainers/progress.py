"""Progress reporting: train summaries for TensorBoard and a log line with ETA."""

import time

import tensorflow as tf
from absl import logging


def format_seconds(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class ProgressReporter:
  """Accumulates per-step outputs; every `report` writes their window means."""

  def __init__(self, writer, total_steps, learning_rate_fn):
    self._writer = writer
    self._total_steps = total_steps
    self._learning_rate = learning_rate_fn
    self.last_loss = None  # mean training loss of the last reported window
    self._reset()

  def _reset(self):
    self._start = time.time()
    self._steps = 0
    self._sums = {"loss": 0.0, "correct": 0.0, "tokens": 0.0,
                  "examples": 0.0}

  def add(self, loss, correct, tokens, examples):
    self._steps += 1
    self._sums["examples"] += float(examples)
    self._sums["loss"] += float(loss)
    self._sums["correct"] += float(correct)
    self._sums["tokens"] += float(tokens)

  def report(self, step):
    seconds = max(time.time() - self._start, 1e-9)
    steps = max(self._steps, 1)
    rate = self._steps / seconds
    loss = self._sums["loss"] / steps
    self.last_loss = loss
    accuracy = self._sums["correct"] / max(self._sums["examples"], 1.0)
    learning_rate = float(self._learning_rate())
    tokens_per_second = self._sums["tokens"] / seconds
    with self._writer.as_default(step=step):
      tf.summary.scalar("loss", loss)
      tf.summary.scalar("accuracy", accuracy)
      tf.summary.scalar("learning_rate", learning_rate)
      tf.summary.scalar("steps_per_second", rate)
      tf.summary.scalar("examples_per_second", self._sums["examples"] / seconds)
      tf.summary.scalar("tokens_per_second", tokens_per_second)
    logging.info(
        "step %d/%d loss %.4f acc %.4f lr %.2e | %.1f steps/s %.0f tokens/s | "
        "ETA %s", step, self._total_steps, loss, accuracy, learning_rate, rate,
        tokens_per_second,
        format_seconds((self._total_steps - step) / max(rate, 1e-9)))
    self._reset()
