"""Builds the tf.distribute strategy named by --distribution_strategy.

Every check that can fail does so before any work starts, with a message that
says what to change.
"""

import json
import os

import tensorflow as tf

from trainers.errors import UserError


def _logical_devices(kind):
  return tf.config.list_logical_devices(kind)


def _physical_gpu_count():
  # Physical, not logical: listing logical devices initialises the TF runtime,
  # after which MultiWorkerMirroredStrategy can no longer configure collectives.
  return len(tf.config.list_physical_devices("GPU"))


def validate_tf_config():
  """Parses TF_CONFIG for multi-worker training; UserError if malformed."""
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    raise UserError("multi_worker_mirrored needs the TF_CONFIG environment "
                    "variable (cluster and task); see BUILD_NOTES.md")
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise UserError(f"TF_CONFIG is not valid JSON: {e}")
  cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
  task = tf_config.get("task") if isinstance(tf_config, dict) else None
  if not isinstance(cluster, dict) or not cluster:
    raise UserError('TF_CONFIG needs a "cluster" object, e.g. '
                    '{"worker": ["host1:port", "host2:port"]}')
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise UserError('TF_CONFIG needs a "task" object with "type" and "index"')
  members = cluster.get(task["type"])
  if not isinstance(members, list) or not (
      isinstance(task["index"], int) and 0 <= task["index"] < len(members)):
    raise UserError(f"TF_CONFIG task {task} is not in its cluster {cluster}")
  return tf_config


PARAMETER_SERVER_REFUSAL = (
    "--distribution_strategy=parameter_server is not supported, on purpose: "
    "these models fit on every accelerator, where synchronous all-reduce "
    "(mirrored, multi_worker_mirrored) is faster and trains the same model as "
    "one device does; parameter servers pay off for embedding tables too big "
    "for one device or many unreliable CPU workers, train asynchronously (the "
    "result depends on timing), and Keras 3 has no ParameterServerStrategy "
    "support. Use multi_worker_mirrored across hosts (BUILD_NOTES.md).")


def make_strategy(name, num_gpus=0, tpu="", collective="auto"):
  """Returns a tf.distribute.Strategy for `name` (see trainers.config.STRATEGIES)."""
  num_visible = _physical_gpu_count()
  if num_gpus < 0:
    raise UserError(f"--num_gpus must be >= 0, got {num_gpus}")
  if num_gpus > num_visible:
    raise UserError(f"--num_gpus={num_gpus} but this machine has {num_visible} "
                    "visible GPU(s)")
  if name == "parameter_server":
    raise UserError(PARAMETER_SERVER_REFUSAL)
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "multi_worker_mirrored":
    validate_tf_config()
    implementation = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    }.get(collective)
    if implementation is None:
      raise UserError(f"Unknown --collective {collective!r}")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementation)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)
  gpus = _logical_devices("GPU")
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    if gpus:
      devices = [d.name for d in gpus[: num_gpus or len(gpus)]]
    else:  # CPU only: every logical CPU device (tests configure two)
      devices = [d.name for d in _logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "tpu":
    if not tpu:
      raise UserError("the tpu strategy needs --tpu (a TPU name or grpc:// "
                      "address; 'local' on a TPU VM)")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise UserError(f"Unknown distribution strategy {name!r}")


def num_workers(strategy):
  """Worker processes of a MultiWorkerMirroredStrategy cluster; 1 otherwise."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 1
  cluster = resolver.cluster_spec().as_dict()
  return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def is_chief(strategy):
  """True on the worker that writes summaries, checkpoints' originals and exports."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type is None or task_type == "chief" or (
      task_type == "worker" and task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


def check_workers_agree(strategy, value, what):
  """UserError on every worker unless all pass the same `value` (< 2**20).

  A no-op with a single worker. With several it is one small all-reduce (every
  worker must call it at the same point). tf.distribute reduces only by sum,
  so it sums v and v*v over the n replicas: all v are equal exactly when
  n * sum(v*v) == sum(v)**2, and every worker sees the same sums.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return

  @tf.function
  def sums():
    local = strategy.run(lambda: tf.constant([value, value * value], tf.int64))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None)

  total, squares = (int(x) for x in sums())
  if strategy.num_replicas_in_sync * squares != total * total:
    raise UserError(f"the workers disagree on {what}")
