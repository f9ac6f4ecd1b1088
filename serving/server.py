"""`python -m serving.server`: tensorflow_model_server's flags, our Python server.

Every flag of TF Serving's main.cc is accepted with TF Serving's default
(`--host`, ours, stays 127.0.0.1); the few that ask for machinery this server
lacks are refused with the reason (serving/flag_compat.py). BUILD_NOTES.md
has the table.

Example:
  python -m serving.server --port=8500 --rest_api_port=8501 \
      --model_name=sst2 --model_base_path=/models/sst2
"""

import logging
import signal
import sys

from absl import app
from absl import flags

from serving import runtime_env

# Before the first import of tensorflow (serving.model_server imports it).
RUNTIME_ENV = runtime_env.apply_defaults()

from serving import config as config_lib  # noqa: E402
from serving import flag_compat  # noqa: E402
from serving import model_server  # noqa: E402
from serving import xla  # noqa: E402

_D = model_server.ServerOptions()
FLAGS = flags.FLAGS

flags.DEFINE_integer("port", _D.port,
                     "TCP port for the gRPC API. 0: no TCP port when --grpc_socket_path is "
                     "set (as in TF Serving), else ours: a free port.",
                     lower_bound=0, upper_bound=65535)
flags.DEFINE_string("grpc_socket_path", _D.grpc_socket_path,
                    "As TF Serving: also serve gRPC on this UNIX socket (relative or "
                    "absolute path), e.g. grpc.insecure_channel('unix:/tmp/tf.sock').")
flags.DEFINE_integer("rest_api_port", _D.rest_api_port,
                     "Port for the HTTP/REST API; 0 disables it (as in TF Serving), "
                     "-1 picks a free port.", lower_bound=-1, upper_bound=65535)
flags.DEFINE_string("host", _D.host,
                    "Ours: the address both APIs bind to. 127.0.0.1 by default, where TF "
                    "Serving binds every interface (0.0.0.0); pass --host=0.0.0.0 for that.")
flags.DEFINE_string("model_name", _D.model_name,
                    "Name of the model (ignored if --model_config_file is set).")
flags.DEFINE_string("model_base_path", _D.model_base_path,
                    "Path to the export (ignored if --model_config_file is set).")
flags.DEFINE_string("model_config_file", _D.model_config_file,
                    "ModelServerConfig text proto: several models, version policies, labels.")
flags.DEFINE_integer("model_config_file_poll_wait_seconds",
                     _D.model_config_file_poll_wait_seconds,
                     "Seconds between re-reads of --model_config_file (0: read once).",
                     lower_bound=0)
flags.DEFINE_float("file_system_poll_wait_seconds", _D.file_system_poll_wait_seconds,
                   "Seconds between polls of the base paths for new versions "
                   "(0: poll once at startup).", lower_bound=0)
flags.DEFINE_boolean("enable_batching", _D.enable_batching, "Batch concurrent requests.")
flags.DEFINE_string("batching_parameters_file", _D.batching_parameters_file,
                    "BatchingParameters text proto (needs --enable_batching).")
flags.DEFINE_boolean("enable_model_warmup", _D.enable_model_warmup,
                     "Replay assets.extra/tf_serving_warmup_requests before serving a version.")
flags.DEFINE_integer("num_request_iterations_for_warmup", _D.num_request_iterations_for_warmup,
                     "Times each warmup record is replayed (used only if > 0; else once).",
                     lower_bound=0)
flags.DEFINE_string("monitoring_config_file", _D.monitoring_config_file,
                    "MonitoringConfig text proto; enables Prometheus metrics on the REST port.")
flags.DEFINE_integer("grpc_max_message_size", _D.grpc_max_message_size,
                     "Largest gRPC message in bytes (REST bodies: --rest_api_max_body_bytes).",
                     lower_bound=1)
flags.DEFINE_string("grpc_channel_arguments", _D.grpc_channel_arguments,
                    "Comma-separated key=value gRPC channel arguments, as TF Serving's; "
                    "e.g. grpc.max_receive_message_length=1048576.")
flags.DEFINE_integer("grpc_max_threads", _D.grpc_max_threads,
                     "Threads serving gRPC requests (concurrent requests that can batch); "
                     "as TF Serving, 4 x the schedulable CPUs by default.", lower_bound=1)
flags.DEFINE_integer("rest_api_num_threads", _D.rest_api_num_threads,
                     "Threads running REST requests; as TF Serving, 4 x the schedulable "
                     "CPUs by default.", lower_bound=1)
flags.DEFINE_integer("rest_api_timeout_in_ms", _D.rest_api_timeout_in_ms,
                     "Timeout for a REST call (0: none).", lower_bound=0)
flags.DEFINE_string("saved_model_tags", _D.saved_model_tags,
                    "Comma-separated tags of the MetaGraph to load.")
flags.DEFINE_integer("num_load_threads", _D.num_load_threads,
                     "Threads loading versions in the background (0, TF Serving's default, "
                     "and 1: one load at a time).", lower_bound=0)
flags.DEFINE_integer("num_unload_threads", _D.num_unload_threads,
                     "Threads unloading versions (0, TF Serving's default, and 1: one "
                     "unload at a time).", lower_bound=0)
flags.DEFINE_integer("max_num_load_retries", _D.max_num_load_retries,
                     "Retries after a failed load (0: one attempt).", lower_bound=0)
flags.DEFINE_integer("load_retry_interval_micros", _D.load_retry_interval_micros,
                     "Microseconds between load retries (negative: no wait).")
flags.DEFINE_integer("tensorflow_session_parallelism", _D.tensorflow_session_parallelism,
                     "Threads of both TensorFlow pools (intra- and inter-op) when neither "
                     "--tensorflow_intra_op_parallelism nor --tensorflow_inter_op_parallelism "
                     "is set (0: TensorFlow's default).", lower_bound=0)
flags.DEFINE_string("tensorflow_session_config_file", _D.tensorflow_session_config_file,
                    "A tf.compat.v1.ConfigProto text proto for every Session; the thread "
                    "counts come from the parallelism flags, as in TF Serving.")
flags.DEFINE_float("per_process_gpu_memory_fraction", _D.per_process_gpu_memory_fraction,
                   "Fraction of each GPU's memory a Session may take (0: TensorFlow "
                   "chooses).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("tensorflow_intra_op_parallelism", _D.tensorflow_intra_op_parallelism,
                     "Threads inside one op (0: TensorFlow's default).", lower_bound=0)
flags.DEFINE_integer("tensorflow_inter_op_parallelism", _D.tensorflow_inter_op_parallelism,
                     "Ops run in parallel (0: TensorFlow's default).", lower_bound=0)
flags.DEFINE_boolean("allow_version_labels_for_unavailable_models",
                     _D.allow_version_labels_for_unavailable_models,
                     "Allow a config reload to label versions that are not loaded yet.")
flags.DEFINE_boolean("enable_serialization_as_tensor_content",
                     _D.enable_serialization_as_tensor_content,
                     "Write Predict outputs as tensor_content bytes instead of typed fields.")
flags.DEFINE_boolean("use_alts_credentials", _D.use_alts_credentials,
                     "As TF Serving: Google ALTS credentials on the gRPC port (works only "
                     "on Google Cloud); not with --ssl_config_file.")
flags.DEFINE_boolean("enable_grpc_healthcheck_service", _D.enable_grpc_healthcheck_service,
                     "As TF Serving: grpc.health.v1 reports 'ModelService' and "
                     "'PredictionService'. Ours beyond TF Serving: the health service is "
                     "always on, with '', the full service names and each model's name.")
flags.DEFINE_boolean("enable_signature_method_name_check",
                     _D.enable_signature_method_name_check,
                     "As TF Serving: Classify, Regress and MultiInference need a signature "
                     "of their method_name, Predict one of the three.")
flags.DEFINE_boolean("enable_per_model_batching_parameters",
                     _D.enable_per_model_batching_parameters,
                     "As TF Serving (with --enable_batching): a version's "
                     "batching_params.pbtxt replaces --batching_parameters_file but for "
                     "num_batch_threads; a version without one is not batched.")
flags.DEFINE_boolean("version", False, "Print the version and exit.")
flags.DEFINE_boolean("xla_cpu_compilation_enabled", False,
                     "As TF Serving: allow XLA:CPU JIT. Off (the default, with "
                     "--xla_gpu_compilation_enabled off), a jit_compile model fails its "
                     "first compilation with 'XLA compilation disabled'.")
flags.DEFINE_boolean("xla_gpu_compilation_enabled", False,
                     "As TF Serving: allow XLA JIT on CPU and GPU.")
flag_compat.define()
flags.DEFINE_string("ssl_config_file", _D.ssl_config_file,
                    "SSLConfig text proto (server_key, server_cert, custom_ca, "
                    "client_verify: PEM text, as TF Serving's): TLS on the gRPC port, "
                    "mutual TLS with client_verify; beyond TF Serving, the REST port "
                    "(and its metrics path) is HTTPS with the same config.")

# Ours, beyond TF Serving: what one client can make the server hold.
flags.DEFINE_integer("max_request_rows", _D.max_request_rows,
                     "Most rows (dimension 0 of an input, or tf.Examples) one request may "
                     "carry; more is INVALID_ARGUMENT before any work (0: no limit).",
                     lower_bound=0)
flags.DEFINE_integer("rest_api_max_body_bytes", _D.rest_api_max_body_bytes,
                     "Largest REST request body in bytes, also after gzip decompression; "
                     "a larger Content-Length is answered 413 at once.", lower_bound=1)
flags.DEFINE_float("rest_api_header_timeout_seconds", _D.rest_api_header_timeout_seconds,
                   "Seconds a REST connection has to send a request's headers, from its "
                   "opening or the end of its last response; an idle keep-alive connection "
                   "is closed after this long too.", lower_bound=0.001)
flags.DEFINE_float("rest_api_body_timeout_seconds", _D.rest_api_body_timeout_seconds,
                   "Seconds a REST request has to send its whole body (then 408 and the "
                   "connection is closed).", lower_bound=0.001)
flags.DEFINE_integer("rest_api_max_connections", _D.rest_api_max_connections,
                     "Most open REST connections; one more is answered 503 and closed.",
                     lower_bound=1)
flags.DEFINE_boolean("rest_api_enable_cors_support", _D.rest_api_enable_cors_support,
                     "As TF Serving: CORS headers (Access-Control-Allow-Origin: *) on every "
                     "REST response, and OPTIONS preflight requests answered.")
flags.DEFINE_integer("request_log_max_file_bytes", _D.request_log_max_file_bytes,
                     "Request logs (ModelConfig.logging_config): a log file is closed and "
                     "the next one started once it holds this many bytes.", lower_bound=1)
flags.DEFINE_integer("request_log_max_files", _D.request_log_max_files,
                     "Request logs: keep only this many newest files per filename_prefix "
                     "(0: keep all).", lower_bound=0)
flags.DEFINE_integer("generation_slots", _D.generation_slots,
                     "Ours: decode slots of the streaming generation engine each "
                     "model version with engine signatures gets (gRPC "
                     "GenerationService, REST :generate_stream, /v1/completions); "
                     "0: no engine.", lower_bound=0)
flags.DEFINE_integer("generation_max_queue", _D.generation_max_queue,
                     "Ours: generation requests that may wait for a slot; one more "
                     "is RESOURCE_EXHAUSTED (HTTP 429).", lower_bound=0)
flags.DEFINE_integer("generation_tokens_per_step", _D.generation_tokens_per_step,
                     "Ours: tokens every slot advances per engine step (one "
                     "engine_step call); more amortizes the call, fewer gives "
                     "finer streaming and sooner joins.", lower_bound=1)


def options_from_flags():
  names = [f.name for f in model_server.dataclasses.fields(model_server.ServerOptions)]
  return model_server.ServerOptions(**{name: FLAGS[name].value for name in names})


def version_text():
  """What --version prints (TF Serving's two lines, naming this server)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  try:
    api = metadata.version("tensorflow-serving-api")
  except metadata.PackageNotFoundError:  # pragma: no cover
    api = "unknown"
  return (f"TensorFlow ModelServer: {api} (this repository's Python server, serving/)\n"
          f"TensorFlow Library: {tf.__version__}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.version:
    print(version_text())
    return 0
  refused = flag_compat.refusals(
      {f.name: FLAGS[f.name].value for f in flag_compat.FLAGS_WITHOUT_MACHINERY},
      {name for name in FLAGS if FLAGS[name].present})
  if refused:
    for message in refused:
      print(f"serving.server: error: {message}", file=sys.stderr)
    return 1
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.info("TensorFlow runtime environment: %s", RUNTIME_ENV)
  try:
    if not (FLAGS.xla_cpu_compilation_enabled or FLAGS.xla_gpu_compilation_enabled):
      xla.disable_compilation()
    server = model_server.ModelServer(options_from_flags())
  except (config_lib.ConfigError, OSError) as e:
    print(f"serving.server: error: {e}", file=sys.stderr)
    return 1
  server.start()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: server.stop())
  while not server.wait(1.0):
    pass
  return 0


if __name__ == "__main__":
  app.run(main)
