"""The trainer end to end: artefacts, resume, strategies and bad input."""

import json
import os
import textwrap

import pytest

from tests.conftest import python_env, run_module, seed_model_dir, tiny_config


def test_trainer_writes_config_checkpoints_summaries_and_best(trained_model_dir):
  files = set(os.listdir(trained_model_dir))
  assert {"config.json", "vocab.txt", "checkpoints", "best", "train", "eval",
          "results.json"} <= files
  with open(os.path.join(trained_model_dir, "config.json")) as f:
    config = json.load(f)
  assert config["train"]["preset"] == "tiny"
  assert config["model"]["labels"] == ["negative", "positive"]
  with open(os.path.join(trained_model_dir, "vocab.txt")) as f:
    assert config["model"]["architecture"]["vocabulary_size"] == len(
        f.read().splitlines())
  with open(os.path.join(trained_model_dir, "best", "metrics.json")) as f:
    best = json.load(f)
  with open(os.path.join(trained_model_dir, "results.json")) as f:
    results = json.load(f)
  assert results["steps"] == 40
  assert best["accuracy"] == max(best["accuracy"], results["final"]["accuracy"])
  assert set(best) >= {"accuracy", "precision", "recall", "f1",
                       "confusion_matrix", "step"}
  assert any(name.startswith("events.out.tfevents")
             for name in os.listdir(os.path.join(trained_model_dir, "train")))


def test_rerunning_resumes_and_continues_the_step_count(tmp_path, sst2_subset,
                                                       trained_model_dir):
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "resume"
  seed_model_dir(trained_model_dir, model_dir)
  first = train_and_evaluate(tiny_config(model_dir, sst2_subset, train_steps=20))
  assert first["steps"] == 20
  # The same command with a larger budget continues from step 20.
  second = train_and_evaluate(tiny_config(model_dir, sst2_subset, train_steps=30,
                                          checkpoint_every_steps=5))
  assert second["steps"] == 30
  checkpoints = os.listdir(model_dir / "checkpoints")
  assert "ckpt-30.index" in checkpoints and "ckpt-25.index" in checkpoints
  assert "ckpt-5.index" not in checkpoints  # numbering did not restart
  # A finished run rerun does no more steps.
  third = train_and_evaluate(tiny_config(model_dir, sst2_subset, train_steps=30))
  assert third["steps"] == 30


def test_resume_refuses_a_different_model(tmp_path, sst2_subset,
                                          trained_model_dir):
  from trainers.errors import UserError
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "m"
  seed_model_dir(trained_model_dir, model_dir)
  train_and_evaluate(tiny_config(model_dir, sst2_subset, train_steps=2))
  with pytest.raises(UserError, match="already holds a text_classification/tiny model"):
    train_and_evaluate(tiny_config(model_dir, sst2_subset, preset="small"))


def test_cli_trains_with_a_flagfile(tmp_path, sst2_subset):
  flagfile = tmp_path / "recipe.flags"
  flagfile.write_text(textwrap.dedent(f"""\
      --task=text_classification
      --preset=tiny
      --train_files={sst2_subset}/train.tsv
      --eval_files={sst2_subset}/dev.tsv
      --text_column=sentence
      --train_steps=6
      --batch_size=16
      --eval_every_steps=3
      --log_every_steps=3
      --distribution_strategy=one_device
      """))
  result = run_module("trainers.train", f"--flagfile={flagfile}",
                      f"--model_dir={tmp_path / 'cli'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "steps/s" in result.stderr and "ETA" in result.stderr
  with open(tmp_path / "cli" / "results.json") as f:
    assert json.load(f)["steps"] == 6


@pytest.mark.parametrize("content, message", [
    ("sentence\tlabel\ngood film\t1\nbad film\n", ":3: 1 tab-separated fields, "
     "the header has 2"),
    ("sentence\tlabel\ngood film\t1\nbad film\t7\n", ":3: label '7' is not one "
     "of ['0', '1']"),
    ("sentence\tlabel\ngood\tfilm\t1\n", ":2: 3 tab-separated fields"),
])
def test_malformed_data_file_names_file_and_line(tmp_path, content, message):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / "train.tsv").write_text(content)
  (data_dir / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
  result = run_module("trainers.train", "--preset=tiny", "--train_steps=1",
                      f"--train_files={data_dir / 'train.tsv'}",
                      f"--eval_files={data_dir / 'dev.tsv'}",
                      "--text_column=sentence", "--labels=0,1",
                      f"--model_dir={tmp_path / 'm'}")
  assert result.returncode == 1
  assert f"Error: {data_dir / 'train.tsv'}{message}" in result.stderr
  assert "Traceback" not in result.stderr


def test_missing_data_file_is_a_clear_error(tmp_path):
  result = run_module("trainers.train", "--preset=tiny",
                      f"--train_files={tmp_path / 'train.tsv'}",
                      f"--model_dir={tmp_path / 'm'}")
  assert result.returncode == 1
  assert (f"Error: --train_files: {tmp_path / 'train.tsv'}: file not found"
          in result.stderr)
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, message", [
    ("--preset=huge", "value should be one of"),
    ("--mixed_precision=float8", "value should be one of"),
    ("--distribution_strategy=magic", "value should be one of"),
    ("--batch_size=0", "0 is not a positive integer"),
])
def test_bad_flag_values_are_absl_errors(tmp_path, flag, message):
  result = run_module("trainers.train", flag, f"--model_dir={tmp_path}")
  assert result.returncode != 0
  assert message in result.stderr
  assert "Traceback" not in result.stderr


def test_strategy_the_machine_cannot_run_fails_before_work(tmp_path):
  result = run_module("trainers.train", "--distribution_strategy=mirrored",
                      "--num_gpus=4", f"--model_dir={tmp_path / 'm'}")
  assert result.returncode == 1
  assert "--num_gpus=4 but this machine has 0 visible GPU(s)" in result.stderr
  assert not os.path.exists(tmp_path / "m" / "config.json")


def test_malformed_tf_config_is_a_clear_error(tmp_path):
  env = dict(python_env(), TF_CONFIG="{not json")
  result = run_module("trainers.train",
                      "--distribution_strategy=multi_worker_mirrored",
                      f"--model_dir={tmp_path / 'm'}", env=env)
  assert result.returncode == 1
  assert "TF_CONFIG is not valid JSON" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("tf_config, message", [
    ("", "needs the TF_CONFIG environment variable"),
    ('{"task": {"type": "worker", "index": 0}}', 'needs a "cluster" object'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'needs a "task" object'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, '
     '"task": {"type": "worker", "index": 1}}', "is not in its cluster"),
    ('["worker"]', 'needs a "cluster" object'),
])
def test_tf_config_problems_are_named(monkeypatch, tf_config, message):
  from trainers.errors import UserError
  from trainers.strategies import make_strategy
  monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(UserError, match=message):
    make_strategy("multi_worker_mirrored")


def test_parameter_server_is_refused_with_the_reason():
  from trainers.errors import UserError
  from trainers.strategies import make_strategy
  with pytest.raises(UserError, match="not supported, on purpose: .* Use "
                     "multi_worker_mirrored"):
    make_strategy("parameter_server")


def test_ema_weights_are_evaluated_kept_and_training_continues_raw(
    tmp_path, sst2_subset, trained_model_dir):
  import numpy as np
  import tensorflow as tf
  from export.exporter import load_trained_model
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "ema"
  seed_model_dir(trained_model_dir, model_dir)
  results = train_and_evaluate(tiny_config(model_dir, sst2_subset,
                                           train_steps=20, eval_every_steps=20,
                                           ema_momentum=0.9))
  assert results["best"]["step"] == 20
  averaged, tokenizer, _, _ = load_trained_model(str(model_dir), "best")
  raw, _, _, _ = load_trained_model(str(model_dir), "latest")
  ids = tokenizer(tf.constant(["a great film", "dull"]))
  # best/ holds the moving average; checkpoints/ the raw weights at step 20.
  assert not np.allclose(averaged(ids).numpy(), raw(ids).numpy())
