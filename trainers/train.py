"""Train a zoo model on your data: `python -m trainers.train --task=text_classification --train_files=... --model_dir=DIR`.

Thin absl entry point: flags -> TrainConfig -> trainers.loop.train_and_evaluate.
Rerunning the same command resumes from the last checkpoint in --model_dir.
`--flagfile=trainers/configs/<recipe>.flags` runs a published recipe.
"""

from absl import app, flags

from trainers import config as config_lib
from trainers.errors import run_reporting_user_errors
from trainers.tasks import TASK_NAMES
from zoo.presets import PRESETS

_DEFAULTS = config_lib.TrainConfig()

flags.DEFINE_enum("task", _DEFAULTS.task, TASK_NAMES, "Task to train.")
flags.DEFINE_enum("preset", _DEFAULTS.preset,
                  sorted(set().union(*PRESETS.values())),
                  "Model size preset of the task's family (zoo/presets.py).")
flags.DEFINE_string("model_dir", None, "Directory for checkpoints, summaries, "
                    "config.json and the vocabulary. Rerun to resume.")
# --- data: .tsv, .csv, .jsonl, .txt (each optionally .gz); lists and globs
flags.DEFINE_string("train_files", "", "Training data: comma-separated paths "
                    "and globs (expanded by the trainer). text_classification "
                    "and masked_lm: .tsv/.csv/.jsonl (masked_lm also .txt); "
                    "language_model: .txt; translation: a table with "
                    "--source_column/--target_column.")
flags.DEFINE_string("eval_files", "", "Dev data, like --train_files. "
                    "language_model and masked_lm without it: the last 10% "
                    "of the training data.")
flags.DEFINE_string("text_column", _DEFAULTS.text_column, "The text's header "
                    "column (TSV/CSV) or key (JSONL).")
flags.DEFINE_string("text_pair_column", "", "text_classification: a second "
                    "text per row (NLI, paraphrase, question + passage), "
                    "encoded with the first as one sequence.")
flags.DEFINE_string("label_column", _DEFAULTS.label_column,
                    "text_classification: the label's column or key.")
flags.DEFINE_list("labels", [], "text_classification: the label set in id "
                  "order; any other label is an error. Default: every label "
                  "of the training files, sorted.")
flags.DEFINE_list("label_names", [], "text_classification: display names of "
                  "the labels in id order (what the export returns as "
                  "`label`). Default: the labels themselves.")
flags.DEFINE_string("train_source_files", "", "translation: source side, "
                    "line-aligned with --train_target_files.")
flags.DEFINE_string("train_target_files", "", "translation: target side.")
flags.DEFINE_string("eval_source_files", "", "translation: dev source side.")
flags.DEFINE_string("eval_target_files", "", "translation: dev target side.")
flags.DEFINE_string("source_column", _DEFAULTS.source_column, "translation "
                    "from tables: the source column or key.")
flags.DEFINE_string("target_column", _DEFAULTS.target_column, "translation "
                    "from tables: the target column or key.")
flags.DEFINE_string("source_language", "", "translation: source language "
                    "code (recorded in the model card).")
flags.DEFINE_string("target_language", "", "translation: target language "
                    "code (recorded in the model card).")
flags.DEFINE_enum("tokenizer", "", ["", "characters", "sentencepiece"],
                  "language_model: characters (code points) or "
                  "sentencepiece (subwords learned from the training text); "
                  "'' = characters.")
flags.DEFINE_integer("vocabulary_size", 0, "Target vocabulary size; 0 = the "
                     "preset's (language_model with sentencepiece: 4000).",
                     lower_bound=0)
flags.DEFINE_integer("vocabulary_sample_lines", _DEFAULTS.vocabulary_sample_lines,
                     "Learn the vocabulary from at most this many training "
                     "rows (the first).", lower_bound=1)
flags.DEFINE_integer("shuffle_buffer_size", _DEFAULTS.shuffle_buffer_size,
                     "Training rows shuffled together (all of them when "
                     "they fit).", lower_bound=1)
flags.DEFINE_bool("skip_bad_rows", False, "Skip bad rows (a missing column, "
                  "an empty text, an unknown label, invalid UTF-8) and count "
                  "them in the log and results.json, instead of stopping at "
                  "the first with its file and line.")
flags.DEFINE_float("epochs", _DEFAULTS.epochs,
                   "Passes over the training split (used when --train_steps=0).",
                   lower_bound=0.0)
flags.DEFINE_integer("train_steps", _DEFAULTS.train_steps,
                     "Total optimizer steps; 0 derives them from --epochs.",
                     lower_bound=0)
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size,
                     "Global batch size, split across replicas. Scale "
                     "--learning_rate linearly when you scale this.",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate,
                   "Peak learning rate (AdamW).", lower_bound=0.0)
flags.DEFINE_integer("warmup_steps", _DEFAULTS.warmup_steps,
                     "Linear warmup steps before linear decay.", lower_bound=0)
flags.DEFINE_enum("lr_schedule", _DEFAULTS.lr_schedule, ["linear", "inverse_sqrt"],
                  "After warmup: linear decay to 0 at the last step, or "
                  "inverse square root (peak * sqrt(warmup / step)).")
flags.DEFINE_integer("average_checkpoints", _DEFAULTS.average_checkpoints,
                     "At the end, average the model weights of the last N "
                     "checkpoints (keep --max_checkpoints >= N), evaluate, "
                     "save to model_dir/averaged/ and export that.",
                     lower_bound=0)
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay,
                   "AdamW weight decay.", lower_bound=0.0)
flags.DEFINE_float("label_smoothing", _DEFAULTS.label_smoothing,
                   "Cross-entropy label smoothing.", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_float("consistency_weight", _DEFAULTS.consistency_weight,
                   "Classification only. If > 0, R-Drop: each training "
                   "example appears twice in its batch (so twice the "
                   "compute), and the loss adds this weight times the mean "
                   "of KL(p||q) and KL(q||p) between its two predictions.",
                   lower_bound=0.0)
flags.DEFINE_bool("pack_examples", _DEFAULTS.pack_examples,
                  "Classification only. Pack several training examples into "
                  "each row of half the sequence length (or all of it, for "
                  "the examples that need it); attention, the convolution "
                  "and pooling stay inside each example, so batches carry "
                  "almost no padding. A batch then holds --batch_size "
                  "examples on average. Evaluation and exports are "
                  "unchanged.")
flags.DEFINE_float("adversarial_epsilon", _DEFAULTS.adversarial_epsilon,
                   "Classification only. If > 0, adversarial training on "
                   "the embeddings (Miyato et al., 2017): the loss adds the "
                   "loss of each example with its embedded tokens moved "
                   "this far (L2 norm over the example) along the loss "
                   "gradient; a second forward and backward pass per step.",
                   lower_bound=0.0)
flags.DEFINE_float("ema_momentum", _DEFAULTS.ema_momentum,
                   "If > 0, evaluate, keep and export an exponential moving "
                   "average of the weights with this momentum (e.g. 0.999).",
                   lower_bound=0.0, upper_bound=0.99999)
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Random seed.")
flags.DEFINE_enum("mixed_precision", _DEFAULTS.mixed_precision,
                  config_lib.MIXED_PRECISION, "Keras dtype policy.")
flags.DEFINE_bool("jit_compile", _DEFAULTS.jit_compile,
                  "XLA-compile the training step (exports never use XLA).")
flags.DEFINE_enum("distribution_strategy", _DEFAULTS.distribution_strategy,
                  config_lib.STRATEGIES, "tf.distribute strategy: default "
                  "(one device, no wrapper), one_device, mirrored (all local "
                  "GPUs or --num_gpus), multi_worker_mirrored (workers from "
                  "TF_CONFIG), tpu (--tpu). See BUILD_NOTES.md.")
flags.DEFINE_integer("num_gpus", _DEFAULTS.num_gpus,
                     "GPUs for mirrored (0 = all visible).", lower_bound=0)
flags.DEFINE_string("tpu", _DEFAULTS.tpu, "TPU name or address (tpu strategy).")
flags.DEFINE_enum("collective", _DEFAULTS.collective, config_lib.COLLECTIVES,
                  "Collective implementation for multi_worker_mirrored.")
flags.DEFINE_integer("eval_every_steps", _DEFAULTS.eval_every_steps,
                     "Evaluate on dev and keep the best checkpoint this often.",
                     lower_bound=1)
flags.DEFINE_integer("checkpoint_every_steps", _DEFAULTS.checkpoint_every_steps,
                     "Save a resumable checkpoint this often.", lower_bound=1)
flags.DEFINE_integer("log_every_steps", _DEFAULTS.log_every_steps,
                     "Progress line and train summaries this often.",
                     lower_bound=1)
flags.DEFINE_integer("max_checkpoints", _DEFAULTS.max_checkpoints,
                     "Recent checkpoints to keep.", lower_bound=1)
flags.DEFINE_string("export_dir", "", "If set, export the best checkpoint as a "
                    "versioned SavedModel under this base directory.")
flags.DEFINE_string("model_overrides", "", "Preset fields to override, "
                    "'key=value,...' (e.g. 'dropout=0.3,num_layers=4'); "
                    "recorded in config.json.")
flags.DEFINE_string("init_checkpoint", "", "A pretraining model_dir (e.g. of "
                    "--task=masked_lm): this run reuses its vocabulary and "
                    "architecture and starts from its backbone weights.")
flags.DEFINE_string("init_from_preset", "", "A keras-hub preset: a directory "
                    "(what Backbone.save_to_preset writes, or a downloaded "
                    "Kaggle preset) or a keras-hub preset name when this "
                    "machine can reach Kaggle. The run takes the preset's "
                    "architecture, vocabulary, tokenizer settings and weights "
                    "(text_classification: BertBackbone, DistilBertBackbone)."
                    " --model_overrides may change only sequence_length, "
                    "dropout, token_dropout and pooling.")
flags.mark_flag_as_required("model_dir")

FLAGS = flags.FLAGS


def config_from_flags():
  values = {field: FLAGS[field].value
            for field in config_lib.TrainConfig.__dataclass_fields__}
  for field in ("labels", "label_names"):  # lists -> "a,b" in the config
    values[field] = ",".join(values[field])
  return config_lib.TrainConfig(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from trainers.loop import train_and_evaluate  # heavy import after flag parsing
  run_reporting_user_errors(train_and_evaluate, config_from_flags())


if __name__ == "__main__":
  app.run(main)
