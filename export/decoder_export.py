"""Serving signatures of the decoder language model, as a keras ExportArchive.

  serving_default  prompt string[B] -> text string[B] (greedy continuation of
                   DEFAULT_NEW_TOKENS tokens)
  generate         prompt string[B], max_new_tokens int32[B], temperature
                   float32[B], top_k int32[B], top_p float32[B], seed int64[B]
                   -> text string[B] (the continuation only), num_tokens int32[B]
  score            text string[B] -> log_likelihood float32[B] (nats, every
                   token given the ones before it and the start token),
                   num_tokens int32[B] (tokens scored)
  engine_init, engine_prefill, engine_step
                   generation one token a call over decode slots, for a
                   serving engine (export/engine_signatures.py)

Tokens are characters or SentencePiece pieces (the model config's
tokenizer); the tokenizer layer gives `tokenize`, `start_id` and
`detokenize`, and `call` puts the start token first.

Generation is a tf.while_loop over the key/value cache inside the graph
(zoo.decoding.generation); each row has its own settings. Prompts are read
after the start token; a prompt that does not fit in the context together
with max_new_tokens loses its beginning. Texts to score are cut after
context - 1 tokens. Bad settings give InvalidArgumentError (gRPC
INVALID_ARGUMENT). Plain graph functions, no XLA; vocabulary as an asset.
"""

import keras
import tensorflow as tf

from export import engine_signatures
from export import input_specs
from export import warmup
from zoo.decoding.generation import continuation, fit_prompts

DEFAULT_NEW_TOKENS = 100
# build_archive can XLA-compile the token loop (ExportConfig.xla_generation).
XLA_GENERATION = True


def prompt_ids(tokenizer, prompt):
  """string[B] -> (ids int32[B, L] start token first, right-padded; lengths)."""
  ids = tokenizer.tokenize(prompt)  # [B, (T)]
  start = tf.fill([ids.nrows(), 1], tokenizer.start_id)
  ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
  return ids.to_tensor(default_value=0), tf.cast(ids.row_lengths(), tf.int32)


def generate_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k,
                  top_p, seed, use_cache=True, jit_compile=False):
  """The `generate` computation: returns {text string[B], num_tokens int32[B]}.

  use_cache=False recomputes the whole context at every step (a benchmark
  baseline; exports always use the cache). jit_compile: XLA-compile the
  token loop (the tokenizer stays outside it).
  """
  context = model.backbone.sequence_length
  ids, lengths = prompt_ids(tokenizer, prompt)
  with tf.control_dependencies([tf.debugging.assert_equal(
      tf.shape(max_new_tokens)[0], tf.shape(prompt)[0],
      message="max_new_tokens must have one value per prompt (batch size)")]):
    budget = tf.clip_by_value(max_new_tokens, 0, context - 1)  # validated below
  ids, lengths = fit_prompts(ids, lengths, budget, context)  # [B, T], [B]
  tokens, generated = model.generate(ids, lengths, max_new_tokens, temperature,
                                     top_k, top_p, seed, use_cache=use_cache,
                                     jit_compile=jit_compile)
  new_tokens = continuation(tokens, lengths, generated)  # [B, T]
  return {"text": tokenizer.detokenize(new_tokens), "num_tokens": generated}


def build_archive(model, tokenizer, unused_model_config, xla_generation=False):
  """Returns (archive, {signature: method name other than predict}).

  xla_generation: serving_default and generate run their token loop as an
  XLA-compiled function (the engine signatures stay plain graphs).
  """
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.track(tokenizer)
  context = model.backbone.sequence_length
  default_new_tokens = min(DEFAULT_NEW_TOKENS, context - 1)

  def serve(prompt):
    batch = tf.shape(prompt)[:1]
    outputs = generate_text(
        model, tokenizer, prompt, tf.fill(batch, default_new_tokens),
        tf.zeros(batch, tf.float32), tf.zeros(batch, tf.int32),
        tf.ones(batch, tf.float32), tf.zeros(batch, tf.int64),
        jit_compile=xla_generation)
    return {"text": outputs["text"]}

  def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed):
    return generate_text(model, tokenizer, prompt, max_new_tokens, temperature,
                         top_k, top_p, seed, jit_compile=xla_generation)

  def score(text):
    log_likelihood, count = model.log_likelihood(tokenizer(text))
    return {"log_likelihood": log_likelihood, "num_tokens": count}

  spec = input_specs.batch_vector
  archive.add_endpoint("serving_default", serve,
                       input_signature=[spec("prompt", tf.string)])
  archive.add_endpoint("generate", generate, input_signature=[
      spec("prompt", tf.string), spec("max_new_tokens", tf.int32),
      spec("temperature", tf.float32), spec("top_k", tf.int32),
      spec("top_p", tf.float32), spec("seed", tf.int64)])
  archive.add_endpoint("score", score, input_signature=[spec("text", tf.string)])
  engine_signatures.add_engine_endpoints(archive, model, tokenizer, prompt_ids)
  return archive, {}


def warmup_logs(model_name, model_config):
  """PredictionLogs replayed before a version takes traffic, one a signature,
  on two prompts from the run's training text."""
  prompts = warmup.warmup_inputs(model_config, "prompt")
  return [
      warmup.predict_log(model_name, "serving_default", {"prompt": prompts}),
      warmup.predict_log(model_name, "generate", {
          "prompt": prompts,
          "max_new_tokens": tf.constant([8, 8], tf.int32),
          "temperature": tf.constant([0.0, 0.8], tf.float32),
          "top_k": tf.constant([0, 20], tf.int32),
          "top_p": tf.constant([1.0, 0.9], tf.float32),
          "seed": tf.constant([0, 1], tf.int64)}),
      warmup.predict_log(model_name, "score", {"text": prompts}),
  ]


# The model config's tokenizer -> (what a token is, what text outside the
# vocabulary becomes).
_TOKEN_UNITS = {
    "characters": ("characters", "characters outside the vocabulary map to "
                   "[UNK] (never generated)"),
    "sentencepiece_lm": ("tokens (SentencePiece pieces)", "characters "
                         "outside the vocabulary map to [UNK] (never "
                         "generated)"),
    "byte_pair": ("tokens (GPT-2 byte-level BPE)", "none: every byte is a "
                  "token; invalid UTF-8 is replaced by U+FFFD"),
}


def limits(model_config):
  context = model_config["architecture"]["sequence_length"]
  tokenizer = model_config.get("tokenizer") or "characters"
  unit, unknown = _TOKEN_UNITS[tokenizer]
  return {
      "context": context,
      "tokenizer": tokenizer,
      "max_new_tokens": f"0 to {context - 1}; more is INVALID_ARGUMENT",
      "truncation": f"a prompt keeps its last context - max_new_tokens {unit} "
                    "(counting the start token); score reads the first "
                    f"{context - 1} {unit} of a text",
      "unknown_text": unknown,
      "sampling": "temperature 0 = greedy, top_k 0 = no limit, top_p 1 = no "
                  "limit; temperature < 0, top_k < 0 or top_p outside (0, 1] "
                  "is INVALID_ARGUMENT; the same seed gives the same text",
      "end_token": ("none (the model is trained on running text): generation "
                    "runs to max_new_tokens"
                    if model_config.get("end_id") is None else
                    "generation stops after the end token (id "
                    f"{model_config['end_id']}), which the text leaves out"),
  }
