"""Exact match and token F1 of extractive answers, as the official SQuAD v1.1 evaluation script.

Rajpurkar et al. 2016 (`evaluate-v1.1.py`): both strings are normalised (lower-cased, ASCII
punctuation removed, the articles a / an / the removed, whitespace collapsed); exact match is
1 when the normalised strings are equal; F1 is the harmonic mean of precision and recall of
their whitespace tokens as multisets, 0 when no token is shared (so two answers that both
normalise to nothing match exactly but score F1 0, as in the script). Each question takes its
best score over its gold answers; a question with no prediction scores 0; the totals are
percentages, 0-100. The steps and their order are the script's, so the numbers are too.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
  """Lower, remove punctuation, remove articles, fix whitespace: the script's order."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
  predicted, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
  same = sum((Counter(predicted) & Counter(gold)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(predicted), same / len(gold)
  return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict[str, float]:
  """{"exact_match", "f1"} in percent over every question of `gold` (id -> its answers' texts)."""
  exact = f1 = 0.0
  for qid, answers in gold.items():
    if qid not in predictions:
      continue  # unanswered: scores 0, still counted
    exact += max(exact_match_score(predictions[qid], a) for a in answers)
    f1 += max(f1_score(predictions[qid], a) for a in answers)
  n = max(len(gold), 1)
  return {"exact_match": 100.0 * exact / n, "f1": 100.0 * f1 / n}
