"""Translate from the terminal: `python -m trainers.translate --model_dir=DIR "Ein Hund läuft."`.

From a checkpoint (--model_dir) or an export (--saved_model=DIR/<version>,
its `translate` signature). Sentences come as arguments, or one a line from
--input_file ('-' = stdin). --n_best prints that many beams with their
scores (log-probability divided by the length penalty).
"""

import sys

from absl import app, flags

from trainers.errors import UserError, run_reporting_user_errors

flags.DEFINE_string("model_dir", "", "Trainer model_dir (checkpoint).")
flags.DEFINE_string("checkpoint", "best", "best, latest, averaged or a prefix.")
flags.DEFINE_string("saved_model", "", "An exported version directory.")
flags.DEFINE_string("input_file", "", "Sentences, one a line ('-' = stdin).")
flags.DEFINE_integer("beam_size", 4, "Beam size.", lower_bound=1)
flags.DEFINE_float("length_penalty", 0.6, "GNMT length penalty alpha.",
                   lower_bound=0.0)
flags.DEFINE_integer("max_output_length", 0, "Longest output in pieces; 0 = "
                     "the model's limit.", lower_bound=0)
flags.DEFINE_integer("n_best", 1, "Beams to print per sentence.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Sentences per call.", lower_bound=1)
FLAGS = flags.FLAGS


def read_sentences(argv, input_file):
  if input_file:
    stream = sys.stdin if input_file == "-" else open(input_file,
                                                      encoding="utf-8")
    with stream:
      return [line.rstrip("\n") for line in stream]
  if not argv:
    raise UserError("give sentences as arguments or --input_file")
  return list(argv)


def run(argv_flags, sentences):
  from trainers.saved_models import model_sequence_length
  from trainers.translation_eval import load_translate_fn
  if argv_flags.n_best > argv_flags.beam_size:
    raise UserError("--n_best cannot exceed --beam_size")
  translate = load_translate_fn(argv_flags.model_dir, argv_flags.saved_model,
                                argv_flags.checkpoint)
  max_output_length = argv_flags.max_output_length or (
      model_sequence_length(argv_flags.model_dir, argv_flags.saved_model) - 2)
  for start in range(0, len(sentences), argv_flags.batch_size):
    batch = sentences[start:start + argv_flags.batch_size]
    best, scores, beams = translate(batch, argv_flags.beam_size,
                                    max_output_length, argv_flags.length_penalty)
    for i, translation in enumerate(best):
      if argv_flags.n_best == 1:
        print(translation)
      else:
        for j in range(argv_flags.n_best):
          print(f"{start + i}\t{scores[i, j]:.4f}\t{beams[i][j]}")
    sys.stdout.flush()


def main(argv):
  run_reporting_user_errors(
      lambda f: run(f, read_sentences(argv[1:], f.input_file)), FLAGS)


if __name__ == "__main__":
  app.run(main)
