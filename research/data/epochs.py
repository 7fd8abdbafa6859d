"""Per-epoch orders of a dataset, cached: the shared piece of every resumable data pipeline.

A batch is a pure function of (seed, step): step -> (epoch, position) -> the epoch's order,
an array built from `np.random.default_rng([seed, epoch])`. Building an order costs a
permutation of the whole dataset, so the few epochs in use are kept; a batch spans at most
two epochs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class EpochCache:
  """`cache[epoch]` -> `build(rng)` with rng seeded by (seed, epoch): built once, a few kept."""

  def __init__(self, seed: int, build: Callable[[np.random.Generator], np.ndarray], keep: int = 2):
    self.seed, self.build, self.keep = seed, build, keep
    self._orders: dict[int, np.ndarray] = {}

  def __getitem__(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      if len(self._orders) >= self.keep:
        self._orders.pop(min(self._orders))
      self._orders[epoch] = self.build(np.random.default_rng([self.seed, epoch]))
    return self._orders[epoch]
