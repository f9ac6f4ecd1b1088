"""Reproduce the README's SST-2 row: train a recipe, export, score the export.

  python benchmarks/sst2_recipe.py --flagfile_recipe=trainers/configs/sst2_small.flags

Runs `python -m trainers.train --flagfile=<recipe>` in a fresh model_dir
(wall-clock timed, including vocabulary learning), exports the best
checkpoint, evaluates the dev split through the exported SavedModel's
serving_default signature (what a server returns), and writes
benchmarks/results/<recipe>.json with the date, machine and git commit.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import environment  # noqa: E402

flags.DEFINE_string("flagfile_recipe", "trainers/configs/sst2_small.flags",
                    "The recipe's flagfile.")
flags.DEFINE_string("work_dir", "", "Where model_dir and exports go "
                    "(default: a temp dir, deleted afterwards).")
FLAGS = flags.FLAGS


def run(args):
  print("$", " ".join(args), flush=True)
  subprocess.run(args, cwd=environment.ROOT, check=True)


def directory_bytes(path):
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def main(argv):
  del argv
  recipe = FLAGS.flagfile_recipe
  name = os.path.splitext(os.path.basename(recipe))[0]
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix=f"{name}_")
  model_dir = os.path.join(work_dir, "model")
  export_base = os.path.join(work_dir, "export")
  python = sys.executable
  start = time.time()
  run([python, "-m", "trainers.train", f"--flagfile={recipe}",
       f"--model_dir={model_dir}", f"--export_dir={export_base}"])
  wall_seconds = time.time() - start
  with open(os.path.join(model_dir, "results.json")) as f:
    train_results = json.load(f)
  export_path = train_results["export"]
  dev_json = os.path.join(work_dir, "dev.json")
  run([python, "-m", "trainers.evaluate", "--task=sst2",
       f"--saved_model={export_path}", f"--output_json={dev_json}"])
  with open(dev_json) as f:
    dev = json.load(f)
  with open(os.path.join(export_path, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  result = dict(environment.describe(), **{
      "benchmark": "sst2_recipe",
      "recipe": recipe,
      "commands": [
          f"python -m trainers.train --flagfile={recipe} --model_dir=DIR "
          "--export_dir=EXPORT",
          "python -m trainers.evaluate --task=sst2 --saved_model=EXPORT/<version>"],
      "train_wall_seconds": wall_seconds,
      "train_loop_seconds": train_results["train_seconds"],
      "steps": train_results["steps"],
      "best_step": train_results["best"]["step"],
      "preset": card["preset"],
      "parameters": card["parameters"],
      "architecture": card["architecture"],
      "export_bytes": directory_bytes(export_path),
      "dev_through_export": {k: dev[k] for k in (
          "examples", "accuracy", "accuracy_ci95", "precision", "recall", "f1",
          "confusion_matrix")},
  })
  out = os.path.join(environment.ROOT, "benchmarks", "results", f"{name}.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  print(json.dumps(result, indent=2))
  if not FLAGS.work_dir:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
