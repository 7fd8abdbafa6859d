"""BERT pretraining data: sentence pairs with next-sentence labels, then masked tokens.

The recipe of Devlin et al. 2019 (sec. 3.1, appendix A.1) as google-research/bert's
`create_pretraining_data.py` implements it, re-written here:
  1. documents -> sentences (`split_sentences`, a rule below) -> token ids per sentence;
  2. instances `[CLS] A [SEP] B [SEP]`: per document a target length (the maximum, or with
     `short_seq_prob` a uniform one in [2, max]), sentences gathered into a chunk until it
     reaches the target, A = its first 1..n-1 sentences, B = the rest, or with probability
     0.5 (always for a one-sentence chunk) a run of sentences from a random start in another
     document (the chunk's unused sentences are put back); the longer of A and B is cut one
     token at a time, from the front or the back at random, until the pair fits;
  3. masking: 15% of the tokens (rounded, at least 1, at most `max_predictions`; [CLS],
     [SEP] and padding never) are chosen for prediction, of those 80% become [MASK], 10% a
     random token, 10% stay; with `whole_word` all pieces of a word are chosen together.

Where the reference differs, on purpose: it builds `dupe_factor` fixed maskings of one
pairing up front; here the pairing is redrawn every epoch and the masking every step
(dynamic masking, as RoBERTa), so batches stay a pure function of (seed, step): epoch e's
instances come from `default_rng([seed, e])` (EpochCache), step k's masks from
`default_rng([seed, k, _MASK_STREAM])`. An epoch has the instance count of epoch 0; another
epoch's shuffled list is cut or cycled to it (the counts differ by a few in a thousand).
A random next segment always comes from another document (the reference tries 10 times);
a random replacement token is never a special token (the reference draws from the whole
WordPiece vocabulary).

Host time, measured on the bundled enwiki corpus on a 2-core CPU shared with other jobs:
building an epoch's ~4,700 instances of 128 tokens takes ~0.3 s, once per epoch; masking a
batch of 32 takes ~0.5 ms (~1 ms with whole-word masking), far below a training step.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

import numpy as np

from research.data.epochs import EpochCache
from research.data.errors import DataError
from research.tokenizers import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_PIECES

_MASK_STREAM = 0x6D6C6D  # "mlm": keeps the masking stream apart from the epochs' (seed, epoch)
_EVAL_SEED = 0x65766C  # "evl": the held-out instances and masks are fixed for the whole run

# ------------------------------------------------------------------------------ sentences

# Words that end in a full stop without ending a sentence. With single capital letters
# (initials: "J. R. R. Tolkien") they are the rule's exceptions.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e cf al no nos vol fig inc ltd co corp gen col lt sgt capt "
    "rev hon mt ft approx ca c jan feb mar apr aug sept sep oct nov dec u.s u.k".split())
# A sentence ends at . ! or ?, optionally closed by quotes or brackets, before whitespace
# and a capital letter, a digit, or an opening quote or bracket.
_BOUNDARY = re.compile(r"""[.!?]["'”’)\]]*(?=\s+["'“‘(\[]?[A-Z0-9])""")


def split_sentences(text: str) -> list[str]:
  """Sentences of a document: every line (paragraph or heading) is cut at sentence ends.

  No sentence splitter ships with the project's dependencies, and downloading one is not an
  option offline, so this is a rule (`_BOUNDARY`), with abbreviations and initials as
  exceptions. It errs towards too few cuts, which costs NSP some boundaries, never text.
  """
  sentences = []
  for line in text.split("\n"):
    start = 0
    for m in _BOUNDARY.finditer(line):
      word = line[start:m.start() + 1].split()[-1] if line[start:m.start() + 1].split() else ""
      word = word.rstrip(".").lstrip("\"'“‘([").lower()
      if line[m.start()] == "." and (word in _ABBREVIATIONS or len(word) == 1):
        continue
      sentences.append(line[start:m.end()].strip())
      start = m.end()
    sentences.append(line[start:].strip())
  return [s for s in sentences if s]


def encode_documents(docs: list[str], tokenizer) -> list[list[np.ndarray]]:
  """Each document as a list of sentences, each an int32 array of token ids (none empty).

  A sentence is encoded with a leading space, so its first word gets the same pieces as it
  would mid-sentence (the tokenizer adds no dummy prefix): "▁The", not "The".
  """
  per_doc = [split_sentences(d) for d in docs]
  flat = tokenizer.encode_batch([" " + s for sentences in per_doc for s in sentences])
  out, i = [], 0
  for sentences in per_doc:
    ids = [np.asarray(t, np.int32) for t in flat[i:i + len(sentences)]]
    i += len(sentences)
    ids = [t for t in ids if len(t)]
    if ids:
      out.append(ids)
  return out


def word_starts(tokenizer) -> np.ndarray:
  """bool [vocab]: whether a piece begins a word, for whole-word masking.

  Sentencepiece marks a word's first piece with "▁"; punctuation and byte or special pieces
  ("<...>") count as words of their own, as in ALBERT's whole-word masking.
  """
  if tokenizer.kind == "char":
    raise DataError("whole-word masking needs a sentencepiece tokenizer (tokenizer.kind=bpe or unigram)")
  punctuation = set(string.punctuation)
  pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  return np.array([p.startswith(("▁", "<")) or (p != "" and set(p) <= punctuation) for p in pieces])


# ------------------------------------------------------------------------------ instances


@dataclass
class Instances:
  """Unmasked instances, one row each: tokens [N, T] int32 ([CLS] A [SEP] B [SEP], pad after)."""
  tokens: np.ndarray
  length: np.ndarray  # [N] tokens before the padding, the three specials included
  len_a: np.ndarray  # [N] tokens of segment A (so segment B starts at len_a + 2)
  random_next: np.ndarray  # [N] bool: B is from another document (NSP label 1)
  doc_a: np.ndarray  # [N] document index of A and of B (equal unless random_next)
  doc_b: np.ndarray

  def __len__(self) -> int:
    return len(self.length)

  def take(self, rows: np.ndarray) -> "Instances":
    return Instances(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

  def segment_ids(self) -> np.ndarray:
    """0 for [CLS] A [SEP] and padding, 1 for B [SEP]."""
    pos = np.arange(self.tokens.shape[1])[None]
    return ((pos >= self.len_a[:, None] + 2) & (pos < self.length[:, None])).astype(np.int32)


def _truncate_pair(la: int, lb: int, max_tokens: int, rng) -> tuple[tuple[int, int], tuple[int, int]]:
  """(front, back) cuts of A and of B: the longer side loses a token at a random end until they fit."""
  cut = [[0, 0], [0, 0]]
  while la + lb > max_tokens:
    side = 0 if la > lb else 1
    cut[side][0 if rng.random() < 0.5 else 1] += 1
    la, lb = (la - 1, lb) if side == 0 else (la, lb - 1)
  return tuple(cut[0]), tuple(cut[1])


def build_instances(docs: list[list[np.ndarray]], seq_len: int, short_seq_prob: float, nsp: bool,
                    rng: np.random.Generator) -> Instances:
  """All instances of one pass over the documents (create_instances_from_document), unshuffled.

  Without `nsp` an instance is one run of sentences, `[CLS] X [SEP]`, with no random next.
  """
  if nsp and len(docs) < 2:
    raise DataError("next-sentence prediction needs at least two documents (random next segments come from another)")
  max_tokens = seq_len - (3 if nsp else 2)
  rows, meta = [], []
  for d, doc in enumerate(docs):
    target = max_tokens
    if rng.random() < short_seq_prob:
      target = int(rng.integers(2, max_tokens + 1))
    chunk, length, i = [], 0, 0
    while i < len(doc):
      chunk.append(doc[i])
      length += len(doc[i])
      if i == len(doc) - 1 or length >= target:
        if not nsp:
          x = np.concatenate(chunk)
          (front, back), _ = _truncate_pair(len(x), 0, max_tokens, rng)
          x = x[front:len(x) - back]
          rows.append(np.concatenate([[CLS_ID], x, [SEP_ID]]))
          meta.append((len(x), False, d, d))
        else:
          a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
          a = np.concatenate(chunk[:a_end])
          random_next = len(chunk) == 1 or rng.random() < 0.5
          if random_next:
            other = int(rng.integers(len(docs) - 1))
            other += other >= d  # any document but this one
            source, b, n_b = docs[other], [], 0
            for sentence in source[int(rng.integers(len(source))):]:  # from a random start, until long enough
              b.append(sentence)
              n_b += len(sentence)
              if n_b >= target - len(a):
                break
            b = np.concatenate(b)
            i -= len(chunk) - a_end  # the chunk's unused sentences go back to the document
            doc_b = other
          else:
            b, doc_b = np.concatenate(chunk[a_end:]), d
          (fa, ba), (fb, bb) = _truncate_pair(len(a), len(b), max_tokens, rng)
          a, b = a[fa:len(a) - ba], b[fb:len(b) - bb]
          rows.append(np.concatenate([[CLS_ID], a, [SEP_ID], b, [SEP_ID]]))
          meta.append((len(a), random_next, d, doc_b))
        chunk, length = [], 0
      i += 1
  tokens = np.full((len(rows), seq_len), PAD_ID, np.int32)
  for r, row in enumerate(rows):
    tokens[r, :len(row)] = row
  len_a, random_next, doc_a, doc_b = np.array(meta, np.int64).reshape(-1, 4).T
  return Instances(tokens=tokens, length=np.array([len(r) for r in rows], np.int32).reshape(-1),
                   len_a=len_a.astype(np.int32), random_next=random_next.astype(bool), doc_a=doc_a, doc_b=doc_b)


# ------------------------------------------------------------------------------ masking


def _choose_words(word: np.ndarray, n_predict: int, rng) -> np.ndarray:
  """Positions of whole words, taken in random order while they fit into n_predict (reference rule:
  a word that would overflow is skipped, a shorter one later may still fit)."""
  n_words = int(word.max()) + 1
  sizes = np.bincount(word[word >= 0], minlength=n_words)
  chosen, count = [], 0
  for w in rng.permutation(n_words):
    if count >= n_predict:
      break
    if count + sizes[w] <= n_predict:
      chosen.append(w)
      count += sizes[w]
  return np.flatnonzero(np.isin(word, chosen))


def mask_instances(inst: Instances, rng: np.random.Generator, *, mask_prob: float, max_predictions: int,
                   vocab_size: int, starts: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """The model's inputs and MLM targets for these instances (create_masked_lm_predictions).

  Returns input_ids, segment_ids [N, T]; mlm_positions, mlm_ids [N, P] int32 and mlm_weights
  [N, P] float32 (1 for a real prediction, 0 for a padding slot, whose position and id are 0),
  positions ascending; nsp_label [N] (0 = B follows A, 1 = random, as Hugging Face's).
  `starts` (word_starts) turns on whole-word masking.
  """
  tokens = inst.tokens
  N, T = tokens.shape
  P = max_predictions
  candidate = (np.arange(T)[None] < inst.length[:, None]) & (tokens != CLS_ID) & (tokens != SEP_ID)
  n_predict = np.minimum(np.minimum(P, np.maximum(1, np.rint(inst.length * mask_prob).astype(np.int64))),
                         candidate.sum(1))
  positions = np.full((N, P), T, np.int64)  # T sorts after every real position
  if starts is None:
    keys = np.where(candidate, rng.random((N, T)), np.inf)
    order = np.argsort(keys, axis=1)[:, :P]
    positions = np.where(np.arange(P)[None] < n_predict[:, None], order, T)
  else:
    # A word starts at a word-start piece or after a non-candidate ([CLS], [SEP]).
    after_special = np.concatenate([np.ones((N, 1), bool), ~candidate[:, :-1]], axis=1)
    begins = candidate & (starts[tokens] | after_special)
    word = np.where(candidate, np.cumsum(begins, axis=1) - 1, -1)
    for r in range(N):
      chosen = _choose_words(word[r], int(n_predict[r]), rng)
      positions[r, :len(chosen)] = chosen
  positions = np.sort(positions, axis=1)
  valid = positions < T
  positions = np.where(valid, positions, 0)
  rows = np.arange(N)[:, None]
  original = tokens[rows, positions]
  # 80% [MASK], 10% a random (non-special) token, 10% the token itself.
  u = rng.random((N, P))
  random_token = rng.integers(len(SPECIAL_PIECES), vocab_size, (N, P))
  replaced = np.where(u < 0.8, MASK_ID, np.where(u < 0.9, original, random_token))
  input_ids = tokens.copy()
  input_ids[rows, positions] = np.where(valid, replaced, input_ids[rows, positions])
  return {
      "input_ids": input_ids.astype(np.int32), "segment_ids": inst.segment_ids(),
      "mlm_positions": positions.astype(np.int32), "mlm_ids": np.where(valid, original, 0).astype(np.int32),
      "mlm_weights": valid.astype(np.float32), "nsp_label": inst.random_next.astype(np.int32),
  }


# ------------------------------------------------------------------------------ batches


@dataclass
class PretrainingData:
  """Train batches as a pure function of (seed, step); fixed held-out batches."""
  train_docs: list[list[np.ndarray]]  # encode_documents of each split
  val_docs: list[list[np.ndarray]]
  seq_len: int
  mask_prob: float
  max_predictions: int
  short_seq_prob: float
  nsp: bool
  vocab_size: int
  seed: int
  starts: np.ndarray | None = None  # word_starts(tokenizer) for whole-word masking
  n_instances: int = field(init=False, default=0)  # every epoch's length: epoch 0's (module docstring)

  def __post_init__(self):
    self._epochs = EpochCache(self.seed, self._epoch)
    self.n_instances = len(self._epochs[0])
    if self.n_instances < 1:
      raise DataError("the train split gives no pretraining instances; use more text")

  def _build(self, docs, rng) -> Instances:
    return build_instances(docs, self.seq_len, self.short_seq_prob, self.nsp, rng)

  def _epoch(self, rng: np.random.Generator) -> Instances:
    inst = self._build(self.train_docs, rng)
    order = rng.permutation(len(inst))
    if self.n_instances:  # not epoch 0 itself: cut or cycle to its count
      order = np.resize(order, self.n_instances)
    return inst.take(order)

  def _mask(self, inst: Instances, rng) -> dict[str, np.ndarray]:
    return mask_instances(inst, rng, mask_prob=self.mask_prob, max_predictions=self.max_predictions,
                          vocab_size=self.vocab_size, starts=self.starts)

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """Training batch `step`: instances step*B ... step*B + B - 1 of the epoch sequence, masked."""
    samples = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, positions = np.divmod(samples, self.n_instances)
    parts = [self._epochs[int(e)].take(positions[epochs == e]) for e in np.unique(epochs)]
    inst = parts[0] if len(parts) == 1 else Instances(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Instances.__dataclass_fields__))
    return self._mask(inst, np.random.default_rng([self.seed, step, _MASK_STREAM]))

  def eval_batches(self, batch_size: int, max_batches: int = 0) -> list[dict[str, np.ndarray]]:
    """Full batches of the held-out documents' instances, paired and masked once with a fixed seed."""
    rng = np.random.default_rng([self.seed, _EVAL_SEED])
    inst = self._build(self.val_docs, rng)
    n_batches = len(inst) // batch_size
    if n_batches < 1:
      raise DataError(f"the validation split gives {len(inst)} pretraining instances, fewer than one batch of "
                      f"{batch_size}: raise data.val_fraction or lower train.batch_size")
    if 0 < max_batches < n_batches:
      n_batches = max_batches
    inst = inst.take(rng.permutation(len(inst))[:n_batches * batch_size])  # mixed over documents
    masked = self._mask(inst, rng)
    return [{k: v[i * batch_size:(i + 1) * batch_size] for k, v in masked.items()} for i in range(n_batches)]
