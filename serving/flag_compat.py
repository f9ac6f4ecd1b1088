"""tensorflow_model_server flags for machinery this server does not have.

Every flag of TF Serving's main.cc parses here, so a command line written for
tensorflow_model_server starts this server unchanged. The flags below
configure parts of the C++ server with no counterpart in a Python process (TF
Lite interpreters, TPUs, registered C++ thread-pool factories, C++ platform
configs, the profiler service, bfloat16 graph rewrites). Each keeps TF
Serving's default; a value that asks for the missing part is refused at
startup with the reason (`refusals`), never ignored. The flags that work are
defined in serving/server.py; BUILD_NOTES.md has the table of all of them.
"""

import dataclasses

from absl import flags


@dataclasses.dataclass(frozen=True)
class _Flag:
  name: str
  kind: str  # "bool", "string" or "integer"
  default: object
  help: str
  why: str  # Why a value other than `default` cannot be honoured.
  # For a flag whose default asks for the missing part too (enable_profiler):
  # refuse only when it is given on the command line.
  only_if_given: bool = False


_TFLITE = ("TF Lite models are not served here: the server runs SavedModels in a "
           "TensorFlow Session only")

FLAGS_WITHOUT_MACHINERY = (
    _Flag("platform_config_file", "string", "",
          "As TF Serving: a PlatformConfigMap text proto replacing the TensorFlow "
          "platform's config. Refused here.",
          "it configures TF Serving's C++ source adapters (a SessionBundleConfig inside "
          "google.protobuf.Any), which this server does not have; set the same things with "
          "--tensorflow_session_config_file, --enable_batching/--batching_parameters_file, "
          "--saved_model_tags and --enable_model_warmup"),
    _Flag("prefer_tflite_model", "bool", False,
          "As TF Serving: prefer model.tflite to saved_model.pb. Refused here when true.",
          _TFLITE),
    _Flag("num_tflite_pools", "integer", None,
          "As TF Serving: TF Lite interpreter pools (only with --prefer_tflite_model). "
          "Refused here when set.", _TFLITE),
    _Flag("num_tflite_interpreters_per_pool", "integer", None,
          "As TF Serving: TF Lite interpreters per pool (only with "
          "--prefer_tflite_model). Refused here when set.", _TFLITE),
    _Flag("thread_pool_factory_config_file", "string", "",
          "As TF Serving: a ThreadPoolFactoryConfig text proto. Refused here.",
          "it names a thread-pool factory registered in TF Serving's C++ code; size "
          "TensorFlow's pools with --tensorflow_session_parallelism or "
          "--tensorflow_intra_op_parallelism/--tensorflow_inter_op_parallelism"),
    _Flag("mixed_precision", "string", "",
          "As TF Serving: a mixed-precision mode (bfloat16 graph rewrite). Refused here.",
          "TF Serving's bfloat16 rewrite of the loaded graph is C++ code this server "
          "does not have; export the model in the precision to serve"),
    _Flag("skip_initialize_tpu", "bool", False,
          "As TF Serving: skip initializing TPUs. There are none to initialize here "
          "(this server runs on CPU and GPU), so both values serve alike.",
          ""),
    _Flag("flush_filesystem_caches", "bool", True,
          "As TF Serving: flush file-system caches after loads. Both values serve "
          "alike here: models are read through TensorFlow's file systems, whose local "
          "one keeps no cache (TF Serving's flush is a no-op there too).", ""),
    _Flag("remove_unused_fields_from_bundle_metagraph", "bool", True,
          "As TF Serving: keep only what serving needs of each MetaGraphDef. Both values "
          "serve alike here: a loaded version keeps only its SignatureDefs (all that "
          "GetModelMetadata reports) beside the graph its Session runs.", ""),
    _Flag("enable_profiler", "bool", True,
          "As TF Serving, default true, but here there is no profiler service on the "
          "gRPC port; --enable_profiler=true on the command line is refused.",
          "the TensorFlow profiler service is a C++ gRPC service that cannot be added to "
          "this (grpcio) server; profile with tf.profiler in the process instead",
          only_if_given=True),
)


def define():
  """Defines the flags above on absl's FLAGS."""
  for f in FLAGS_WITHOUT_MACHINERY:
    getattr(flags, f"DEFINE_{f.kind}")(f.name, f.default, f.help)


def refusals(values, given):
  """One message per flag whose value cannot be honoured.

  values: {flag name: value}; given: names set on the command line.
  """
  out = []
  for f in FLAGS_WITHOUT_MACHINERY:
    value = values[f.name]
    asks = (f.name in given and bool(value)) if f.only_if_given else value != f.default
    if asks and f.why:
      out.append(f"--{f.name}={value} is not supported: {f.why}")
  return out
