"""The tasks `--task` can name, mapped to the objects that implement them."""

from trainers.classification_task import SST2, ClassificationTask
from trainers.errors import UserError
from trainers.language_model_task import LanguageModelTask
from trainers.masked_lm_task import MaskedLMTask
from trainers.translation_task import MULTI30K_DE_EN, TranslationTask

TASK_NAMES = ("sst2", "sst2_mlm", "shakespeare", "multi30k_de_en")


def get_task(config):
  """Returns the task object for config.task (a TrainConfig)."""
  task = _build_task(config)
  if config.consistency_weight > 0 and not getattr(
      task, "supports_consistency", False):
    raise UserError(f"--consistency_weight is for classification tasks; "
                    f"--task={config.task} does not take it")
  if config.adversarial_epsilon > 0 and not getattr(
      task, "supports_adversarial", False):
    raise UserError(f"--adversarial_epsilon is for classification tasks; "
                    f"--task={config.task} does not take it")
  if config.pack_examples and not getattr(task, "supports_packing", False):
    raise UserError(f"--pack_examples is for classification tasks; "
                    f"--task={config.task} does not take it")
  if config.pack_examples and config.consistency_weight > 0:
    raise UserError("--pack_examples and --consistency_weight do not go "
                    "together: R-Drop needs each example twice in adjacent "
                    "rows")
  return task


def _build_task(config):
  if config.task == "sst2":
    return ClassificationTask(SST2, config)
  if config.task == "sst2_mlm":  # masked-LM pretraining on SST-2's train text
    return MaskedLMTask(SST2, config)
  if config.task == "shakespeare":  # character-level LM on tiny-shakespeare
    return LanguageModelTask("shakespeare", "tinyshakespeare", "input.txt",
                             config)
  if config.task == "multi30k_de_en":  # German to English translation
    return TranslationTask(MULTI30K_DE_EN, config)
  raise UserError(f"Unknown task {config.task!r}; choose one of {TASK_NAMES}")
