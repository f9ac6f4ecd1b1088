"""Everything a training run builds before its first step: prepare_training(config).

Owns the order that tf.distribute needs: the strategy first (before anything
touches the TF runtime, or multi-worker collectives cannot be configured), then
the precision policy and seeds, the model config and vocabulary (learned on a
first run, read back on a resume, and checked to be identical on every
worker), the model and optimizer under the strategy's scope, and the
distributed train step. trainers.loop runs it; benchmarks/train_throughput.py
times it.
"""

import dataclasses
import hashlib
import json
import math
import os

import keras
import tensorflow as tf
from absl import logging

from trainers import strategies
from trainers.config import TrainConfig, config_path, read_json, write_json
from trainers.errors import UserError
from trainers.optimizer import make_optimizer
from trainers.tasks import get_task
from trainers.train_step import make_train_step
from zoo import model_config as zoo_model_config
from zoo import model_dir as model_dir_layout


@dataclasses.dataclass
class Training:
  config: TrainConfig  # the run's settings
  strategy: tf.distribute.Strategy  # replicas the global batch is split over
  chief: bool  # this worker writes summaries, the best checkpoint and exports
  work_dir: str  # model_dir on the chief, model_dir/.workers/<task> elsewhere
  task: object  # trainers.tasks: data, loss, metrics
  model_config: dict  # rebuilds the model (config.json "model")
  tokenizer: keras.layers.Layer  # the in-graph tokenizer of the vocabulary
  model: keras.Model  # built under strategy.scope()
  optimizer: keras.optimizers.Optimizer  # AdamW (LossScaleOptimizer for fp16)
  total_steps: int  # the run ends at this optimizer step
  train_step: object  # train_step(iterator) -> (loss, correct, tokens, examples), global sums
  worker_train_files: list = None  # the files this worker reads, with file shards

  def train_dataset(self, skip_batches=0):
    """The task's global training batches, from batch `skip_batches`."""
    return self.task.train_dataset(
        self.tokenizer, self.config.batch_size, skip_batches=skip_batches,
        num_replicas=self.strategy.num_replicas_in_sync)

  def file_shards(self):
    """Whether each worker reads its own training files: under
    multi_worker_mirrored, when the task can (enough files for the workers)."""
    workers = strategies.num_workers(self.strategy)
    return workers > 1 and self.task.can_shard_files(workers)

  def train_iterator(self, skip_batches=0):
    """An iterator of distributed global batches, from batch `skip_batches`.

    With file shards, worker i builds its own pipeline over its files
    (distribute_datasets_from_function) and makes per-replica batches, so
    step s has read s * (its local replicas) of them. Otherwise every
    worker builds the global batches and tf.data keeps each worker's part
    of every batch (the same batches as one worker would train on).
    """
    if not self.file_shards():
      return iter(self.strategy.experimental_distribute_dataset(
          self.train_dataset(skip_batches)))
    replicas = self.strategy.num_replicas_in_sync

    def worker_dataset(context):
      shard = (context.input_pipeline_id, context.num_input_pipelines)
      local_replicas = replicas // context.num_input_pipelines
      self.worker_train_files = self.task.train_paths(shard)
      logging.info("Worker %d of %d reads its own training files: %s",
                   *shard, ", ".join(self.task.train_paths(shard)))
      return self.task.train_dataset(
          self.tokenizer,
          context.get_per_replica_batch_size(self.config.batch_size),
          skip_batches=skip_batches * local_replicas, num_replicas=1,
          shard=shard)

    return iter(self.strategy.distribute_datasets_from_function(
        worker_dataset))


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
  logging.info("Reading the training data and learning the vocabulary...")
  return task.new_model_config(work_dir)


def model_fingerprint(model_config, work_dir):
  """A 20-bit digest of the model config and its vocabulary file."""
  digest = hashlib.sha256(
      json.dumps(model_config, sort_keys=True).encode("utf-8"))
  with tf.io.gfile.GFile(
      zoo_model_config.vocabulary_path(model_config, work_dir), "rb") as f:
    digest.update(f.read())
  return int(digest.hexdigest()[:5], 16)


def _worker_dir(config, strategy, chief):
  if chief:
    return config.model_dir
  resolver = strategy.cluster_resolver
  return model_dir_layout.worker_dir(config.model_dir, resolver.task_type,
                                     resolver.task_id)


def prepare_training(config: TrainConfig) -> Training:
  """Builds the strategy, model, optimizer and train step for `config`."""
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
  work_dir = _worker_dir(config, strategy, chief)
  tf.io.gfile.makedirs(work_dir)

  task = get_task(config)
  model_config = load_or_create_model_config(task, config, work_dir)
  task.use_model_config(model_config)
  # Every worker learns the vocabulary from its own copy of the data; they
  # must agree or the replicas would train different models.
  strategies.check_workers_agree(
      strategy, model_fingerprint(model_config, work_dir),
      "the model config and vocabulary (is the training data identical on "
      "every host?)")
  write_json(config_path(work_dir), {
      "train": config.to_dict(), "model": model_config,
      "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}})
  tokenizer = zoo_model_config.build_tokenizer(model_config, work_dir)
  total_steps = config.train_steps or max(
      1, math.ceil(config.epochs * task.num_train_examples() / config.batch_size))

  with strategy.scope():
    model = task.build_model(model_config)
    optimizer = make_optimizer(config, total_steps)
    optimizer.build(model.trainable_variables)
  train_step = make_train_step(strategy, model, optimizer, task,
                               config.jit_compile,
                               config.adversarial_epsilon)
  return Training(config=config, strategy=strategy, chief=chief,
                  work_dir=work_dir, task=task, model_config=model_config,
                  tokenizer=tokenizer, model=model, optimizer=optimizer,
                  total_steps=total_steps, train_step=train_step)
