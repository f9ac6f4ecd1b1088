"""The bundled recipes (trainers/configs/<name>.flags) as TrainConfigs.

A recipe is a flagfile of a generic task (`--task=...`, its data files, its
training settings). Benchmarks that need a family's data or batch size read
the recipe here instead of naming a task or a data folder of their own:
  recipe_values("sst2_small")  -> {"task": "text_classification", ...}
  recipe_config("shakespeare_small", preset="tiny")  -> TrainConfig
  recipe_task("multi30k_small")  -> the registry's Task object
Data paths in a recipe are relative to the repository root; they come back
absolute, so a benchmark may run from any directory.
"""

import dataclasses
import os

from benchmarks.environment import ROOT

CONFIGS = os.path.join("trainers", "configs")

# family -> the recipe whose data and batch size a family's benchmark uses
FAMILY_RECIPES = {"encoder": "sst2_small", "decoder": "shakespeare_small",
                  "seq2seq": "multi30k_small"}


def recipe_path(recipe):
  """trainers/configs/<recipe>.flags (absolute), or `recipe` if it is a path."""
  if recipe.endswith(".flags"):
    return recipe if os.path.isabs(recipe) else os.path.join(ROOT, recipe)
  return os.path.join(ROOT, CONFIGS, recipe + ".flags")


def absolute_files(spec):
  """A comma-separated list of paths and globs, each made absolute."""
  return ",".join(part if os.path.isabs(part) else os.path.join(ROOT, part)
                  for part in (p.strip() for p in spec.split(",")) if part)


def recipe_values(recipe):
  """The TrainConfig fields a recipe's flagfile sets, typed like the fields
  (`--name=value`, `--flag` and `--noflag`; comments and blank lines skipped).
  ValueError for a flag TrainConfig does not have."""
  from trainers.config import TrainConfig
  fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
  defaults = TrainConfig()
  values = {}
  with open(recipe_path(recipe), encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      name, sep, value = line.lstrip("-").partition("=")
      if not sep and name not in fields and name.startswith("no"):
        name, value = name[2:], "false"
      elif not sep:
        value = "true"
      if name not in fields:
        raise ValueError(f"{recipe_path(recipe)}:{number}: {line!r} is not a "
                         "TrainConfig field")
      kind = type(getattr(defaults, name))
      if kind is bool:
        values[name] = value.lower() in ("true", "1", "yes")
      else:
        values[name] = kind(value)
      if name.endswith("_files"):
        values[name] = absolute_files(values[name])
  return values


def recipe_config(recipe, **overrides):
  """The recipe's TrainConfig, with `overrides` (TrainConfig fields)."""
  from trainers.config import TrainConfig
  return TrainConfig(**dict(recipe_values(recipe), **overrides))


def recipe_task(recipe, **overrides):
  """The registry's Task for the recipe (its data, with `overrides`)."""
  from trainers.tasks import get_task
  return get_task(recipe_config(recipe, **overrides))
