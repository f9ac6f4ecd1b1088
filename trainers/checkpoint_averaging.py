"""Checkpoint averaging: the mean of the model weights in the last N checkpoints.

Averaging the last few checkpoints of a run (Vaswani et al., 2017; fairseq's
average_checkpoints) smooths the noise of the final updates and usually adds
a little BLEU for free. The result is written as a model-only checkpoint in
model_dir/averaged/ (with metrics.json), which export can take with
checkpoint="averaged".
"""

import os

import tensorflow as tf
from absl import logging

from trainers.config import write_json
from trainers.errors import UserError
from zoo import model_dir as layout


def average_last_checkpoints(model, checkpoint_dir, count):
  """Loads the mean of the last `count` checkpoints into `model`; returns paths."""
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  paths = list(state.all_model_checkpoint_paths)[-count:] if state else []
  if len(paths) < count:
    raise UserError(f"--average_checkpoints={count} but {checkpoint_dir} "
                    f"holds {len(paths)} checkpoints (raise --max_checkpoints)")
  variables = model.variables
  sums = [tf.zeros_like(v) for v in variables]
  reader = tf.train.Checkpoint(model=model)
  for path in paths:
    reader.restore(path).expect_partial().assert_existing_objects_matched()
    sums = [s + tf.cast(v, s.dtype) for s, v in zip(sums, variables)]
  for variable, total in zip(variables, sums):
    variable.assign(total / len(paths))
  return paths


def write_averaged(model, model_dir, step, metrics, paths):
  """Saves the averaged model and its metrics under model_dir/averaged/."""
  directory = layout.path(model_dir, layout.AVERAGED)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                       directory, max_to_keep=1)
  manager.save(checkpoint_number=step)
  write_json(layout.path(directory, layout.METRICS),
             dict(metrics, step=step, averaged=[os.path.basename(p)
                                                for p in paths]))
  logging.info("Averaged %d checkpoints into %s", len(paths), directory)
