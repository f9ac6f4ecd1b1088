"""The task registry: `--task` names, mapped to their Task classes (trainers/task.py).

A plain dict, filled here and nowhere else. Adding a task is one module with
a Task subclass plus one line below (and, for a new kind of model, a family in
zoo.model_config and export.exporter). The bundled datasets are recipes of
these tasks (trainers/configs/*.flags), not tasks of their own.
"""

from trainers.classification_task import TextClassificationTask
from trainers.errors import UserError
from trainers.language_model_task import LanguageModelTask
from trainers.masked_lm_task import MaskedLMTask
from trainers.translation_task import TranslationTask

TASKS = {
    "text_classification": TextClassificationTask,
    "masked_lm": MaskedLMTask,
    "language_model": LanguageModelTask,
    "translation": TranslationTask,
}
TASK_NAMES = tuple(TASKS)


def get_task(config):
  """The Task object for config.task (a TrainConfig); UserError for options
  the task does not take."""
  if config.task not in TASKS:
    raise UserError(f"Unknown task {config.task!r}; choose one of "
                    f"{list(TASK_NAMES)}")
  task = TASKS[config.task](config)
  for option, supported, value in (
      ("consistency_weight", task.supports_consistency,
       config.consistency_weight > 0),
      ("adversarial_epsilon", task.supports_adversarial,
       config.adversarial_epsilon > 0),
      ("pack_examples", task.supports_packing, config.pack_examples),
      ("init_checkpoint", task.supports_init_checkpoint,
       bool(config.init_checkpoint)),
      ("init_from_preset", task.supports_init_from_preset,
       bool(config.init_from_preset))):
    if value and not supported:
      raise UserError(f"--{option} is not supported by --task={config.task}")
  if config.pack_examples and config.consistency_weight > 0:
    raise UserError("--pack_examples and --consistency_weight do not go "
                    "together: R-Drop needs each example twice in adjacent "
                    "rows")
  return task


def task_for_model(trainer_config, model_config, **overrides):
  """The Task of a trained model (its config.json or model card), bound to
  its model config; `overrides` replace TrainConfig fields (e.g. other
  eval files)."""
  from trainers.config import TrainConfig
  values = dict(trainer_config or {})
  values.setdefault("task", model_config["task"])
  values.update({k: v for k, v in overrides.items() if v not in (None, "")})
  values["init_checkpoint"] = ""  # evaluation never warm-starts
  values["init_from_preset"] = ""
  values["pack_examples"] = False
  return get_task(TrainConfig.from_dict(values)).use_model_config(model_config)
