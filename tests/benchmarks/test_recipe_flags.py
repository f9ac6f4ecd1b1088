"""benchmarks/recipe_flags.py: the bundled recipes read as TrainConfigs, and
the benchmarks' per-family tables cover exactly the zoo's families."""

import glob
import os

import pytest

from benchmarks import recipe_flags
from tests.conftest import REPO_ROOT

RECIPES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(
    os.path.join(REPO_ROOT, "trainers", "configs", "*.flags")))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_is_a_registered_task_on_existing_files(recipe):
  from trainers.tasks import TASKS
  config = recipe_flags.recipe_config(recipe)
  assert config.task in TASKS
  files = [getattr(config, name) for name in (
      "train_files", "eval_files", "train_source_files", "train_target_files",
      "eval_source_files", "eval_target_files")]
  assert any(files)
  for spec in filter(None, files):
    for path in spec.split(","):
      assert os.path.isabs(path) and os.path.isfile(path), path


def test_values_are_typed_like_the_config_fields():
  values = recipe_flags.recipe_values("multi30k_small")
  assert values["task"] == "translation"
  assert values["train_steps"] == 4800 and values["learning_rate"] == 1e-3
  assert values["jit_compile"] is True
  assert values["train_source_files"] == os.path.join(
      REPO_ROOT, "data", "multi30k", "train.de.gz")
  config = recipe_flags.recipe_config("sst2_small", preset="tiny")
  assert config.preset == "tiny" and config.labels == "0,1"


def test_flags_that_are_no_config_field_are_an_error(tmp_path):
  recipe = tmp_path / "bad.flags"
  recipe.write_text("# comment\n--task=translation\n--nojit_compile\n"
                    "--data_dir=data/multi30k\n")
  with pytest.raises(ValueError, match=r"bad.flags:4: '--data_dir="):
    recipe_flags.recipe_values(str(recipe))
  recipe.write_text("--task=translation\n--nojit_compile\n")
  assert recipe_flags.recipe_values(str(recipe)) == {
      "task": "translation", "jit_compile": False}


def test_family_tables_cover_the_zoo_families():
  from benchmarks import keras_hub_baselines, model_flops
  from trainers.tasks import TASKS
  from zoo.model_config import FAMILIES
  assert set(model_flops.STEP_FLOPS) == set(FAMILIES)
  assert set(keras_hub_baselines.BASELINES) == set(FAMILIES)
  assert set(recipe_flags.FAMILY_RECIPES) == set(FAMILIES)
  for family, recipe in recipe_flags.FAMILY_RECIPES.items():
    assert TASKS[recipe_flags.recipe_values(recipe)["task"]].family == family
  with pytest.raises(ValueError, match="unknown family 'vision'"):
    model_flops.step_flops("vision", {}, None)
