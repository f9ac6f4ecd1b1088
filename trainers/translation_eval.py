"""Translate files and score them with sacreBLEU (BLEU and chrF).

`load_translate_fn` gives one function over a checkpoint or an export (its
`translate` signature: what a server returns), so `trainers.evaluate` and
`trainers.translate` publish exactly what the SavedModel produces. BLEU is
sacreBLEU's default: cased, on detokenized text, 13a tokenization; its
signature string is reported with the score.
"""

import numpy as np

from trainers.errors import UserError
from trainers.saved_models import assertion_message, load_signature


def load_translate_fn(model_dir="", saved_model="", checkpoint="best"):
  """fn(sources, beam_size, max_output_length, length_penalty) ->
  (best translations list[str], scores np.ndarray[B, K], all translations)."""
  import tensorflow as tf
  if bool(model_dir) == bool(saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  if saved_model:
    signature = load_signature(saved_model, "translate")
  else:
    from export.exporter import load_trained_model
    from export.seq2seq_export import translate_text
    from export.versioning import ExportError
    try:
      model, tokenizer, config, _ = load_trained_model(model_dir, checkpoint)
    except ExportError as e:
      raise UserError(str(e))
    if config["model"]["family"] != "seq2seq":
      raise UserError(f"{model_dir} holds a {config['model']['family']} "
                      "model, not a translator")
    signature = tf.function(  # the export's signature: shapes stay [None]
        lambda source, beam_size, max_output_length, length_penalty:
        translate_text(model, tokenizer, source, beam_size, max_output_length,
                       length_penalty),
        input_signature=[tf.TensorSpec([None], tf.string, name="source"),
                         tf.TensorSpec([None], tf.int32, name="beam_size"),
                         tf.TensorSpec([None], tf.int32,
                                       name="max_output_length"),
                         tf.TensorSpec([None], tf.float32,
                                       name="length_penalty")])

  def translate(sources, beam_size, max_output_length, length_penalty):
    n = len(sources)
    try:
      out = signature(
          source=tf.constant(sources, tf.string),
          beam_size=tf.constant([beam_size] * n, tf.int32),
          max_output_length=tf.constant([max_output_length] * n, tf.int32),
          length_penalty=tf.constant([length_penalty] * n, tf.float32))
    except tf.errors.InvalidArgumentError as e:
      raise UserError(assertion_message(e.message))
    texts = [[t.decode("utf-8") for t in row]
             for row in out["translations"].numpy()]
    return [row[0] for row in texts], out["scores"].numpy(), texts

  return translate


def translate_all(translate, sources, batch_size, beam_size, max_output_length,
                  length_penalty):
  """Best translation of every source, in order."""
  hypotheses = []
  for start in range(0, len(sources), batch_size):
    best, _, _ = translate(sources[start:start + batch_size], beam_size,
                           max_output_length, length_penalty)
    hypotheses.extend(best)
  return hypotheses


def bleu_metrics(hypotheses, references, num_samples=1000, seed=0):
  """sacreBLEU BLEU and chrF with signatures, and a bootstrap 95% CI of BLEU."""
  import sacrebleu
  bleu = sacrebleu.metrics.BLEU()
  chrf = sacrebleu.metrics.CHRF()
  bleu_score = bleu.corpus_score(hypotheses, [references])
  chrf_score = chrf.corpus_score(hypotheses, [references])
  # Bootstrap over sentences: resample sufficient statistics, not texts.
  per_sentence = [bleu.corpus_score([h], [[r]])
                  for h, r in zip(hypotheses, references)]
  stats = np.array([s.counts + s.totals + [s.sys_len, s.ref_len]
                    for s in per_sentence], np.float64)  # [N, 10]
  rng = np.random.default_rng(seed)
  samples = []
  for _ in range(num_samples):
    total = stats[rng.integers(0, len(stats), len(stats))].sum(axis=0)
    samples.append(bleu.compute_bleu(total[:4].tolist(), total[4:8].tolist(),
                                     int(total[8]), int(total[9]),
                                     smooth_method="exp").score)
  return {
      "bleu": bleu_score.score,
      "bleu_ci95": [float(np.percentile(samples, 2.5)),
                    float(np.percentile(samples, 97.5))],
      "bleu_signature": str(bleu.get_signature()),
      "chrf": chrf_score.score,
      "chrf_signature": str(chrf.get_signature()),
      "sentences": len(hypotheses),
  }


def evaluate_translations(task, saved_model, model_dir, checkpoint, batch_size,
                          beam_size=4, length_penalty=0.6, max_output_length=0,
                          hypotheses_file=""):
  """BLEU/chrF of beam-search translations of the task's dev pairs, from an
  export (saved_model) or a checkpoint (model_dir)."""
  from trainers.saved_models import model_sequence_length
  pairs = list(task.pairs("eval"))
  sources = [source for source, _ in pairs]
  references = [target for _, target in pairs]
  translate = load_translate_fn(model_dir, saved_model, checkpoint)
  max_output_length = max_output_length or (
      model_sequence_length(model_dir, saved_model) - 2)
  hypotheses = translate_all(translate, sources, batch_size, beam_size,
                             max_output_length, length_penalty)
  if hypotheses_file:
    with open(hypotheses_file, "w", encoding="utf-8") as f:
      f.write("\n".join(hypotheses) + "\n")
  metrics = bleu_metrics(hypotheses, references)
  metrics.update(beam_size=beam_size, length_penalty=length_penalty,
                 max_output_length=max_output_length,
                 examples=[{"source": s, "reference": r, "hypothesis": h}
                           for s, r, h in list(zip(sources, references,
                                                   hypotheses))[:5]])
  return metrics


def print_translation_report(metrics):
  low, high = metrics["bleu_ci95"]
  print(f"model: {metrics['source']}")
  print(f"data:  {metrics['data']} ({metrics['sentences']} sentences)")
  print(f"beam {metrics['beam_size']}, length penalty "
        f"{metrics['length_penalty']}")
  print(f"BLEU:  {metrics['bleu']:.2f}  (95% CI {low:.2f}-{high:.2f})  "
        f"{metrics['bleu_signature']}")
  print(f"chrF:  {metrics['chrf']:.2f}  {metrics['chrf_signature']}")
  for example in metrics["examples"][:3]:
    print(f"  {example['source']}\n  -> {example['hypothesis']}\n"
          f"  (ref {example['reference']})")
