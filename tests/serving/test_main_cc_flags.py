"""Every flag of TF Serving's main.cc: accepted, TF Serving's defaults, and the
ones this server cannot honour refused with the reason (serving/flag_compat.py)."""

import os
import subprocess
import sys

import pytest

from serving import config as config_lib
from serving import flag_compat
from serving import model_server
from serving import server_process
from serving import session_config

ROOT = server_process.ROOT

# The flag names of tensorflow_serving/model_servers/main.cc.
MAIN_CC_FLAGS = """
port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms
rest_api_enable_cors_support enable_batching allow_version_labels_for_unavailable_models
batching_parameters_file enable_per_model_batching_parameters model_config_file
model_config_file_poll_wait_seconds model_name model_base_path num_load_threads
num_unload_threads max_num_load_retries load_retry_interval_micros
file_system_poll_wait_seconds flush_filesystem_caches tensorflow_session_parallelism
tensorflow_session_config_file tensorflow_intra_op_parallelism
tensorflow_inter_op_parallelism use_alts_credentials ssl_config_file platform_config_file
per_process_gpu_memory_fraction saved_model_tags grpc_channel_arguments grpc_max_threads
enable_model_warmup num_request_iterations_for_warmup version monitoring_config_file
remove_unused_fields_from_bundle_metagraph prefer_tflite_model num_tflite_pools
num_tflite_interpreters_per_pool enable_signature_method_name_check
xla_cpu_compilation_enabled xla_gpu_compilation_enabled enable_profiler
thread_pool_factory_config_file mixed_precision skip_initialize_tpu
enable_grpc_healthcheck_service enable_serialization_as_tensor_content
""".split()


def _run(*args):
  return subprocess.Popen([sys.executable, "-m", "serving.server", *args], cwd=ROOT,
                          env=server_process.child_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_helpfull_version_and_refusals(tmp_path):
  helpfull = _run("--helpfull")
  version = _run("--version")
  refused = _run("--model_base_path=/nonexistent", "--prefer_tflite_model",
                 "--platform_config_file=/x", "--enable_profiler=true",
                 "--mixed_precision=bfloat16", "--thread_pool_factory_config_file=/y",
                 "--num_tflite_pools=2", "--flush_filesystem_caches=false",
                 "--remove_unused_fields_from_bundle_metagraph=false",
                 "--skip_initialize_tpu")
  out = {name: p.communicate(timeout=300) for name, p in
         (("help", helpfull), ("version", version), ("refused", refused))}
  text = out["help"][0] + out["help"][1]
  missing = [f for f in MAIN_CC_FLAGS
             if f"--{f}:" not in text and f"--[no]{f}:" not in text]
  assert not missing, missing
  assert version.returncode == 0
  assert out["version"][0].startswith("TensorFlow ModelServer: ")
  assert "TensorFlow Library: " in out["version"][0]
  assert refused.returncode == 1
  errors = [l for l in out["refused"][1].splitlines() if l.startswith("serving.server: error:")]
  assert len(errors) == 6, out["refused"][1][-3000:]
  for name in ("prefer_tflite_model", "platform_config_file", "enable_profiler",
               "mixed_precision", "thread_pool_factory_config_file", "num_tflite_pools"):
    assert any(f"--{name}=" in e and "is not supported: " in e for e in errors), name


def test_refusals_only_for_values_that_ask_for_missing_machinery():
  defaults = {f.name: f.default for f in flag_compat.FLAGS_WITHOUT_MACHINERY}
  assert flag_compat.refusals(defaults, set()) == []
  # enable_profiler defaults to true (TF Serving's); refused only when given.
  assert len(flag_compat.refusals(defaults, {"enable_profiler"})) == 1


def test_defaults_are_tf_servings():
  o = model_server.ServerOptions()
  cpus = len(os.sched_getaffinity(0))
  assert (o.grpc_max_threads, o.rest_api_num_threads) == (4 * cpus, 4 * cpus)
  assert (o.port, o.rest_api_port, o.rest_api_timeout_in_ms) == (8500, 0, 30000)
  assert (o.num_load_threads, o.num_unload_threads, o.max_num_load_retries) == (0, 0, 5)
  assert o.load_retry_interval_micros == 60_000_000
  assert (o.file_system_poll_wait_seconds, o.model_config_file_poll_wait_seconds) == (1, 0)
  assert (o.enable_model_warmup, o.num_request_iterations_for_warmup) == (True, 0)
  assert not (o.enable_batching or o.enable_signature_method_name_check
              or o.enable_grpc_healthcheck_service or o.enable_per_model_batching_parameters
              or o.use_alts_credentials or o.enable_serialization_as_tensor_content)
  assert o.saved_model_tags == "serve"
  assert o.host == "127.0.0.1"  # Ours: TF Serving binds every interface.


def test_session_config(tmp_path):
  assert session_config.build() is None
  config = session_config.build(session_parallelism=3)
  assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 3)
  config = session_config.build(session_parallelism=3, intra_op_parallelism=2)
  assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (2, 0)
  with pytest.raises(config_lib.ConfigError, match="You cannot configure all"):
    session_config.build(session_parallelism=1, intra_op_parallelism=1, inter_op_parallelism=1)
  path = tmp_path / "session.config"
  path.write_text("allow_soft_placement: true intra_op_parallelism_threads: 7 "
                  "gpu_options { allow_growth: true }")
  config = session_config.build(str(path), per_process_gpu_memory_fraction=0.5)
  assert config.allow_soft_placement and config.gpu_options.allow_growth
  assert config.gpu_options.per_process_gpu_memory_fraction == 0.5
  assert config.intra_op_parallelism_threads == 0  # The flags set the threads, as TF Serving.
  path.write_text("not a config")
  with pytest.raises(config_lib.ConfigError, match="ConfigProto"):
    session_config.build(str(path))


def test_per_model_batching_parameters(tmp_path):
  common = config_lib.BatchingOptions(max_batch_size=8, num_batch_threads=3)
  assert config_lib.read_version_batching_options(str(tmp_path), common) is None
  (tmp_path / "batching_params.pbtxt").write_text(
      "max_batch_size { value: 4 } batch_timeout_micros { value: 100 } "
      "num_batch_threads { value: 9 }")
  options = config_lib.read_version_batching_options(str(tmp_path), common)
  assert (options.max_batch_size, options.batch_timeout_micros) == (4, 100)
  assert options.num_batch_threads == 3  # Threads come from the global config.


def test_too_few_grpc_threads_for_the_batch_size_is_warned(tmp_path, caplog):
  # Each waiting gRPC request holds a server thread, so --grpc_max_threads
  # below max_batch_size caps every gRPC batch: the server says so.
  batching = tmp_path / "batching.config"
  batching.write_text("max_batch_size { value: 32 }")
  (tmp_path / "m").mkdir()

  def start(threads):
    caplog.clear()
    server = model_server.ModelServer(model_server.ServerOptions(
        port=0, rest_api_port=0, model_name="m",
        model_base_path=str(tmp_path / "m"), enable_batching=True,
        batching_parameters_file=str(batching), grpc_max_threads=threads))
    server.stop(grace=0)
    return [r.getMessage() for r in caplog.records
            if "grpc_max_threads" in r.getMessage()]

  assert start(8) == ["--grpc_max_threads=8 is below the batching "
                      "max_batch_size of 32: gRPC batches hold at most 8 "
                      "requests (one server thread each); raise "
                      "--grpc_max_threads to fill them"]
  assert start(32) == []
