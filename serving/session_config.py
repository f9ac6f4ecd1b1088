"""The tf.compat.v1.ConfigProto every loaded version's Session gets, as TF Serving
builds it (server.cc) from its flags.

--tensorflow_session_config_file (a ConfigProto text proto) is read first;
--per_process_gpu_memory_fraction always sets gpu_options; then either
--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism (when
either is set) or --tensorflow_session_parallelism (both pools) set the thread
counts, over whatever the file says (as in TF Serving, whose server.cc always
writes them; 0 leaves TensorFlow to size the pool). Setting all three is
refused, as TF Serving refuses it.
"""

import tensorflow as tf

from serving import config as config_lib


def build(config_file="", session_parallelism=0, intra_op_parallelism=0,
          inter_op_parallelism=0, per_process_gpu_memory_fraction=0.0):
  """ConfigProto for the Sessions, or None when every setting is TF's default."""
  if intra_op_parallelism > 0 and inter_op_parallelism > 0 and session_parallelism > 0:
    raise config_lib.ConfigError(
        "Either configure --tensorflow_session_parallelism or "
        "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
        "separately. You cannot configure all.")
  if not 0.0 <= per_process_gpu_memory_fraction <= 1.0:
    raise config_lib.ConfigError(
        "--per_process_gpu_memory_fraction must be between 0.0 and 1.0, got "
        f"{per_process_gpu_memory_fraction}")
  config = tf.compat.v1.ConfigProto()
  if config_file:
    config_lib.parse_text_proto(config_file, config)
  if per_process_gpu_memory_fraction:
    config.gpu_options.per_process_gpu_memory_fraction = per_process_gpu_memory_fraction
  if intra_op_parallelism > 0 or inter_op_parallelism > 0:
    config.intra_op_parallelism_threads = intra_op_parallelism
    config.inter_op_parallelism_threads = inter_op_parallelism
  else:
    config.intra_op_parallelism_threads = session_parallelism
    config.inter_op_parallelism_threads = session_parallelism
  if config == tf.compat.v1.ConfigProto():
    return None
  return config
