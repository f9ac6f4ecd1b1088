"""Periodic dev evaluation that keeps the best checkpoint (model_dir/best/).

The best metrics are stored in best/metrics.json next to the checkpoint, so a
resumed run knows what it has to beat. With `weights_context` (the EMA swap),
evaluation and the kept checkpoint use the averaged weights.
"""

import contextlib
import os

import tensorflow as tf
from absl import logging

from trainers.config import read_json, write_json
from zoo import model_dir as layout

SUMMARY_METRICS = ("accuracy", "precision", "recall", "f1", "loss", "perplexity")


class BestCheckpointKeeper:

  def __init__(self, task, checkpoint, directory, writer, predict_fn, dataset,
               weights_context=None):
    self._task = task
    self._manager = tf.train.CheckpointManager(checkpoint, directory,
                                               max_to_keep=1)
    self._metrics_path = layout.path(directory, layout.METRICS)
    self._writer = writer
    self._predict = predict_fn
    self._dataset = dataset
    self._weights_context = weights_context or contextlib.nullcontext
    self.best = (read_json(self._metrics_path)
                 if tf.io.gfile.exists(self._metrics_path) else None)

  def evaluate(self, step):
    """Evaluates at `step`, saves a new best; returns the metrics."""
    with self._weights_context():
      return self._evaluate(step)

  def _better(self, value, best):
    if self._task.higher_is_better:
      return value > best
    return value < best

  def _evaluate(self, step):
    key = self._task.primary_metric
    metrics = self._task.evaluate(self._predict, self._dataset)
    with self._writer.as_default(step=step):
      for name in SUMMARY_METRICS:
        if name in metrics:
          tf.summary.scalar(name, metrics[name])
    if self.best is None or self._better(metrics[key], self.best[key]):
      self._manager.save(checkpoint_number=step)
      self.best = dict(metrics, step=step)
      write_json(self._metrics_path, self.best)
    logging.info("eval step %d: %s %.4f (best %.4f at step %d)", step, key,
                 metrics[key], self.best[key], self.best["step"])
    return metrics
