"""Accuracy and F1 of class predictions, over a whole evaluation set (never averaged per batch).

F1 is the harmonic mean of precision and recall of the positive class (van Rijsbergen 1979),
2 TP / (2 TP + FP + FN); it is 0 when there are no true positives (as scikit-learn's
`f1_score` with `zero_division=0`), where precision or recall would be 0 / 0.
"""

from __future__ import annotations

import numpy as np


def f1_score(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
  predicted, actual = np.asarray(predictions) == positive, np.asarray(labels) == positive
  tp = int(np.sum(predicted & actual))
  fp, fn = int(np.sum(predicted & ~actual)), int(np.sum(~predicted & actual))
  return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Mean cross-entropy (nats), accuracy and, for two classes, F1 of class 1, from logits [N, K]."""
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  predictions = logits.argmax(-1)
  out = {"loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
         "accuracy": float(np.mean(predictions == labels))}
  if logits.shape[-1] == 2:
    out["f1"] = f1_score(predictions, labels)
  return out
