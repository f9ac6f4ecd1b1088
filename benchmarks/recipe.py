"""Reproduce a README results row: train a recipe, export, score the export.

  python benchmarks/recipe.py --flagfile_recipe=trainers/configs/sst2_small.flags
  python benchmarks/recipe.py --flagfile_recipe=trainers/configs/shakespeare_small.flags
  python benchmarks/recipe.py --flagfile_recipe=trainers/configs/multi30k_small.flags

Runs `python -m trainers.train --flagfile=<recipe>` in a fresh model_dir
(wall-clock timed, including vocabulary learning) with --export_dir, then
evaluates through the exported SavedModel (what a server returns): SST-2 dev
accuracy via serving_default, tiny-shakespeare validation loss via `score`,
Multi30k test_2016_flickr sacreBLEU/chrF via `translate`
(EVALUATE_FLAGS). Writes
benchmarks/results/<recipe>.json with the date, machine and git commit.
--model_dir reuses a finished run of the same recipe instead of training
(the JSON then has no wall-clock figure, only the training loop's own).
--seed=N trains with that seed instead of the recipe's and writes
benchmarks/results/<recipe>_seed<N>.json (the README's seed variation).
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
flags.DEFINE_string("model_dir", "", "A finished run of this recipe to "
                    "export and score instead of training a new one.")
flags.DEFINE_integer("seed", None, "Train with this --seed instead of the "
                     "recipe's; the JSON is then <recipe>_seed<N>.json.")

# task -> the metrics kept in the JSON
KEPT_METRICS = {
    "text_classification": ("examples", "accuracy", "accuracy_ci95",
                            "precision", "recall", "f1", "confusion_matrix"),
    "language_model": ("characters", "loss", "loss_ci95", "perplexity",
                       "bits_per_character"),
    "translation": ("sentences", "bleu", "bleu_ci95", "bleu_signature", "chrf",
                    "chrf_signature", "beam_size", "length_penalty",
                    "examples"),
}
# recipe -> trainers.evaluate flags (the results row's data and settings;
# default: the recipe's own dev data)
EVALUATE_FLAGS = {
    "multi30k_small": [
        "--eval_source_files=data/multi30k/test_2016_flickr.de.gz",
        "--eval_target_files=data/multi30k/test_2016_flickr.en.gz",
        "--beam_size=4", "--length_penalty=0.6"],
}
FLAGS = flags.FLAGS


def run(args):
  print("$", " ".join(args), flush=True)
  subprocess.run(args, cwd=environment.ROOT, check=True)


def directory_bytes(path):
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def recipe_task(recipe):
  with open(os.path.join(environment.ROOT, recipe)) as f:
    for line in f:
      if line.startswith("--task="):
        return line.strip().split("=", 1)[1]
  raise app.UsageError(f"{recipe} names no --task")


def main(argv):
  del argv
  recipe = FLAGS.flagfile_recipe
  task = recipe_task(recipe)
  name = os.path.splitext(os.path.basename(recipe))[0]
  evaluate_flags = EVALUATE_FLAGS.get(name, [])
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix=f"{name}_")
  model_dir = FLAGS.model_dir or os.path.join(work_dir, "model")
  export_base = os.path.join(work_dir, "export")
  python = sys.executable
  wall_seconds = None
  seed_flags = [] if FLAGS.seed is None else [f"--seed={FLAGS.seed}"]
  if FLAGS.seed is not None:
    name += f"_seed{FLAGS.seed}"
  if FLAGS.model_dir:
    with open(os.path.join(model_dir, "results.json")) as f:
      averaged = "averaged" in json.load(f)
    run([python, "-m", "export.export_main", f"--model_dir={model_dir}",
         f"--export_base={export_base}",
         f"--checkpoint={'averaged' if averaged else 'best'}"])
    export_path = os.path.join(export_base, sorted(os.listdir(export_base))[-1])
  else:
    start = time.time()
    run([python, "-m", "trainers.train", f"--flagfile={recipe}",
         f"--model_dir={model_dir}", f"--export_dir={export_base}",
         *seed_flags])
    wall_seconds = time.time() - start
  with open(os.path.join(model_dir, "results.json")) as f:
    train_results = json.load(f)
  export_path = train_results.get("export") or export_path
  dev_json = os.path.join(work_dir, "dev.json")
  kept = KEPT_METRICS[task]
  run([python, "-m", "trainers.evaluate", f"--saved_model={export_path}", f"--output_json={dev_json}",
       *evaluate_flags])
  with open(dev_json) as f:
    dev = json.load(f)
  with open(os.path.join(export_path, "assets.extra", "model_card.json")) as f:
    card = json.load(f)
  result = dict(environment.describe(), **{
      "benchmark": "recipe",
      "recipe": recipe,
      "task": task,
      "seed": FLAGS.seed,
      "commands": [
          " ".join([f"python -m trainers.train --flagfile={recipe}",
                    "--model_dir=DIR --export_dir=EXPORT", *seed_flags]),
          f"python -m trainers.evaluate "
          f"--saved_model=EXPORT/<version> {' '.join(evaluate_flags)}".strip()],
      "train_wall_seconds": wall_seconds,
      "train_loop_seconds": train_results["train_seconds"],
      "steps": train_results["steps"],
      "best_step": train_results["best"]["step"],
      "dev_during_training": train_results["best"],
      "averaged": train_results.get("averaged"),
      "preset": card["preset"],
      "parameters": card["parameters"],
      "architecture": card["architecture"],
      "export_bytes": directory_bytes(export_path),
      "through_export": {k: dev[k] for k in kept},
      "evaluated_on": dev["data"],
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
