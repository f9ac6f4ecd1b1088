"""What every benchmark JSON records about where and when it ran."""

import datetime
import os
import platform

from export.model_card import git_commit  # HEAD, "-dirty" with local changes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def rss_bytes(pid):
  """Resident set size (VmRSS in /proc) of process `pid` in bytes, or None once
  the process is gone."""
  try:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError):
    return None
  return None


def describe():
  import tensorflow as tf
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "git_commit": git_commit(),
      "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                  "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                  "python": platform.python_version(),
                  "tensorflow": tf.__version__},
  }
