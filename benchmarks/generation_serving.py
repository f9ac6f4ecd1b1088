"""Streaming, continuously batched generation against request-level batching.

  python -m benchmarks.generation_serving [--saved_model_dir=models/shakespeare/<version>]

One server (`python -m serving.server` on 127.0.0.1, a subprocess) with
--enable_batching (max_batch_size 32) and a generation engine of --slots
slots serves the character LM; --clients closed-loop clients run the same
list of jobs twice, in one run:
  batching  each job a one-row `generate` Predict over gRPC; the batcher
            merges concurrent rows into batches of up to 32, and a batch runs
            for its longest row;
  engine    each job a GenerateStream over gRPC (serving/engine.py): requests
            join the running batch between steps and leave it when done.
Jobs: prompts from the tiny-shakespeare validation text, max_new_tokens drawn
uniformly from [--min_new_tokens, --max_new_tokens] with --seed, sampled at
temperature 0.8 with each job's own seed (the character LM has no end token,
so every job generates exactly its max_new_tokens and the speed does not
depend on the weights: without --saved_model_dir the `small` preset is
exported with random weights).

Reported for both: tokens/s while every client is busy (from the start
until a client first finds the job list empty; tokens a client has received
by then: the ratio engine / batching is the figure of the issue, goal >=
1.5x) and over the whole run (which adds the tail, where fewer and fewer
clients are left), p50/p99 of time to first token (for batching, the
whole request: nothing streams), of inter-token latency and of whole-request
latency; for the engine its mean step time under the load (from the server's
Prometheus metrics) and time to first token p50 in steps (goal <= 3).
The modes alternate for --rounds rounds (this machine's 2 cores are shared,
and its load changes); the JSON has every round, the median ratio, and the
round nearest that median as `batching` / `engine` (plotted).
Writes benchmarks/results/generation_serving.json and a PNG.
"""

import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.request

from serving import runtime_env

RUNTIME_ENV = runtime_env.apply_defaults()

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from benchmarks import environment  # noqa: E402
from serving import generation_service  # noqa: E402
from serving import server_process  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_RATIO = 1.5
GOAL_TTFT_STEPS = 3

flags.DEFINE_string("saved_model_dir", "", "An LM export; '' = the small "
                    "preset with random weights.")
flags.DEFINE_integer("clients", 32, "Closed-loop clients.")
flags.DEFINE_integer("jobs", 192, "Jobs per mode (the same list for both).")
flags.DEFINE_integer("slots", 32, "Engine slots (--generation_slots).")
flags.DEFINE_integer("tokens_per_step", 4, "Tokens each slot advances per "
                     "engine step (--generation_tokens_per_step).")
flags.DEFINE_integer("min_new_tokens", 16, "Smallest max_new_tokens.")
flags.DEFINE_integer("max_new_tokens", 256, "Largest max_new_tokens.")
flags.DEFINE_integer("prompt_characters", 32, "Characters of each prompt.")
flags.DEFINE_integer("seed", 0, "Seed of the job list.")
flags.DEFINE_integer("rounds", 2, "Rounds of (batching, engine), alternated "
                     "so that both modes see the same machine load.")
flags.DEFINE_integer("batch_timeout_micros", 20000, "Batching timeout.")
flags.DEFINE_string("output", os.path.join(ROOT, "benchmarks", "results",
                                           "generation_serving.json"),
                    "Where the JSON goes (the PNG beside it).")
FLAGS = flags.FLAGS


def _jobs():
  with open(os.path.join(ROOT, "data", "tinyshakespeare", "input.txt"),
            encoding="utf-8") as f:
    text = f.read()
  validation = text[int(len(text) * 0.9):]  # the recipe's last 10%
  lines = [l for l in validation.splitlines()
           if len(l) >= FLAGS.prompt_characters]
  rng = random.Random(FLAGS.seed)
  return [(lines[i % len(lines)][:FLAGS.prompt_characters],
           rng.randint(FLAGS.min_new_tokens, FLAGS.max_new_tokens), i)
          for i in range(FLAGS.jobs)]


class Server:
  def __init__(self, base_path, workdir):
    self.rest_port = server_process.free_port()
    params = os.path.join(workdir, "batching.config")
    with open(params, "w", encoding="utf-8") as f:
      f.write("max_batch_size { value: 32 }\n"
              f"batch_timeout_micros {{ value: {FLAGS.batch_timeout_micros} }}\n"
              "num_batch_threads { value: 1 }\n"
              "max_enqueued_batches { value: 1000 }\n")
    monitoring = os.path.join(workdir, "monitoring.config")
    with open(monitoring, "w", encoding="utf-8") as f:
      f.write('prometheus_config { enable: true path: "/metrics" }\n')
    args = [f"--rest_api_port={self.rest_port}", "--model_name=bench",
            f"--model_base_path={base_path}", "--grpc_max_threads=128",
            "--enable_batching", f"--batching_parameters_file={params}",
            f"--monitoring_config_file={monitoring}",
            f"--generation_slots={FLAGS.slots}",
            f"--generation_tokens_per_step={FLAGS.tokens_per_step}",
            "--generation_max_queue=1000", "--enable_model_warmup=false"]
    self._server = server_process.ServerProcess(args, os.path.join(workdir, "server.log"))
    self.target = self._server.target
    self._server.wait_until_serving(timeout=600)

  def metric(self, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/metrics",
                                timeout=30) as r:
      for line in r.read().decode().splitlines():
        if line.startswith(name + "{"):
          return float(line.rsplit(" ", 1)[1])
    return 0.0

  def stop(self):
    self._server.stop(grace_seconds=60)


def _batching_job(stub, prompt, budget, seed):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "bench"
  request.model_spec.signature_name = "generate"
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for name, value, dtype in (
      ("prompt", [prompt.encode()], tf.string),
      ("max_new_tokens", [budget], tf.int32),
      ("temperature", [0.8], tf.float32), ("top_k", [0], tf.int32),
      ("top_p", [1.0], tf.float32), ("seed", [seed], tf.int64)):
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
  start = time.monotonic()
  response = stub.Predict(request, timeout=3600)
  latency = time.monotonic() - start
  tokens = int(tf.make_ndarray(response.outputs["num_tokens"])[0])
  return {"tokens": tokens, "ttft": latency, "latency": latency,
          "inter_token": [latency / max(tokens, 1)],
          "arrivals": [(start + latency, tokens)]}


def _engine_job(call, prompt, budget, seed):
  request = generation_service.GenerateRequest(
      prompt=prompt, max_new_tokens=budget, temperature=0.8, seed=seed)
  request.model_spec.name = "bench"
  start = time.monotonic()
  last, ttft, gaps, tokens, arrivals = start, None, [], 0, []
  for message in call(request, timeout=3600):
    now = time.monotonic()
    if ttft is None:
      ttft = now - start
    elif message.num_tokens > tokens:
      gaps.append((now - last) / (message.num_tokens - tokens))
    arrivals.append((now, message.num_tokens - tokens))
    last, tokens = now, message.num_tokens
  return {"tokens": tokens, "ttft": ttft, "latency": last - start,
          "inter_token": gaps, "arrivals": arrivals}


def _run(jobs, work):
  """Runs `jobs` over FLAGS.clients closed-loop threads; (records, seconds,
  steady seconds: until a client first found no job left)."""
  pending = list(reversed(jobs))
  lock = threading.Lock()
  records = []
  exhausted = []

  def client():
    while True:
      with lock:
        if not pending:
          exhausted.append(time.monotonic())
          return
        job = pending.pop()
      record = work(*job)
      with lock:
        records.append(record)

  start = time.monotonic()
  threads = [threading.Thread(target=client) for _ in range(FLAGS.clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  end = time.monotonic()
  steady = min(exhausted) if exhausted else end
  for r in records:
    r["steady_tokens"] = sum(n for t, n in r.pop("arrivals") if t <= steady)
  return records, end - start, steady - start


def _summary(records, seconds, steady_seconds):
  def percentiles(values):
    return {"p50": round(float(np.percentile(values, 50)), 4),
            "p99": round(float(np.percentile(values, 99)), 4)}
  tokens = sum(r["tokens"] for r in records)
  steady = sum(r["steady_tokens"] for r in records)
  return {"requests": len(records), "tokens": tokens,
          "seconds": round(seconds, 2),
          "tokens_per_second_whole_run": round(tokens / seconds, 1),
          "steady_seconds": round(steady_seconds, 2),
          "tokens_per_second": round(steady / steady_seconds, 1),
          "time_to_first_token_s": percentiles([r["ttft"] for r in records]),
          "inter_token_latency_s": percentiles(
              [g for r in records for g in r["inter_token"]]),
          "request_latency_s": percentiles([r["latency"] for r in records])}


def _plot(result, path):
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  modes = ("batching", "engine")
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].bar(modes, [result[m]["tokens_per_second"] for m in modes],
              color=["tab:gray", "tab:blue"])
  axes[0].set_ylabel("tokens/s")
  axes[0].set_title(f"{FLAGS.clients} clients: engine "
                    f"{result['engine_over_batching']}x")
  width = 0.35
  metrics = ("time_to_first_token_s", "request_latency_s")
  for i, mode in enumerate(modes):
    axes[1].bar(np.arange(2) + i * width,
                [result[mode][m]["p50"] for m in metrics], width, label=mode)
  axes[1].set_xticks(np.arange(2) + width / 2, ["TTFT p50", "request p50"])
  axes[1].set_ylabel("seconds")
  axes[1].legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv):
  del argv
  jobs = _jobs()
  with tempfile.TemporaryDirectory() as tmp:
    base = os.path.join(tmp, "bench")
    if FLAGS.saved_model_dir:
      shutil.copytree(FLAGS.saved_model_dir, os.path.join(base, "1"))
    else:
      from benchmarks.engine_cache_placement import _export  # pylint: disable=import-outside-toplevel
      export_dir, _ = _export(tmp)
      shutil.copytree(export_dir, os.path.join(base, "1"))
    server = Server(base, tmp)
    try:
      with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        call = generation_service.stub(channel)
        _batching_job(stub, "warm up", 4, 0)
        _engine_job(call, "warm up", 4, 0)
        rounds = []
        for _ in range(FLAGS.rounds):  # alternated: both see the same load
          batching = _summary(*_run(jobs, lambda p, n, s: _batching_job(
              stub, p, n, s)))
          steps = server.metric("zoo_generation_step_seconds_count")
          step_seconds = server.metric("zoo_generation_step_seconds_sum")
          engine = _summary(*_run(jobs, lambda p, n, s: _engine_job(
              call, p, n, s)))
          steps = server.metric("zoo_generation_step_seconds_count") - steps
          step_seconds = (server.metric("zoo_generation_step_seconds_sum")
                          - step_seconds)
          mean_step = step_seconds / max(steps, 1)
          engine["mean_step_s"] = round(mean_step, 4)
          engine["time_to_first_token_p50_in_steps"] = round(
              engine["time_to_first_token_s"]["p50"] / mean_step, 2)
          rounds.append({"batching": batching, "engine": engine,
                         "engine_over_batching": round(
                             engine["tokens_per_second"]
                             / batching["tokens_per_second"], 2)})
          print(json.dumps(rounds[-1]), flush=True)
    finally:
      server.stop()
  ratio = float(np.median([r["engine_over_batching"] for r in rounds]))
  shown = min(rounds, key=lambda r: abs(r["engine_over_batching"] - ratio))
  result = {
      "benchmark": "generation_serving", "clients": FLAGS.clients,
      "jobs": FLAGS.jobs, "slots": FLAGS.slots,
      "tokens_per_step": FLAGS.tokens_per_step,
      "max_new_tokens_range": [FLAGS.min_new_tokens, FLAGS.max_new_tokens],
      "model": FLAGS.saved_model_dir or "small preset, random weights",
      "rounds": rounds, "batching": shown["batching"],
      "engine": shown["engine"],
      "engine_over_batching": ratio, "goal_ratio": GOAL_RATIO,
      "goal_ttft_steps": GOAL_TTFT_STEPS, "tf_runtime_env": RUNTIME_ENV,
      "environment": environment.describe()}
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=2)
  _plot(result, FLAGS.output.replace(".json", ".png"))
  print(json.dumps({k: result[k] for k in ("batching", "engine",
                                           "engine_over_batching")}, indent=1))


if __name__ == "__main__":
  app.run(main)
