"""Word2Vec (Mikolov et al. 2013): an input and an output embedding table, nothing else.

`syn0` holds the word vectors a user keeps; `syn1neg` the output ("context") vectors that
negative sampling scores against. Names, initialisation and defaults follow word2vec.c
and gensim 4 (`Word2Vec(vector_size=100, window=5, min_count=5, sample=1e-3, negative=5,
alpha=0.025, min_alpha=0.0001, epochs=5)`), so a run here compares one to one with gensim.
How the tables are trained (CBOW or skip-gram, sparse SGD, and every setting of that:
window, negatives, subsampling, alpha, epochs) is the objective's, research/objectives/word2vec.py;
the vocabulary and windows are in research/data/words.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import need


@dataclass
class Config:
  name: str = "word2vec"
  vector_size: int = 100
  vocab_size: int = 0  # 0 = set from the corpus vocabulary

  def validate(self):
    need(self.vector_size > 0, f"model.vector_size must be positive, got {self.vector_size}")


class Word2Vec(nnx.Module):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs):
    assert cfg.vocab_size > 0, "Word2Vec needs vocab_size (set from the corpus vocabulary)"
    shape = (cfg.vocab_size, cfg.vector_size)
    # word2vec.c / gensim: input vectors uniform in [-0.5, 0.5) / vector_size, outputs zero.
    # Replicated on every device: updates are sparse row scatters, not sharded matmuls.
    init = jax.random.uniform(rngs.params(), shape, jnp.float32, -0.5, 0.5) / cfg.vector_size
    self.syn0 = nnx.Param(init, out_sharding=(None, None))
    self.syn1neg = nnx.Param(jnp.zeros(shape, jnp.float32), out_sharding=(None, None))

  def __call__(self, ids: jax.Array) -> jax.Array:
    """The word vectors of `ids`."""
    return self.syn0[...][ids]


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> Word2Vec:
  del dtype  # sparse SGD on float32 tables; a bfloat16 compute dtype would gain nothing here
  return Word2Vec(cfg, rngs=rngs)
