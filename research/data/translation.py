"""Translation batches: tokenized sentence pairs, length filtering, fixed-shape padded batches.

Batches are fixed-shape (one compiled step): `src` [B, max_src_len], `tgt_in` = bos + target
and `tgt_out` = target + eos, both [B, max_tgt_len], padded with pad=0. Training pairs longer
than that are dropped (counted in the log); valid/test pairs are never dropped for BLEU: a
source longer than max_src_len is cut. Batch k of training is the k-th slice of B pairs from
an epoch permutation seeded by (seed, epoch), a pure function of (seed, step), so resumed
runs see the same data. Pairs are drawn from length buckets: each epoch's permutation is
sorted by source length within windows of `BUCKET_WINDOW` batches, and the batches shuffled,
so a batch holds pairs of similar length (less padding the loss has to mask).
Loading the pairs: research/data/pairs.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from research.data.epochs import EpochCache
from research.data.errors import DataError
from research.tokenizers import BOS_ID, EOS_ID, PAD_ID

BUCKET_WINDOW = 50  # batches per sorting window: similar lengths together, still well shuffled



def encode_pairs(pairs: list[Pair], src_tok, tgt_tok) -> tuple[list[list[int]], list[list[int]]]:
  return src_tok.encode_batch([s for s, _ in pairs]), tgt_tok.encode_batch([t for _, t in pairs])


def pad_rows(rows: list[list[int]], length: int) -> np.ndarray:
  out = np.full((len(rows), length), PAD_ID, np.int32)
  for i, r in enumerate(rows):
    r = r[:length]
    out[i, :len(r)] = r
  return out


def make_batch(src: list[list[int]], tgt: list[list[int]], max_src_len: int, max_tgt_len: int) -> dict:
  return {"src": pad_rows(src, max_src_len),
          "tgt_in": pad_rows([[BOS_ID] + t for t in tgt], max_tgt_len),
          "tgt_out": pad_rows([t + [EOS_ID] for t in tgt], max_tgt_len)}


@dataclass
class TranslationData:
  src: list[list[int]]  # training pairs that fit, token ids
  tgt: list[list[int]]
  max_src_len: int
  max_tgt_len: int
  seed: int
  batch_size: int

  def __post_init__(self):
    self.batches_per_epoch = len(self.src) // self.batch_size
    if self.batches_per_epoch < 1:
      raise DataError(f"{len(self.src)} training pairs fit the length limits: fewer than one batch of "
                      f"{self.batch_size}; raise model.max_src_len / max_tgt_len or lower train.batch_size")
    self._lengths = np.array([len(s) for s in self.src])
    self._epochs = EpochCache(self.seed, self._bucketed_order)

  def _bucketed_order(self, rng: np.random.Generator) -> np.ndarray:
    """[batches_per_epoch, batch_size] pair indices: shuffled, length-bucketed, batches shuffled."""
    order = rng.permutation(len(self.src))[: self.batches_per_epoch * self.batch_size]
    window = BUCKET_WINDOW * self.batch_size
    for start in range(0, len(order), window):
      chunk = order[start:start + window]
      order[start:start + window] = chunk[np.argsort(self._lengths[chunk], kind="stable")]
    batches = order.reshape(self.batches_per_epoch, self.batch_size)
    return batches[rng.permutation(self.batches_per_epoch)]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    epoch, k = divmod(step, self.batches_per_epoch)
    rows = self._epochs[epoch][k]
    return make_batch([self.src[i] for i in rows], [self.tgt[i] for i in rows], self.max_src_len, self.max_tgt_len)


def fits(src: list[int], tgt: list[int], max_src_len: int, max_tgt_len: int) -> bool:
  return 0 < len(src) <= max_src_len and len(tgt) + 1 <= max_tgt_len


def eval_batches(src, tgt, batch_size: int, max_src_len: int, max_tgt_len: int, max_batches: int = 0) -> list[dict]:
  """Batches of the pairs that fit, in order; the last one filled with empty rows (masked out)."""
  keep = [i for i in range(len(src)) if fits(src[i], tgt[i], max_src_len, max_tgt_len)]
  out = []
  for start in range(0, len(keep), batch_size):
    rows = keep[start:start + batch_size]
    filler = batch_size - len(rows)
    out.append(make_batch([src[i] for i in rows] + [[]] * filler, [tgt[i] for i in rows] + [[]] * filler,
                          max_src_len, max_tgt_len))
    if filler:  # an empty target still has eos in tgt_out: blank it so the row weighs nothing
      out[-1]["tgt_out"][-filler:] = PAD_ID
      out[-1]["tgt_in"][-filler:] = PAD_ID
  return out[:max_batches] if max_batches > 0 else out
