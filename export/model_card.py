"""assets.extra/model_card.json: what a version is, how it was made, how it scored."""

import datetime
import json
import os
import subprocess

import keras
import tensorflow as tf

from zoo import model_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit():
  """The repository's HEAD commit (with '-dirty' if it has local changes).

  Benchmark outputs (benchmarks/results/) do not count as changes: a
  benchmark that writes several JSONs in a row runs the same code each time.
  """
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True,
                            timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                            "--", ".", ":(exclude)benchmarks/results"],
                           cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=10).stdout.strip()
    return commit + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def describe_signatures(saved_model_dir):
  """{signature: {method, inputs: {name: [dtype, shape]}, outputs: ...}}."""
  from export.checks import load_saved_model_proto
  meta_graph = load_saved_model_proto(saved_model_dir).meta_graphs[0]

  def tensors(infos):
    return {name: {"dtype": tf.as_dtype(info.dtype).name,
                   "shape": [d.size for d in info.tensor_shape.dim]}
            for name, info in sorted(infos.items())}

  return {key: {"method": sig.method_name, "inputs": tensors(sig.inputs),
                "outputs": tensors(sig.outputs)}
          for key, sig in sorted(meta_graph.signature_def.items())
          if key != "__saved_model_init_op"}


def build_model_card(saved_model_dir, trainer_config, dev_metrics, checkpoint,
                     limits, parameters):
  model = trainer_config["model"]
  return {
      "family": model["family"],
      "task": model["task"],
      "preset": model["preset"],
      "architecture": model["architecture"],
      "vocabulary_size": model["architecture"]["vocabulary_size"],
      "tokenizer": model_config.family_tokenizer(model),
      "pretrained": model.get("pretrained"),  # preset, backbone, licence
      "parameters": parameters,
      "labels": model.get("labels"),
      "label_values": model.get("label_values"),
      "text_pair": bool(model.get("text_pair")),
      "source_language": model.get("source_language"),
      "target_language": model.get("target_language"),
      "dev_metrics": dev_metrics,
      "training_flags": trainer_config.get("train"),
      "checkpoint": checkpoint,
      "limits": limits,
      "git_commit": git_commit(),
      "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                   "trained_with": trainer_config.get("versions")},
      "signatures": describe_signatures(saved_model_dir),
  }


def write_model_card(saved_model_dir, card):
  extra = os.path.join(saved_model_dir, "assets.extra")
  os.makedirs(extra, exist_ok=True)
  with open(os.path.join(extra, "model_card.json"), "w") as f:
    json.dump(card, f, indent=2, sort_keys=True)
    f.write("\n")
