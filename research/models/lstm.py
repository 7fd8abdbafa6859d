"""The LSTM language model (Hochreiter & Schmidhuber 1997): `rnn.RNNLM` with LSTM cells.

Its own module so that `model.name="lstm"` finds it and runs record which recurrence they
used by name; the model itself lives in `research/models/rnn.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from flax import nnx

from research.models import rnn


@dataclass
class Config(rnn.Config):
  name: str = "lstm"
  cell: str = "lstm"


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> rnn.RNNLM:
  return rnn.RNNLM(cfg, rngs=rngs, dtype=dtype)


train_flops = rnn.train_flops
