"""Translation training: parallel files, batches, loss, schedule, checkpoint
averaging, and the evaluate/translate command lines."""

import functools
import gzip
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import MULTI30K_EVAL_ROWS, data_flags, run_module
from trainers import checkpoint_averaging
from trainers import translation_data as data
from trainers.classification_data import bucket_widths
from trainers.config import TrainConfig
from trainers.errors import UserError
from trainers.schedules import WarmupInverseSquareRoot, make_schedule
from trainers.tasks import get_task
from zoo import model_config as zoo_model_config
from zoo.presets import get_preset
from zoo.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID

BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a"
CHRF_SIGNATURE = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no"


@pytest.fixture(scope="module")
def mt_config(trained_mt_dir):
  with open(os.path.join(trained_mt_dir, "config.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def tokenizer(trained_mt_dir, mt_config):
  return zoo_model_config.build_tokenizer(mt_config["model"], trained_mt_dir)


@pytest.fixture(scope="module")
def task(multi30k_subset):
  return get_task(TrainConfig(task="translation", preset="tiny",
                              **data_flags("translation", multi30k_subset)))


def texts(strings):
  return [s.decode("utf-8") for s in strings.numpy()]


@functools.lru_cache(maxsize=None)
def translate_fn(model_dir, checkpoint="best"):
  from trainers.translation_eval import load_translate_fn
  return load_translate_fn(model_dir=model_dir, checkpoint=checkpoint)


# Parallel files.

def aligned_task(source, target, **overrides):
  return get_task(TrainConfig(task="translation", preset="tiny",
                              train_source_files=str(source),
                              train_target_files=str(target), **overrides))


def test_parallel_file_problems_are_user_errors(tmp_path):
  de, en = tmp_path / "a.de", tmp_path / "a.en"
  de.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
  en.write_text("one\ntwo\n", encoding="utf-8")
  with pytest.raises(UserError) as info:
    aligned_task(de, en).num_train_examples()
  assert f"{de}:3: this file has more lines than {en}" in str(info.value)
  with pytest.raises(UserError, match="missing.en: file not found"):
    aligned_task(de, tmp_path / "missing.en").num_train_examples()
  (tmp_path / "bad.de").write_bytes(b"gut\n\xff\xfe kaputt\n")
  (tmp_path / "bad.en").write_text("good\nbroken\n")
  with pytest.raises(UserError, match="bad.de:2: not valid UTF-8"):
    aligned_task(tmp_path / "bad.de", tmp_path / "bad.en").num_train_examples()
  (tmp_path / "empty.de").write_text("")
  (tmp_path / "empty.en").write_text("")
  with pytest.raises(UserError, match="empty.de: the file is empty"):
    aligned_task(tmp_path / "empty.de",
                 tmp_path / "empty.en").num_train_examples()
  (tmp_path / "broken.de.gz").write_bytes(b"this is not gzip data")
  with pytest.raises(UserError, match="broken.de.gz: cannot read"):
    aligned_task(tmp_path / "broken.de.gz", en).num_train_examples()


def test_gzip_and_crlf_files_are_read_like_plain_ones(tmp_path):
  with gzip.open(tmp_path / "c.de.gz", "wt", encoding="utf-8") as f:
    f.write("Ein Hund läuft.\nZwei Männer.\n")
  (tmp_path / "c.en").write_bytes(b"A dog runs.\r\nTwo men.\r\n")
  task = aligned_task(tmp_path / "c.de.gz", tmp_path / "c.en")
  assert list(task.pairs("train")) == [("Ein Hund läuft.", "A dog runs."),
                                       ("Zwei Männer.", "Two men.")]


def test_tables_and_aligned_files_give_the_same_pairs(tmp_path):
  """--train_files with --source_column/--target_column reads the same pairs
  from a JSONL table as line-aligned files do."""
  import json as json_lib
  pairs = [("Καλημέρα.", "Доброе утро."), ("Ένας σκύλος, τρέχει.", "Собака бежит.")]
  with open(tmp_path / "pairs.jsonl", "w", encoding="utf-8") as f:
    for el, ru in pairs:
      f.write(json_lib.dumps({"el": el, "ru": ru}, ensure_ascii=False) + "\n")
  table = get_task(TrainConfig(task="translation", preset="tiny",
                               train_files=str(tmp_path / "pairs.jsonl"),
                               source_column="el", target_column="ru"))
  assert list(table.pairs("train")) == pairs
  with pytest.raises(UserError, match="not both"):
    list(get_task(TrainConfig(
        task="translation", train_files=str(tmp_path / "pairs.jsonl"),
        train_source_files="x")).pairs("train"))


def test_task_reads_the_named_files(task, multi30k_subset):
  sources, targets = zip(*task.pairs("eval"))
  assert len(sources) == len(targets) == MULTI30K_EVAL_ROWS
  assert task.num_train_examples() == 3000
  assert task.describe_eval_data() == (os.path.join(multi30k_subset, "val.de")
                                       + " / " +
                                       os.path.join(multi30k_subset, "val.en"))
  with pytest.raises(UserError, match="not supported by --task=translation"):
    get_task(TrainConfig(task="translation", init_checkpoint="x"))


# Examples and batches.

def test_decoder_inputs_are_the_targets_shifted_right_after_bos(tokenizer):
  length = tokenizer.sequence_length
  sources = ["Ein Hund läuft.", "Zwei Männer spielen.", ""]
  targets = ["A dog runs.", "two men play " * 30, ""]  # the second is cut
  features, target_out = data.make_example(tokenizer)(tf.constant(sources),
                                                      tf.constant(targets))
  target_in = features["target_ids"].numpy()
  target_out = target_out.numpy()
  np.testing.assert_array_equal(features["source_ids"].numpy(),
                                tokenizer(tf.constant(sources)).numpy())
  np.testing.assert_array_equal(target_out,
                                tokenizer(tf.constant(targets)).numpy())
  assert target_in.shape == target_out.shape == (3, length)
  for row in range(3):
    n = int((target_out[row] != PAD_ID).sum())
    assert target_out[row, n - 1] == EOS_ID
    assert target_in[row, 0] == BOS_ID
    np.testing.assert_array_equal(target_in[row, 1:n], target_out[row, :n - 1])
    assert np.all(target_in[row, n:] == PAD_ID)
  assert (target_out[1] != PAD_ID).all()  # truncated: EOS in the last column
  assert target_out[2].tolist() == [EOS_ID] + [PAD_ID] * (length - 1)
  assert target_in[2].tolist() == [BOS_ID] + [PAD_ID] * (length - 1)


def take(task, tokenizer, count, seed=0, skip=0, batch=8):
  dataset = data.train_dataset(task.pairs_dataset("train"), 3000, tokenizer,
                               batch, seed, skip)
  return [(f["source_ids"].numpy(), f["target_ids"].numpy(), t.numpy())
          for f, t in dataset.take(count)]


def test_train_batches_are_deterministic_skippable_and_bucketed(task,
                                                                tokenizer):
  first = take(task, tokenizer, 8)
  again = take(task, tokenizer, 8)
  for a, b in zip(first, again):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  for skip in (1, 5):  # batch i of a resumed run == batch i of a full run
    resumed = take(task, tokenizer, 1, skip=skip)[0]
    for x, y in zip(resumed, first[skip]):
      np.testing.assert_array_equal(x, y)
  other = take(task, tokenizer, 8, seed=1)
  assert any(a[0].shape != b[0].shape or not np.array_equal(a[0], b[0])
             for a, b in zip(first, other))
  widths = bucket_widths(tokenizer.sequence_length)
  assert widths == [16, 32]
  for source_ids, target_ids, target_out in first:
    assert source_ids.shape == target_ids.shape == target_out.shape
    assert source_ids.dtype == target_ids.dtype == target_out.dtype == np.int32
    batch, width = source_ids.shape
    assert batch == 8 and width in widths
    lengths = np.maximum((source_ids != PAD_ID).sum(1),
                         (target_out != PAD_ID).sum(1))
    if width == widths[0]:
      assert lengths.max() <= widths[0]
    else:  # pairs of similar length share a batch
      assert lengths.min() > widths[0]
    assert np.all(target_ids[:, 0] == BOS_ID)
    np.testing.assert_array_equal(target_ids[:, 1:] != PAD_ID,
                                  target_out[:, 1:] != PAD_ID)


def test_train_batches_hold_aligned_training_pairs(task, tokenizer):
  sources, targets = map(list, zip(*task.pairs("train")))
  pairs = {}
  for s, t in zip(texts(tokenizer.detokenize(tokenizer(tf.constant(sources)))),
                  texts(tokenizer.detokenize(tokenizer(tf.constant(targets))))):
    pairs.setdefault(s, set()).add(t)
  for source_ids, _, target_out in take(task, tokenizer, 4):
    for s, t in zip(texts(tokenizer.detokenize(source_ids)),
                    texts(tokenizer.detokenize(target_out))):
      assert t in pairs[s]


def test_eval_batches_are_one_pass_in_file_order(task, tokenizer):
  sources, targets = map(list, zip(*task.pairs("eval")))
  expected_sources = tokenizer(tf.constant(sources)).numpy()
  expected_targets = tokenizer(tf.constant(targets)).numpy()
  start = 0
  for features, target_out in data.eval_dataset(task.pairs_dataset("eval"),
                                                tokenizer, 32):
    batch, width = target_out.shape
    assert width in bucket_widths(tokenizer.sequence_length)
    rows = slice(start, start + batch)
    np.testing.assert_array_equal(features["source_ids"].numpy(),
                                  expected_sources[rows, :width])
    np.testing.assert_array_equal(target_out.numpy(),
                                  expected_targets[rows, :width])
    assert np.all(expected_sources[rows, width:] == PAD_ID)
    assert np.all(expected_targets[rows, width:] == PAD_ID)
    start += batch
  assert start == MULTI30K_EVAL_ROWS


# Loss.

def log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_is_the_mean_per_target_token(smoothing):
  task = get_task(TrainConfig(task="translation",
                              label_smoothing=smoothing))
  vocab = 7
  logits = np.random.default_rng(0).normal(size=(3, 5, vocab))
  targets = np.array([[4, 3, 0, 0, 0], [5, 6, 2, 4, 3], [3, 0, 0, 0, 0]])
  per_example = task.per_example_loss(
      tf.constant(targets, tf.int32), tf.constant(logits, tf.float32)).numpy()
  smoothed = (1 - smoothing) * np.eye(vocab)[targets] + smoothing / vocab
  token_loss = -(smoothed * log_softmax(logits)).sum(-1)  # [3, 5]
  mask = targets != PAD_ID
  mean_per_token = (token_loss * mask).sum() / mask.sum()
  denominator = task.loss_denominator(None, tf.constant(targets, tf.int32))
  assert float(denominator) == mask.sum()
  assert per_example.shape == (3,)
  assert per_example.sum() / float(denominator) == pytest.approx(
      mean_per_token, rel=1e-5)
  np.testing.assert_allclose(per_example, (token_loss * mask).sum(-1),
                             rtol=1e-5)
  # A token mean, not a mean of sentence means (these differ here).
  per_sentence = ((token_loss * mask).sum(-1) / mask.sum(-1)).mean()
  assert abs(per_sentence - mean_per_token) > 1e-2
  # Accuracy per example counts target tokens only.
  hits = task.correct_predictions(tf.constant(targets, tf.int32),
                                  tf.constant(logits, tf.float32)).numpy()
  expected = ((logits.argmax(-1) == targets) * mask).sum(-1) / mask.sum(-1)
  np.testing.assert_allclose(hits, expected, rtol=1e-6)


# Learning-rate schedule.

def test_inverse_square_root_schedule():
  peak, warmup = 1e-3, 100
  schedule = make_schedule("inverse_sqrt", peak, warmup, total_steps=5000)
  assert isinstance(schedule, WarmupInverseSquareRoot)

  def lr(step):
    return float(schedule(tf.constant(step)))

  for step in (1, 10, 50, 100):  # linear warmup
    assert lr(step) == pytest.approx(peak * step / warmup, rel=1e-6)
  assert lr(warmup) == pytest.approx(peak, rel=1e-6)  # the peak
  for step in (100, 101, 400, 2500, 10_000, 1_000_000):  # then 1/sqrt
    assert lr(step) == pytest.approx(peak * math.sqrt(warmup / step), rel=1e-5)
  assert 0.0 < lr(0) <= peak / warmup * (1 + 1e-5)  # small, finite, not 0
  values = [lr(step) for step in range(0, 3000, 37)]
  assert max(values) <= peak * (1 + 1e-6)
  clone = WarmupInverseSquareRoot.from_config(schedule.get_config())
  assert float(clone(tf.constant(300))) == lr(300)
  with pytest.raises(ValueError, match="inverse_sqrt"):
    make_schedule("cosine", peak, warmup, 10)


# The trained model_dir and checkpoint averaging.

def test_trained_model_dir_layout_and_config(trained_mt_dir, mt_config,
                                             tokenizer):
  model = mt_config["model"]
  assert model["family"] == "seq2seq" and model["task"] == "translation"
  assert model["preset"] == "tiny"
  assert model["architecture"] == get_preset("seq2seq", "tiny")
  assert (model["source_language"], model["target_language"]) == ("de", "en")
  assert model["vocabulary_file"] == "spm.model"
  assert os.path.isfile(os.path.join(trained_mt_dir, "spm.model"))
  assert tokenizer.vocabulary_size == model["architecture"]["vocabulary_size"]
  assert mt_config["train"]["lr_schedule"] == "inverse_sqrt"
  state = tf.train.get_checkpoint_state(os.path.join(trained_mt_dir,
                                                     "checkpoints"))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
      "ckpt-20", "ckpt-30", "ckpt-40"]
  with open(os.path.join(trained_mt_dir, "best", "metrics.json")) as f:
    best = json.load(f)
  assert best["step"] in (20, 40)
  assert best["sentences"] == MULTI30K_EVAL_ROWS and best["target_tokens"] > 0
  assert best["loss"] < math.log(model["architecture"]["vocabulary_size"])
  assert best["perplexity"] == pytest.approx(math.exp(best["loss"]))
  with open(os.path.join(trained_mt_dir, "results.json")) as f:
    results = json.load(f)
  assert results["steps"] == 40
  assert math.isfinite(results["averaged"]["loss"])


def restored_weights(model_config, path):
  model = zoo_model_config.build_model(model_config)
  model(zoo_model_config.dummy_inputs(model_config))
  status = tf.train.Checkpoint(model=model).restore(path)
  status.expect_partial().assert_existing_objects_matched()
  return model, [w.numpy() for w in model.weights]


def test_averaged_checkpoint_is_the_mean_of_the_last_two(trained_mt_dir,
                                                         mt_config):
  folder = os.path.join(trained_mt_dir, "averaged")
  with open(os.path.join(folder, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["averaged"] == ["ckpt-30", "ckpt-40"]
  assert metrics["step"] == 40 and math.isfinite(metrics["loss"])
  with open(os.path.join(trained_mt_dir, "results.json")) as f:
    assert json.load(f)["averaged"]["loss"] == metrics["loss"]
  averaged_path = tf.train.latest_checkpoint(folder)
  assert os.path.basename(averaged_path) == "ckpt-40"
  checkpoints = os.path.join(trained_mt_dir, "checkpoints")
  _, first = restored_weights(mt_config["model"],
                              os.path.join(checkpoints, "ckpt-30"))
  _, last = restored_weights(mt_config["model"],
                             os.path.join(checkpoints, "ckpt-40"))
  _, averaged = restored_weights(mt_config["model"], averaged_path)
  assert len(first) == len(last) == len(averaged) > 10
  assert any(not np.allclose(a, b) for a, b in zip(first, last))  # trained
  for a, b, mean in zip(first, last, averaged):
    np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6, rtol=1e-6)


def test_averaging_more_checkpoints_than_kept_is_a_user_error(trained_mt_dir,
                                                              mt_config):
  model, _ = restored_weights(mt_config["model"], tf.train.latest_checkpoint(
      os.path.join(trained_mt_dir, "checkpoints")))
  with pytest.raises(UserError, match="--average_checkpoints=4 but .* holds 3 "
                     r"checkpoints \(raise --max_checkpoints\)"):
    checkpoint_averaging.average_last_checkpoints(
        model, os.path.join(trained_mt_dir, "checkpoints"), 4)


def test_averaging_a_model_with_dropout_averages_its_weights(tmp_path):
  """Dropout layers keep integer seed state among model.variables; averaging
  has to average the weights and leave that state alone."""
  model_config = {"family": "seq2seq", "architecture": dict(
      get_preset("seq2seq", "tiny"), vocabulary_size=50, dropout=0.1)}
  model = zoo_model_config.build_model(model_config)
  model(zoo_model_config.dummy_inputs(model_config))
  assert len(model.variables) > len(model.weights)  # the seed states
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                       str(tmp_path), max_to_keep=3)
  rng = np.random.default_rng(0)
  saved = []
  for step in (1, 2, 3):
    for weight in model.weights:
      weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    saved.append([weight.numpy() for weight in model.weights])
    manager.save(checkpoint_number=step)
  paths = checkpoint_averaging.average_last_checkpoints(model, str(tmp_path), 2)
  assert [os.path.basename(p) for p in paths] == ["ckpt-2", "ckpt-3"]
  for weight, a, b in zip(model.weights, saved[1], saved[2]):
    np.testing.assert_allclose(weight.numpy(), (a + b) / 2, atol=1e-6)


# Command lines.

@pytest.fixture(scope="module")
def cli_evaluation(trained_mt_dir, multi30k_subset, tmp_path_factory):
  folder = tmp_path_factory.mktemp("mt_evaluation")
  result = run_module(
      "trainers.evaluate", f"--model_dir={trained_mt_dir}",
      f"--eval_source_files={multi30k_subset}/test_2016_flickr.de",
      f"--eval_target_files={multi30k_subset}/test_2016_flickr.en",
      f"--output_json={folder / 'metrics.json'}",
      f"--hypotheses_file={folder / 'hypotheses.txt'}")
  return result, folder


def test_evaluate_cli_reports_sacrebleu_bleu_and_chrf(cli_evaluation,
                                                      multi30k_subset):
  import sacrebleu
  result, folder = cli_evaluation
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  bleu_line = next(line for line in lines if line.startswith("BLEU:"))
  chrf_line = next(line for line in lines if line.startswith("chrF:"))
  assert BLEU_SIGNATURE in bleu_line and "95% CI" in bleu_line
  assert CHRF_SIGNATURE in chrf_line
  assert f"({MULTI30K_EVAL_ROWS} sentences)" in result.stdout
  with open(folder / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["sentences"] == MULTI30K_EVAL_ROWS
  assert BLEU_SIGNATURE in metrics["bleu_signature"]
  assert f"{metrics['bleu']:.2f}" in bleu_line
  assert f"{metrics['chrf']:.2f}" in chrf_line
  assert "test_2016_flickr.de" in metrics["data"]
  assert (metrics["beam_size"], metrics["length_penalty"],
          metrics["max_output_length"]) == (4, 0.6, 30)
  low, high = metrics["bleu_ci95"]
  assert 0.0 <= low <= high <= 100.0
  assert 0.0 < metrics["chrf"] < 100.0
  # The numbers are sacreBLEU's own on the written hypotheses.
  with open(folder / "hypotheses.txt", encoding="utf-8") as f:
    hypotheses = f.read().split("\n")[:-1]
  assert len(hypotheses) == MULTI30K_EVAL_ROWS
  with open(os.path.join(multi30k_subset, "test_2016_flickr.de")) as f:
    sources = f.read().splitlines()
  with open(os.path.join(multi30k_subset, "test_2016_flickr.en")) as f:
    references = f.read().splitlines()
  assert metrics["bleu"] == pytest.approx(
      sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9)
  assert metrics["chrf"] == pytest.approx(
      sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=1e-9)
  assert [e["source"] for e in metrics["examples"]] == sources[:5]
  assert [e["hypothesis"] for e in metrics["examples"]] == hypotheses[:5]


def test_translate_cli_prints_one_line(trained_mt_dir):
  result = run_module("trainers.translate", f"--model_dir={trained_mt_dir}",
                      "Ein Hund läuft.")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.split("\n")
  assert len(lines) == 2 and lines[1] == ""  # one line, newline-terminated
  best, _, _ = translate_fn(trained_mt_dir)(["Ein Hund läuft."], 4, 30, 0.6)
  assert lines[0] == best[0]


def test_translate_cli_n_best_from_a_file_with_the_averaged_checkpoint(
    trained_mt_dir, tmp_path):
  sentences = ["Ein Hund läuft.", "Zwei Männer spielen Fußball."]
  (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n",
                                   encoding="utf-8")
  result = run_module("trainers.translate", f"--model_dir={trained_mt_dir}",
                      "--checkpoint=averaged",
                      f"--input_file={tmp_path / 'in.txt'}", "--beam_size=3",
                      "--n_best=2", "--length_penalty=0.0")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line.split("\t", 2) for line in result.stdout.splitlines()]
  assert [int(r[0]) for r in rows] == [0, 0, 1, 1]
  scores = [float(r[1]) for r in rows]
  assert scores[0] >= scores[1] and scores[2] >= scores[3]
  assert all(s < 0 for s in scores)
  _, expected_scores, beams = translate_fn(trained_mt_dir, "averaged")(
      sentences, 3, 30, 0.0)
  assert [r[2] for r in rows] == [beams[0][0], beams[0][1], beams[1][0],
                                  beams[1][1]]
  np.testing.assert_allclose(scores, expected_scores[:, :2].reshape(-1),
                             atol=1e-4)


def test_bad_flag_combinations_exit_1_without_traceback(trained_mt_dir,
                                                        multi30k_subset):
  only_source = run_module(
      "trainers.evaluate", f"--model_dir={trained_mt_dir}",
      f"--eval_source_files={os.path.join(multi30k_subset, 'val.de')}")
  n_best = run_module("trainers.translate", f"--model_dir={trained_mt_dir}",
                      "--beam_size=2", "--n_best=3", "Hallo")
  no_sentences = run_module("trainers.translate",
                            f"--model_dir={trained_mt_dir}")
  neither = run_module("trainers.translate", "Hallo")
  for result, message in (
      (only_source, "--eval_source_files and --eval_target_files are "
       "required"),
      (n_best, "--n_best cannot exceed --beam_size"),
      (no_sentences, "give sentences as arguments or --input_file"),
      (neither, "pass exactly one of --model_dir or --saved_model")):
    assert result.returncode == 1, (message, result.stderr[-3000:])
    assert f"Error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_beyond_the_model_are_user_errors(trained_mt_dir):
  translate = translate_fn(trained_mt_dir)
  with pytest.raises(UserError, match=r"^beam_size must be <= 4"):
    translate(["Hallo"], 5, 30, 0.6)
  with pytest.raises(UserError, match=r"^max_output_length must be <= 30"):
    translate(["Hallo"], 2, 31, 0.6)
  best, scores, beams = translate(["Hallo", "Ein Hund."], 2, 30, 0.6)
  assert len(best) == 2 and scores.shape == (2, 4) and len(beams[0]) == 4
  assert beams[0][2:] == ["", ""] and np.all(scores[:, 2:] == np.float32(-1e9))
