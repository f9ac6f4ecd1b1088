"""The training loop shared by every task: train_and_evaluate(config).

Owns: strategy and precision set-up, model and optimizer creation, the
distributed train step, periodic evaluation, resumable checkpoints (rerunning
the same command continues from the last one), the best checkpoint by the
task's primary dev metric, TensorBoard summaries and a progress log.
Files under model_dir:
  config.json          TrainConfig + the model config (rebuilds the model)
  vocab.txt            the tokenizer vocabulary
  checkpoints/         the last few checkpoints, ckpt-<step>
  best/                the best checkpoint by dev metric + best/metrics.json
  train/, eval/        TensorBoard event files
  results.json         final and best dev metrics, steps, time, throughput
"""

import contextlib
import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from trainers import strategies
from trainers.best_checkpoint import BestCheckpointKeeper
from trainers.config import TrainConfig, config_path, read_json, write_json
from trainers.errors import UserError
from trainers.progress import ProgressReporter, format_seconds
from trainers import checkpoint_averaging
from trainers.schedules import make_schedule
from trainers.tasks import get_task
from trainers.train_step import make_train_step
from zoo import model_config as zoo_model_config

EVAL_BATCH_SIZE = 256


def checkpoint_step(path):
  """The step number in a CheckpointManager path like .../ckpt-1200."""
  return int(path.rsplit("-", 1)[1])


def load_or_create_model_config(task, config, work_dir):
  """Returns the model config, creating it (and the vocabulary) on a first run."""
  path = config_path(work_dir)
  if tf.io.gfile.exists(path):
    saved = read_json(path)
    model_config = saved["model"]
    if (model_config["task"], model_config["preset"]) != (config.task,
                                                          config.preset):
      raise UserError(
          f"{work_dir} already holds a {model_config['task']}/"
          f"{model_config['preset']} model; pass the same --task/--preset to "
          "resume it, or a new --model_dir")
    return model_config
  logging.info("Learning the vocabulary from the training split...")
  return task.new_model_config(work_dir)


def make_optimizer(config, total_steps):
  schedule = make_schedule(config.lr_schedule, config.learning_rate,
                           config.warmup_steps, total_steps)
  optimizer = keras.optimizers.AdamW(
      learning_rate=schedule, weight_decay=config.weight_decay,
      beta_1=0.9, beta_2=0.98, epsilon=1e-6, clipnorm=None, global_clipnorm=1.0,
      use_ema=config.ema_momentum > 0,
      ema_momentum=config.ema_momentum or 0.99)
  optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
  if config.mixed_precision == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


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
  if not config.model_dir:
    raise UserError("--model_dir is required")
  if config.batch_size <= 0:
    raise UserError(f"--batch_size must be positive, got {config.batch_size}")
  strategy = strategies.make_strategy(
      config.distribution_strategy, config.num_gpus, config.tpu,
      config.collective)
  if config.batch_size % strategy.num_replicas_in_sync:
    raise UserError(
        f"--batch_size={config.batch_size} is not divisible by the "
        f"{strategy.num_replicas_in_sync} replicas")
  keras.mixed_precision.set_global_policy(config.mixed_precision)
  keras.utils.set_random_seed(config.seed)
  chief = strategies.is_chief(strategy)
  work_dir = config.model_dir if chief else os.path.join(
      config.model_dir, ".workers",
      f"{strategy.cluster_resolver.task_type}_{strategy.cluster_resolver.task_id}")
  tf.io.gfile.makedirs(work_dir)

  task = get_task(config)
  model_config = load_or_create_model_config(task, config, work_dir)
  write_json(config_path(work_dir), {
      "train": config.to_dict(), "model": model_config,
      "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}})
  tokenizer = zoo_model_config.build_tokenizer(model_config, work_dir)
  num_examples = task.num_train_examples()
  total_steps = config.train_steps or max(
      1, math.ceil(config.epochs * num_examples / config.batch_size))

  with strategy.scope():
    model = task.build_model(model_config)
    optimizer = make_optimizer(config, total_steps)
    optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(work_dir, "checkpoints"),
      max_to_keep=config.max_checkpoints)
  step = 0
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    step = checkpoint_step(manager.latest_checkpoint)
    logging.info("Resumed from %s at step %d", manager.latest_checkpoint, step)
  elif config.init_checkpoint:
    task.warm_start(model, config.init_checkpoint)
    logging.info("Initialised the backbone from %s", config.init_checkpoint)
  progress_path = os.path.join(work_dir, "progress.json")
  elapsed_before = (read_json(progress_path)["train_seconds"]
                    if step and tf.io.gfile.exists(progress_path) else 0.0)

  train_ds = task.train_dataset(tokenizer, config.batch_size, skip_batches=step)
  iterator = iter(strategy.experimental_distribute_dataset(train_ds))
  eval_ds = task.eval_dataset(tokenizer, EVAL_BATCH_SIZE)
  global_batch = config.batch_size

  train_step = make_train_step(strategy, model, optimizer, task, global_batch,
                               config.jit_compile)

  @tf.function
  def predict(features):
    return model(features, training=False)

  if chief:
    train_writer = tf.summary.create_file_writer(os.path.join(work_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(work_dir, "eval"))
  else:
    train_writer = eval_writer = tf.summary.create_noop_writer()

  keeper = BestCheckpointKeeper(
      task, checkpoint, os.path.join(work_dir, "best"), eval_writer, predict,
      eval_ds, weights_context=(
          (lambda: averaged_weights(model, optimizer))
          if config.ema_momentum > 0 else None))

  def save_checkpoint(step, elapsed):
    manager.save(checkpoint_number=step)
    write_json(progress_path, {"step": step, "train_seconds": elapsed})

  logging.info("Training %s/%s for %d steps (global batch %d, %d replicas, "
               "%s, jit_compile=%s), starting at step %d", config.task,
               config.preset, total_steps, global_batch,
               strategy.num_replicas_in_sync, config.mixed_precision,
               config.jit_compile, step)
  start = time.time()
  progress = ProgressReporter(train_writer, total_steps, global_batch,
                              lambda: optimizer.learning_rate)
  metrics = None
  while step < total_steps:
    progress.add(*train_step(iterator))
    step += 1
    if step % config.log_every_steps == 0 or step == total_steps:
      progress.report(step)
    if step % config.eval_every_steps == 0 or step == total_steps:
      metrics = keeper.evaluate(step)
    if step % config.checkpoint_every_steps == 0 or step == total_steps:
      save_checkpoint(step, elapsed_before + time.time() - start)
  train_seconds = elapsed_before + time.time() - start
  if metrics is None:  # already finished earlier: just report
    metrics = keeper.evaluate(step)
  best = keeper.best
  results = {"final": metrics, "best": best, "steps": step,
             "train_seconds": train_seconds,
             "num_replicas": strategy.num_replicas_in_sync}
  if config.average_checkpoints:
    paths = checkpoint_averaging.average_last_checkpoints(
        model, os.path.join(work_dir, "checkpoints"), config.average_checkpoints)
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
  write_json(os.path.join(work_dir, "results.json"), results)
  logging.info("Done: %d steps in %s; final dev %s %.4f, best %.4f at step %d",
               step, format_seconds(train_seconds), task.primary_metric,
               metrics[task.primary_metric], best[task.primary_metric],
               best["step"])
  return results
