"""Serving signatures of the translator, as a keras ExportArchive.

  serving_default  source string[B] -> translation string[B] (beam
                   DEFAULT_BEAM_SIZE, length penalty DEFAULT_LENGTH_PENALTY,
                   outputs up to the model's limit)
  translate        source string[B], beam_size int32[B], max_output_length
                   int32[B], length_penalty float32[B] -> translations
                   string[B, K], scores float32[B, K]; K is the export's
                   maximum beam size; row b's best beam_size[b] translations
                   come first, best first, the rest are "" with score -1e9.
                   Scores are log-probabilities divided by GNMT's length
                   penalty ((5 + n) / 6) ** length_penalty.

Beam search runs on the decoder's key/value cache in a tf.while_loop inside
the graph (zoo.decoding.beam_search). Sources longer than the model's maximum
are truncated (their first sequence_length - 1 pieces are kept); an empty
source translates like any other. Bad settings give InvalidArgumentError
(gRPC INVALID_ARGUMENT). Plain graph functions, no XLA.
"""

import keras
import tensorflow as tf

from export import input_specs
from export import warmup

DEFAULT_BEAM_SIZE = 4
DEFAULT_LENGTH_PENALTY = 0.6
# Beam search stays a plain graph (the exporter refuses --xla_generation).
XLA_GENERATION = False


def translate_text(model, tokenizer, source, beam_size, max_output_length,
                   length_penalty):
  """The `translate` computation: {translations [B, K], scores [B, K]}."""
  tokens, scores = model.translate(tokenizer(source), beam_size,
                                   max_output_length, length_penalty)
  batch, beams = tf.shape(tokens)[0], tf.shape(tokens)[1]
  texts = tokenizer.detokenize(
      tf.reshape(tokens, [batch * beams, tf.shape(tokens)[2]]))
  texts = tf.reshape(texts, [batch, beams])  # [B, k]
  pad = model.max_beam_size - beams
  real = tf.range(beams)[None, :] < beam_size[:, None]  # [B, k]
  texts = tf.where(real, texts, "")
  return {"translations": tf.pad(texts, [[0, 0], [0, pad]],
                                 constant_values=""),
          "scores": tf.pad(scores, [[0, 0], [0, pad]], constant_values=-1e9)}


def build_archive(model, tokenizer, unused_model_config):
  """Returns (archive, {signature: method name other than predict})."""
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.track(tokenizer)
  longest = model.backbone.sequence_length - 2
  default_beam = min(DEFAULT_BEAM_SIZE, model.max_beam_size)

  def serve(source):
    batch = tf.shape(source)[:1]
    out = translate_text(model, tokenizer, source,
                         tf.fill(batch, default_beam), tf.fill(batch, longest),
                         tf.fill(batch, DEFAULT_LENGTH_PENALTY))
    return {"translation": out["translations"][:, 0]}

  def translate(source, beam_size, max_output_length, length_penalty):
    return translate_text(model, tokenizer, source, beam_size,
                          max_output_length, length_penalty)

  spec = input_specs.batch_vector
  archive.add_endpoint("serving_default", serve,
                       input_signature=[spec("source", tf.string)])
  archive.add_endpoint("translate", translate, input_signature=[
      spec("source", tf.string), spec("beam_size", tf.int32),
      spec("max_output_length", tf.int32),
      spec("length_penalty", tf.float32)])
  return archive, {}


def warmup_logs(model_name, model_config):
  """PredictionLogs replayed before a version takes traffic, one a signature,
  on two training sources of the run."""
  sources = warmup.warmup_inputs(model_config, "source")
  return [
      warmup.predict_log(model_name, "serving_default", {"source": sources}),
      warmup.predict_log(model_name, "translate", {
          "source": sources,
          "beam_size": tf.constant([1, 4], tf.int32),
          "max_output_length": tf.constant([20, 20], tf.int32),
          "length_penalty": tf.constant([0.0, 0.6], tf.float32)}),
  ]


def limits(model_config):
  architecture = model_config["architecture"]
  length = architecture["sequence_length"]
  return {
      "max_source_pieces": length,
      "truncation": f"sources longer than {length - 1} SentencePiece pieces "
                    "are truncated to their first pieces (then EOS)",
      "max_output_length": f"1 to {length - 2} pieces",
      "max_beam_size": architecture.get("max_beam_size", 8),
      "length_penalty": ">= 0 (GNMT alpha; 0 = plain log-probability)",
      "bad_settings": "beam_size outside 1..max_beam_size, max_output_length "
                      "outside its range, negative length_penalty or "
                      "mismatched batch sizes are INVALID_ARGUMENT",
      "languages": f"{model_config.get('source_language')} -> "
                   f"{model_config.get('target_language')}",
  }
