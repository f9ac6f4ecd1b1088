"""Masked-LM pretraining and warm-starting a classifier from it."""

import json
import os

import numpy as np
import tensorflow as tf

from tests.conftest import tiny_config


def test_pretrain_then_fine_tune_starts_from_the_pretrained_backbone(
    tmp_path, sst2_subset):
  from trainers.classification_task import TextClassificationTask
  from trainers.loop import train_and_evaluate

  pretrain_dir = tmp_path / "mlm"
  results = train_and_evaluate(tiny_config(pretrain_dir, sst2_subset,
                                           task="masked_lm", train_steps=12))
  assert results["steps"] == 12
  assert 0.0 <= results["final"]["accuracy"] <= 1.0
  assert results["final"]["masked_tokens"] > 0
  with open(pretrain_dir / "config.json") as f:
    pretrained = json.load(f)["model"]
  assert pretrained["head"] == "masked_lm"

  # A classifier warm-started from it holds the pretrained backbone weights.
  config = tiny_config(tmp_path / "cls", sst2_subset,
                       init_checkpoint=str(pretrain_dir))
  task = TextClassificationTask(config)
  os.makedirs(config.model_dir)
  model_config = task.new_model_config(config.model_dir)
  assert model_config["architecture"]["vocabulary_size"] == pretrained[
      "architecture"]["vocabulary_size"]
  with open(os.path.join(config.model_dir, "vocab.txt")) as f, open(
      pretrain_dir / "vocab.txt") as g:
    assert f.read() == g.read()
  model = task.build_model(model_config)
  fresh = [w.numpy() for w in model.backbone.weights]
  task.warm_start(model, str(pretrain_dir))
  # The pretraining model, restored the ordinary way, has the same backbone.
  from trainers.masked_lm_task import MaskedLMTask
  mlm = MaskedLMTask(config).build_model(pretrained)
  checkpoint = tf.train.latest_checkpoint(str(pretrain_dir / "checkpoints"))
  tf.train.Checkpoint(model=mlm).restore(checkpoint).expect_partial()
  for ours, theirs, before in zip(model.backbone.weights, mlm.backbone.weights,
                                  fresh):
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  assert not all(np.array_equal(w.numpy(), b)
                 for w, b in zip(model.backbone.weights, fresh))

  # And the whole recipe runs end to end.
  fine_tuned = train_and_evaluate(tiny_config(
      tmp_path / "cls2", sst2_subset, init_checkpoint=str(pretrain_dir),
      train_steps=6))
  assert fine_tuned["steps"] == 6


def test_plain_text_files_and_a_held_out_tail(tmp_path):
  """A .txt corpus trains the masked LM; without --eval_files the last 10%
  of its lines are the dev text and are never trained on."""
  from trainers.config import TrainConfig
  from trainers.tasks import get_task
  lines = [f"line number {i} of the corpus" for i in range(50)]
  (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
  task = get_task(TrainConfig(task="masked_lm", preset="tiny",
                              train_files=str(tmp_path / "corpus.txt")))
  assert task.num_train_examples() == 45
  train = list(task._texts(task.train_paths(), 0, task.num_train_examples()))
  held_out = list(task._texts(task.train_paths(), task.num_train_examples()))
  assert train == lines[:45] and held_out == lines[45:]
  assert "last 10%" in task.describe_eval_data()
