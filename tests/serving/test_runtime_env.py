"""serving.server picks TF's runtime settings before TF is imported, as defaults
a user's environment overrides."""

import os
import subprocess
import sys

from serving import runtime_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONEDNN_BANNER = "oneDNN custom operations are on"


def test_defaults_fill_only_unset_variables(monkeypatch):
  monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  assert runtime_env.apply_defaults() == {"TF_ENABLE_ONEDNN_OPTS": "0"}
  assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
  monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
  assert runtime_env.apply_defaults() == {"TF_ENABLE_ONEDNN_OPTS": "1"}


def _import_server_and_tensorflow(onednn_env):
  """stderr of a fresh interpreter that imports serving.server (which imports
  tensorflow), with TF's own INFO log on."""
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="0")
  if onednn_env is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = onednn_env
  code = ("import os, serving.server, tensorflow; "
          "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
  done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=True)
  return done.stdout.strip(), done.stderr


def test_server_turns_onednn_off_before_tensorflow_loads():
  value, stderr = _import_server_and_tensorflow(None)
  assert value == "0"
  # TF logs this banner at import when its oneDNN kernels are in use.
  assert ONEDNN_BANNER not in stderr


def test_user_setting_wins():
  value, stderr = _import_server_and_tensorflow("1")
  assert value == "1"
  assert ONEDNN_BANNER in stderr
