"""Prometheus metrics: requests, latency, batch sizes, model load state and load time,
request log records.

Each server owns its own CollectorRegistry (several servers can live in one
process, as in the tests). `render()` gives the text exposition the REST port
serves at the MonitoringConfig's path (TF Serving: /monitoring/prometheus/metrics).
"""

import prometheus_client
from tensorflow_serving.apis import get_model_status_pb2

_STATES = get_model_status_pb2.ModelVersionStatus.State
# Latency buckets in seconds, 100us .. ~100s.
_LATENCY_BUCKETS = tuple(1e-4 * 2 ** i for i in range(21))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
  """The server's metric families, registered in a private registry."""

  def __init__(self):
    self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
    reg = self.registry
    self.request_count = prometheus_client.Counter(
        "tfserving_request_count", "Requests by model, API, signature and status.",
        ["model_name", "api", "signature_name", "status", "entrypoint"], registry=reg)
    self.request_latency = prometheus_client.Histogram(
        "tfserving_request_latency_seconds",
        "Request wall time by model, API, signature and status.",
        ["model_name", "api", "signature_name", "status", "entrypoint"],
        buckets=_LATENCY_BUCKETS, registry=reg)
    self.batch_size = prometheus_client.Histogram(
        "tfserving_batch_size", "Examples per batched Session run.", ["model_name"],
        buckets=_BATCH_BUCKETS, registry=reg)
    self.padded_batch_size = prometheus_client.Histogram(
        "tfserving_padded_batch_size", "Batch size after padding to allowed_batch_sizes.",
        ["model_name"], buckets=_BATCH_BUCKETS, registry=reg)
    self.model_state = prometheus_client.Gauge(
        "tfserving_model_version_state",
        "1 for the state each model version is in (START, LOADING, AVAILABLE, "
        "UNLOADING, END).", ["model_name", "version", "state"], registry=reg)
    self.load_latency = prometheus_client.Histogram(
        "tfserving_model_load_latency_seconds", "Time to load and warm up a version.",
        ["model_name", "status"], buckets=_LATENCY_BUCKETS, registry=reg)
    self.request_log_records = prometheus_client.Counter(
        "tfserving_request_log_records",
        "Request log records (ModelConfig.logging_config) by model and outcome: "
        "written, or dropped (the log path cannot be written, or the writer is behind).",
        ["model_name", "outcome"], registry=reg)
    self.request_log_seconds = prometheus_client.Counter(
        "tfserving_request_log_request_seconds",
        "Time requests spent building and writing their request log records.",
        ["model_name"], registry=reg)

  def record_request(self, model_name, api, signature_name, status, entrypoint, seconds):
    labels = (model_name, api, signature_name, status, entrypoint)
    self.request_count.labels(*labels).inc()
    self.request_latency.labels(*labels).observe(seconds)

  def record_batch(self, model_name, size, padded):
    self.batch_size.labels(model_name).observe(size)
    self.padded_batch_size.labels(model_name).observe(padded)

  def record_load(self, model_name, seconds, ok):
    self.load_latency.labels(model_name, "OK" if ok else "ERROR").observe(seconds)

  def record_request_log(self, model_name, outcome, count=1):
    self.request_log_records.labels(model_name, outcome).inc(count)

  def record_request_log_seconds(self, model_name, seconds):
    self.request_log_seconds.labels(model_name).inc(seconds)

  def set_model_states(self, states):
    """states: {model: {version: ModelVersionStatus.State}}."""
    self.model_state.clear()
    for model_name, versions in states.items():
      for version, state in versions.items():
        for name, number in _STATES.items():
          if name == "UNKNOWN":
            continue
          self.model_state.labels(model_name, str(version), name).set(
              1 if number == state else 0)

  def render(self):
    """(body bytes, content type) of the Prometheus text exposition."""
    return (prometheus_client.generate_latest(self.registry),
            prometheus_client.CONTENT_TYPE_LATEST)
