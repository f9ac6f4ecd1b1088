"""Character LM training: data split, deterministic batches, evaluation, resume."""

import json
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import data_flags, run_module, tiny_lm_config
from trainers import language_model_data as data
from trainers.config import TrainConfig
from trainers.tasks import get_task
from zoo import model_config as zoo_model_config


@pytest.fixture(scope="module")
def task(shakespeare_subset):
  return get_task(TrainConfig(task="language_model", preset="tiny",
                              **data_flags("language_model",
                                           shakespeare_subset)))


@pytest.fixture(scope="module")
def lm_config(trained_lm_dir):
  with open(os.path.join(trained_lm_dir, "config.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def tokenizer(trained_lm_dir, lm_config):
  return zoo_model_config.build_tokenizer(lm_config["model"], trained_lm_dir)


def test_split_is_by_position_last_tenth_validates(task, shakespeare_subset):
  with open(os.path.join(shakespeare_subset, "input.txt")) as f:
    text = f.read()
  train = "".join(task._pieces(train=True))
  validation = task.eval_text()
  assert train + validation == text  # nothing lost, nothing repeated
  assert len(validation) == len(text) - int(len(text) * 0.9)
  assert text.endswith(validation) and text.startswith(train)


def test_many_files_globs_and_eval_files(tmp_path):
  """Files are read in order (globs sorted); with --eval_files all of the
  training text trains and the eval files are the dev text."""
  for name, text in (("b.txt", "second file\n" * 10),
                     ("a.txt", "first file\n" * 10), ("dev.txt", "dev\n")):
    (tmp_path / name).write_text(text)
  task = get_task(TrainConfig(task="language_model", preset="tiny",
                              train_files=str(tmp_path / "[ab].txt"),
                              eval_files=str(tmp_path / "dev.txt")))
  assert "".join(task._pieces(train=True)) == ("first file\n" * 10 +
                                               "second file\n" * 10)
  assert task.eval_text() == "dev\n"


def test_data_file_errors_are_user_errors(tmp_path):
  from trainers.errors import UserError

  def task(path):
    return get_task(TrainConfig(task="language_model", preset="tiny",
                                train_files=str(path)))

  with pytest.raises(UserError, match="file not found"):
    task(tmp_path / "missing.txt").num_train_examples()
  (tmp_path / "short.txt").write_text("too short")
  with pytest.raises(UserError, match="only 8 characters"):
    task(tmp_path / "short.txt").num_train_examples()
  (tmp_path / "bad.txt").write_bytes(b"ok\n" * 5 + b"ok " * 50 + b"\xff\n")
  with pytest.raises(UserError, match=re.escape(
      f"{tmp_path / 'bad.txt'}:6: not valid UTF-8 (byte 150")):
    task(tmp_path / "bad.txt").num_train_examples()


def token_file(ids):
  ids_file = data.TokenFile()
  ids_file.append(ids)
  return ids_file


def test_token_file_reads_back_what_was_written_and_holds_no_name(tmp_path):
  ids_file = data.TokenFile(str(tmp_path))
  ids_file.append(np.arange(10, dtype=np.int32))
  ids_file.append(np.array([7, -3], np.int64))
  assert ids_file.length == 12
  np.testing.assert_array_equal(ids_file.read(8, 4), [8, 9, 7, -3])
  np.testing.assert_array_equal(ids_file.windows([0, 5], 3),
                                [[0, 1, 2], [5, 6, 7]])
  assert os.listdir(tmp_path) == []  # unlinked: gone when the process ends


def batches(ids, count, skip=0, seed=0, length=8, batch=4):
  dataset = data.train_dataset(token_file(ids), length, batch, seed,
                               skip_batches=skip)
  return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_train_batches_are_shifted_windows_of_the_text():
  ids = np.arange(1000, dtype=np.int32)  # id == position: windows are ranges
  for inputs, targets in batches(ids, 3):
    assert inputs.shape == targets.shape == (4, 8)
    assert inputs.dtype == np.int32
    np.testing.assert_array_equal(targets, inputs + 1)  # the next character
    np.testing.assert_array_equal(inputs, inputs[:, :1] + np.arange(8))
    assert inputs.min() >= 0 and targets.max() <= 999


def test_train_batches_are_deterministic_and_skippable():
  ids = np.arange(5000, dtype=np.int32)
  first = batches(ids, 6)
  again = batches(ids, 6)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a[0], b[0])
  for skip in range(6):  # batch i of a resumed run == batch i of a full run
    resumed = batches(ids, 1, skip=skip)[0]
    np.testing.assert_array_equal(resumed[0], first[skip][0])
    np.testing.assert_array_equal(resumed[1], first[skip][1])
  assert not np.array_equal(first[0][0], first[1][0])
  other_seed = batches(ids, 1, seed=1)[0]
  assert not np.array_equal(other_seed[0], first[0][0])


def test_training_windows_come_from_the_training_split(task, tokenizer):
  train_ids = data.write_text_ids(tokenizer, task._pieces(train=True),
                                  data.TokenFile())
  dataset = task.train_dataset(tokenizer, 8, skip_batches=0)
  train_text = "".join(task._pieces(train=True))
  for inputs, targets in dataset.take(2):
    text = tokenizer.detokenize(tf.concat([inputs, targets[:, -1:]], axis=1))
    for window in text.numpy():
      assert window.decode() in train_text
  assert train_ids.length == len(train_text)


def test_evaluation_chunks_cover_every_character_once(task, tokenizer):
  validation = task.eval_text()
  length = tokenizer.sequence_length
  chunks = data.character_chunks(validation, length)
  assert "".join(chunks) == validation
  assert all(len(c) == length - 1 for c in chunks[:-1])
  assert 0 < len(chunks[-1]) <= length - 1
  assert data.character_chunks("abcdefg", 4) == ["abc", "def", "g"]
  scored = 0
  for ids, labels in task.eval_dataset(tokenizer, 64):
    np.testing.assert_array_equal(ids.numpy(), labels.numpy())
    assert np.all(ids.numpy()[:, 0] == tokenizer.start_id)
    scored += int((ids.numpy()[:, 1:] != 0).sum())  # every target is scored
  assert scored == len(validation)


def test_trained_model_dir_layout_and_config(trained_lm_dir, lm_config):
  files = set(os.listdir(trained_lm_dir))
  assert {"config.json", "vocab.txt", "checkpoints", "best",
          "results.json"} <= files
  model = lm_config["model"]
  assert model["family"] == "decoder" and model["task"] == "language_model"
  assert model["start_text"] == "\n"
  with open(os.path.join(trained_lm_dir, "vocab.txt")) as f:
    lines = f.read().splitlines()
  assert lines[:2] == ["-1", "-2"]
  assert model["architecture"]["vocabulary_size"] == len(lines)
  assert model["architecture"]["sequence_length"] == 32


def test_training_lowers_the_validation_loss(trained_lm_dir, lm_config, task,
                                             tokenizer):
  with open(os.path.join(trained_lm_dir, "results.json")) as f:
    results = json.load(f)
  vocabulary_size = lm_config["model"]["architecture"]["vocabulary_size"]
  best = results["best"]
  assert results["steps"] == 40
  assert best["loss"] < math.log(vocabulary_size) - 0.5
  assert best["characters"] == len(task.eval_text())
  assert best["perplexity"] == pytest.approx(math.exp(best["loss"]))
  assert best["bits_per_character"] == pytest.approx(best["loss"] / math.log(2))
  assert 0.0 <= best["accuracy"] <= 1.0
  # The untrained model scores about ln(vocabulary) nats per character.
  initial = task.build_model(lm_config["model"])
  metrics = task.evaluate(lambda ids: initial(ids, training=False),
                          task.eval_dataset(tokenizer, 256))
  assert metrics["loss"] == pytest.approx(math.log(vocabulary_size), abs=0.3)
  assert best["loss"] < metrics["loss"] - 0.5


def test_rerunning_resumes_from_the_checkpoint_step(tmp_path,
                                                    shakespeare_subset):
  from trainers.loop import train_and_evaluate
  model_dir = tmp_path / "resume"
  first = train_and_evaluate(tiny_lm_config(model_dir, shakespeare_subset,
                                            train_steps=6,
                                            eval_every_steps=6))
  assert first["steps"] == 6
  # More steps, checkpoints every 2 and room to keep them all: a restart
  # from step 0 would leave ckpt-2 and ckpt-4 behind.
  second = train_and_evaluate(tiny_lm_config(
      model_dir, shakespeare_subset, train_steps=10, eval_every_steps=10,
      checkpoint_every_steps=2, max_checkpoints=10))
  assert second["steps"] == 10
  checkpoints = sorted(name for name in os.listdir(model_dir / "checkpoints")
                       if name.endswith(".index"))
  assert checkpoints == ["ckpt-10.index", "ckpt-6.index", "ckpt-8.index"]
  assert second["best"]["loss"] <= first["best"]["loss"]
  # A finished run rerun trains no further.
  third = train_and_evaluate(tiny_lm_config(model_dir, shakespeare_subset,
                                            train_steps=10))
  assert third["steps"] == 10
  assert third["final"]["loss"] == pytest.approx(second["final"]["loss"],
                                                 abs=1e-5)
  with open(model_dir / "progress.json") as f:
    assert json.load(f)["step"] == 10


def test_cli_unknown_decoder_preset_is_a_clear_error(tmp_path,
                                                     shakespeare_subset):
  result = run_module("trainers.train", "--task=language_model",
                      "--preset=base",
                      f"--train_files={shakespeare_subset}/input.txt",
                      "--train_steps=1", f"--model_dir={tmp_path / 'm'}")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Error: Unknown decoder preset 'base'" in result.stderr
  assert "tiny" in result.stderr and "small" in result.stderr
  assert "Traceback" not in result.stderr


def test_text_shorter_than_one_training_window_is_a_user_error(tmp_path,
                                                              shakespeare_subset):
  """300 characters cannot fill one window of a 512-character context."""
  from trainers.errors import UserError
  from trainers.loop import train_and_evaluate
  data_dir = tmp_path / "short"
  data_dir.mkdir()
  with open(os.path.join(shakespeare_subset, "input.txt")) as f:
    (data_dir / "input.txt").write_text(f.read(300))
  config = tiny_lm_config(tmp_path / "m", str(data_dir), train_steps=1,
                          model_overrides="sequence_length=512")
  with pytest.raises(UserError, match=re.escape(str(data_dir / "input.txt"))
                     + ".*training text has .* tokens"):
    train_and_evaluate(config)


def test_line_chunks_hold_whole_lines_within_the_context():
  """Subword evaluation chunks: runs of whole lines of at most L - 1
  tokens, every character once; a line at the cap is cut by characters."""
  text = "ab\ncd\nefgh\n" + "x" * 10 + "\n" + "y\n"
  counts = lambda lines: [min(len(line) // 2 + 1, 4) for line in lines]
  chunks = data.line_chunks(text, 5, counts)  # at most 4 tokens a chunk
  assert "".join(chunks) == text
  assert chunks == ["ab\ncd\n", "efgh\n", "xxxx", "xxxx", "xx\n", "y\n"]
  assert data.line_chunks("", 5, counts) == []
