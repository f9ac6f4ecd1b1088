"""Regenerate every results JSON and plot the README quotes, in one command.

  python -m benchmarks.run_all                 # train every recipe (hours on CPU)
  python -m benchmarks.run_all --reuse_runs    # score existing runs/<recipe>

Steps, each a command of its own that can also be run alone:
  1. benchmarks/recipe.py for each recipe in trainers/configs/*_small.flags:
     train (or, with --reuse_runs, take runs/<recipe>), export, score the
     export -> benchmarks/results/<recipe>.json;
  2. benchmarks.generation (decoder) and benchmarks.translation_speed;
  3. benchmarks.serving_load on each export (one sentence, prompt or source
     per request; longer points for the generating models), and once more
     on the SST-2 export with TF_ENABLE_ONEDNN_OPTS=1 (the kernels compared);
  4. benchmarks.training_curves over the runs, and benchmarks.model_cards;
  5. benchmarks.train_throughput (every family, strategy and precision),
     benchmarks.encoder_step_breakdown (where the encoder's step goes) and
     benchmarks.dropout_speed (why the zoo draws its own dropout masks).
Each step's JSON records the date, the machine and the git commit.
"""

import glob
import os
import subprocess
import sys

from absl import app, flags

from benchmarks import environment

flags.DEFINE_bool("reuse_runs", False, "Score runs/<recipe> instead of "
                  "training each recipe again.")
FLAGS = flags.FLAGS

RECIPES = ("sst2_small", "shakespeare_small", "multi30k_small")
# Seconds per serving load point: a generating model answers in seconds, so
# its points run longer to collect enough requests for a p99.
SERVING_SECONDS = {"sst2_small": 5, "shakespeare_small": 30,
                   "multi30k_small": 30}


def run(*args, env=None):
  """python *args in the repository root; `env` adds environment variables."""
  print("$", *[f"{k}={v}" for k, v in (env or {}).items()], *args, flush=True)
  subprocess.run([sys.executable, *args], cwd=environment.ROOT, check=True,
                 env=dict(os.environ, **(env or {})))


def latest_version(base):
  versions = sorted(glob.glob(os.path.join(base, "[0-9]*")), key=lambda p: int(
      os.path.basename(p)))
  if not versions:
    raise app.UsageError(f"no export under {base}")
  return versions[-1]


def main(argv):
  del argv
  root = environment.ROOT
  for recipe in RECIPES:
    work_dir = os.path.join(root, "runs", f"recipe_{recipe}")
    args = ["benchmarks/recipe.py",
            f"--flagfile_recipe=trainers/configs/{recipe}.flags",
            f"--work_dir={work_dir}"]
    if FLAGS.reuse_runs:
      args.append(f"--model_dir={os.path.join(root, 'runs', recipe)}")
    run(*args)
  model_dir = {recipe: (os.path.join(root, "runs", recipe) if FLAGS.reuse_runs
                        else os.path.join(root, "runs", f"recipe_{recipe}",
                                          "model"))
               for recipe in RECIPES}
  run("-m", "benchmarks.generation",
      f"--model_dir={model_dir['shakespeare_small']}")
  run("-m", "benchmarks.translation_speed",
      f"--model_dir={model_dir['multi30k_small']}")
  exports = {recipe: latest_version(os.path.join(root, "runs",
                                                 f"recipe_{recipe}", "export"))
             for recipe in RECIPES}
  for recipe in RECIPES:
    run("-m", "benchmarks.serving_load", f"--saved_model_dir={exports[recipe]}",
        f"--seconds={SERVING_SECONDS[recipe]}")
  run("-m", "benchmarks.serving_load",
      f"--saved_model_dir={exports['sst2_small']}",
      "--output=benchmarks/results/serving_load_sst2_onednn.json",
      env={"TF_ENABLE_ONEDNN_OPTS": "1"})
  run("-m", "benchmarks.training_curves",
      *[f"--run={recipe}:{model_dir[recipe]}" for recipe in RECIPES])
  run("-m", "benchmarks.model_cards",
      *[f"--card={exports[recipe]}:benchmarks/results/{recipe}.json"
        for recipe in RECIPES])
  run("-m", "benchmarks.train_throughput")
  run("-m", "benchmarks.encoder_step_breakdown")
  run("-m", "benchmarks.dropout_speed")


if __name__ == "__main__":
  app.run(main)
