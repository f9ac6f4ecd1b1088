"""Load benchmark for serving/: batching on vs off, gRPC vs in-process, latency sweep.

Starts `python -m serving.server` twice as subprocesses on 127.0.0.1 (batching
off and on; so client threads and the servers do not share a GIL) and
measures, in one run:

  1. 32 concurrent clients sending one request text each: throughput with
     --enable_batching vs without (ratio = batching on / off).
  2. gRPC Predict with a batch of 32 texts vs calling the same signature
     in-process through tf.saved_model.load (ratio = gRPC / in-process
     latency; the two calls alternate, so both see the same machine load).
  3. The ceiling on what batching can gain here, with no server at all: in
     process, rows/s of one batch of 32 texts at a time against 32 threads
     each running one text at a time (through the TF1 session loader, as
     the server runs a model).
  4. p50/p99 latency and throughput across a concurrency sweep, batching on and off.

1-3 repeat for --rounds rounds, each measuring all of them back to back, so
a ratio compares figures taken under the same load from other processes on
the machine; the JSON keeps every round and reports the median round with
the spread (min, max) of each ratio.

The server and the in-process call run under the server's TF runtime settings
(serving/runtime_env.py: oneDNN kernels off unless TF_ENABLE_ONEDNN_OPTS is
set), recorded in the JSON as tf_runtime_env.

Request texts are real rows of the model's bundled data, picked by the
signature's string input (benchmarks/request_texts.py).

Writes benchmarks/results/serving_load_<data>.json (date, machine, git commit)
and, with matplotlib, a PNG next to it.

  python -m benchmarks.serving_load --saved_model_dir=models/sst2/<version>
  python -m benchmarks.serving_load --saved_model_dir=models/multi30k/<version> --seconds=20
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time

from serving import runtime_env

# The server subprocesses inherit this environment, and the in-process
# baseline below runs under the same TF runtime settings as they do.
RUNTIME_ENV = runtime_env.apply_defaults()

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app
from absl import flags
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks import environment
from benchmarks.request_texts import request_texts
from serving import server_process

try:  # The exports' tokenizers are tensorflow-text ops.
  import tensorflow_text  # noqa: F401  pylint: disable=unused-import
except ImportError:
  pass

ROOT = environment.ROOT
FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model_dir", None, "A SavedModel version directory to serve.")
flags.DEFINE_string("signature_name", "serving_default", "Signature to call.")
flags.DEFINE_string("input_key", None, "String input of the signature (default: its only input).")
flags.DEFINE_float("seconds", 5.0, "Measuring time per load point of the sweep.")
flags.DEFINE_integer("clients", 32, "Concurrent clients for the batching comparison.")
flags.DEFINE_integer("rounds", 10, "Rounds of measurements 1-3 (see the module docstring).")
flags.DEFINE_float("round_seconds", None, "Measuring time of each of measurements 1-3 "
                   "in a round (default: 0.3 x --seconds).")
flags.DEFINE_list("concurrency", ["1", "2", "4", "8", "16", "32"], "Concurrency sweep.")
flags.DEFINE_integer("max_batch_size", 32, "BatchingParameters.max_batch_size.")
flags.DEFINE_integer("batch_timeout_micros", 2000, "BatchingParameters.batch_timeout_micros.")
flags.DEFINE_integer("num_batch_threads", 2, "BatchingParameters.num_batch_threads.")
flags.DEFINE_integer("grpc_max_threads", 64, "The servers' --grpc_max_threads. A gRPC "
                     "thread holds its request while it waits in the batch queue, so "
                     "batches cannot grow past this many requests; TF Serving's "
                     "default (4 x the CPUs, 8 on two cores) would cap the 32 clients' "
                     "batches at 8.")
flags.DEFINE_multi_string("server_flag", [], "A flag for both servers, e.g. "
                          "--server_flag=--tensorflow_session_parallelism=2 (repeatable).")
flags.DEFINE_string("note", "", "A note kept in the JSON (e.g. how the export was made).")
flags.DEFINE_string("output", "", "Where to write the JSON results (a PNG goes next "
                    "to it); default benchmarks/results/serving_load_<data>.json.")

def start_server(base_path, batching, workdir):
  """python -m serving.server on a free 127.0.0.1 port, serving model 'bench',
  SERVING when this returns (a server_process.ServerProcess)."""
  args = ["--host=127.0.0.1", "--model_name=bench", f"--model_base_path={base_path}",
          "--file_system_poll_wait_seconds=0", f"--grpc_max_threads={FLAGS.grpc_max_threads}"]
  args += FLAGS.server_flag
  if batching:
    params = os.path.join(workdir, "batching.config")
    with open(params, "w", encoding="utf-8") as f:
      f.write(f"max_batch_size {{ value: {FLAGS.max_batch_size} }}\n"
              f"batch_timeout_micros {{ value: {FLAGS.batch_timeout_micros} }}\n"
              f"num_batch_threads {{ value: {FLAGS.num_batch_threads} }}\n"
              "max_enqueued_batches { value: 1000 }\n")
    args += ["--enable_batching", f"--batching_parameters_file={params}"]
  server = server_process.ServerProcess(
      args, os.path.join(workdir, f"server-{'on' if batching else 'off'}.log"))
  server.wait_until_serving(timeout=300)
  return server


def _request(texts, input_key):
  """A Predict request of model 'bench' with `texts` as string[len(texts)]."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name="bench", signature_name=FLAGS.signature_name))
  request.inputs[input_key].CopyFrom(tf.make_tensor_proto(
      [t.encode("utf-8") for t in texts], dtype=tf.string))
  return request


def run_load(target, concurrency, seconds, input_key, texts):
  """Closed-loop load: `concurrency` clients, one text per request."""
  latencies = [[] for _ in range(concurrency)]
  errors = [0]
  start_barrier = threading.Barrier(concurrency + 1)
  stop_at = [0.0]

  all_requests = [[_request([texts[(i * 8 + k) % len(texts)]], input_key)
                   for k in range(8)] for i in range(concurrency)]

  def client(i):
    requests = all_requests[i]
    with grpc.insecure_channel(target) as ch:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
      try:
        stub.Predict(requests[0], timeout=60)  # Connect before the clock starts.
      except grpc.RpcError:
        start_barrier.abort()  # the main thread's wait raises: no silent hang
        raise
      start_barrier.wait()
      k = 0
      while time.monotonic() < stop_at[0]:
        t0 = time.perf_counter()
        try:
          stub.Predict(requests[k % 8], timeout=60)
        except grpc.RpcError:
          errors[0] += 1
          continue
        latencies[i].append(time.perf_counter() - t0)
        k += 1

  threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
  for t in threads:
    t.start()
  stop_at[0] = time.monotonic() + seconds + 3600
  start_barrier.wait()
  begin = time.monotonic()
  stop_at[0] = begin + seconds
  for t in threads:
    t.join()
  elapsed = time.monotonic() - begin
  flat = np.array([x for per in latencies for x in per])
  return {
      "concurrency": concurrency,
      "requests": int(flat.size),
      "errors": errors[0],
      "throughput_rps": float(flat.size / elapsed),
      "p50_ms": float(np.percentile(flat, 50) * 1000) if flat.size else None,
      "p99_ms": float(np.percentile(flat, 99) * 1000) if flat.size else None,
  }


def _timed(fn, seconds):
  fn()  # Warm up.
  times = []
  end = time.monotonic() + seconds
  while time.monotonic() < end or len(times) < 5:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return np.array(times)


def grpc_vs_in_process(target, input_key, seconds, texts, fn):
  """p50 of gRPC Predict of 32 texts against the same call of `fn` (the
  signature loaded in this process), the two calls alternating."""
  batch = [texts[i % len(texts)] for i in range(32)]
  text = tf.constant(batch)
  with grpc.insecure_channel(target) as ch:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    request = _request(batch, input_key)
    calls = (lambda: stub.Predict(request, timeout=60), lambda: fn(**{input_key: text}))
    for call in calls:
      call()  # Warm up.
    times = ([], [])
    end = time.monotonic() + 2 * seconds
    while time.monotonic() < end or len(times[1]) < 5:
      for call, out in zip(calls, times):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
  grpc_ms = float(np.median(times[0]) * 1000)
  local_ms = float(np.median(times[1]) * 1000)
  return {"batch_size": 32, "calls": len(times[0]), "grpc_predict_p50_ms": grpc_ms,
          "in_process_p50_ms": local_ms, "grpc_over_in_process": grpc_ms / local_ms,
          "grpc_share_of_in_process_rate": local_ms / grpc_ms}


class InProcessCeiling:
  """What batching could gain with a free server: rows/s of one thread
  calling the signature on batches of `clients` texts, against rows/s of
  `clients` threads each calling it on one text at a time. Both in this
  process, through the TF1 session loader the server uses, under the same
  TF runtime settings."""

  def __init__(self, input_key, texts, clients):
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._session = tf.compat.v1.Session(graph=self._graph)
      meta_graph = tf.compat.v1.saved_model.load(self._session, ["serve"],
                                                 FLAGS.saved_model_dir)
    signature = meta_graph.signature_def[FLAGS.signature_name]
    self._feed = signature.inputs[input_key].name
    self._fetches = [info.name for info in signature.outputs.values()]
    self._encoded = [t.encode("utf-8") for t in texts]
    self._clients = clients

  def _rows_per_second(self, threads, batch, seconds):
    encoded, session = self._encoded, self._session
    inputs = [np.array([encoded[(i * batch + k) % len(encoded)] for k in range(batch)],
                       dtype=object) for i in range(threads)]
    for x in inputs:
      session.run(self._fetches, {self._feed: x})  # warm up every shape
    counts = [0] * threads
    stop_at = time.monotonic() + seconds

    def worker(i):
      while time.monotonic() < stop_at:
        session.run(self._fetches, {self._feed: inputs[i]})
        counts[i] += batch

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    begin = time.monotonic()
    for t in pool:
      t.start()
    for t in pool:
      t.join()
    return sum(counts) / (time.monotonic() - begin)

  def measure(self, seconds):
    clients = self._clients
    one_batch = self._rows_per_second(1, clients, seconds)
    concurrent_singles = self._rows_per_second(clients, 1, seconds)
    batch = np.array([self._encoded[k % len(self._encoded)] for k in range(clients)],
                     dtype=object)
    session_ms = float(np.median(_timed(
        lambda: self._session.run(self._fetches, {self._feed: batch}), seconds / 5)) * 1000)
    return {"clients": clients, "session_batch_p50_ms": session_ms,
            "batched_rows_per_second": one_batch,
            "concurrent_single_rows_per_second": concurrent_singles,
            "ratio": one_batch / concurrent_singles}

  def close(self):
    self._session.close()


def measure_round(servers, input_key, texts, ceiling, fn):
  """Measurements 1-3 of the module docstring, back to back."""
  clients, seconds = FLAGS.clients, _round_seconds()
  out = {f"clients_{clients}_{mode}": run_load(server.target, clients, seconds,
                                               input_key, texts)
         for mode, server in servers.items()}
  out["grpc_vs_in_process"] = grpc_vs_in_process(
      servers["batching_off"].target, input_key, seconds, texts, fn)
  out["in_process_batching_ceiling"] = ceiling.measure(seconds)
  on = out[f"clients_{clients}_batching_on"]["throughput_rps"]
  off = out[f"clients_{clients}_batching_off"]["throughput_rps"]
  out["batching_throughput_ratio"] = on / off
  out["batching_share_of_ceiling"] = (
      out["batching_throughput_ratio"] / out["in_process_batching_ceiling"]["ratio"])
  return out


def summarize(rounds):
  """The median round (by batching share of the ceiling) as the headline
  figures, and the median, min and max of each figure over the rounds."""
  by_share = sorted(rounds, key=lambda r: r["batching_share_of_ceiling"])
  out = dict(by_share[(len(by_share) - 1) // 2])
  on, off = (f"clients_{FLAGS.clients}_batching_{mode}" for mode in ("on", "off"))
  out["spread"] = {name: _spread(rounds, get) for name, get in (
      ("batching_on_rps", lambda r: r[on]["throughput_rps"]),
      ("batching_off_rps", lambda r: r[off]["throughput_rps"]),
      ("batching_throughput_ratio", lambda r: r["batching_throughput_ratio"]),
      ("in_process_batched_rows_per_second",
       lambda r: r["in_process_batching_ceiling"]["batched_rows_per_second"]),
      ("in_process_batching_ceiling_ratio",
       lambda r: r["in_process_batching_ceiling"]["ratio"]),
      ("batching_share_of_ceiling", lambda r: r["batching_share_of_ceiling"]),
      ("grpc_predict_p50_ms", lambda r: r["grpc_vs_in_process"]["grpc_predict_p50_ms"]),
      ("in_process_p50_ms", lambda r: r["grpc_vs_in_process"]["in_process_p50_ms"]),
      ("grpc_share_of_in_process_rate",
       lambda r: r["grpc_vs_in_process"]["grpc_share_of_in_process_rate"]))}
  return out


def _round_seconds():
  return FLAGS.round_seconds if FLAGS.round_seconds else 0.3 * FLAGS.seconds


def _spread(rounds, get):
  values = sorted(get(r) for r in rounds)
  return {"median": float(np.median(values)), "min": values[0], "max": values[-1]}


def _input_key():
  if FLAGS.input_key:
    return FLAGS.input_key
  loaded = tf.saved_model.load(FLAGS.saved_model_dir)
  _, kwargs = loaded.signatures[FLAGS.signature_name].structured_input_signature
  if len(kwargs) != 1:
    raise app.UsageError(f"signature has inputs {sorted(kwargs)}; pass --input_key")
  return next(iter(kwargs))


def _plot(results, path, title):
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for mode in ("batching_off", "batching_on"):
    sweep = results["sweep"][mode]
    c = [p["concurrency"] for p in sweep]
    ax1.plot(c, [p["p50_ms"] for p in sweep], marker="o", label=f"{mode} p50")
    ax1.plot(c, [p["p99_ms"] for p in sweep], marker="x", linestyle="--", label=f"{mode} p99")
    ax2.plot(c, [p["throughput_rps"] for p in sweep], marker="o", label=mode)
  for ax, ylabel in ((ax1, "latency (ms)"), (ax2, "requests / s")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients (1 text per request)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main(argv):
  del argv
  if not FLAGS.saved_model_dir:
    raise app.UsageError("--saved_model_dir is required")
  saved_model_dir = os.path.abspath(FLAGS.saved_model_dir)
  if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
    raise app.UsageError(f"--saved_model_dir={FLAGS.saved_model_dir}: no "
                         "saved_model.pb there (pass an export version directory)")
  input_key = _input_key()
  try:
    data_name, texts = request_texts(input_key)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  output = FLAGS.output or os.path.join(ROOT, "benchmarks", "results",
                                        f"serving_load_{data_name}.json")
  workdir = tempfile.mkdtemp(prefix="serving_load_")
  base = os.path.join(workdir, "bench")
  os.makedirs(base)
  os.symlink(saved_model_dir, os.path.join(base, "1"))
  concurrency = [int(c) for c in FLAGS.concurrency]
  results = dict(environment.describe(), **{
      "benchmark": "serving_load",
      "command": " ".join(["python -m benchmarks.serving_load"] + sys.argv[1:]),
      "saved_model_dir": os.path.relpath(saved_model_dir, ROOT),
      "note": FLAGS.note,
      "signature_name": FLAGS.signature_name,
      "input_key": input_key,
      "request_data": data_name,
      "tf_runtime_env": RUNTIME_ENV,
      "seconds_per_point": FLAGS.seconds,
      "round_count": FLAGS.rounds,
      "round_seconds": _round_seconds(),
      "batching_parameters": {"max_batch_size": FLAGS.max_batch_size,
                              "batch_timeout_micros": FLAGS.batch_timeout_micros,
                              "num_batch_threads": FLAGS.num_batch_threads},
      "grpc_max_threads": FLAGS.grpc_max_threads,
      "server_flags": FLAGS.server_flag,
      "sweep": {},
  })
  servers = {}
  try:
    for mode, batching in (("batching_off", False), ("batching_on", True)):
      servers[mode] = start_server(base, batching, workdir)
    ceiling = InProcessCeiling(input_key, texts, FLAGS.clients)
    fn = tf.saved_model.load(saved_model_dir).signatures[FLAGS.signature_name]
    rounds = []
    for _ in range(FLAGS.rounds):
      rounds.append(measure_round(servers, input_key, texts, ceiling, fn))
    ceiling.close()
    for mode, server in servers.items():
      results["sweep"][mode] = [run_load(server.target, c, FLAGS.seconds, input_key, texts)
                                for c in concurrency]
  finally:
    for server in servers.values():
      server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
  results.update(summarize(rounds))
  results["rounds"] = rounds
  os.makedirs(os.path.dirname(output), exist_ok=True)
  title = (f"serving/ gRPC Predict load, {data_name} export "
           f"({FLAGS.signature_name}), batching on vs off")
  png = _plot(results, os.path.splitext(output)[0] + ".png", title)
  results["plot"] = os.path.basename(png) if png else None
  with open(output, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(json.dumps({k: v for k, v in results.items() if k not in ("sweep", "rounds")},
                   indent=2))


if __name__ == "__main__":
  app.run(main)
