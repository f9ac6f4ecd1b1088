"""Soak test of serving/: minutes of mixed valid and malformed traffic against one
server process, and the server's memory before and after (issue 20: growth < 10%).

  python -m benchmarks.serving_soak                      # a tiny built-in model
  python -m benchmarks.serving_soak --saved_model_dir=models/sst2/<version> --seconds=300

Starts `python -m serving.server` as a subprocess on 127.0.0.1 (gRPC and REST),
then --clients threads send, for --warmup_seconds and then --seconds, a mix of:
valid gRPC Predict and REST :predict calls; random bytes as gRPC requests;
Predict requests declaring a million rows with no values; unknown 100,000
character model names; wrong dtypes; REST bodies that are bad JSON, hold numbers
past a double, are corrupt gzip, or declare a Content-Length over the limit;
and connections that open and go idle (closed by the header timeout).

The server's resident set size (VmRSS in /proc) is read every second. The
baseline, measured in the same run, is the RSS once the warm-up traffic has
run (first requests build kernels, callables and allocator arenas once); the
figure is RSS at the end / that baseline (goal: under 1.10). Every valid
request must succeed and every malformed one must fail with a client-error
status (no HTTP 500, gRPC UNKNOWN, or a dead server). Writes
benchmarks/results/serving_soak.json (date, machine, git commit).
"""

import collections
import gzip
import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time

from absl import app
from absl import flags

from benchmarks import environment
from serving import server_process

ROOT = environment.ROOT
GOAL_RATIO = 1.10  # issue 20: RSS growth under 10%
FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags; defined only when this runs as a program, so that
  tests can import its functions next to other benchmarks' flags."""
  flags.DEFINE_string("saved_model_dir", "", "A SavedModel version directory with a "
                      "string[B] input; default: a tiny model built here.")
  flags.DEFINE_string("input_key", "text", "String input of serving_default.")
  flags.DEFINE_float("seconds", 180.0, "Measured soak time, after the warm-up.")
  flags.DEFINE_float("warmup_seconds", 20.0, "Traffic before the baseline RSS is read.")
  flags.DEFINE_integer("clients", 8, "Concurrent client threads.")
  flags.DEFINE_float("malformed_fraction", 0.5, "Share of requests that are malformed.")
  flags.DEFINE_string("output", os.path.join(ROOT, "benchmarks", "results",
                                             "serving_soak.json"), "Where the JSON goes.")


def save_tiny_model(export_dir):
  """string[B] `text` -> probabilities float[B, 2], label string[B]."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  class Tiny(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
      length = tf.cast(tf.strings.length(text), tf.float32)  # [B]
      pos = tf.sigmoid(0.5 * (length - 5.0))  # [B]
      probs = tf.stack([1.0 - pos, pos], axis=1)  # [B, 2]
      label = tf.gather(tf.constant(["negative", "positive"]), tf.argmax(probs, axis=1))
      return {"probabilities": probs, "label": label}

  module = Tiny()
  tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
  return export_dir


class Traffic:
  """The request mix: each kind is a function returning 'ok', 'refused' or a problem."""

  def __init__(self, grpc_target, rest_url, input_key, rng):
    import grpc  # pylint: disable=import-outside-toplevel
    import requests  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel
    self._grpc, self._tf, self._types = grpc, tf, types_pb2
    self._predict_pb2 = predict_pb2
    self._channel = grpc.insecure_channel(grpc_target)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._raw = self._channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    self._session = requests.Session()
    self._requests = requests
    self._url = rest_url
    self._key = input_key
    self._rng = rng
    self.valid = [self.grpc_predict, self.rest_predict]
    self.malformed = [self.grpc_random_bytes, self.grpc_huge_declared, self.grpc_long_name,
                      self.grpc_wrong_dtype, self.rest_bad_json, self.rest_huge_number,
                      self.rest_bad_gzip, self.rest_oversize, self.rest_idle_socket]

  def _request(self, name="bench", texts=(b"a fine film",)):
    request = self._predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[self._key].CopyFrom(self._tf.make_tensor_proto(list(texts)))
    return request

  def _grpc_refused(self, fn, *allowed):
    try:
      fn()
    except self._grpc.RpcError as e:
      return "refused" if e.code() in allowed else f"gRPC {e.code().name}"
    return "accepted a malformed request"

  def _rest_refused(self, response, *allowed):
    return "refused" if response.status_code in allowed else f"HTTP {response.status_code}"

  def grpc_predict(self):
    texts = [f"text {self._rng.randrange(10**6)}".encode()
             for _ in range(self._rng.randint(1, 8))]
    response = self._stub.Predict(self._request(texts=texts), timeout=30)
    return "ok" if len(response.outputs["label"].string_val) == len(texts) else "bad answer"

  def rest_predict(self):
    r = self._session.post(f"{self._url}/v1/models/bench:predict",
                           json={"instances": ["a good one", "meh"]}, timeout=30)
    return "ok" if r.status_code == 200 and len(r.json()["predictions"]) == 2 else \
        f"HTTP {r.status_code}"

  def grpc_random_bytes(self):
    data = self._rng.randbytes(self._rng.randrange(1, 300))
    return self._grpc_refused(lambda: self._raw(data, timeout=30),
                              self._grpc.StatusCode.INTERNAL,
                              self._grpc.StatusCode.INVALID_ARGUMENT,
                              self._grpc.StatusCode.NOT_FOUND,
                              self._grpc.StatusCode.FAILED_PRECONDITION)

  def grpc_huge_declared(self):
    request = self._request(texts=[])
    tensor = request.inputs[self._key]
    tensor.ClearField("string_val")
    del tensor.tensor_shape.dim[:]
    tensor.tensor_shape.dim.add().size = 1_048_576
    return self._grpc_refused(lambda: self._stub.Predict(request, timeout=30),
                              self._grpc.StatusCode.INVALID_ARGUMENT)

  def grpc_long_name(self):
    request = self._request(name="n" * 100_000 + str(self._rng.random()))
    return self._grpc_refused(lambda: self._stub.Predict(request, timeout=30),
                              self._grpc.StatusCode.NOT_FOUND)

  def grpc_wrong_dtype(self):
    request = self._request()
    request.inputs[self._key].CopyFrom(self._tf.make_tensor_proto([1.0, 2.0]))
    return self._grpc_refused(lambda: self._stub.Predict(request, timeout=30),
                              self._grpc.StatusCode.INVALID_ARGUMENT)

  def rest_bad_json(self):
    body = b'{"instances": ["x"' + self._rng.randbytes(self._rng.randrange(1, 50))
    r = self._session.post(f"{self._url}/v1/models/bench:predict", data=body, timeout=30)
    return self._rest_refused(r, 400)

  def rest_huge_number(self):
    body = b'{"instances": [' + b"7" * 5000 + b"]}"
    r = self._session.post(f"{self._url}/v1/models/bench:predict", data=body, timeout=30)
    return self._rest_refused(r, 400)

  def rest_bad_gzip(self):
    body = gzip.compress(b'{"instances": ["x"]}')[:-6] + self._rng.randbytes(6)
    r = self._session.post(f"{self._url}/v1/models/bench:predict", data=body,
                           headers={"Content-Encoding": "gzip"}, timeout=30)
    return self._rest_refused(r, 200, 400)  # A lucky tail can still be valid gzip.

  def rest_oversize(self):
    host, port = self._url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
      sock.sendall(b"POST /v1/models/bench:predict HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: 4000000000\r\n\r\n{")
      head = sock.recv(64)
    return "refused" if head.split(b" ")[1:2] == [b"413"] else f"answer {head[:20]!r}"

  def rest_idle_socket(self):
    host, port = self._url.rsplit("/", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /v1/models/bench:predict HTTP/1.1\r\n")  # And never the rest.
    threading.Timer(5.0, sock.close).start()  # The server's header timeout is shorter.
    return "refused"

  def close(self):
    self._channel.close()
    self._session.close()


def run_clients(traffic_for, clients, seconds, malformed_fraction, counts, problems):
  stop = time.monotonic() + seconds

  def client(i):
    traffic = traffic_for(i)
    rng = random.Random(i)
    try:
      while time.monotonic() < stop:
        kinds = traffic.malformed if rng.random() < malformed_fraction else traffic.valid
        kind = rng.choice(kinds)
        try:
          outcome = kind()
        except Exception as e:  # pylint: disable=broad-except
          outcome = f"{type(e).__name__}: {str(e)[:100]}"
        counts[kind.__name__][outcome if outcome in ("ok", "refused") else "problem"] += 1
        if outcome not in ("ok", "refused"):
          problems[f"{kind.__name__}: {outcome}"] += 1
    finally:
      traffic.close()

  threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()


def main(argv):
  del argv
  workdir = tempfile.mkdtemp(prefix="serving_soak_")
  try:
    if FLAGS.saved_model_dir:
      base = os.path.join(workdir, "bench")
      os.makedirs(base)
      os.symlink(os.path.abspath(FLAGS.saved_model_dir), os.path.join(base, "1"))
    else:
      base = os.path.join(workdir, "bench")
      save_tiny_model(os.path.join(base, "1"))
    result = soak(base, workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  result.update(environment.describe())
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(json.dumps({k: result[k] for k in ("rss_ratio", "goal_met", "requests")}, indent=2))
  print("wrote", FLAGS.output)
  return 0 if result["goal_met"] else 1


def soak(base_path, workdir):
  rest_port = server_process.free_port()
  server_flags = [f"--rest_api_port={rest_port}", "--host=127.0.0.1", "--model_name=bench",
                  f"--model_base_path={base_path}", "--file_system_poll_wait_seconds=0",
                  "--rest_api_header_timeout_seconds=2", "--rest_api_body_timeout_seconds=5"]
  server = server_process.ServerProcess(server_flags, os.path.join(workdir, "server.log"))
  grpc_port = server.port
  try:
    server.wait_until_serving(timeout=300)
    rest_url = f"http://127.0.0.1:{rest_port}"
    traffic_for = lambda i: Traffic(f"127.0.0.1:{grpc_port}", rest_url, FLAGS.input_key,
                                    random.Random(1000 + i))
    timeline = []
    sampling = threading.Event()

    def sample():
      start = time.monotonic()
      while not sampling.wait(1.0):
        timeline.append([round(time.monotonic() - start, 1),
                         environment.rss_bytes(server.pid)])

    rss_idle = environment.rss_bytes(server.pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    counts = collections.defaultdict(collections.Counter)
    problems = collections.Counter()
    run_clients(traffic_for, FLAGS.clients, FLAGS.warmup_seconds, FLAGS.malformed_fraction,
                collections.defaultdict(collections.Counter), problems)
    rss_baseline = environment.rss_bytes(server.pid)
    start = time.monotonic()
    run_clients(traffic_for, FLAGS.clients, FLAGS.seconds, FLAGS.malformed_fraction,
                counts, problems)
    measured = time.monotonic() - start
    time.sleep(3)  # Let the idle sockets of the last seconds be closed.
    rss_end = environment.rss_bytes(server.pid)
    sampling.set()
    sampler.join()
    alive = server.running()
  finally:
    server.stop(grace_seconds=60)
  server_log = server.log_text()
  total = sum(sum(c.values()) for c in counts.values())
  # No RSS (None) once the server is gone: the goal is then not met.
  ratio = rss_end / rss_baseline if rss_end and rss_baseline else float("inf")
  return {
      "benchmark": "serving_soak",
      "command": " ".join(["python -m benchmarks.serving_soak"] +
                          [f"--{n}={FLAGS[n].value}" for n in
                           ("seconds", "warmup_seconds", "clients", "malformed_fraction")] +
                          ([f"--saved_model_dir={FLAGS.saved_model_dir}"]
                           if FLAGS.saved_model_dir else [])),
      "server_command": " ".join(server.command[1:]),
      "model": FLAGS.saved_model_dir or "tiny built-in model (save_tiny_model)",
      "baseline": "server RSS after the warm-up traffic, measured in the same run",
      "goal": f"rss_end / rss_baseline < {GOAL_RATIO}",
      "rss_idle_bytes": rss_idle,
      "rss_baseline_bytes": rss_baseline,
      "rss_end_bytes": rss_end,
      "rss_ratio": round(ratio, 4),
      "goal_met": bool(ratio < GOAL_RATIO and alive and not problems),
      "server_alive": alive,
      "measured_seconds": round(measured, 1),
      "requests": total,
      "requests_per_second": round(total / measured, 1),
      "by_kind": {k: dict(v) for k, v in sorted(counts.items())},
      "problems": dict(problems),
      "server_log_tracebacks": server_log.count("Traceback (most recent call last)"),
      "first_traceback": _first_traceback(server_log),
      "server_log_lines": server_log.count("\n"),
      "server_log_request_lines": server_log.count("error_log.py"),
      "rss_timeline": timeline,
  }


def _first_traceback(text):
  start = text.find("Traceback (most recent call last)")
  return text[max(0, start - 300):start + 3000] if start >= 0 else None


if __name__ == "__main__":
  define_flags()
  app.run(main)
