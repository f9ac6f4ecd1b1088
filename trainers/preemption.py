"""Preemption: a SIGTERM'd run saves a checkpoint at a step every worker agrees on.

Wraps tf.distribute's PreemptionCheckpointHandler. When any worker (or the
only process) gets SIGTERM, as Kubernetes, Slurm and preemptible VMs send
before they stop a job, every worker finishes the same step, saves
ckpt-<step> through the run's CheckpointManager, and exits with
PREEMPTED_EXIT_CODE; rerunning the same command resumes from that step. A
kill -9 needs no handler: the run resumes from its last periodic checkpoint.
"""

import contextlib
import signal
import sys

import tensorflow as tf
from absl import logging

# What the handler exits with after its checkpoint (TF's own default, "restart
# me"); a cluster manager's restart policy should treat it as retryable.
PREEMPTED_EXIT_CODE = 42


class PreemptionGuard:
  """save_if_preempted(step) after each step; a no-op without a handler."""

  def __init__(self, handler):
    self._handler = handler

  def save_if_preempted(self, step):
    if self._handler is not None:
      self._handler.save_checkpoint_if_preempted(checkpoint_number=step)


@contextlib.contextmanager
def preemption_guard(strategy, manager, before_exit):
  """Yields a PreemptionGuard saving through `manager`; `before_exit()` runs
  after the preemption checkpoint, then the process exits.

  The handler restores manager's latest checkpoint when it is created, so the
  caller restores (and reads the step) first. TPUStrategy has no handler here:
  Cloud TPU VMs report maintenance events the handler does not watch on GCE.
  The process's previous SIGTERM handler is put back on the way out.
  """
  if isinstance(strategy, tf.distribute.TPUStrategy):
    yield PreemptionGuard(None)
    return

  def exit_after_checkpoint():
    before_exit()
    logging.warning("Preempted: checkpoint saved; rerun the same command to "
                    "resume. Exiting with code %d.", PREEMPTED_EXIT_CODE)
    sys.exit(PREEMPTED_EXIT_CODE)

  previous = signal.getsignal(signal.SIGTERM)
  handler = tf.distribute.experimental.PreemptionCheckpointHandler(
      getattr(strategy, "cluster_resolver", None), manager,
      termination_config=tf.distribute.experimental.TerminationConfig(
          exit_fn=exit_after_checkpoint))
  try:
    yield PreemptionGuard(handler)
  finally:
    signal.signal(signal.SIGTERM, previous)
