"""Request logs: ModelConfig.logging_config as PredictionLog records in rotating TFRecords.

TF Serving's open-source build parses `logging_config` but has no log
collector to write it (tensorflow/serving#408, #2223). Here a model whose
config has

  logging_config {
    log_collector_config { filename_prefix: "/var/log/serving/sst2" }
    sampling_config { sampling_rate: 0.1 }
  }

gets a sampled share of its successful Predict, Classify, Regress and
MultiInference calls (gRPC and REST alike) written as
tensorflow.serving.PredictionLog: the request, the response and a LogMetadata
(model spec with version and signature, the sampling config, the SavedModel
tags, a timestamp), as TF Serving's RequestLogger builds them. Records go to
`<filename_prefix>.<UTC start time>.<pid>.<nnnnn>.tfrecord`; a file is closed
and the next one started once it reaches `max_file_bytes`, and with
`max_files` only the newest files a writer made are kept. Models with the same
prefix share one writer (as TF Serving's ServerRequestLogger shares collectors).
`python -m serving.warmup_from_log` turns these files into a warmup file.

A request pays for its record and no more: it serializes the record and
appends it to a list, in its own thread; a background thread writes the list
to the file and flushes it every `flush_seconds`, and adds the time requests
spent on their records to tfserving_request_log_request_seconds. When the
writer is `max_pending_bytes` behind, or the path cannot be written
(missing permission, full disk), records are dropped and counted
(tfserving_request_log_records{outcome=dropped}),
the problem is logged once and shown in the model's status (GetModelStatus and
REST status keep error_code OK: the model serves), and the writer tries a new
file after RETRY_SECONDS (doubling while it fails). A request never fails
because of its log.
"""

import collections
import dataclasses
import datetime
import logging
import os
import random
import threading
import time

import tensorflow as tf
from tensorflow_serving.apis import logging_pb2
from tensorflow_serving.apis import prediction_log_pb2

log = logging.getLogger("serving.request_log")

# The PredictionLog field of each API's record.
LOG_FIELDS = {
    "Predict": "predict_log",
    "Classify": "classify_log",
    "Regress": "regress_log",
    "MultiInference": "multi_inference_log",
}
SUFFIX = ".tfrecord"
RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0
_TFRECORD_FRAMING = 16  # length (8) + its CRC (4) + the data's CRC (4)


@dataclasses.dataclass(frozen=True)
class LogOptions:
  """How request log files rotate (each a --request_log_* flag of serving/server.py)."""
  max_file_bytes: int = 64 << 20  # Start a new file once one holds this much.
  max_files: int = 0  # Keep only this many newest files per prefix (0: keep all).
  flush_seconds: float = 0.5  # How often the pending records are written out.
  max_pending_bytes: int = 64 << 20  # Records waiting for that; more are dropped.


class LogWriter:
  """Writes serialized records for one filename_prefix to rotating TFRecord files.

  `write` runs in the request's thread and only appends the record to a list
  (bounded by `max_pending_bytes`; over it, records are dropped), so neither
  a slow disk nor a thread hand-off per record reaches the request. A
  background thread writes the list out and flushes every `flush_seconds`,
  and counts what reached the file.
  """

  def __init__(self, prefix, options=LogOptions(), on_outcome=None, on_seconds=None):
    self.prefix = prefix
    self._options = options
    self._on_outcome = on_outcome  # fn(model_name, "written" or "dropped", count)
    self._on_seconds = on_seconds  # fn(model_name, seconds requests spent on records)
    self._lock = threading.Lock()  # Guards the pending list and the counters below.
    self._pending = []  # (model name, record bytes) not yet written out.
    self._pending_bytes = 0
    self._behind = []  # Model names of records dropped because the list was full.
    self._request_seconds = collections.Counter()
    self._file_lock = threading.Lock()  # Guards the file and everything below.
    self._writer = None
    self._file_bytes = 0
    self._unflushed = []  # Model names of the records written since the last flush.
    self._lost = []  # ... of records in the buffer of a file that failed.
    self._files = []  # Files this writer made, oldest first.
    self._sequence = 0
    self._stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    self._retry_at = 0.0
    self._retry_seconds = RETRY_SECONDS
    self.error = ""  # '' while records are written; else what went wrong.
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._flush_loop, name="request-log-flush",
                                    daemon=True)
    self._thread.start()

  @property
  def files(self):
    return list(self._files)

  def write(self, model_name, data, started=None):
    """Takes one serialized record; False if it is dropped (the writer is
    `max_pending_bytes` behind). `started`, the time.perf_counter() at which the
    request began building the record, adds its cost to the request seconds."""
    with self._lock:
      ok = self._pending_bytes + len(data) <= self._options.max_pending_bytes
      if ok:
        self._pending.append((model_name, data))
        self._pending_bytes += len(data)
      else:
        self._behind.append(model_name)
      if started is not None:
        self._request_seconds[model_name] += time.perf_counter() - started
    return ok

  def flush(self):
    """Writes the pending records out and flushes the file. True if all of them
    are in the file; any that are not are counted as dropped."""
    with self._lock:
      batch, self._pending, self._pending_bytes = self._pending, [], 0
      behind, self._behind = self._behind, []
      seconds, self._request_seconds = self._request_seconds, collections.Counter()
    with self._file_lock:
      if behind:
        self._set_error(f"request log {self.prefix}: the writer is "
                        f"{self._options.max_pending_bytes} bytes behind; records "
                        "are dropped")
      dropped = list(behind)
      for model_name, data in batch:
        if self._append(data):
          self._unflushed.append(model_name)
        else:
          dropped.append(model_name)
      flushed = self._flush_file() if self._unflushed else not dropped
      written, self._unflushed = (self._unflushed, []) if flushed else ([], self._unflushed)
      dropped += self._lost + self._unflushed
      self._lost, self._unflushed = [], []
      if written and not dropped and self.error:
        log.info("request log %s: writing again to %s", self.prefix, self._files[-1])
        self.error = ""
    self._count(written, "written")
    self._count(dropped, "dropped")
    if self._on_seconds is not None:
      for model_name, value in seconds.items():
        self._on_seconds(model_name, value)
    return not dropped

  def close(self):
    """Writes what is pending, closes the file and stops the flush thread."""
    self._stop.set()
    self._thread.join()
    self.flush()
    with self._file_lock:
      self._close_file()

  def _flush_loop(self):
    while not self._stop.wait(self._options.flush_seconds):
      self.flush()

  # ---- under self._file_lock -----------------------------------------------------

  def _append(self, data):
    size = len(data) + _TFRECORD_FRAMING
    if (self._writer is not None and self._file_bytes
        and self._file_bytes + size > self._options.max_file_bytes):
      self._close_file()
    if self._writer is None and not self._open_file():
      return False
    try:
      self._writer.write(data)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(f"cannot write {self._files[-1]}", e)
      return False
    self._file_bytes += size
    return True

  def _flush_file(self):
    if self._writer is None:
      return False
    try:
      self._writer.flush()
    except Exception as e:  # pylint: disable=broad-except
      self._fail(f"cannot write {self._files[-1]}", e)
      return False
    self._retry_seconds = RETRY_SECONDS
    return True

  def _open_file(self):
    if time.monotonic() < self._retry_at:
      return False
    self._sequence += 1
    path = f"{self.prefix}.{self._stamp}.{os.getpid()}.{self._sequence:05d}{SUFFIX}"
    try:
      parent = os.path.dirname(path)
      if parent:
        tf.io.gfile.makedirs(parent)
      self._writer = tf.io.TFRecordWriter(path)
    except Exception as e:  # pylint: disable=broad-except
      self._writer = None
      self._fail(f"cannot create {path}", e)
      return False
    self._files.append(path)
    self._file_bytes = 0
    self._remove_old_files()
    return True

  def _close_file(self):
    writer, self._writer = self._writer, None
    if writer is None:
      return
    try:
      writer.close()
    except Exception as e:  # pylint: disable=broad-except
      self._fail(f"cannot close {self._files[-1]}", e)

  def _remove_old_files(self):
    keep = self._options.max_files
    while keep and len(self._files) > keep:
      old = self._files.pop(0)
      try:
        tf.io.gfile.remove(old)
      except Exception as e:  # pylint: disable=broad-except
        log.warning("request log %s: cannot remove %s: %s", self.prefix, old, e)

  def _fail(self, what, error):
    """Drops the current file; a record tries a new one after RETRY_SECONDS,
    doubling while it keeps failing (up to MAX_RETRY_SECONDS), so a full disk
    does not fill up with one empty file per try."""
    writer, self._writer = self._writer, None
    if writer is not None:
      try:
        writer.close()
      except Exception:  # pylint: disable=broad-except
        pass
    self._lost += self._unflushed
    self._unflushed = []
    self._retry_at = time.monotonic() + self._retry_seconds
    self._retry_seconds = min(2 * self._retry_seconds, MAX_RETRY_SECONDS)
    message = getattr(error, "message", None) or str(error)
    self._set_error(f"request log {self.prefix}: {what}: {type(error).__name__}: "
                    f"{message}; records are dropped until it can be written")

  def _set_error(self, message):
    if message != self.error:
      log.error("%s", message)
    self.error = message

  def _count(self, model_names, outcome):
    if self._on_outcome is not None:
      for name, count in collections.Counter(model_names).items():
        self._on_outcome(name, outcome, count)


class RequestLogger:
  """One model's sampling and record building, over a shared LogWriter.

  A record is assembled from serialized parts (a message field is its tag,
  its length and the message's bytes, and two serialized messages concatenated
  are their merge), so the request and response are serialized once and never
  copied, and the LogMetadata fields that do not change are serialized once.
  """

  def __init__(self, logging_config, writer, saved_model_tags=(), rng=None):
    self.sampling_config = logging_config.sampling_config
    self.rate = self.sampling_config.sampling_rate
    self.writer = writer
    self._random = rng or random.Random()
    fixed = logging_pb2.LogMetadata(saved_model_tags=list(saved_model_tags))
    fixed.sampling_config.CopyFrom(self.sampling_config)
    self._fixed_metadata = fixed.SerializeToString()

  def sample(self):
    """True for a `sampling_rate` share of the calls (TF Serving's uniform sampler)."""
    return self.rate >= 1.0 or (self.rate > 0 and self._random.random() < self.rate)

  def log(self, api, request, response, model_name, version):
    if not self.sample():
      return
    started = time.perf_counter()
    metadata = logging_pb2.LogMetadata(timestamp_secs=int(time.time()))
    spec = _response_spec(api, response)
    if spec is not None:
      metadata.model_spec.CopyFrom(spec)
    metadata.model_spec.name = model_name
    metadata.model_spec.version.value = version
    entry = (_field(_REQUEST_FIELD, request.SerializeToString())
             + _field(_RESPONSE_FIELD, response.SerializeToString()))
    data = (_field(_METADATA_FIELD, self._fixed_metadata + metadata.SerializeToString())
            + _field(_LOG_FIELD_NUMBERS[api], entry))
    self.writer.write(model_name, data, started)


def _response_spec(api, response):
  if api == "MultiInference":
    return response.results[0].model_spec if response.results else None
  return response.model_spec


def _varint(value):
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(number, payload):
  """A serialized length-delimited (message) field."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_FIELDS = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name
_METADATA_FIELD = _FIELDS["log_metadata"].number
_LOG_FIELD_NUMBERS = {api: _FIELDS[name].number for api, name in LOG_FIELDS.items()}
# request = 1 and response = 2 in PredictLog, ClassifyLog, RegressLog, MultiInferenceLog.
_REQUEST_FIELD, _RESPONSE_FIELD = 1, 2
assert all(_FIELDS[name].message_type.fields_by_name["request"].number == _REQUEST_FIELD
           and _FIELDS[name].message_type.fields_by_name["response"].number == _RESPONSE_FIELD
           for name in LOG_FIELDS.values())


class RequestLogs:
  """The server's request loggers, one per model with a logging_config, and their
  writers, one per filename_prefix. Thread-safe; `configure` follows config reloads."""

  def __init__(self, options=LogOptions(), saved_model_tags=(), metrics=None):
    self._options = options
    self._tags = tuple(saved_model_tags)
    self._metrics = metrics
    self._lock = threading.Lock()
    self._loggers = {}  # model name -> RequestLogger
    self._writers = {}  # filename_prefix -> LogWriter

  def configure(self, logging_configs):
    """logging_configs: {model name: LoggingConfig}. Writers of prefixes no model
    uses any more are closed."""
    with self._lock:
      loggers, writers = {}, {}
      for name, config in logging_configs.items():
        prefix = config.log_collector_config.filename_prefix
        if not prefix:
          continue
        writer = writers.get(prefix) or self._writers.get(prefix)
        if writer is None:
          writer = LogWriter(prefix, self._options, self._record_outcome,
                             self._record_seconds)
        writers[prefix] = writer
        old = self._loggers.get(name)
        if old is not None and old.writer is writer and old.sampling_config == \
            config.sampling_config:
          loggers[name] = old
        else:
          loggers[name] = RequestLogger(config, writer, self._tags)
      retired = [w for p, w in self._writers.items() if p not in writers]
      self._loggers, self._writers = loggers, writers
    for writer in retired:
      writer.close()

  def log(self, api, request, response, model_name, version):
    """Logs one successful call if its model logs (never raises)."""
    logger = self._loggers.get(model_name)
    if logger is None:
      return
    try:
      logger.log(api, request, response, model_name, version)
    except Exception:  # pylint: disable=broad-except
      log.exception("request log of %s failed", model_name)

  def problem(self, model_name):
    """What keeps the model's records from its log ('' if nothing)."""
    logger = self._loggers.get(model_name)
    return logger.writer.error if logger is not None else ""

  def writer(self, model_name):
    logger = self._loggers.get(model_name)
    return logger.writer if logger is not None else None

  def close(self):
    with self._lock:
      writers, self._writers, self._loggers = list(self._writers.values()), {}, {}
    for writer in writers:
      writer.close()

  def _record_outcome(self, model_name, outcome, count):
    if self._metrics is not None:
      self._metrics.record_request_log(model_name, outcome, count)

  def _record_seconds(self, model_name, seconds):
    if self._metrics is not None:
      self._metrics.record_request_log_seconds(model_name, seconds)
