"""TrainConfig: every choice a training run makes, written to config.json.

The absl entry point (trainers/train.py) fills it from flags; everything else
takes this dataclass, never flags.
"""

import dataclasses
import json
import os

import tensorflow as tf

MIXED_PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "parameter_server", "tpu")  # parameter_server: refused, says why
COLLECTIVES = ("auto", "ring", "nccl")


@dataclasses.dataclass
class TrainConfig:
  task: str = "text_classification"  # task name, a key of trainers.tasks.TASKS
  preset: str = "small"  # model size, a key of the family's presets in zoo.presets
  model_dir: str = ""  # checkpoints, summaries, config.json, vocabulary
  # --- data (trainers/data_files.py: .tsv/.csv/.jsonl/.txt[.gz], lists, globs)
  train_files: str = ""  # training data: comma-separated paths and globs
  eval_files: str = ""  # dev data, the same way; '' = none (language model: the last 10% of the text)
  text_column: str = "text"  # the text's header column (TSV/CSV) or key (JSONL)
  text_pair_column: str = ""  # classification: a second text (NLI, paraphrase), encoded with the first as one sequence
  label_column: str = "label"  # classification: the label's column or key
  labels: str = ""  # classification: the label set in id order, "a,b,c"; '' = the training files' labels, sorted
  label_names: str = ""  # classification: display names in id order (the export's `label`); '' = the labels
  train_source_files: str = ""  # translation: line-aligned source text (the OpenNMT convention)
  train_target_files: str = ""  # translation: line-aligned target text
  eval_source_files: str = ""  # translation: dev source text
  eval_target_files: str = ""  # translation: dev target text
  source_column: str = "source"  # translation from tables (--train_files): the source column or key
  target_column: str = "target"  # translation from tables: the target column or key
  source_language: str = ""  # translation: source language code, for the model card
  target_language: str = ""  # translation: target language code, for the model card
  tokenizer: str = ""  # language_model: characters or sentencepiece; '' = the family's (wordpiece, characters, sentencepiece)
  vocabulary_size: int = 0  # vocabulary learner's target size; 0 = the preset's
  vocabulary_sample_lines: int = 1_000_000  # the vocabulary is learned from at most this many training rows (the first)
  shuffle_buffer_size: int = 100_000  # training rows shuffled together (all of them when they fit)
  skip_bad_rows: bool = False  # skip and count bad rows (logged, results.json) instead of stopping at the first
  epochs: float = 3.0  # passes over the training split; ignored if train_steps > 0
  train_steps: int = 0  # total optimizer steps; 0 = derive from epochs
  batch_size: int = 64  # global batch, split evenly across replicas
  learning_rate: float = 1e-3  # peak learning rate after warmup
  warmup_steps: int = 100  # linear warmup from 0 to learning_rate, then the schedule's decay
  lr_schedule: str = "linear"  # after warmup: linear (decay to 0 at the last step) or inverse_sqrt
  weight_decay: float = 0.01  # AdamW decoupled weight decay
  label_smoothing: float = 0.0  # cross-entropy label smoothing
  consistency_weight: float = 0.0  # >0 (classification): R-Drop, every training example runs twice (two dropout masks) and the loss adds this weight times the mean of KL(p||q) and KL(q||p) between the two predictions
  pack_examples: bool = False  # classification: several examples per training row (half or all of sequence_length tokens), attention and pooling kept inside each (trainers/example_packing.py); a batch holds batch_size examples on average
  adversarial_epsilon: float = 0.0  # >0 (classification): adversarial training, the loss adds the loss of each example with its embedded tokens moved this far (L2 over the example) up the loss gradient
  ema_momentum: float = 0.0  # >0: keep an exponential moving average of the weights; evaluate, keep-best and export use it
  seed: int = 0  # seeds initialisation, dropout and shuffling
  mixed_precision: str = "float32"  # float32, mixed_float16 or mixed_bfloat16
  jit_compile: bool = False  # XLA-compile the forward/backward pass (training only)
  distribution_strategy: str = "default"  # see STRATEGIES
  num_gpus: int = 0  # GPUs for mirrored; 0 = all visible
  tpu: str = ""  # TPU address for the tpu strategy
  collective: str = "auto"  # multi-worker collective implementation: auto, ring, nccl
  eval_every_steps: int = 500  # evaluate on dev, checkpoint, keep best
  checkpoint_every_steps: int = 500  # save a resumable checkpoint
  log_every_steps: int = 100  # progress line and train summaries
  max_checkpoints: int = 3  # how many recent checkpoints to keep
  export_dir: str = ""  # if set, export the best checkpoint here at the end
  model_overrides: str = ""  # preset fields to override, "key=value,key=value" (e.g. "dropout=0.3,num_layers=4")
  average_checkpoints: int = 0  # >0: at the end, average the last N checkpoints into averaged/ and export that
  init_checkpoint: str = ""  # a pretraining model_dir whose backbone, vocabulary and architecture this run starts from
  init_from_preset: str = ""  # a keras-hub preset (directory, or name when online) whose architecture, vocabulary, tokenizer settings and weights this run starts from (trainers/presets.py)

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values):
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def write_json(path, value):
  """Writes JSON atomically (temp file + rename)."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path):
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


def config_path(model_dir):
  from zoo import model_dir as layout  # the one owner of the layout
  return layout.path(model_dir, layout.CONFIG)


def parse_overrides(text, preset):
  """'a=1,b=0.5' -> {'a': 1, 'b': 0.5}, typed like the preset's values.

  Raises ValueError naming the bad item (an unknown key or a bad value).
  """
  overrides = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in preset:
      raise ValueError(f"bad model override {item!r}: expected key=value with "
                       f"key one of {sorted(preset)}")
    kind = type(preset[key])
    try:
      overrides[key] = kind(value.strip())
    except ValueError:
      raise ValueError(f"bad model override {item!r}: {key} takes a "
                       f"{kind.__name__}") from None
  return overrides


def preset_architecture(family, preset, model_overrides):
  """The preset dict of `family` with --model_overrides applied; UserError
  for an unknown preset or a bad override."""
  from trainers.errors import UserError
  from zoo.presets import get_preset
  try:
    architecture = get_preset(family, preset)
    architecture.update(parse_overrides(model_overrides, architecture))
  except ValueError as e:
    raise UserError(str(e))
  return architecture
