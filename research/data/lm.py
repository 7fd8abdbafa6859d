"""Language-model batches: token streams cut into blocks, visited in a resumable order.

Each split's documents are tokenized and joined into one stream with eos after every
document. The train stream is cut into windows of block_size + 1 tokens that start every
block_size tokens (inputs are the first block_size, targets the last block_size), so
consecutive windows share one token and every transition in the stream is a target once. Batch k holds the global
samples k*B ... k*B + B - 1; sample i is block perm_e[i mod n_blocks] of epoch e = i // n_blocks,
where perm_e is a permutation seeded by (seed, e). A batch is therefore a pure function of
(seed, step), and a run resumed at step k sees exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from research.data.epochs import EpochCache
from research.data.errors import DataError


def _stream(docs: list[str], tokenizer) -> np.ndarray:
  """The documents' tokens, eos after each, as the smallest unsigned dtype that holds the ids."""
  dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
  eos = np.array([tokenizer.eos_id], dtype=dtype)
  parts = []
  for ids in tokenizer.encode_batch(docs):
    parts += [np.asarray(ids, dtype=dtype), eos]
  return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _windows(tokens: np.ndarray, block_size: int) -> np.ndarray:
  """[n, block_size + 1] windows starting every block_size tokens: a view, no copy."""
  if len(tokens) < block_size + 1:
    return tokens[:0].reshape(0, block_size + 1)
  return np.lib.stride_tricks.sliding_window_view(tokens, block_size + 1)[::block_size]


@dataclass
class LMData:
  train_tokens: np.ndarray  # 1-D token stream of the training split
  val_tokens: np.ndarray  # 1-D token stream of the validation split
  block_size: int
  seed: int
  vocab_size: int

  def __post_init__(self):
    need = self.block_size + 1
    self._train_blocks = _windows(self.train_tokens, self.block_size)
    self.n_blocks = len(self._train_blocks)
    if self.n_blocks < 1:
      raise DataError(f"the train split has {len(self.train_tokens)} tokens, fewer than one block of "
                      f"block_size+1={need}; use more text or a smaller block size")
    self._perms = EpochCache(self.seed, lambda rng: rng.permutation(self.n_blocks))

  @property
  def n_train_tokens(self) -> int:
    return len(self.train_tokens)

  @property
  def n_val_tokens(self) -> int:
    return len(self.val_tokens)

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """Training batch `step`: {"inputs", "targets"}, int32[batch_size, block_size]."""
    samples = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, positions = np.divmod(samples, self.n_blocks)
    blocks = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      blocks[where] = self._perms[int(epoch)][positions[where]]
    rows = self._train_blocks[blocks].astype(np.int32)
    return {"inputs": rows[:, :-1], "targets": rows[:, 1:]}

  def eval_batches(self, batch_size: int, max_batches: int = 0) -> list[dict[str, np.ndarray]]:
    """The validation stream as full batches of consecutive windows, in order.

    With `max_batches` (0 = all) fewer than the stream holds, the batches kept are spread
    evenly over the whole split, so the estimate is not biased towards its first documents.
    """
    windows = _windows(self.val_tokens, self.block_size)
    n_batches = len(windows) // batch_size
    if n_batches < 1:
      raise DataError(f"the validation split has {len(self.val_tokens)} tokens; one batch of {batch_size} blocks "
                      f"of block_size={self.block_size} needs {batch_size * self.block_size + 1}: raise "
                      "data.val_fraction or lower the batch or block size")
    chosen = range(n_batches)
    if 0 < max_batches < n_batches:
      chosen = np.linspace(0, n_batches - 1, max_batches).round().astype(int)
    rows = [windows[i * batch_size:(i + 1) * batch_size].astype(np.int32) for i in chosen]
    return [{"inputs": r[:, :-1], "targets": r[:, 1:]} for r in rows]

  def unigram_entropy(self) -> float:
    """Entropy in nats of the train tokens' unigram distribution: the loss to beat."""
    counts = np.bincount(self.train_tokens, minlength=self.vocab_size)
    p = counts[counts > 0] / len(self.train_tokens)
    return float(-(p * np.log(p)).sum())


def build_lm_data(train_docs: list[str], val_docs: list[str], tokenizer, block_size: int, seed: int) -> LMData:
  """Tokenizes both splits and returns their batches."""
  return LMData(train_tokens=_stream(train_docs, tokenizer), val_tokens=_stream(val_docs, tokenizer),
                block_size=block_size, seed=seed, vocab_size=tokenizer.vocab_size)
