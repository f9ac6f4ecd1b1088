"""The layout of a trained model directory, in one place.

The trainer writes it; export, evaluation, checkpoint averaging and the
command-line tools read it, and all of them ask this module where things are:
  config.json          {"train": TrainConfig, "model": model config, "versions"}
  <vocabulary>         vocab.txt or spm.model (named by the model config)
  checkpoints/         the last few resumable checkpoints, ckpt-<step>
  best/                the best checkpoint by the dev metric + metrics.json
  averaged/            the mean of the last N checkpoints + metrics.json
  train/, eval/        TensorBoard event files
  progress.json        the step and training seconds of the last checkpoint
  results.json         final and best dev metrics, steps, time, data report
  .workers/<task>/     the same layout for non-chief workers
"""

import json
import os

import tensorflow as tf

CONFIG = "config.json"
PROGRESS = "progress.json"
RESULTS = "results.json"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
AVERAGED = "averaged"
TRAIN_SUMMARIES = "train"
EVAL_SUMMARIES = "eval"
WORKERS = ".workers"

# --checkpoint names -> the folder whose latest checkpoint they mean
CHECKPOINT_FOLDERS = {"best": BEST, "latest": CHECKPOINTS, "averaged": AVERAGED}


class ModelDirError(ValueError):
  """A model_dir is missing or lacks what was asked of it."""


def path(model_dir, *parts):
  return os.path.join(model_dir, *parts)


def worker_dir(model_dir, task_type, task_id):
  """Where a non-chief worker keeps its own checkpoints."""
  return os.path.join(model_dir, WORKERS, f"{task_type}_{task_id}")


def read_config(model_dir):
  """config.json of a trained model_dir, as a dict; ModelDirError if absent."""
  config_file = path(model_dir, CONFIG)
  if not tf.io.gfile.exists(config_file):
    raise ModelDirError(f"{model_dir} is not a trained model_dir: no "
                        f"{CONFIG} (train with python -m trainers.train first)")
  try:
    with tf.io.gfile.GFile(config_file) as f:
      return json.loads(f.read())
  except (OSError, json.JSONDecodeError) as e:
    raise ModelDirError(f"cannot read {config_file}: {e}") from e


def resolve_checkpoint(model_dir, which):
  """The checkpoint prefix `which` names: best (falling back to the latest
  before the first evaluation), latest, averaged, or a path prefix."""
  if which in CHECKPOINT_FOLDERS:
    found = tf.train.latest_checkpoint(path(model_dir,
                                            CHECKPOINT_FOLDERS[which]))
    if found is None and which == "best":
      found = tf.train.latest_checkpoint(path(model_dir, CHECKPOINTS))
    if found is None:
      raise ModelDirError(f"{model_dir} has no {which} checkpoint yet")
    return found
  if not tf.io.gfile.exists(which + ".index"):
    raise ModelDirError(f"checkpoint {which} not found")
  return which


def checkpoint_metrics(model_dir, which="best"):
  """The dev metrics saved next to the best or averaged checkpoint, or None."""
  folder = CHECKPOINT_FOLDERS.get(which, BEST)
  metrics_file = path(model_dir, folder, METRICS)
  if not tf.io.gfile.exists(metrics_file):
    return None
  with tf.io.gfile.GFile(metrics_file) as f:
    metrics = json.loads(f.read())
  return {k: v for k, v in metrics.items() if k != "per_class"}
