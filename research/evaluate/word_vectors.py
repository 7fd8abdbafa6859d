"""Word vector evaluation and export: analogies, word-pair similarity, nearest neighbours, word2vec files.

Mirrors gensim 4's `KeyedVectors.evaluate_word_analogies` and `evaluate_word_pairs` so
figures compare one to one with gensim's:
- analogies (Mikolov et al. 2013a, questions-words.txt): "a b c d" is right when d is the
  word of highest cosine to b - a + c over unit vectors (3CosAdd), excluding a, b and c,
  searched among the `restrict_vocab` most frequent words; a question with any word
  outside those is skipped, not counted wrong (gensim's semantics, default 300,000);
- word pairs (WordSim-353, SimLex-999): Spearman correlation of cosine similarity with the
  human scores over pairs whose both words are known (gensim's `dummy4unknown=False`).
The three files ship in the gensim wheel's test data. Words are compared lower-cased.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RESTRICT_VOCAB = 300_000  # gensim's default for evaluate_word_analogies


def _datapath(name: str) -> str:
  from gensim.test.utils import datapath
  return datapath(name)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def read_analogies(path: str | None = None) -> list[tuple[str, str, str, str]]:
  """The questions of a questions-words.txt file (": section" lines skipped), lower-cased."""
  out = []
  with open(path or _datapath("questions-words.txt"), encoding="utf-8") as f:
    for line in f:
      if line.startswith(":") or not line.strip():
        continue
      out.append(tuple(line.lower().split()))
  return out


def analogy_accuracy(vectors: np.ndarray, words: list[str], questions=None,
                     restrict_vocab: int = RESTRICT_VOCAB) -> tuple[float, int, int]:
  """(accuracy, questions answered, questions in all); `words` is most frequent first."""
  questions = read_analogies() if questions is None else questions
  limit = min(restrict_vocab, len(words))
  index = {w: i for i, w in enumerate(words[:limit])}
  known = np.array([[index[w] for w in q] for q in questions if all(w in index for w in q)], np.int64).reshape(-1, 4)
  if not len(known):
    return 0.0, 0, len(questions)
  unit = unit_rows(vectors[:limit])
  correct = 0
  for chunk in np.array_split(known, max(1, len(known) // 512)):
    a, b, c, d = chunk.T
    scores = (unit[b] - unit[a] + unit[c]) @ unit.T
    rows = np.arange(len(chunk))
    for exclude in (a, b, c):
      scores[rows, exclude] = -np.inf
    correct += int((scores.argmax(1) == d).sum())
  return correct / len(known), len(known), len(questions)


def read_pairs(path: str) -> list[tuple[str, str, float]]:
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("#") or not line.strip():
        continue
      a, b, score = line.split("\t")[:3]
      out.append((a.lower(), b.lower(), float(score)))
  return out


def pair_spearman(vectors: np.ndarray, words: list[str], pairs) -> tuple[float, int]:
  """(Spearman rho of cosine vs human scores, pairs used)."""
  from scipy.stats import spearmanr

  index = {w: i for i, w in enumerate(words)}
  used = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
  if len(used) < 3:
    return 0.0, len(used)
  a, b, human = (np.array(x) for x in zip(*used))
  unit = unit_rows(vectors)
  return float(spearmanr((unit[a] * unit[b]).sum(1), human).statistic), len(used)


def evaluate_vectors(vectors: np.ndarray, words: list[str], restrict_vocab: int = RESTRICT_VOCAB) -> dict:
  """Analogy accuracy and WordSim-353 / SimLex-999 Spearman, with a `note` line saying how."""
  accuracy, answered, total = analogy_accuracy(vectors, words, restrict_vocab=restrict_vocab)
  wordsim, n_ws = pair_spearman(vectors, words, read_pairs(_datapath("wordsim353.tsv")))
  simlex, n_sl = pair_spearman(vectors, words, read_pairs(_datapath("simlex999.txt")))
  note = (f"evaluation: analogy 3CosAdd over the {min(restrict_vocab, len(words)):,} most frequent words "
          f"(gensim restrict_vocab={restrict_vocab:,}; questions with other words skipped): "
          f"{answered:,} of {total:,} answered, accuracy {accuracy:.4f}; "
          f"Spearman WordSim-353 {wordsim:.4f} ({n_ws} pairs), SimLex-999 {simlex:.4f} ({n_sl} pairs)")
  return {"analogy_accuracy": accuracy, "analogy_answered": float(answered),
          "wordsim353_spearman": wordsim, "simlex999_spearman": simlex, "note": note}


def nearest(vectors: np.ndarray, words: list[str], positive: list[str], negative: list[str] = (),
            k: int = 10) -> list[tuple[str, float]]:
  """gensim's `most_similar`: words closest in cosine to the sum of unit +/- vectors, query words excluded."""
  index = {w: i for i, w in enumerate(words)}
  missing = [w for w in (*positive, *negative) if w not in index]
  if missing:
    raise KeyError(f"not in the vocabulary: {', '.join(missing)}")
  unit = unit_rows(vectors)
  query = sum(unit[index[w]] for w in positive) - sum((unit[index[w]] for w in negative), np.zeros_like(unit[0]))
  scores = unit @ (query / max(np.linalg.norm(query), 1e-12))
  for w in (*positive, *negative):
    scores[index[w]] = -np.inf
  best = np.argsort(-scores)[:k]
  return [(words[i], float(scores[i])) for i in best]


def save_word2vec_format(path: str | Path, vectors: np.ndarray, words: list[str], binary: bool = False) -> None:
  """word2vec.c's format: a "count dimension" header, then one word and its floats per entry.

  Text: "word v1 v2 ...\\n" per line. Binary: the word, a space, then the float32 values
  raw, little-endian, with no newline (what gensim writes; gensim and word2vec.c read both).
  """
  vectors = np.asarray(vectors, np.float32)
  with open(path, "wb") as f:
    f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
    for word, row in zip(words, vectors):
      if binary:
        f.write(word.encode() + b" " + row.astype("<f4").tobytes())
      else:
        f.write((word + " " + " ".join(repr(float(x)) for x in row) + "\n").encode())
