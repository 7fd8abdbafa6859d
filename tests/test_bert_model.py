"""BERT's model settings that need no PyTorch: the sinusoidal start of the position table."""

import numpy as np
import pytest
from flax import nnx

from research.config import ConfigError
from research.models import bert


def test_sinusoidal_pos_init_is_vaswani_table_at_bert_std():
  cfg = bert.Config(vocab_size=40, max_len=12, n_layer=1, n_head=2, n_embd=8, pos_init="sinusoidal")
  table = np.asarray(bert.Embeddings(cfg, rngs=nnx.Rngs(0)).pos.embedding.get_value())
  pos, i = np.arange(12)[:, None], np.arange(0, 8, 2)[None, :]
  want = np.zeros((12, 8))
  want[:, 0::2], want[:, 1::2] = np.sin(pos / 10000 ** (i / 8)), np.cos(pos / 10000 ** (i / 8))
  np.testing.assert_allclose(table, want * 0.02 * np.sqrt(2), atol=1e-6)
  normal = np.asarray(bert.Embeddings(bert.Config(vocab_size=40, max_len=12, n_layer=1, n_head=2, n_embd=8),
                                      rngs=nnx.Rngs(0)).pos.embedding.get_value())
  assert not np.allclose(normal, table) and abs(normal.std() - 0.02) < 0.006


@pytest.mark.parametrize("settings, words", [(dict(pos_init="learned"), "model.pos_init"),
                                             (dict(pos_init="sinusoidal", n_embd=9, n_head=3), "must be even")])
def test_bad_pos_init_is_a_config_error(settings, words):
  cfg = bert.Config(**{"vocab_size": 40, "max_len": 12, "n_layer": 1, "n_head": 2, "n_embd": 8, **settings})
  with pytest.raises(ConfigError, match=words):
    cfg.validate()
