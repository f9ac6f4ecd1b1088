"""Streaming generation served over real gRPC and HTTP on 127.0.0.1.

Two character LMs: `lm` (the tiny export, 32 positions) for the same-tokens
checks, and `long` (the tiny preset with 4,096 positions, trained 2 steps)
whose long generations keep slots busy for the queue, cancel and deadline
checks (4,000 tokens take seconds even on an idle machine).
A second REST port on the same models has a short --rest_api_timeout_in_ms
(the REST deadline checks), and a second server runs `lm` with
--generation_tokens_per_step=3.
"""

import http.client
import json
import os
import shutil
import threading
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, prediction_service_pb2_grpc

from serving import generation_rest, generation_service, http_server
from serving import model_server, openai_api, rest_api
from tests.serving.test_decoder_served import generate_request, outputs

SLOTS, MAX_QUEUE = 3, 4
LONGEST = 4000  # tokens of a long generation on `long`
CLIENTS = SLOTS + 1  # more than the slots: requests wait, join and leave


@pytest.fixture(scope="module")
def long_lm(tmp_path_factory, shakespeare_subset):
  import keras
  from export.exporter import ExportConfig, export_saved_model
  from tests.conftest import tiny_lm_config
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path_factory.mktemp("long_lm")
  train_and_evaluate(tiny_lm_config(
      model_dir, shakespeare_subset, train_steps=2, eval_every_steps=2,
      checkpoint_every_steps=2, log_every_steps=2, batch_size=1,
      model_overrides="sequence_length=4096"))
  keras.mixed_precision.set_global_policy("float32")
  return export_saved_model(ExportConfig(
      model_dir=str(model_dir), export_base=str(model_dir / "export")))


@pytest.fixture(scope="module")
def server(exported_lm, long_lm, tmp_path_factory):
  base = tmp_path_factory.mktemp("generation_served")
  for name, path in (("lm", exported_lm), ("long", long_lm)):
    shutil.copytree(path, base / name / "1")
  config = base / "models.config"
  config.write_text("model_config_list {" + "".join(
      f' config {{ name: "{n}" base_path: "{base / n}" '
      'model_platform: "tensorflow" }' for n in ("lm", "long")) + " }")
  monitoring = base / "monitoring.config"
  monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
  srv = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_config_file=str(config),
      monitoring_config_file=str(monitoring),
      file_system_poll_wait_seconds=0.5, generation_slots=SLOTS,
      generation_max_queue=MAX_QUEUE)).start()
  assert srv.manager.wait_until_available(120)
  yield srv
  srv.stop(grace=0)


@pytest.fixture(scope="module")
def channel(server):
  with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
    yield ch


def engine(server, name):
  with server.manager.get_handle(model_pb2.ModelSpec(name=name)) as servable:
    return servable.engine


def wait_idle(server, name, seconds=5):
  end = time.monotonic() + seconds
  while engine(server, name).occupancy() != (0, 0):
    assert time.monotonic() < end, engine(server, name).occupancy()
    time.sleep(0.01)


def stream_request(model, prompt, **settings):
  request = generation_service.GenerateRequest(prompt=prompt, **settings)
  request.model_spec.name = model
  return request


def expected_text(channel, prompt, max_new_tokens, temperature=0.0, top_k=0,
                  top_p=1.0, seed=0):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = generate_request([prompt], [max_new_tokens], [temperature],
                             [top_k], [top_p], [seed])
  request.model_spec.name = "lm"
  return outputs(stub.Predict(request, timeout=60))["text"][0].decode()


REQUESTS = [
    ("ROMEO:", dict(max_new_tokens=20)),
    ("KING", dict(max_new_tokens=31, temperature=1.0, top_p=0.9, seed=3)),
    ("", dict(max_new_tokens=7, temperature=0.8, top_k=5, seed=11)),
    ("First Citizen:\n", dict(max_new_tokens=12, temperature=1.2, seed=-4)),
    ("x" * 100, dict(max_new_tokens=25, temperature=1.0, seed=2)),
    ("JULIET:", dict(max_new_tokens=1)),
    ("To be", dict(max_new_tokens=16, temperature=0.7, seed=9)),
    ("O", dict(max_new_tokens=3)),
]


def stream_requests(channel):
  """Streams every REQUESTS entry to model "lm" from CLIENTS threads at
  once (so requests join and leave a running batch): {index: messages}."""
  call = generation_service.stub(channel)
  results = {}

  def client(indices):
    for i in indices:
      prompt, settings = REQUESTS[i]
      results[i] = list(call(stream_request("lm", prompt, **settings),
                             timeout=60))

  threads = [threading.Thread(target=client, args=(range(k, len(REQUESTS),
                                                         CLIENTS),))
             for k in range(CLIENTS)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return results


def test_grpc_streams_equal_generate_while_requests_join_and_leave(
    server, channel):
  results = stream_requests(channel)
  for i, (prompt, settings) in enumerate(REQUESTS):
    messages = results[i]
    text = "".join(m.text for m in messages)
    assert text == expected_text(channel, prompt, **settings), i
    counts = [m.num_tokens for m in messages]
    assert counts == sorted(counts) and counts[-1] == settings["max_new_tokens"]
    assert [m.finish_reason for m in messages] == [""] * (
        len(messages) - 1) + ["length"]
    assert messages[-1].prompt_tokens == min(len(prompt) + 1, 32 - counts[-1])
  wait_idle(server, "lm")


def test_stop_strings_and_bad_settings(channel):
  call = generation_service.stub(channel)
  full = expected_text(channel, "ROMEO:", 31, temperature=1.0, seed=5)
  stop = full[10:12]
  messages = list(call(stream_request("lm", "ROMEO:", max_new_tokens=31,
                                      temperature=1.0, seed=5, stop=[stop]),
                       timeout=60))
  assert "".join(m.text for m in messages) == full[:full.index(stop)]
  assert messages[-1].finish_reason == "stop"
  for bad, word in ((dict(temperature=-1.0), "temperature"),
                    (dict(max_new_tokens=32), "max_new_tokens"),
                    (dict(top_k=-2), "top_k")):
    with pytest.raises(grpc.RpcError) as info:
      list(call(stream_request("lm", "ROMEO:", **bad), timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert word in info.value.details()


def test_cancel_frees_the_slot_and_a_full_queue_is_resource_exhausted(
    server, channel):
  call = generation_service.stub(channel)
  running = []
  for _ in range(SLOTS):  # one after the other, each generating
    running.append(call(stream_request("long", "ROMEO:",
                                       max_new_tokens=LONGEST), timeout=60))
    assert next(running[-1]).num_tokens >= 1
  running += [call(stream_request("long", "ROMEO:", max_new_tokens=LONGEST),
                   timeout=60) for _ in range(MAX_QUEUE)]
  end = time.monotonic() + 5
  while engine(server, "long").occupancy() != (SLOTS, MAX_QUEUE):
    assert time.monotonic() < end
    time.sleep(0.005)
  with pytest.raises(grpc.RpcError) as info:
    next(call(stream_request("long", "ROMEO:", max_new_tokens=LONGEST),
              timeout=60))
  assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  tokens_before = engine(server, "long")._metrics.tokens_generated._value.get()
  for r in running:
    r.cancel()
  wait_idle(server, "long")
  spent = (engine(server, "long")._metrics.tokens_generated._value.get()
           - tokens_before)
  assert spent < SLOTS * 400  # they stopped long before their LONGEST tokens


def test_deadline_ends_the_stream(server, channel):
  call = generation_service.stub(channel)
  messages = []
  with pytest.raises(grpc.RpcError) as info:
    for m in call(stream_request("long", "ROMEO:", max_new_tokens=LONGEST),
                  timeout=0.5):
      messages.append(m)
  assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
  assert messages and messages[-1].num_tokens < LONGEST
  wait_idle(server, "long")


def sse_events(response):
  for line in response:
    line = line.decode().strip()
    if line.startswith("data: "):
      yield line[len("data: "):]


def post(server, path, body):
  return urllib.request.Request(
      f"http://127.0.0.1:{server.rest_port}{path}",
      data=json.dumps(body).encode(), headers={"Content-Type":
                                               "application/json"})


def test_rest_sse_stream_and_disconnect(server, channel):
  request = post(server, "/v1/models/lm:generate_stream",
                 {"prompt": "KING", "max_new_tokens": 31, "temperature": 1.0,
                  "top_p": 0.9, "seed": 3})
  with urllib.request.urlopen(request, timeout=60) as response:
    assert response.headers["Content-Type"] == "text/event-stream"
    events = [json.loads(e) for e in sse_events(response)]
  assert "".join(e["text"] for e in events) == expected_text(
      channel, "KING", 31, temperature=1.0, top_p=0.9, seed=3)
  assert events[-1]["finish_reason"] == "length"
  with pytest.raises(urllib.error.HTTPError) as info:
    urllib.request.urlopen(post(server, "/v1/models/lm:generate_stream",
                                {"prompt": "KING", "top_p": 2}), timeout=60)
  assert info.value.code == 400 and "top_p" in json.load(info.value)["error"]
  connection = http.client.HTTPConnection("127.0.0.1", server.rest_port,
                                          timeout=60)
  connection.request("POST", "/v1/models/long:generate_stream",
                     json.dumps({"prompt": "x", "max_new_tokens": 500}))
  response = connection.getresponse()
  assert response.readline().startswith(b"data: ")  # generating
  connection.sock.shutdown(2)
  connection.close()
  wait_idle(server, "long")


def test_openai_client_completions_streaming_and_not(server, channel):
  import openai
  client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.rest_port}/v1",
                         api_key="unused", max_retries=0)
  assert {m.id for m in client.models.list()} == {"lm", "long"}
  completion = client.completions.create(
      model="lm", prompt=["ROMEO:", "KING"], max_tokens=12, temperature=0.0)
  assert [c.text for c in completion.choices] == [
      expected_text(channel, p, 12) for p in ("ROMEO:", "KING")]
  assert [c.finish_reason for c in completion.choices] == ["length"] * 2
  assert completion.usage.completion_tokens == 24
  assert completion.usage.prompt_tokens == 7 + 5  # with the start token
  assert completion.usage.total_tokens == 36
  chunks = list(client.completions.create(
      model="lm", prompt="First Citizen:\n", max_tokens=20, temperature=0.9,
      top_p=0.95, seed=7, stream=True, stream_options={"include_usage": True}))
  text = "".join(c.choices[0].text for c in chunks if c.choices)
  assert text == expected_text(channel, "First Citizen:\n", 20,
                               temperature=0.9, top_p=0.95, seed=7)
  assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == (
      "length")
  assert chunks[-1].usage.completion_tokens == 20
  full = expected_text(channel, "KING", 31, temperature=1.0, seed=4)
  stopped = client.completions.create(model="lm", prompt="KING", max_tokens=31,
                                      temperature=1.0, seed=4,
                                      stop=[full[5:7]])
  assert stopped.choices[0].text == full[:full.index(full[5:7])]
  assert stopped.choices[0].finish_reason == "stop"
  with pytest.raises(openai.BadRequestError) as info:
    client.completions.create(model="lm", prompt="KING", temperature=-1)
  assert "temperature" in info.value.body["message"]
  with pytest.raises(openai.NotFoundError):
    client.completions.create(model="nope", prompt="KING")


def test_tf_serving_status_call_and_metrics_stay(server):
  url = f"http://127.0.0.1:{server.rest_port}"
  with urllib.request.urlopen(f"{url}/v1/models/lm", timeout=60) as response:
    status = json.load(response)
  assert status["model_version_status"][0]["state"] == "AVAILABLE"
  with urllib.request.urlopen(f"{url}/metrics", timeout=60) as response:
    text = response.read().decode()
  for name in ("zoo_generation_time_to_first_token_seconds_count",
               "zoo_generation_inter_token_latency_seconds_count",
               "zoo_generation_queue_length", "zoo_generation_slots_occupied",
               "zoo_generation_tokens_total"):
    assert f'{name}{{model_name="lm"}}' in text, name


# ---- REST deadlines: --rest_api_timeout_in_ms ------------------------------

TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def short_timeout_port(server):
  """A second REST port over `server`'s models, built as
  serving/model_server.py builds its own, with a REST timeout
  (--rest_api_timeout_in_ms) of TIMEOUT_MS."""
  rest = http_server.RestServer(
      rest_api.RestHandler(server.api, server.manager, TIMEOUT_MS),
      "127.0.0.1", 0, routes=(
          generation_rest.StreamRoute(server.generation_api, TIMEOUT_MS),
          openai_api.OpenAiRoutes(server.generation_api, server.manager,
                                  TIMEOUT_MS)))
  yield rest.start()
  rest.stop()


def sse_messages(response):
  """(event name or None, parsed data or "[DONE]") of each server-sent
  event."""
  name = None
  for line in response:
    line = line.decode().rstrip("\r\n")
    if line.startswith("event: "):
      name = line[len("event: "):]
    elif line.startswith("data: "):
      data = line[len("data: "):]
      yield name, data if data == "[DONE]" else json.loads(data)
      name = None


def post_to(port, path, body, timeout=60):
  """(HTTP status, [sse message] or the JSON body, seconds taken)."""
  start = time.monotonic()
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
  try:
    connection.request("POST", path, json.dumps(body),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.headers["Content-Type"] == "text/event-stream":
      body = list(sse_messages(response))
    else:
      body = json.loads(response.read())
    return response.status, body, time.monotonic() - start
  finally:
    connection.close()


def in_threads(*calls):
  """The results of the calls, run at the same time."""
  results = [None] * len(calls)

  def run(i):
    results[i] = calls[i]()
  threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return results


def assert_about_the_timeout(seconds):
  # The deadline starts once the server has the body: never before it, and
  # the answer ends within a few engine steps of it (a long generation would
  # take several times longer).
  assert TIMEOUT_MS / 1000 - 0.05 <= seconds < TIMEOUT_MS / 1000 + 1.0, seconds


def test_rest_deadline_ends_sse_and_openai_generations(
    server, short_timeout_port):
  import openai
  client = openai.OpenAI(base_url=f"http://127.0.0.1:{short_timeout_port}/v1",
                         api_key="unused", max_retries=0)

  def openai_complete():
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
      client.completions.create(model="long", prompt="x", max_tokens=LONGEST,
                                temperature=0.0)
    return info.value, time.monotonic() - start

  sse, streamed, (completion_error, completion_seconds) = in_threads(
      lambda: post_to(short_timeout_port, "/v1/models/long:generate_stream",
                      {"prompt": "x", "max_new_tokens": LONGEST}),
      lambda: post_to(short_timeout_port, "/v1/completions",
                      {"model": "long", "prompt": "x", "max_tokens": LONGEST,
                       "temperature": 0, "stream": True}),
      openai_complete)
  wait_idle(server, "long", seconds=0.5)  # every slot freed at the deadline

  status, messages, seconds = sse  # tokens, then the error event
  assert status == 200
  assert_about_the_timeout(seconds)
  *tokens, last = messages
  assert tokens and all(name is None for name, _ in tokens)
  assert tokens[-1][1]["num_tokens"] < LONGEST
  assert not any(data["finish_reason"] for _, data in tokens)
  assert last == ("error", {"error": "Deadline Exceeded",
                            "code": "DEADLINE_EXCEEDED"})

  status, chunks, seconds = streamed  # chunks, the error chunk, [DONE]
  assert status == 200
  assert_about_the_timeout(seconds)
  *pieces, failure, done = [data for _, data in chunks]
  assert pieces and all(p["choices"][0]["finish_reason"] is None
                        for p in pieces)
  assert len("".join(p["choices"][0]["text"] for p in pieces)) < LONGEST
  assert failure == {"error": {"message": "Deadline Exceeded",
                               "type": "server_error", "param": None,
                               "code": "deadline_exceeded"}}
  assert done == "[DONE]"

  assert completion_error.status_code == 504  # errors.py: DEADLINE_EXCEEDED
  assert completion_error.body == {"message": "Deadline Exceeded",
                                   "type": "server_error", "param": None,
                                   "code": "deadline_exceeded"}
  assert_about_the_timeout(completion_seconds)


def wait_occupancy(server, name, expected, seconds=5):
  end = time.monotonic() + seconds
  while engine(server, name).occupancy() != expected:
    assert time.monotonic() < end, engine(server, name).occupancy()
    time.sleep(0.005)


def test_rest_waiting_for_a_slot_past_the_deadline_is_http_504(
    server, channel, short_timeout_port):
  call = generation_service.stub(channel)
  running = [call(stream_request("long", "ROMEO:", max_new_tokens=LONGEST),
                  timeout=60) for _ in range(SLOTS)]
  for r in running:
    assert next(r).num_tokens >= 1  # every slot busy: the next ones wait
  try:
    # No header is sent before the first event: a client that leaves while
    # its request waits still takes it out of the queue.
    connection = http.client.HTTPConnection("127.0.0.1", short_timeout_port,
                                            timeout=60)
    connection.request("POST", "/v1/models/long:generate_stream",
                       json.dumps({"prompt": "x", "max_new_tokens": 5}))
    wait_occupancy(server, "long", (SLOTS, 1))
    connection.sock.shutdown(2)
    connection.close()
    wait_occupancy(server, "long", (SLOTS, 0), seconds=1)
    sse, streamed = in_threads(
        lambda: post_to(short_timeout_port, "/v1/models/long:generate_stream",
                        {"prompt": "x", "max_new_tokens": 5}),
        lambda: post_to(short_timeout_port, "/v1/completions",
                        {"model": "long", "prompt": "x", "max_tokens": 5,
                         "stream": True}))
  finally:
    for r in running:
      r.cancel()
  assert sse[:2] == (504, {"error": "Deadline Exceeded"})  # TF Serving's shape
  assert_about_the_timeout(sse[2])
  assert streamed[:2] == (504, {"error": {
      "message": "Deadline Exceeded", "type": "server_error", "param": None,
      "code": "deadline_exceeded"}})
  assert_about_the_timeout(streamed[2])
  wait_idle(server, "long")


def test_rest_requests_under_the_timeout_are_unaffected(
    channel, short_timeout_port):
  status, messages, _ = post_to(
      short_timeout_port, "/v1/models/lm:generate_stream",
      {"prompt": "KING", "max_new_tokens": 31, "temperature": 1.0,
       "top_p": 0.9, "seed": 3})
  assert status == 200 and all(name is None for name, _ in messages)
  assert "".join(d["text"] for _, d in messages) == expected_text(
      channel, "KING", 31, temperature=1.0, top_p=0.9, seed=3)
  assert messages[-1][1]["finish_reason"] == "length"
  status, completion, _ = post_to(
      short_timeout_port, "/v1/completions",
      {"model": "lm", "prompt": ["ROMEO:", "KING"], "max_tokens": 12,
       "temperature": 0})
  assert status == 200
  assert [c["text"] for c in completion["choices"]] == [
      expected_text(channel, p, 12) for p in ("ROMEO:", "KING")]
  status, chunks, _ = post_to(
      short_timeout_port, "/v1/completions",
      {"model": "lm", "prompt": "JULIET:", "max_tokens": 20, "temperature": 0,
       "stream": True})
  assert status == 200 and chunks[-1] == (None, "[DONE]")
  assert "".join(d["choices"][0]["text"] for _, d in chunks[:-1]) == (
      expected_text(channel, "JULIET:", 20))


def test_rest_timeout_of_zero_or_less_is_no_deadline():
  assert rest_api.deadline_after(0) is None
  assert rest_api.deadline_after(-1) is None
  assert rest_api.deadline_after(1500) - time.monotonic() == pytest.approx(
      1.5, abs=0.1)


# ---- several tokens per engine step: --generation_tokens_per_step ----------

TOKENS_PER_STEP = 3


@pytest.fixture(scope="module")
def multi_token_channel(exported_lm, tmp_path_factory):
  """gRPC to a server of `lm` whose engine steps advance each slot by up to
  TOKENS_PER_STEP tokens."""
  base = tmp_path_factory.mktemp("tokens_per_step")
  shutil.copytree(exported_lm, base / "lm" / "1")
  srv = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=0, model_name="lm",
      model_base_path=str(base / "lm"), generation_slots=SLOTS, generation_max_queue=MAX_QUEUE,
      generation_tokens_per_step=TOKENS_PER_STEP)).start()
  assert srv.manager.wait_until_available(120)
  assert engine(srv, "lm").tokens_per_step == TOKENS_PER_STEP
  with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
    yield ch
  srv.stop(grace=0)


def test_tokens_per_step_streams_equal_generate_in_a_shared_batch(
    channel, multi_token_channel):
  results = stream_requests(multi_token_channel)
  for i, (prompt, settings) in enumerate(REQUESTS):
    messages = results[i]
    assert "".join(m.text for m in messages) == expected_text(
        channel, prompt, **settings), i
    counts = [m.num_tokens for m in messages]
    # The first token comes from the prefill, then up to 3 a step, and
    # exactly max_new_tokens in all (20, 31, 7, ... are not multiples of 3).
    assert counts[0] == 1 and counts[-1] == settings["max_new_tokens"], i
    steps = [b - a for a, b in zip(counts, counts[1:])]
    assert all(1 <= s <= TOKENS_PER_STEP for s in steps), (i, counts)
    assert all(s == TOKENS_PER_STEP for s in steps[:-1]), (i, counts)
    assert [m.finish_reason for m in messages] == [""] * (
        len(messages) - 1) + ["length"]
    assert messages[-1].prompt_tokens == min(len(prompt) + 1, 32 - counts[-1])


def test_tokens_per_step_stop_strings_cut_inside_a_step(
    channel, multi_token_channel):
  call = generation_service.stub(multi_token_channel)
  full = expected_text(channel, "ROMEO:", 31, temperature=1.0, seed=5)

  def first_ending_at(end, length):  # >= length characters, first seen there
    return next(full[start:end + 1] for start in range(end + 1 - length, -1, -1)
                if full.index(full[start:end + 1]) == start)
  # Character j is token j + 1: token 1 comes from the prefill, tokens 2-4
  # (characters 1-3) from the first step, ... 10-12 from the fourth, 13-15
  # from the fifth: stops ending on each place of a step (what follows them
  # in that step is never sent), and one that begins in the fifth step and
  # ends in the sixth (the fifth's end held back until the sixth shows it).
  stops = [first_ending_at(10, 1), first_ending_at(11, 1),
           first_ending_at(12, 1), first_ending_at(16, 4)]
  answers = in_threads(*[
      lambda stop=stop: list(call(stream_request(
          "lm", "ROMEO:", max_new_tokens=31, temperature=1.0, seed=5,
          stop=[stop]), timeout=60)) for stop in stops])
  for stop, messages in zip(stops, answers):
    assert "".join(m.text for m in messages) == full[:full.index(stop)], stop
    assert messages[-1].finish_reason == "stop"

