"""Sample text from a language model: `python -m trainers.generate --model_dir=DIR --prompt=ROMEO:`.

From a checkpoint (--model_dir, best by default) or from an export
(--saved_model=DIR/<version>, through its `generate` signature: what a server
returns). Every setting is per request, as in the export: --max_new_tokens,
--temperature (0 = greedy), --top_k (0 = no limit), --top_p (1 = no limit),
--seed (the same seed gives the same text). --stream prints the text as it
comes, in pieces of --stream_chunk characters; since a row's random stream is
keyed by (seed, position), a streamed sample is the same text as an
unstreamed one as long as prompt and continuation fit in the context.
"""

import sys

from absl import app, flags

from trainers.errors import UserError, run_reporting_user_errors
from trainers.saved_models import assertion_message, load_signature

flags.DEFINE_string("model_dir", "", "Trainer model_dir (checkpoint).")
flags.DEFINE_string("checkpoint", "best", "best, latest or a checkpoint prefix.")
flags.DEFINE_string("saved_model", "", "An exported version directory.")
flags.DEFINE_multi_string("prompt", ["\n"], "Prompt text; repeat for several.")
flags.DEFINE_integer("max_new_tokens", 200, "Characters to generate.",
                     lower_bound=0)
flags.DEFINE_float("temperature", 0.8, "0 = greedy.", lower_bound=0.0)
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens; 0 = all.",
                     lower_bound=0)
flags.DEFINE_float("top_p", 1.0, "Nucleus mass in (0, 1]; 1 = no limit.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("seed", 0, "Sampling seed (per prompt: seed + index).")
flags.DEFINE_integer("num_samples", 1, "Samples per prompt.", lower_bound=1)
flags.DEFINE_bool("stream", False, "Print each sample as it is generated.")
flags.DEFINE_integer("stream_chunk", 16, "Characters per streamed piece.",
                     lower_bound=1)
FLAGS = flags.FLAGS


def load_generate_fn(model_dir="", saved_model="", checkpoint="best"):
  """fn(prompts, max_new_tokens, temperature, top_k, top_p, seeds) -> texts."""
  import tensorflow as tf
  if bool(model_dir) == bool(saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  if saved_model:
    signature = load_signature(saved_model, "generate")
  else:
    from export.decoder_export import generate_text
    from export.exporter import load_trained_model
    from export.versioning import ExportError
    try:
      model, tokenizer, config, _ = load_trained_model(model_dir, checkpoint)
    except ExportError as e:
      raise UserError(str(e))
    if config["model"]["family"] != "decoder":
      raise UserError(f"{model_dir} holds a {config['model']['family']} "
                      "model, not a language model")
    signature = tf.function(lambda **kw: generate_text(model, tokenizer, **kw))

  def generate(prompts, max_new_tokens, temperature, top_k, top_p, seeds):
    n = len(prompts)
    try:
      out = signature(
          prompt=tf.constant(prompts),
          max_new_tokens=tf.constant([max_new_tokens] * n, tf.int32),
          temperature=tf.constant([temperature] * n, tf.float32),
          top_k=tf.constant([top_k] * n, tf.int32),
          top_p=tf.constant([top_p] * n, tf.float32),
          seed=tf.constant(seeds, tf.int64))
    except tf.errors.InvalidArgumentError as e:
      raise UserError(assertion_message(e.message))
    return [t.decode("utf-8", errors="replace") for t in out["text"].numpy()]

  return generate


def sample(generate, prompt, seed, argv_flags, write=sys.stdout.write):
  """One sample for `prompt`; streamed in pieces if --stream. Returns the text."""
  if not argv_flags.stream:
    text = generate([prompt], argv_flags.max_new_tokens, argv_flags.temperature,
                    argv_flags.top_k, argv_flags.top_p, [seed])[0]
    write(prompt + text + "\n")
    return text
  write(prompt)
  text = ""
  while len(text) < argv_flags.max_new_tokens:
    size = min(argv_flags.stream_chunk, argv_flags.max_new_tokens - len(text))
    piece = generate([prompt + text], size, argv_flags.temperature,
                     argv_flags.top_k, argv_flags.top_p, [seed])[0]
    if not piece:
      break
    write(piece)
    sys.stdout.flush()
    text += piece
  write("\n")
  return text


def run(argv_flags):
  if argv_flags.top_p <= 0.0:
    raise UserError("--top_p must be in (0, 1]")
  generate = load_generate_fn(argv_flags.model_dir, argv_flags.saved_model,
                              argv_flags.checkpoint)
  for i, prompt in enumerate(argv_flags.prompt):
    for j in range(argv_flags.num_samples):
      if len(argv_flags.prompt) * argv_flags.num_samples > 1:
        print(f"--- prompt {i + 1}, sample {j + 1} ---")
      sample(generate, prompt, argv_flags.seed + i * argv_flags.num_samples + j,
             argv_flags)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run_reporting_user_errors(run, FLAGS)


if __name__ == "__main__":
  app.run(main)
