"""Assembles the server: model manager, gRPC services, REST API, metrics.

`ModelServer(ServerOptions(...)).start()` serves until `stop()`; the absl entry
point (`serving/server.py`) only turns flags into `ServerOptions`.
"""

import dataclasses
import logging
import os
import threading

import grpc

from serving import config as config_lib
from serving import generation_api as generation_api_lib
from serving import generation_metrics
from serving import generation_rest
from serving import grpc_service
from serving import http_server
from serving import inference
from serving import metrics as metrics_lib
from serving import model_manager
from serving import openai_api
from serving import request_log
from serving import rest_api
from serving import session_config as session_config_lib
from serving import tls as tls_lib
from serving import warmup

log = logging.getLogger("serving.server")
INT32_MAX = 2**31 - 1


def _schedulable_cpus():
  """TF's port::NumSchedulableCPUs: the CPUs this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # pragma: no cover (not Linux)
    return os.cpu_count() or 1


# TF Serving's defaults for --grpc_max_threads and --rest_api_num_threads.
DEFAULT_THREADS = 4 * _schedulable_cpus()


@dataclasses.dataclass
class ServerOptions:
  """What tensorflow_model_server's flags configure (same names where they exist)."""
  port: int = 8500
  rest_api_port: int = 0
  host: str = "127.0.0.1"
  model_name: str = "default"
  model_base_path: str = ""
  model_config_file: str = ""
  model_config_file_poll_wait_seconds: int = 0
  file_system_poll_wait_seconds: float = 1
  enable_batching: bool = False
  batching_parameters_file: str = ""
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 0  # As TF Serving: used only if > 0.
  monitoring_config_file: str = ""
  grpc_max_message_size: int = INT32_MAX
  grpc_channel_arguments: str = ""
  grpc_max_threads: int = DEFAULT_THREADS
  rest_api_num_threads: int = DEFAULT_THREADS
  rest_api_timeout_in_ms: int = 30000
  saved_model_tags: str = "serve"
  num_load_threads: int = 0  # 0 and 1 alike: one load at a time.
  num_unload_threads: int = 0  # 0 and 1 alike: one unload at a time.
  max_num_load_retries: int = 5
  load_retry_interval_micros: int = 60 * 1000 * 1000
  tensorflow_intra_op_parallelism: int = 0
  tensorflow_inter_op_parallelism: int = 0
  allow_version_labels_for_unavailable_models: bool = False
  enable_serialization_as_tensor_content: bool = False
  ssl_config_file: str = ""
  grpc_socket_path: str = ""
  use_alts_credentials: bool = False
  enable_grpc_healthcheck_service: bool = False
  enable_signature_method_name_check: bool = False
  enable_per_model_batching_parameters: bool = False
  tensorflow_session_parallelism: int = 0
  tensorflow_session_config_file: str = ""
  per_process_gpu_memory_fraction: float = 0.0
  # Ours, beyond TF Serving: bounds on what one client can make the server hold.
  max_request_rows: int = 100_000
  rest_api_max_body_bytes: int = http_server.HttpOptions.max_body_bytes
  rest_api_header_timeout_seconds: float = http_server.HttpOptions.header_timeout_seconds
  rest_api_body_timeout_seconds: float = http_server.HttpOptions.body_timeout_seconds
  rest_api_max_connections: int = http_server.HttpOptions.max_connections
  rest_api_enable_cors_support: bool = False
  # Ours: rotation of the request logs that ModelConfig.logging_config asks for.
  request_log_max_file_bytes: int = request_log.LogOptions.max_file_bytes
  request_log_max_files: int = request_log.LogOptions.max_files
  # Ours: streaming generation (serving/engine.py) for models whose export has
  # the engine signatures: decode slots per model version (0: no engine) and
  # how many requests may wait for a slot (more: RESOURCE_EXHAUSTED / 429).
  generation_slots: int = 8
  generation_max_queue: int = 128
  generation_tokens_per_step: int = 1  # tokens each slot gets per engine step


def parse_channel_arguments(text):
  """'key=value,key=value' (TF Serving's --grpc_channel_arguments) -> option tuples."""
  options = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise config_lib.ConfigError(f"bad --grpc_channel_arguments entry {item!r}")
    options.append((key.strip(), int(value) if value.strip().lstrip("-").isdigit()
                    else value.strip()))
  return options


def build_server_config(options):
  if options.model_config_file:
    return config_lib.read_model_server_config(options.model_config_file)
  if not options.model_base_path:
    raise config_lib.ConfigError(
        "Both --model_base_path and --model_config_file are empty; set one of them")
  return config_lib.single_model_config(options.model_name, options.model_base_path)


class ModelServer:
  """A running server. Ports are known after `start()` (0 picks a free one)."""

  def __init__(self, options):
    if options.batching_parameters_file and not options.enable_batching:
      raise config_lib.ConfigError(
          "--batching_parameters_file is set without setting --enable_batching to true.")
    self.options = options
    self.metrics = metrics_lib.Metrics()
    self.metrics_path = config_lib.read_prometheus_path(options.monitoring_config_file)
    self.tls = tls_lib.read_ssl_config(options.ssl_config_file)
    batching = (config_lib.read_batching_options(options.batching_parameters_file)
                if options.enable_batching else None)
    if batching is not None and options.grpc_max_threads < batching.max_batch_size:
      # Each gRPC request holds a server thread while it waits in the batch
      # queue, so at most grpc_max_threads requests can be in one batch.
      log.warning("--grpc_max_threads=%d is below the batching max_batch_size "
                  "of %d: gRPC batches hold at most %d requests (one server "
                  "thread each); raise --grpc_max_threads to fill them",
                  options.grpc_max_threads, batching.max_batch_size,
                  options.grpc_max_threads)
    if options.enable_per_model_batching_parameters and not options.enable_batching:
      log.warning("--enable_per_model_batching_parameters has no effect without "
                  "--enable_batching (as in TF Serving)")
    session_config = session_config_lib.build(
        options.tensorflow_session_config_file, options.tensorflow_session_parallelism,
        options.tensorflow_intra_op_parallelism, options.tensorflow_inter_op_parallelism,
        options.per_process_gpu_memory_fraction)
    manager_options = model_manager.ManagerOptions(
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        saved_model_tags=tuple(t for t in options.saved_model_tags.split(",") if t),
        num_load_threads=options.num_load_threads,
        num_unload_threads=options.num_unload_threads,
        max_num_load_retries=options.max_num_load_retries,
        load_retry_interval_seconds=max(0, options.load_retry_interval_micros) / 1e6,
        enable_model_warmup=options.enable_model_warmup,
        batching=batching,
        per_model_batching=options.enable_per_model_batching_parameters,
        session_config=session_config,
        allow_version_labels_for_unavailable_models=(
            options.allow_version_labels_for_unavailable_models),
        generation_slots=options.generation_slots,
        generation_max_queue=options.generation_max_queue,
        generation_tokens_per_step=options.generation_tokens_per_step)
    iterations = max(1, options.num_request_iterations_for_warmup)
    self.request_logs = request_log.RequestLogs(
        request_log.LogOptions(max_file_bytes=options.request_log_max_file_bytes,
                               max_files=options.request_log_max_files),
        manager_options.saved_model_tags, self.metrics)
    self.manager = model_manager.ModelManager(
        build_server_config(options), manager_options,
        warmup_fn=lambda s: warmup.run_warmup(s, iterations), metrics=self.metrics,
        status_note=self.request_logs.problem,
        generation_metrics=generation_metrics.GenerationFamilies(
            self.metrics.registry))
    self.generation_api = generation_api_lib.GenerationApi(self.manager)
    self.api = inference.PredictionApi(
        self.manager, self.metrics, options.enable_serialization_as_tensor_content,
        max_rows=options.max_request_rows, request_logs=self.request_logs,
        check_method=options.enable_signature_method_name_check)
    channel_options = [
        ("grpc.max_receive_message_length", options.grpc_max_message_size),
        ("grpc.max_send_message_length", options.grpc_max_message_size),
    ] + parse_channel_arguments(options.grpc_channel_arguments)
    # As TF Serving: with a UNIX socket, --port=0 means no TCP port (without
    # one, 0 is ours: a free port).
    tcp_port = None if options.grpc_socket_path and options.port == 0 else options.port
    self._grpc_server, self.grpc_port, self._health = grpc_service.build_server(
        self.api, self.manager, options.host, tcp_port, options.grpc_max_threads,
        channel_options, self._grpc_credentials(), options.grpc_socket_path,
        self.generation_api)
    self._health_names = (grpc_service.TF_SERVING_HEALTH_NAMES
                          if options.enable_grpc_healthcheck_service else ())
    self._rest = None
    self.rest_port = None
    self._config_poll_stop = threading.Event()
    self._config_poll_thread = None
    self._stopped = threading.Event()

  def _grpc_credentials(self):
    if self.options.use_alts_credentials:
      if self.tls:
        raise config_lib.ConfigError(
            "Either --use_alts_credentials must be false or --ssl_config_file must be empty.")
      return grpc.alts_server_credentials()  # Google ALTS, as TF Serving's.
    return self.tls.grpc_credentials() if self.tls else None

  def start(self):
    self.manager.add_listener(self._on_models_changed)
    self._on_models_changed()
    self.manager.start()
    self._grpc_server.start()
    if self.grpc_port is not None:
      log.info("Running gRPC ModelServer at %s:%d ...", self.options.host, self.grpc_port)
    if self.options.grpc_socket_path:
      log.info("Running gRPC ModelServer at UNIX socket %s ...", self.options.grpc_socket_path)
    if self.options.rest_api_port:
      handler = rest_api.RestHandler(self.api, self.manager, self.options.rest_api_timeout_in_ms)
      self._rest = http_server.RestServer(
          handler, self.options.host, self._rest_port_to_bind(), self.metrics,
          self.metrics_path, self._http_options(),
          ssl_context=self.tls.ssl_context() if self.tls else None,
          routes=(generation_rest.StreamRoute(
                      self.generation_api, self.options.rest_api_timeout_in_ms),
                  openai_api.OpenAiRoutes(
                      self.generation_api, self.manager,
                      self.options.rest_api_timeout_in_ms)))
      self.rest_port = self._rest.start()
      log.info("Exporting HTTP%s/REST API at:%s:%d ...", "S" if self.tls else "",
               self.options.host, self.rest_port)
    if self.options.model_config_file and self.options.model_config_file_poll_wait_seconds > 0:
      self._config_poll_thread = threading.Thread(
          target=self._poll_config_file, name="config-poll", daemon=True)
      self._config_poll_thread.start()
    return self

  def _http_options(self):
    o = self.options
    return http_server.HttpOptions(
        max_body_bytes=o.rest_api_max_body_bytes,
        header_timeout_seconds=o.rest_api_header_timeout_seconds,
        body_timeout_seconds=o.rest_api_body_timeout_seconds,
        max_connections=o.rest_api_max_connections,
        num_threads=o.rest_api_num_threads,
        enable_cors=o.rest_api_enable_cors_support)

  def _rest_port_to_bind(self):
    # --rest_api_port=-1 is our own "pick a free port" (0 means off, as in TF Serving).
    return 0 if self.options.rest_api_port < 0 else self.options.rest_api_port

  def _on_models_changed(self):
    self.request_logs.configure(self.manager.logging_configs())
    grpc_service.update_health(self._health, self.manager, self._health_names)
    self.metrics.set_model_states(self.manager.version_states())

  def _poll_config_file(self):
    path = self.options.model_config_file
    last = _mtime(path)
    while not self._config_poll_stop.wait(self.options.model_config_file_poll_wait_seconds):
      current = _mtime(path)
      if current == last:
        continue
      last = current
      try:
        self.manager.reload_config(config_lib.read_model_server_config(path))
        log.info("Reloaded model config from %s", path)
      except Exception as e:  # pylint: disable=broad-except
        log.error("Reloading model config from %s failed: %s", path, e)

  def wait(self, timeout=None):
    """Blocks until stop() is called (or timeout); True if stopped."""
    return self._stopped.wait(timeout)

  def stop(self, grace=2.0):
    self._config_poll_stop.set()
    if self._config_poll_thread is not None:
      self._config_poll_thread.join()
    if self._rest is not None:
      self._rest.stop()
    self._grpc_server.stop(grace).wait()
    self.manager.stop()
    self.request_logs.close()
    self._stopped.set()


def _mtime(path):
  try:
    return os.stat(path).st_mtime_ns
  except OSError:
    return None
