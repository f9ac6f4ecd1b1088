"""TLS for both ports from one --ssl_config_file (TF Serving's SSLConfig text proto).

TF Serving secures only gRPC with it (server.cc
BuildServerCredentialsFromSSLConfigFile); we secure the REST port (and so the
metrics path served there) with the same key, certificate and client check:

  server_key: "-----BEGIN PRIVATE KEY-----\n..."   # the PEM text itself
  server_cert: "-----BEGIN CERTIFICATE-----\n..."  # chain: leaf first
  custom_ca: "-----BEGIN CERTIFICATE-----\n..."    # CAs that sign client certs
  client_verify: true                              # mutual TLS

As in TF Serving the fields hold PEM text, not file names. With
`client_verify` a client must present a certificate signed by `custom_ca`
(required then); without it no client certificate is asked for. The whole
config is checked at startup, so a missing file, a proto that does not parse
or a PEM that does not load is one ConfigError line, never a failed handshake
later. SSLConfig is not in the tensorflow-serving-api package; it is declared
here with TF Serving's package, field names and numbers.
"""

import dataclasses
import os
import ssl
import tempfile

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

from serving import config as config_lib

_FILE_NAME = "serving/tf_serving_ssl_config.proto"


def _build_ssl_config_message():
  """The message class of tensorflow.serving.SSLConfig (ssl_config.proto)."""
  pool = descriptor_pool.Default()
  try:
    pool.FindFileByName(_FILE_NAME)
  except KeyError:
    fdp = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package="tensorflow.serving", syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto
    message = fdp.message_type.add(name="SSLConfig")
    for name, number, ftype in (("server_key", 1, f.TYPE_STRING),
                                ("server_cert", 2, f.TYPE_STRING),
                                ("custom_ca", 3, f.TYPE_STRING),
                                ("client_verify", 4, f.TYPE_BOOL)):
      message.field.add(name=name, number=number, type=ftype, label=f.LABEL_OPTIONAL)
    pool.Add(fdp)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


SSLConfig = _build_ssl_config_message()


@dataclasses.dataclass(frozen=True)
class TlsConfig:
  """A checked SSLConfig: PEM bytes and whether clients must show a certificate."""
  server_key: bytes
  server_cert: bytes
  custom_ca: bytes = b""
  client_verify: bool = False

  def grpc_credentials(self):
    """grpc.ServerCredentials as TF Serving builds them from the SSLConfig."""
    return grpc.ssl_server_credentials(
        [(self.server_key, self.server_cert)],
        root_certificates=self.custom_ca or None,
        require_client_auth=self.client_verify)

  def ssl_context(self):
    """An ssl.SSLContext for the REST port with the same key, chain and client check."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: the PEMs go through a private temp dir.
    with tempfile.TemporaryDirectory(prefix="serving-tls-") as tmp:
      cert_path = os.path.join(tmp, "cert.pem")
      key_path = os.path.join(tmp, "key.pem")
      for path, data in ((cert_path, self.server_cert), (key_path, self.server_key)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
          f.write(data)
      try:
        context.load_cert_chain(cert_path, key_path)
      except ssl.SSLError as e:
        raise config_lib.ConfigError(
            f"server_key and server_cert do not load ({_reason(e)}): each must be "
            "a PEM, and the key the certificate's") from None
    if self.custom_ca:
      try:
        context.load_verify_locations(cadata=self.custom_ca.decode("ascii"))
      except ssl.SSLError as e:
        raise config_lib.ConfigError(
            f"custom_ca does not load ({_reason(e)}): it must be PEM certificates") from None
    context.verify_mode = ssl.CERT_REQUIRED if self.client_verify else ssl.CERT_NONE
    return context


def read_ssl_config(path):
  """TlsConfig from an SSLConfig text file, or None for ''. Raises ConfigError."""
  if not path:
    return None
  proto = config_lib.parse_text_proto(path, SSLConfig())
  where = f"--ssl_config_file {path}"
  for field in ("server_key", "server_cert"):
    if not getattr(proto, field).strip():
      raise config_lib.ConfigError(f"{where}: {field} is empty")
  if proto.client_verify and not proto.custom_ca.strip():
    raise config_lib.ConfigError(
        f"{where}: client_verify needs custom_ca (the CA that signs client certificates)")
  tls = TlsConfig(server_key=_pem(proto.server_key, where, "server_key"),
                  server_cert=_pem(proto.server_cert, where, "server_cert"),
                  custom_ca=_pem(proto.custom_ca, where, "custom_ca") if proto.custom_ca else b"",
                  client_verify=proto.client_verify)
  _check_loads(tls, where)
  return tls


def _pem(text, where, field):
  if "-----BEGIN " not in text:
    raise config_lib.ConfigError(
        f"{where}: {field} is not PEM text (SSLConfig holds the PEM itself, "
        "not a file name)")
  try:
    return text.encode("ascii")
  except UnicodeEncodeError:
    raise config_lib.ConfigError(f"{where}: {field} is not PEM text (not ASCII)") from None


def _check_loads(tls, where):
  """Loads the PEMs the way the REST port will, so bad ones fail at startup."""
  try:
    tls.ssl_context()
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"{where}: {e}") from None


def _reason(error):
  return error.reason or error.strerror or str(error)
