"""--ssl_config_file over real sockets (serving/tls.py): gRPC with TLS and mutual
TLS as TF Serving, and the REST port (metrics included) under the same config.

Certificates are made here with trustme: one CA signs the server and the good
client; a second CA signs the client that must be refused.
"""

import os
import subprocess
import sys

import grpc
import pytest
import requests
import trustme
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import config as config_lib
from serving import tls as tls_lib
from tests.serving.conftest import install_version
from tests.serving.conftest import predict_request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREDICT_PATH = "/v1/models/m:predict"
METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
  """CA, server cert (127.0.0.1/localhost), good client, client of another CA."""
  root = tmp_path_factory.mktemp("pki")
  ca, other_ca = trustme.CA(), trustme.CA()
  server = ca.issue_cert("127.0.0.1", "localhost")
  client = ca.issue_cert("client@example.com")
  stranger = other_ca.issue_cert("stranger@example.com")
  paths = {"ca": root / "ca.pem"}
  ca.cert_pem.write_to_path(str(paths["ca"]))
  for name, cert in (("client", client), ("stranger", stranger)):
    paths[name] = (root / f"{name}.pem", root / f"{name}.key")
    cert.cert_chain_pems[0].write_to_path(str(paths[name][0]))
    cert.private_key_pem.write_to_path(str(paths[name][1]))
  return {"ca": ca, "server": server, "client": client, "stranger": stranger,
          "paths": paths, "root": root}


def _ssl_config_text(pki, client_verify):
  def pem(blob):
    return blob.bytes().decode("ascii").replace("\n", "\\n")
  chain = "".join(pem(b) for b in pki["server"].cert_chain_pems)
  return (f'server_key: "{pem(pki["server"].private_key_pem)}"\n'
          f'server_cert: "{chain}"\n'
          f'custom_ca: "{pem(pki["ca"].cert_pem)}"\n'
          f"client_verify: {'true' if client_verify else 'false'}\n")


def _start(start_server, exports, tmp_path, pki, client_verify):
  install_version(exports["tf2"], str(tmp_path / "m"), 1)
  ssl_file = tmp_path / "ssl.config"
  ssl_file.write_text(_ssl_config_text(pki, client_verify))
  monitoring = tmp_path / "monitoring.config"
  monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}')
  return start_server(model_name="m", model_base_path=str(tmp_path / "m"),
                      ssl_config_file=str(ssl_file), monitoring_config_file=str(monitoring),
                      file_system_poll_wait_seconds=0, rest_api_header_timeout_seconds=2)


def _grpc_predict(server, credentials=None):
  target = f"127.0.0.1:{server.grpc_port}"
  channel = (grpc.secure_channel(target, credentials) if credentials is not None
             else grpc.insecure_channel(target))
  with channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(predict_request(), timeout=10)


def _credentials(pki, who=None):
  ca = pki["ca"].cert_pem.bytes()
  if who is None:
    return grpc.ssl_channel_credentials(root_certificates=ca)
  cert = pki[who]
  return grpc.ssl_channel_credentials(
      root_certificates=ca, private_key=cert.private_key_pem.bytes(),
      certificate_chain=b"".join(b.bytes() for b in cert.cert_chain_pems))


def _https(server, path, pki, who=None, method="post"):
  paths = pki["paths"]
  cert = paths[who] if who else None
  kwargs = {"json": {"instances": ["hello"]}} if method == "post" else {}
  return getattr(requests, method)(f"https://127.0.0.1:{server.rest_port}{path}",
                                   verify=str(paths["ca"]), cert=cert, timeout=10, **kwargs)


def _refused(call):
  with pytest.raises(grpc.RpcError) as info:
    call()
  assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value


def test_mutual_tls_refuses_plain_missing_and_foreign_certificates(
    start_server, exports, tmp_path, pki):
  server = _start(start_server, exports, tmp_path, pki, client_verify=True)
  good = lambda: _grpc_predict(server, _credentials(pki, "client"))
  assert good().outputs["label"].string_val == [b"positive"]
  _refused(lambda: _grpc_predict(server))                              # plain text
  _refused(lambda: _grpc_predict(server, _credentials(pki)))           # no client cert
  _refused(lambda: _grpc_predict(server, _credentials(pki, "stranger")))  # other CA
  assert good().outputs["label"].string_val == [b"positive"]

  assert _https(server, PREDICT_PATH, pki, "client").json()["predictions"][0]["label"] == \
      "positive"
  with pytest.raises(requests.exceptions.ConnectionError):
    requests.post(f"http://127.0.0.1:{server.rest_port}{PREDICT_PATH}",
                  json={"instances": ["hello"]}, timeout=10)
  for who in (None, "stranger"):
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
      _https(server, PREDICT_PATH, pki, who)
  metrics = _https(server, METRICS_PATH, pki, "client", method="get")
  assert "tfserving_request_count" in metrics.text
  with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
    _https(server, METRICS_PATH, pki, None, method="get")
  assert _https(server, PREDICT_PATH, pki, "client").status_code == 200


def test_server_only_tls_needs_no_client_certificate(start_server, exports, tmp_path, pki):
  server = _start(start_server, exports, tmp_path, pki, client_verify=False)
  assert _grpc_predict(server, _credentials(pki)).outputs["label"].string_val == [b"positive"]
  _refused(lambda: _grpc_predict(server))
  assert _https(server, PREDICT_PATH, pki).status_code == 200
  # A client that trusts only the system's CAs does not trust this server.
  with pytest.raises(requests.exceptions.SSLError):
    requests.get(f"https://127.0.0.1:{server.rest_port}/v1/models/m", timeout=10)


def _config_error(tmp_path, text):
  path = tmp_path / "ssl.config"
  path.write_text(text)
  with pytest.raises(config_lib.ConfigError) as info:
    tls_lib.read_ssl_config(str(path))
  return str(info.value)


def test_bad_ssl_configs_are_one_line_errors(tmp_path, pki):
  good = _ssl_config_text(pki, client_verify=True)
  with pytest.raises(config_lib.ConfigError, match="cannot read"):
    tls_lib.read_ssl_config(str(tmp_path / "missing.config"))
  assert "not a valid SSLConfig" in _config_error(tmp_path, "server_key: 1 2 3")
  assert "server_cert is empty" in _config_error(
      tmp_path, good.split("server_cert")[0])
  assert "needs custom_ca" in _config_error(
      tmp_path, "\n".join(l for l in good.splitlines() if not l.startswith("custom_ca")))
  key_is_a_file_name = "\n".join(
      'server_key: "/etc/server.key"' if l.startswith("server_key") else l
      for l in good.splitlines())
  assert "server_key is not PEM text" in _config_error(tmp_path, key_is_a_file_name)
  # A key that is not the certificate's, and a mangled certificate.
  other_key = trustme.CA().issue_cert("x").private_key_pem.bytes().decode().replace("\n", "\\n")
  mismatched = "\n".join(f'server_key: "{other_key}"' if l.startswith("server_key") else l
                         for l in good.splitlines())
  message = _config_error(tmp_path, mismatched)
  assert "do not load" in message and "\n" not in message
  assert "do not load" in _config_error(tmp_path, good.replace("MI", "XX", 3))
  bad_ca = good.replace('custom_ca: "-----BEGIN CERTIFICATE-----\\nMI',
                        'custom_ca: "-----BEGIN CERTIFICATE-----\\nXX', 1)
  assert "custom_ca does not load" in _config_error(tmp_path, bad_ca)


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def test_bad_ssl_config_stops_the_server_with_one_line(tmp_path):
  path = tmp_path / "ssl.config"
  path.write_text('server_key: "not a key"\nserver_cert: "not a cert"\n')
  model = tmp_path / "m"
  model.mkdir()
  run = subprocess.run(
      [sys.executable, "-m", "serving.server", "--port=0", "--model_name=m",
       f"--model_base_path={model}", f"--ssl_config_file={path}"],
      capture_output=True, text=True, env=_env(), cwd=ROOT,
      timeout=120, check=False)
  assert run.returncode == 1, run.stderr[-2000:]
  errors = [l for l in run.stderr.splitlines() if l.startswith("serving.server: error:")]
  assert len(errors) == 1 and "server_key is not PEM text" in errors[0], run.stderr[-2000:]
  assert "Traceback" not in run.stderr
