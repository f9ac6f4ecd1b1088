"""Shared fixtures: a tiny SST-2 subset, a tiny trained model_dir, its export.

Everything is real: the trainer trains, the exporter writes a SavedModel. The
subset keeps vocabulary learning and training to seconds.
"""

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRAIN_ROWS = 3000
DEV_ROWS = 200


def python_env():
  """Environment for subprocesses running repo modules."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def run_module(module, *args, timeout=600, env=None):
  """Runs `python -m module args...` in the repo; returns CompletedProcess."""
  return subprocess.run(
      [sys.executable, "-m", module, *args], cwd=REPO_ROOT,
      env=env or python_env(), capture_output=True, text=True, timeout=timeout)


def _copy_head(source, target, rows):
  with open(source, encoding="utf-8") as f:
    lines = f.readlines()[: rows + 1]  # header + rows
  with open(target, "w", encoding="utf-8") as f:
    f.writelines(lines)


@pytest.fixture(scope="session")
def sst2_subset(tmp_path_factory):
  """A data_dir with the first rows of the bundled SST-2 train and dev files."""
  folder = tmp_path_factory.mktemp("sst2_subset")
  bundled = os.path.join(REPO_ROOT, "data", "sst2")
  _copy_head(os.path.join(bundled, "train.tsv"), folder / "train.tsv", TRAIN_ROWS)
  _copy_head(os.path.join(bundled, "dev.tsv"), folder / "dev.tsv", DEV_ROWS)
  return str(folder)


def data_flags(task, data_dir):
  """The TrainConfig data fields of the bundled recipes' layouts, for a
  subset folder of them (`*_subset` fixtures)."""
  join = lambda name: os.path.join(str(data_dir), name)
  if task == "text_classification":
    return dict(train_files=join("train.tsv"), eval_files=join("dev.tsv"),
                text_column="sentence", labels="0,1",
                label_names="negative,positive")
  if task == "masked_lm":
    return dict(train_files=join("train.tsv"), eval_files=join("dev.tsv"),
                text_column="sentence")
  if task == "language_model":
    return dict(train_files=join("input.txt"))
  if task == "translation":
    return dict(train_source_files=join("train.de"),
                train_target_files=join("train.en"),
                eval_source_files=join("val.de"),
                eval_target_files=join("val.en"), source_language="de",
                target_language="en")
  raise ValueError(task)


def tiny_config(model_dir, data_dir=None, **overrides):
  """A TrainConfig of the tiny preset, a few steps, on a subset folder (or
  on the data fields given in overrides)."""
  from trainers.config import TrainConfig
  values = dict(task="text_classification", preset="tiny",
                model_dir=str(model_dir), train_steps=40, batch_size=32,
                learning_rate=2e-3, warmup_steps=5, eval_every_steps=20,
                checkpoint_every_steps=20, log_every_steps=20)
  if data_dir is not None:
    values.update(data_flags(overrides.get("task", values["task"]), data_dir))
  values.update(overrides)
  return TrainConfig(**values)


def seed_model_dir(source, target):
  """Starts model_dir `target` with the config.json and vocabulary of model_dir
  `source` and no checkpoint: its run trains from scratch without learning the
  vocabulary again (the first-run vocabulary learning has tests of its own)."""
  import json
  import shutil
  os.makedirs(target)
  with open(os.path.join(source, "config.json")) as f:
    vocabulary = json.load(f)["model"]["vocabulary_file"]
  for name in ("config.json", vocabulary):
    shutil.copy(os.path.join(source, name), os.path.join(target, name))


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, sst2_subset):
  """A tiny classifier trained for a few steps (in this process)."""
  import keras
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path_factory.mktemp("sst2_tiny")
  train_and_evaluate(tiny_config(model_dir, sst2_subset))
  keras.mixed_precision.set_global_policy("float32")
  return str(model_dir)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, trained_model_dir):
  """Path of one exported version of the tiny classifier."""
  from export.exporter import ExportConfig, export_saved_model
  base = tmp_path_factory.mktemp("exports") / "sst2"
  return export_saved_model(ExportConfig(model_dir=trained_model_dir,
                                         export_base=str(base)))


SHAKESPEARE_CHARS = 60_000


@pytest.fixture(scope="session")
def shakespeare_subset(tmp_path_factory):
  """A data_dir whose input.txt is the head of the bundled tiny-shakespeare."""
  folder = tmp_path_factory.mktemp("shakespeare_subset")
  bundled = os.path.join(REPO_ROOT, "data", "tinyshakespeare", "input.txt")
  with open(bundled, encoding="utf-8") as f:
    text = f.read(SHAKESPEARE_CHARS)
  with open(folder / "input.txt", "w", encoding="utf-8") as f:
    f.write(text)
  return str(folder)


def tiny_lm_config(model_dir, data_dir, **overrides):
  """tiny_config for the character-level LM (decoder family, tiny preset)."""
  values = dict(task="language_model", batch_size=16, learning_rate=3e-3)
  values.update(overrides)
  return tiny_config(model_dir, data_dir, **values)


@pytest.fixture(scope="session")
def trained_lm_dir(tmp_path_factory, shakespeare_subset):
  """A tiny character LM trained for a few steps (in this process)."""
  import keras
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path_factory.mktemp("shakespeare_tiny")
  train_and_evaluate(tiny_lm_config(model_dir, shakespeare_subset))
  keras.mixed_precision.set_global_policy("float32")
  return str(model_dir)


@pytest.fixture(scope="session")
def exported_lm(tmp_path_factory, trained_lm_dir):
  """Path of one exported version of the tiny character LM."""
  from export.exporter import ExportConfig, export_saved_model
  base = tmp_path_factory.mktemp("lm_exports") / "shakespeare"
  return export_saved_model(ExportConfig(model_dir=trained_lm_dir,
                                         export_base=str(base)))


MULTI30K_TRAIN_ROWS = 3000
MULTI30K_EVAL_ROWS = 100
MULTI30K_SPLITS = {"train": MULTI30K_TRAIN_ROWS, "val": MULTI30K_EVAL_ROWS,
                   "test_2016_flickr": MULTI30K_EVAL_ROWS}


@pytest.fixture(scope="session")
def multi30k_subset(tmp_path_factory):
  """A data_dir with the head of each bundled Multi30k split, as plain text."""
  import gzip
  import itertools
  folder = tmp_path_factory.mktemp("multi30k_subset")
  bundled = os.path.join(REPO_ROOT, "data", "multi30k")
  for prefix, rows in MULTI30K_SPLITS.items():
    for language in ("de", "en"):
      with gzip.open(os.path.join(bundled, f"{prefix}.{language}.gz"), "rt",
                     encoding="utf-8") as f:
        lines = list(itertools.islice(f, rows))
      with open(folder / f"{prefix}.{language}", "w", encoding="utf-8") as f:
        f.writelines(lines)
  return str(folder)


def tiny_mt_config(model_dir, data_dir, **overrides):
  """tiny_config for the translator (seq2seq family, tiny preset): 40 steps,
  a checkpoint every 10 (the last 3 kept), the last 2 averaged."""
  values = dict(task="translation", batch_size=32, learning_rate=3e-3,
                lr_schedule="inverse_sqrt", warmup_steps=10,
                checkpoint_every_steps=10, max_checkpoints=3,
                average_checkpoints=2)
  values.update(overrides)
  return tiny_config(model_dir, data_dir, **values)


@pytest.fixture(scope="session")
def trained_mt_dir(tmp_path_factory, multi30k_subset):
  """A tiny German->English translator trained for a few steps (in this
  process), with averaged/ holding the mean of its last two checkpoints."""
  import keras
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path_factory.mktemp("multi30k_tiny")
  try:
    train_and_evaluate(tiny_mt_config(model_dir, multi30k_subset))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  return str(model_dir)


@pytest.fixture(scope="session")
def exported_mt(tmp_path_factory, trained_mt_dir):
  """Path of one exported version of the tiny translator (best checkpoint)."""
  from export.exporter import ExportConfig, export_saved_model
  base = tmp_path_factory.mktemp("mt_exports") / "multi30k_de_en"
  return export_saved_model(ExportConfig(model_dir=trained_mt_dir,
                                         export_base=str(base)))
