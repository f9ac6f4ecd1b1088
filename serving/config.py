"""Config protos the server reads: ModelServerConfig, BatchingParameters, MonitoringConfig.

ModelServerConfig comes from tensorflow-serving-api. BatchingParameters
(session_bundle_config.proto) and MonitoringConfig (monitoring_config.proto)
are not shipped in the pip package, so they are declared here with TF Serving's
package, field names and numbers; text files written for tensorflow_model_server
parse unchanged.
"""

import dataclasses
import os

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2  # noqa: F401  (registers wrappers.proto)
from tensorflow_serving.config import model_server_config_pb2

_FILE_NAME = "serving/tf_serving_extra_config.proto"


def _build_messages():
  """Message classes for tensorflow.serving.{BatchingParameters,MonitoringConfig}."""
  pool = descriptor_pool.Default()
  try:
    pool.FindFileByName(_FILE_NAME)
  except KeyError:
    fdp = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def msg(name, fields):
      m = fdp.message_type.add(name=name)
      for field_name, number, ftype, label, type_name in fields:
        fd = m.field.add(name=field_name, number=number, type=ftype, label=label)
        if type_name:
          fd.type_name = type_name

    i64 = ".google.protobuf.Int64Value"
    msg("BatchingParameters", [
        ("max_batch_size", 1, f.TYPE_MESSAGE, opt, i64),
        ("batch_timeout_micros", 2, f.TYPE_MESSAGE, opt, i64),
        ("max_enqueued_batches", 3, f.TYPE_MESSAGE, opt, i64),
        ("num_batch_threads", 4, f.TYPE_MESSAGE, opt, i64),
        ("thread_pool_name", 5, f.TYPE_MESSAGE, opt, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, f.TYPE_INT64, rep, None),
        ("pad_variable_length_inputs", 7, f.TYPE_BOOL, opt, None),
        ("enable_large_batch_splitting", 8, f.TYPE_MESSAGE, opt,
         ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, f.TYPE_MESSAGE, opt, i64),
    ])
    msg("PrometheusConfig", [
        ("enable", 1, f.TYPE_BOOL, opt, None),
        ("path", 2, f.TYPE_STRING, opt, None),
    ])
    msg("MonitoringConfig", [
        ("prometheus_config", 1, f.TYPE_MESSAGE, opt, ".tensorflow.serving.PrometheusConfig"),
    ])
    pool.Add(fdp)
  get = lambda name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
  return get("BatchingParameters"), get("MonitoringConfig")


BatchingParameters, MonitoringConfig = _build_messages()

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
  """A config file is missing or does not parse."""


def parse_text_proto(path, message):
  """Parse the text-format proto file at `path` into `message` and return it."""
  try:
    with open(path, "r", encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise ConfigError(f"cannot read {path}: {e}") from None
  except UnicodeDecodeError as e:
    raise ConfigError(
        f"{path} is not a valid {message.DESCRIPTOR.name}: not UTF-8 text "
        f"(byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
  try:
    return text_format.Parse(text, message)
  except (text_format.ParseError, ValueError) as e:  # ValueError: e.g. bad \x escapes
    raise ConfigError(
        f"{path} is not a valid {message.DESCRIPTOR.name}: Error parsing text-format "
        f"{message.DESCRIPTOR.full_name}: {e}") from None


def read_model_server_config(path):
  config = parse_text_proto(path, model_server_config_pb2.ModelServerConfig())
  validate_model_server_config(config)
  return config


def single_model_config(model_name, model_base_path):
  """TF Serving's BuildSingleModelConfig for --model_name/--model_base_path."""
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add()
  model.name = model_name
  model.base_path = model_base_path
  model.model_platform = "tensorflow"
  return config


def validate_model_server_config(config):
  """Raises ConfigError where TF Serving's ServerCore would refuse the config."""
  if config.WhichOneof("config") == "custom_model_config":
    raise ConfigError("custom_model_config is not supported; use model_config_list")
  names = set()
  for model in config.model_config_list.config:
    if not model.name:
      raise ConfigError("a model in model_config_list has no name")
    if model.name in names:
      raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
    names.add(model.name)
    if model.model_platform not in ("", "tensorflow"):
      raise ConfigError(
          f"Model {model.name} requests unsupported platform {model.model_platform}")
    if not model.base_path:
      raise ConfigError(f"Model {model.name} has no base_path")
    if model.HasField("logging_config"):
      validate_logging_config(model.name, model.logging_config)


# LogCollectorConfig.type values we write (serving/request_log.py): TFRecord files.
LOG_COLLECTOR_TYPES = ("", "tfrecord")


def validate_logging_config(model_name, logging_config):
  """Raises ConfigError for a LoggingConfig serving/request_log.py cannot honour."""
  collector = logging_config.log_collector_config
  where = f"Model {model_name} logging_config"
  if collector.type not in LOG_COLLECTOR_TYPES:
    raise ConfigError(f"{where}: log_collector_config type {collector.type!r} is not "
                      "supported; leave it empty or set \"tfrecord\" (TFRecord files)")
  if not collector.filename_prefix:
    raise ConfigError(f"{where}: log_collector_config has no filename_prefix")
  rate = logging_config.sampling_config.sampling_rate
  if not 0.0 <= rate <= 1.0:
    raise ConfigError(f"{where}: sampling_rate {rate:g} is not in [0, 1]")
  if logging_config.HasField("custom_logging_config"):
    raise ConfigError(f"{where}: custom_logging_config is not supported")


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """BatchingParameters resolved with TF Serving's defaults."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 100
  num_batch_threads: int = os.cpu_count() or 1
  allowed_batch_sizes: tuple = ()
  pad_variable_length_inputs: bool = False

  @classmethod
  def from_proto(cls, params):
    kw = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads"):
      if params.HasField(name):
        kw[name] = getattr(params, name).value
    kw["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
    kw["pad_variable_length_inputs"] = params.pad_variable_length_inputs
    options = cls(**kw)
    options.validate()
    return options

  def validate(self):
    if self.max_batch_size < 1:
      raise ConfigError("max_batch_size must be positive")
    if self.num_batch_threads < 1:
      raise ConfigError("num_batch_threads must be positive")
    if self.batch_timeout_micros < 0:
      raise ConfigError("batch_timeout_micros must be non-negative")
    if self.max_enqueued_batches < 1:
      raise ConfigError("max_enqueued_batches must be positive")
    sizes = self.allowed_batch_sizes
    if sizes:
      if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
        raise ConfigError("allowed_batch_sizes entries must be positive and increasing")
      if sizes[-1] != self.max_batch_size:
        raise ConfigError(
            "Final entry in allowed_batch_sizes must equal max_batch_size when "
            "enable_large_batch_splitting is False")


def read_batching_options(path):
  """BatchingOptions from a BatchingParameters text file ('' -> defaults)."""
  if not path:
    return BatchingOptions()
  return BatchingOptions.from_proto(parse_text_proto(path, BatchingParameters()))


BATCHING_PARAMS_FILENAME = "batching_params.pbtxt"


def read_version_batching_options(version_dir, common):
  """--enable_per_model_batching_parameters: BatchingOptions from the version's
  batching_params.pbtxt with the threads of `common` (the global config), or
  None (no batching) when the version has no such file, as in TF Serving."""
  path = os.path.join(version_dir, BATCHING_PARAMS_FILENAME)
  if not os.path.isfile(path):
    return None
  options = BatchingOptions.from_proto(parse_text_proto(path, BatchingParameters()))
  return dataclasses.replace(options, num_batch_threads=common.num_batch_threads)


def read_prometheus_path(path):
  """The metrics path if the MonitoringConfig file enables Prometheus, else None."""
  if not path:
    return None
  config = parse_text_proto(path, MonitoringConfig())
  if not config.prometheus_config.enable:
    return None
  metrics_path = config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
  if not metrics_path.startswith("/"):
    metrics_path = "/" + metrics_path
  return metrics_path
