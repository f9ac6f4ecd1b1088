"""The training loop shared by every task: train_and_evaluate(config).

Owns the loop around trainers.training.prepare_training: periodic
evaluation, resumable checkpoints (rerunning the same command continues from
the last one, also after kill -9), checkpoint-and-exit on SIGTERM
(trainers.preemption), the best checkpoint by the task's primary dev metric,
TensorBoard summaries and a progress log. Only the chief writes summaries and
exports; other workers keep their checkpoints under model_dir/.workers/.
The files it writes under model_dir are listed in zoo/model_dir.py.
"""

import contextlib
import os
import time

import tensorflow as tf
from absl import logging

from trainers import checkpoint_averaging
from trainers.best_checkpoint import BestCheckpointKeeper
from trainers.config import TrainConfig, read_json, write_json
from trainers.errors import UserError
from trainers.preemption import preemption_guard
from trainers.progress import ProgressReporter, format_seconds
from trainers.training import prepare_training
from zoo import model_dir as layout

EVAL_BATCH_SIZE = 256


def checkpoint_step(path):
  """The step number in a CheckpointManager path like .../ckpt-1200."""
  return int(path.rsplit("-", 1)[1])


def export_best(config):
  """Exports the best (or averaged) checkpoint to config.export_dir/<version>."""
  from export.exporter import ExportConfig, export_saved_model
  from export.versioning import ExportError
  try:
    path = export_saved_model(ExportConfig(
        model_dir=config.model_dir, export_base=config.export_dir,
        checkpoint="averaged" if config.average_checkpoints else "best"))
  except ExportError as e:
    raise UserError(str(e))
  logging.info("Exported %s", path)
  return path


@contextlib.contextmanager
def averaged_weights(model, optimizer):
  """Swaps the optimizer's moving averages into the model, then swaps back."""
  variables = model.trainable_variables
  current = [tf.identity(v.value) for v in variables]
  optimizer.finalize_variable_values(variables)
  try:
    yield
  finally:
    for variable, value in zip(variables, current):
      variable.assign(value)


def train_and_evaluate(config: TrainConfig):
  """Trains (or resumes) config.task in config.model_dir; returns results dict."""
  training = prepare_training(config)
  strategy, model, optimizer, task = (training.strategy, training.model,
                                      training.optimizer, training.task)
  chief, work_dir, total_steps = (training.chief, training.work_dir,
                                  training.total_steps)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  manager = tf.train.CheckpointManager(
      checkpoint, layout.path(work_dir, layout.CHECKPOINTS),
      max_to_keep=config.max_checkpoints)
  step = 0
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    step = checkpoint_step(manager.latest_checkpoint)
    logging.info("Resumed from %s at step %d", manager.latest_checkpoint, step)
  elif config.init_checkpoint:
    task.warm_start(model, config.init_checkpoint)
    logging.info("Initialised the backbone from %s", config.init_checkpoint)
  elif config.init_from_preset:
    task.warm_start_from_preset(model, config.init_from_preset)
    logging.info("Initialised the model from preset %s",
                 config.init_from_preset)
  progress_path = layout.path(work_dir, layout.PROGRESS)
  elapsed_before = (read_json(progress_path)["train_seconds"]
                    if step and tf.io.gfile.exists(progress_path) else 0.0)

  iterator = training.train_iterator(skip_batches=step)
  eval_ds = task.eval_dataset(training.tokenizer, EVAL_BATCH_SIZE)
  global_batch = config.batch_size

  @tf.function(reduce_retracing=True)
  def predict(features):
    return model(features, training=False)

  if chief:
    train_writer = tf.summary.create_file_writer(
        layout.path(work_dir, layout.TRAIN_SUMMARIES))
    eval_writer = tf.summary.create_file_writer(
        layout.path(work_dir, layout.EVAL_SUMMARIES))
  else:
    train_writer = eval_writer = tf.summary.create_noop_writer()

  keeper = BestCheckpointKeeper(
      task, checkpoint, layout.path(work_dir, layout.BEST), eval_writer, predict,
      eval_ds, weights_context=(
          (lambda: averaged_weights(model, optimizer))
          if config.ema_momentum > 0 else None))
  start = time.time()

  def write_progress(step):
    write_json(progress_path, {"step": step, "train_seconds":
                               elapsed_before + time.time() - start})

  def before_preemption_exit():
    write_progress(step)
    train_writer.flush()
    eval_writer.flush()

  progress = ProgressReporter(train_writer, total_steps,
                              lambda: optimizer.learning_rate)
  metrics = None
  with preemption_guard(strategy, manager, before_preemption_exit) as guard:
    logging.info("Training %s/%s for %d steps (global batch %d, %d replicas, "
                 "%s, jit_compile=%s), starting at step %d", config.task,
                 config.preset, total_steps, global_batch,
                 strategy.num_replicas_in_sync, config.mixed_precision,
                 config.jit_compile, step)
    while step < total_steps:
      progress.add(*training.train_step(iterator))
      step += 1
      if step % config.log_every_steps == 0 or step == total_steps:
        progress.report(step)
      if step % config.eval_every_steps == 0 or step == total_steps:
        metrics = keeper.evaluate(step)
      if step % config.checkpoint_every_steps == 0 or step == total_steps:
        manager.save(checkpoint_number=step)
        write_progress(step)
      guard.save_if_preempted(step)
  train_seconds = elapsed_before + time.time() - start
  if metrics is None:  # already finished earlier: just report
    metrics = keeper.evaluate(step)
  best = keeper.best
  results = {"final": metrics, "best": best, "steps": step,
             "train_seconds": train_seconds,
             "num_replicas": strategy.num_replicas_in_sync,
             "final_train_loss": progress.last_loss,
             "data": task.data_report()}
  if training.worker_train_files is not None:
    results["data"]["worker_train_files"] = training.worker_train_files
  if config.average_checkpoints:
    paths = checkpoint_averaging.average_last_checkpoints(
        model, layout.path(work_dir, layout.CHECKPOINTS),
        config.average_checkpoints)
    results["averaged"] = task.evaluate(predict, eval_ds)
    if chief:
      checkpoint_averaging.write_averaged(model, work_dir, step,
                                          results["averaged"], paths)
    logging.info("Averaged last %d checkpoints: dev %s %.4f", len(paths),
                 task.primary_metric, results["averaged"][task.primary_metric])
  train_writer.flush()
  eval_writer.flush()
  if config.export_dir and chief:
    results["export"] = export_best(config)
  write_json(layout.path(work_dir, layout.RESULTS), results)
  logging.info("Done: %d steps in %s; final dev %s %.4f, best %.4f at step %d",
               step, format_seconds(train_seconds), task.primary_metric,
               metrics[task.primary_metric], best[task.primary_metric],
               best["step"])
  return results
