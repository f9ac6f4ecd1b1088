"""`python -m serving.server` as a child process, as a user runs it.

Owns what every test and benchmark that runs the real server needs: a free
127.0.0.1 port, the child's environment (this checkout first on PYTHONPATH),
waiting until gRPC health says SERVING (or failing with the tail of the
server's log when it exits or never gets there), and stopping it (SIGTERM,
then SIGKILL once the grace period is over).
"""

import os
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# How much of the server's log a failure message quotes.
_LOG_TAIL_CHARS = 2000


def free_port():
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(**overrides):
  """os.environ with this checkout first on PYTHONPATH and TensorFlow's C++ logs
  at warnings and above; `overrides` are set last."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  env.update(overrides)
  return env


class ServerExited(RuntimeError):
  """The server process ended (or never became SERVING) while it was awaited."""


class ServerProcess:
  """`python -m serving.server --port=<port> *flags`, stdout and stderr to `log_path`.

  port: the gRPC port (default: a free one); `target` is 127.0.0.1:<port>.
  Use as a context manager, or call stop().
  """

  def __init__(self, flags, log_path, port=None, env=None):
    self.port = port or free_port()
    self.target = f"127.0.0.1:{self.port}"
    self.log_path = str(log_path)
    self.command = [sys.executable, "-m", "serving.server", f"--port={self.port}", *flags]
    with open(self.log_path, "wb") as log:  # the child keeps its own handle
      self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                      env=env if env is not None else child_env(), cwd=ROOT)

  @property
  def pid(self):
    return self.process.pid

  def running(self):
    return self.process.poll() is None

  def log_text(self):
    with open(self.log_path, "rb") as f:
      return f.read().decode("utf-8", "replace")

  def wait_until_serving(self, timeout=120, service=""):
    """Returns once gRPC health reports SERVING for `service` ('' = the server);
    ServerExited, quoting the log's tail, if the process ends or `timeout`
    seconds pass first (a server still running then is stopped, so a failed
    start leaves no process behind)."""
    try:
      self._wait_for_serving(timeout, service)
    except ServerExited:
      self.stop()
      raise

  def _wait_for_serving(self, timeout, service):
    end = time.monotonic() + timeout
    with grpc.insecure_channel(self.target) as channel:
      health = health_pb2_grpc.HealthStub(channel)
      while time.monotonic() < end:
        if not self.running():
          raise ServerExited(f"the server exited with {self.process.returncode}:\n"
                             f"{self.log_text()[-_LOG_TAIL_CHARS:]}")
        try:
          status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
          if status.status == health_pb2.HealthCheckResponse.SERVING:
            return
        except grpc.RpcError:
          pass
        time.sleep(0.2)
    raise ServerExited(f"the server was not SERVING after {timeout} s:\n"
                       f"{self.log_text()[-_LOG_TAIL_CHARS:]}")

  def stop(self, grace_seconds=30):
    """SIGTERM, then SIGKILL after `grace_seconds`; returns the exit code."""
    if self.running():
      self.process.terminate()
      try:
        self.process.wait(timeout=grace_seconds)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    return self.process.returncode

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.stop()
