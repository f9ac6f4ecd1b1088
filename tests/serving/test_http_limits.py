"""The REST port's own limits over real sockets: 413 at once, header and body
timeouts, the connection cap, gzip bodies and CORS (serving/http_server.py)."""

import gzip
import json
import logging
import socket
import time

import pytest
import requests

from serving import model_server
from tests.serving.conftest import install_version
from tests.serving.conftest import rest_url

BODY_LIMIT = 4096
TIMEOUT = 0.5
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
  base = tmp_path_factory.mktemp("limits")
  install_version(exports["tf2"], str(base / "m"), 1)
  server = model_server.ModelServer(model_server.ServerOptions(
      port=0, rest_api_port=-1, model_name="m", model_base_path=str(base / "m"),
      file_system_poll_wait_seconds=0, max_num_load_retries=0,
      rest_api_max_body_bytes=BODY_LIMIT, rest_api_header_timeout_seconds=TIMEOUT,
      rest_api_body_timeout_seconds=TIMEOUT, rest_api_max_connections=MAX_CONNECTIONS,
      rest_api_enable_cors_support=True)).start()
  assert server.manager.wait_until_available(60)
  yield server
  server.stop(grace=0)


def _connect(server):
  sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=5)
  sock.settimeout(5)
  return sock


def _read_all(sock):
  """Everything the server sends until it closes the connection."""
  chunks = []
  while True:
    try:
      data = sock.recv(65536)
    except ConnectionResetError:
      break
    if not data:
      break
    chunks.append(data)
  return b"".join(chunks)


def _wait_for_connections(server, count, timeout=5.0):
  end = time.monotonic() + timeout
  rest = server._rest  # pylint: disable=protected-access
  while rest.open_connections != count and time.monotonic() < end:
    time.sleep(0.02)
  return rest.open_connections


def test_oversize_content_length_is_413_at_once(server):
  with _connect(server) as sock:
    start = time.monotonic()
    sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 3000000000\r\n\r\n{")
    answer = _read_all(sock)
    elapsed = time.monotonic() - start
  assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
  body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
  assert "--rest_api_max_body_bytes" in body["error"]
  assert elapsed < 4, elapsed  # Not the wait for 3 GB: the linger (2 s) at most.


def test_chunked_body_over_the_limit_is_413(server):
  def chunks():
    for _ in range(10):
      yield b" " * 1000
  r = requests.post(rest_url(server) + "/v1/models/m:predict", data=chunks(), timeout=10)
  assert r.status_code == 413
  assert "error" in r.json()


def test_slow_headers_and_idle_connections_are_closed(server):
  slow, idle = _connect(server), _connect(server)
  try:
    start = time.monotonic()
    slow.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n")
    closed = None
    for _ in range(40):  # One header byte every 0.1 s: never a complete request.
      try:
        slow.sendall(b"X")
      except (BrokenPipeError, ConnectionResetError):
        closed = time.monotonic() - start
        break
      time.sleep(0.1)
    assert closed is not None and closed < 3, closed
    assert _read_all(idle) == b""  # Closed without a word after the header timeout.
    assert time.monotonic() - start < 4
  finally:
    slow.close()
    idle.close()


def test_slow_body_is_408_and_closed(server):
  with _connect(server) as sock:
    start = time.monotonic()
    sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 100\r\n\r\n{\"inst")
    answer = _read_all(sock)
  assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
  assert time.monotonic() - start < 4


def test_connections_over_the_cap_get_503_and_the_server_keeps_serving(server):
  assert _wait_for_connections(server, 0) == 0
  held = [_connect(server) for _ in range(MAX_CONNECTIONS)]
  try:
    assert _wait_for_connections(server, MAX_CONNECTIONS) == MAX_CONNECTIONS
    with _connect(server) as extra:
      answer = _read_all(extra)
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert b"--rest_api_max_connections" in answer
  finally:
    for sock in held:
      sock.close()
  assert _wait_for_connections(server, 0) == 0
  r = requests.post(rest_url(server) + "/v1/models/m:predict",
                    json={"instances": ["fine again"]}, timeout=10)
  assert r.status_code == 200


def test_gzip_request_bodies(server, caplog):
  caplog.set_level(logging.INFO)
  url = rest_url(server) + "/v1/models/m:predict"
  body = gzip.compress(json.dumps({"instances": ["hello world"]}).encode())
  r = requests.post(url, data=body, headers={"Content-Encoding": "gzip"}, timeout=10)
  assert r.status_code == 200, r.text
  assert r.json()["predictions"][0]["label"] == "positive"
  # Small on the wire, over the limit once decompressed: 413, not a gzip bomb.
  bomb = gzip.compress(b'{"instances": ["' + b"a" * (1 << 20) + b'"]}')
  assert len(bomb) < BODY_LIMIT
  r = requests.post(url, data=bomb, headers={"Content-Encoding": "gzip"}, timeout=10)
  assert r.status_code == 413
  for corrupt in (b"\x1f\x8bnot gzip at all", gzip.compress(b'{"instances": ["x"]}')[:-4]
                  + b"\0\0\0\0"):
    r = requests.post(url, data=corrupt, headers={"Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 400
    assert "error" in r.json()
  assert not [rec for rec in caplog.records if rec.exc_info], "a client error logged a traceback"


def test_cors(server):
  url = rest_url(server) + "/v1/models/m:predict"
  r = requests.options(url, headers={"Origin": "http://example.test",
                                     "Access-Control-Request-Method": "POST"}, timeout=10)
  assert r.status_code == 200
  assert r.headers["Access-Control-Allow-Origin"] == "*"
  assert "POST" in r.headers["Access-Control-Allow-Methods"]
  r = requests.post(url, json={"instances": ["hi"]}, timeout=10)
  assert r.status_code == 200
  assert r.headers["Access-Control-Allow-Origin"] == "*"
  r = requests.post(url, data=b"{", timeout=10)
  assert r.status_code == 400
  assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cors_headers_unless_enabled(tf2_server):
  r = requests.post(rest_url(tf2_server) + "/v1/models/m:predict",
                    json={"instances": ["hi"]}, timeout=10)
  assert r.status_code == 200
  assert "Access-Control-Allow-Origin" not in r.headers
