"""Word2Vec's data: tokens, vocabulary, subsampling, dynamic windows and negatives, as numpy.

Tokenisation rule: text is lower-cased, each line is a sentence, and a token is a maximal
run of letters and digits (Unicode `[^\\W_]+`), so punctuation splits and vanishes
("Don't stop." -> ["don", "t", "stop"]). Sentences longer than `max_sentence_length`
tokens are cut into pieces, as gensim cuts at 10,000 words.

Everything else mirrors gensim 4 / word2vec.c (Mikolov et al. 2013):
- the vocabulary keeps words seen `min_count` times or more, most frequent first (ties in
  order of first appearance, as gensim's stable sort); out-of-vocabulary words are
  removed from the text *before* windows are formed;
- subsampling keeps each occurrence of word w with probability
  (sqrt(f_w / (sample * total)) + 1) * (sample * total) / f_w, capped at 1 (gensim's
  `word_probability`; word2vec.c's formula), drawn afresh every epoch, also before windows;
- each centre word draws a reduced window b in 1..window (word2vec.c's `b = rand % window`
  shrink), and its context is the words within b of it in the same sentence;
- negatives come from the unigram distribution raised to 0.75, through a word2vec.c-style
  table in which word w fills a share of slots proportional to f_w^0.75.

`WordBatches.batch(step)` is a pure function of (seed, step): a resumed run sees the data
it would have seen. A step holds `sub_steps` consecutive spans of `batch_words` centre
words of the (subsampled) token stream, each with a halo of `window` words on both sides.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

import numpy as np

TOKEN = re.compile(r"[^\W_]+")
TABLE_SIZE = 1 << 24  # word2vec.c uses 1e8; 2^24 keeps 64 MB and a 6e-8 quantisation step


def tokenize(line: str) -> list[str]:
  return TOKEN.findall(line.lower())


def sentences(docs: list[str], max_length: int = 10_000) -> list[list[str]]:
  """Each non-empty line of each document as a token list, cut at `max_length` tokens."""
  out = []
  for doc in docs:
    for line in doc.split("\n"):
      tokens = tokenize(line)
      out += [tokens[i:i + max_length] for i in range(0, len(tokens), max_length)]
  return out


@dataclass
class Vocab:
  words: list[str]  # most frequent first
  counts: np.ndarray  # int64, same order

  @property
  def index(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.words)}

  def save(self, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(f"{w} {c}\n" for w, c in zip(self.words, self.counts.tolist()))

  @classmethod
  def load(cls, path) -> "Vocab":
    words, counts = [], []
    with open(path, encoding="utf-8") as f:
      for line in f:
        w, c = line.rsplit(" ", 1)
        words.append(w)
        counts.append(int(c))
    return cls(words, np.asarray(counts, np.int64))


def build_vocab(sents: list[list[str]], min_count: int) -> Vocab:
  counter = collections.Counter()
  for s in sents:
    counter.update(s)
  kept = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: -wc[1])
  return Vocab([w for w, _ in kept], np.asarray([c for _, c in kept], np.int64))


def encode(sents: list[list[str]], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
  """The text as one id stream (out-of-vocabulary words removed) and each token's sentence number."""
  index = vocab.index
  ids, sentence = [], []
  for k, s in enumerate(sents):
    row = [index[w] for w in s if w in index]
    ids += row
    sentence += [k] * len(row)
  return np.asarray(ids, np.int32), np.asarray(sentence, np.int32)


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
  """gensim's `word_probability`: the chance that one occurrence survives subsampling."""
  if sample <= 0:
    return np.ones(len(counts))
  total = counts.sum()
  threshold = sample * total if sample < 1.0 else sample  # gensim: sample >= 1 is a count
  f = counts.astype(np.float64)
  return np.minimum(1.0, (np.sqrt(f / threshold) + 1.0) * threshold / f)


def negative_distribution(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
  p = counts.astype(np.float64) ** exponent
  return p / p.sum()


def unigram_table(counts: np.ndarray, exponent: float = 0.75, size: int = TABLE_SIZE) -> np.ndarray:
  """word2vec.c's `InitUnigramTable`: word w fills ~size * p_w consecutive slots.

  Slot boundaries are rounded cumulative shares, so every word's share is off by less than
  one slot (1/size), and a uniform slot gives w with probability ~p_w.
  """
  bounds = np.rint(np.cumsum(negative_distribution(counts, exponent)) * size).astype(np.int64)
  return np.repeat(np.arange(len(counts), dtype=np.int32), np.diff(bounds, prepend=0))


class WordBatches:
  """The training stream of one corpus: per-epoch subsampling, steps, and batches by step."""

  def __init__(self, ids: np.ndarray, sentence: np.ndarray, counts: np.ndarray, *, window: int,
               sample: float, negative: int, ns_exponent: float, epochs: int, batch_words: int,
               sub_steps: int, alpha: float, min_alpha: float, seed: int):
    self.ids, self.sentence = ids, sentence
    self.window, self.negative = window, negative
    self.batch_words, self.sub_steps, self.seed = batch_words, sub_steps, seed
    self.alpha, self.min_alpha = alpha, min_alpha
    self.keep = keep_probabilities(counts, sample)
    self.table = unigram_table(counts, ns_exponent)
    self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None
    # Subsampling is random, so each epoch's length is known only by drawing it; the
    # draws are cheap and keyed by (seed, epoch), so every process agrees on them.
    self.epoch_words = np.array([self._kept(e).sum() for e in range(epochs)], np.int64)
    words_per_step = batch_words * sub_steps
    self.epoch_steps = -(-self.epoch_words // words_per_step)
    self.first_step = np.concatenate([[0], np.cumsum(self.epoch_steps)])
    self.first_word = np.concatenate([[0], np.cumsum(self.epoch_words)])

  @property
  def steps(self) -> int:
    return int(self.first_step[-1])

  @property
  def total_words(self) -> int:
    """Effective words (after subsampling) over all epochs: what gensim's words/s counts."""
    return int(self.first_word[-1])

  def _kept(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, 1, epoch])
    return rng.random(len(self.ids)) < self.keep[self.ids]

  def epoch_stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The subsampled ids of one epoch and their sentence numbers (one epoch is cached)."""
    if self._epoch_cache is None or self._epoch_cache[0] != epoch:
      kept = self._kept(epoch)
      self._epoch_cache = (epoch, self.ids[kept], self.sentence[kept])
    return self._epoch_cache[1], self._epoch_cache[2]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The arrays of global step `step` (see `batch_arrays`); steps past the end repeat the last epoch."""
    epoch = min(int(np.searchsorted(self.first_step, step, side="right")) - 1, len(self.epoch_steps) - 1)
    ids, sentence = self.epoch_stream(epoch)
    start = (step - int(self.first_step[epoch])) * self.batch_words * self.sub_steps
    rng = np.random.default_rng([self.seed, 2, step])
    # Words done before each sub-step; the padded sub-steps past an epoch's end count none.
    done = int(self.first_word[epoch]) + np.minimum(start + self.batch_words * np.arange(self.sub_steps), len(ids))
    progress = np.minimum(done / max(self.total_words, 1), 1.0)
    alpha = np.maximum(self.min_alpha, self.alpha - (self.alpha - self.min_alpha) * progress)
    return batch_arrays(ids, sentence, start, self.batch_words, self.sub_steps, self.window,
                        self.negative, self.table, rng, alpha.astype(np.float32))


def context_offsets(window: int) -> np.ndarray:
  """Offsets of the context slots: -window..-1, 1..window."""
  return np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])


def batch_arrays(ids, sentence, start, batch_words, sub_steps, window, negative, table, rng,
                 alpha) -> dict[str, np.ndarray]:
  """Centre words ids[start : start + sub_steps * batch_words], as fixed-shape arrays.

  span [S, B + 2W]: the ids of each sub-step's centre words with `window` more on each side
    (0 beyond the stream; such slots are masked out);
  context [S, B, 2W]: 1 where offset o (`context_offsets`) is a context word of centre i:
    |o| <= the centre's reduced window, same sentence, inside the stream;
  centre [S, B]: 1 for real centre words (the last step of an epoch is padded);
  negatives [S, B, K]: the centre word's negatives (in skip-gram shared by its context pairs);
  alpha [S]: the learning rate of each sub-step.
  """
  S, B, W = sub_steps, batch_words, window
  n = len(ids)
  pos = start + np.arange(S * B).reshape(S, B)
  span_pos = start - W + np.arange(S)[:, None] * B + np.arange(B + 2 * W)[None]
  inside = (span_pos >= 0) & (span_pos < n)
  clipped = np.clip(span_pos, 0, max(n - 1, 0))
  span = np.where(inside, ids[clipped], 0).astype(np.int32)
  span_sentence = np.where(inside, sentence[clipped], -1)

  centre = pos < n
  offsets = context_offsets(W)
  reduced = W - rng.integers(0, W, size=(S, B))  # word2vec.c: b = rand % window; window - b
  ctx_sentence = span_sentence[:, W + np.arange(B)[:, None] + offsets]  # [S, B, 2W]
  centre_sentence = span_sentence[:, W:W + B]
  context = ((np.abs(offsets) <= reduced[..., None]) & (ctx_sentence == centre_sentence[..., None])
             & centre[..., None])
  negatives = table[rng.integers(0, len(table), size=(S, B, negative))]
  return {"span": span, "context": context.astype(np.float32), "centre": centre.astype(np.float32),
          "negatives": negatives, "alpha": alpha}
