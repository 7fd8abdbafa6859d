"""GPT: the KV cache gives the full forward pass's logits; the mask is causal. Decoding: test_decode.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.models import gpt

CFG = gpt.Config(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32, bias=True)


@pytest.fixture(scope="module")
def model():
  return gpt.build(CFG, rngs=nnx.Rngs(3))


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_kv_cache_decoding_matches_full_forward(model):
  tokens = jax.random.randint(jax.random.key(0), (3, 20), 0, CFG.vocab_size)
  full = model(tokens)
  model.init_cache(3, CFG.block_size)
  steps = [model(tokens[:, :7], positions=jnp.arange(7))]  # prefill, then one token at a time
  for t in range(7, 20):
    steps.append(model(tokens[:, t:t + 1], positions=jnp.arange(t, t + 1)))
  model.clear_cache()
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5, rtol=1e-5)


def test_causal_mask_hides_the_future(model):
  tokens = jax.random.randint(jax.random.key(1), (1, 12), 0, CFG.vocab_size)
  changed = tokens.at[0, 8].set((tokens[0, 8] + 1) % CFG.vocab_size)
  a, b = model(tokens), model(changed)
  np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-6)
  assert not np.allclose(a[:, 8:], b[:, 8:])
