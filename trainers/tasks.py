"""The tasks `--task` can name, mapped to the objects that implement them."""

from trainers.classification_task import SST2, ClassificationTask
from trainers.errors import UserError

TASK_NAMES = ("sst2",)


def get_task(config):
  """Returns the task object for config.task (a TrainConfig)."""
  if config.task == "sst2":
    return ClassificationTask(SST2, config)
  raise UserError(f"Unknown task {config.task!r}; choose one of {TASK_NAMES}")
