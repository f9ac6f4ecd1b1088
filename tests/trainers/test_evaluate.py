"""trainers.evaluate on a checkpoint and on an export: the same numbers."""

import json

from tests.conftest import run_module


def test_checkpoint_and_export_report_the_same_metrics(trained_model_dir,
                                                       exported_model,
                                                       sst2_subset, tmp_path):
  from_checkpoint = run_module(
      "trainers.evaluate", f"--model_dir={trained_model_dir}",
      f"--output_json={tmp_path / 'c.json'}")
  assert from_checkpoint.returncode == 0, from_checkpoint.stderr[-3000:]
  from_export = run_module(
      "trainers.evaluate", f"--saved_model={exported_model}",
      f"--output_json={tmp_path / 'e.json'}")
  assert from_export.returncode == 0, from_export.stderr[-3000:]
  for output in (from_checkpoint.stdout, from_export.stdout):
    for word in ("accuracy:", "95% CI", "precision:", "recall:", "f1:",
                 "macro F1:", "per class:", "negative", "positive",
                 "confusion matrix"):
      assert word in output
  with open(tmp_path / "c.json") as f, open(tmp_path / "e.json") as g:
    checkpoint, export = json.load(f), json.load(g)
  assert checkpoint["examples"] == export["examples"] == 200
  assert checkpoint["confusion_matrix"] == export["confusion_matrix"]
  assert checkpoint["labels"] == export["labels"] == ["negative", "positive"]
  assert checkpoint["task"] == export["task"] == "text_classification"
  with open(f"{trained_model_dir}/best/metrics.json") as f:
    assert json.load(f)["accuracy"] == checkpoint["accuracy"]


def test_other_files_and_clear_errors(trained_model_dir, tmp_path):
  """--eval_files scores any file with the run's columns, in another format
  too (here a CSV with a quoted comma)."""
  csv = tmp_path / "mine.csv"
  csv.write_text('sentence,label\n"a great, great movie",1\nterrible,0\n'
                 "fine,1\n")
  result = run_module("trainers.evaluate", f"--model_dir={trained_model_dir}",
                      f"--eval_files={csv}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(3 examples)" in result.stdout
  csv.write_text("sentence,label\na great movie,1\nterrible,maybe\n")
  bad = run_module("trainers.evaluate", f"--model_dir={trained_model_dir}",
                   f"--eval_files={csv}")
  assert bad.returncode == 1
  assert f"{csv}:3: label 'maybe' is not one of ['0', '1']" in bad.stderr
  assert "Traceback" not in bad.stderr
  neither = run_module("trainers.evaluate")
  assert neither.returncode == 1 and "exactly one of" in neither.stderr
