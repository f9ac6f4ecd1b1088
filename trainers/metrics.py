"""Classification metrics from predicted and true label ids (numpy)."""

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
  """int64[C, C]: rows are true labels, columns predicted labels."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
  return matrix


def classification_metrics(y_true, y_pred, labels):
  """Accuracy; per-class and macro precision, recall, F1; confusion matrix.

  For two classes, `precision`, `recall` and `f1` are those of the positive
  class (label id 1), as GLUE reports F1; otherwise they are macro averages.
  """
  num_classes = len(labels)
  matrix = confusion_matrix(y_true, y_pred, num_classes)
  true_positive = np.diag(matrix).astype(np.float64)
  predicted = matrix.sum(axis=0)
  actual = matrix.sum(axis=1)
  precision = np.divide(true_positive, predicted,
                        out=np.zeros(num_classes), where=predicted > 0)
  recall = np.divide(true_positive, actual, out=np.zeros(num_classes),
                     where=actual > 0)
  denominator = precision + recall
  f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes),
                 where=denominator > 0)
  chosen = 1 if num_classes == 2 else slice(None)
  low, high = bootstrap_interval(np.equal(y_true, y_pred))
  return {
      "examples": int(matrix.sum()),
      "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
      "accuracy_ci95": [low, high],
      "precision": float(np.mean(precision[chosen])),
      "recall": float(np.mean(recall[chosen])),
      "f1": float(np.mean(f1[chosen])),
      "macro_f1": float(np.mean(f1)),
      "per_class": {
          label: {"precision": float(p), "recall": float(r), "f1": float(f),
                  "support": int(n)}
          for label, p, r, f, n in zip(labels, precision, recall, f1, actual)
      },
      "labels": list(labels),
      "confusion_matrix": matrix.tolist(),
  }


def bootstrap_interval(correct, num_samples=1000, confidence=0.95, seed=0):
  """Percentile bootstrap CI of the mean of a 0/1 vector: (low, high)."""
  correct = np.asarray(correct, np.float64)
  rng = np.random.default_rng(seed)
  indices = rng.integers(0, len(correct), size=(num_samples, len(correct)))
  means = correct[indices].mean(axis=1)
  tail = (1.0 - confidence) / 2.0 * 100.0
  return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def language_model_metrics(chunk_losses, chunk_counts, correct=None,
                           num_samples=1000, confidence=0.95, seed=0,
                           characters=None):
  """Loss in nats per token, perplexity, bits per character, with a
  bootstrap CI.

  chunk_losses: summed negative log-likelihood of each evaluation chunk;
  chunk_counts: tokens scored in each chunk; correct: optional number of
  exactly predicted tokens per chunk (next-token accuracy); characters:
  the characters of the text of all chunks (default: one a token, as for a
  character tokenizer), so that bits per character compare across
  tokenizers. The 95% interval of the loss resamples whole chunks (the
  tokens inside a chunk are not independent).
  """
  losses = np.asarray(chunk_losses, np.float64)
  counts = np.asarray(chunk_counts, np.float64)
  total = max(counts.sum(), 1.0)
  loss = float(losses.sum() / total)
  rng = np.random.default_rng(seed)
  indices = rng.integers(0, len(losses), size=(num_samples, len(losses)))
  resampled = losses[indices].sum(axis=1) / np.maximum(
      counts[indices].sum(axis=1), 1.0)
  tail = (1.0 - confidence) / 2.0 * 100.0
  metrics = {
      "loss": loss,
      "loss_ci95": [float(np.percentile(resampled, tail)),
                    float(np.percentile(resampled, 100 - tail))],
      "perplexity": float(np.exp(loss)),
      "bits_per_character": loss / float(np.log(2.0)),
      "characters": int(counts.sum()),
      "tokens": int(counts.sum()),
      "chunks": int(len(losses)),
  }
  if characters is not None:
    metrics["characters"] = int(characters)
    metrics["bits_per_character"] = float(
        losses.sum() / max(characters, 1) / np.log(2.0))
  if correct is not None:
    metrics["accuracy"] = float(np.sum(correct) / total)
  return metrics
