"""GPT and decoding: the KV cache gives the full forward pass's logits; sampling is seeded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.decode import SamplingConfig, filter_logits, generate
from research.models import gpt

CFG = gpt.Config(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32, bias=True)


@pytest.fixture(scope="module")
def model():
  return gpt.build(CFG, rngs=nnx.Rngs(3))


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


def test_greedy_generation_equals_argmax_of_full_forward(model):
  prompt = jnp.array([[5, 9, 2], [1, 1, 7]])
  out = generate(model, prompt, SamplingConfig(max_new_tokens=12, temperature=0.0))
  # Without a cache: the whole (zero-padded) sequence each time; causality makes padding harmless.
  forward = nnx.jit(lambda m, t: m(t))
  tokens = jnp.zeros((2, 15), jnp.int32).at[:, :3].set(prompt)
  for t in range(3, 15):
    tokens = tokens.at[:, t].set(forward(model, tokens)[:, t - 1].argmax(-1))
  np.testing.assert_array_equal(out, tokens)


def test_sampling_is_seeded_and_respects_top_k(model):
  prompt = jnp.array([[4, 4, 4]])
  s = SamplingConfig(max_new_tokens=15, temperature=1.0, top_k=3)
  a, b, c = generate(model, prompt, s, seed=1), generate(model, prompt, s, seed=1), generate(model, prompt, s, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # Every sampled token is among the 3 most likely under the model given its prefix.
  logits = model(a[:, :-1])[0, 2:]
  top3 = jnp.argsort(logits, axis=-1)[:, -3:]
  assert all(int(t) in set(np.asarray(row).tolist()) for t, row in zip(a[0, 3:], top3))


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda f: np.isfinite(np.asarray(f))[0].tolist()
  assert keep(filter_logits(logits, 2, 1.0)) == [True, True, False, False]
  assert keep(filter_logits(logits, 0, 0.5)) == [True, False, False, False]  # 0.5 reached by the first
  assert keep(filter_logits(logits, 0, 0.7)) == [True, True, False, False]
  assert keep(filter_logits(logits, 0, 0.96)) == [True, True, True, True]


def test_prompt_longer_than_context_is_an_error(model):
  with pytest.raises(ValueError, match="exceeds the model's context of 24"):
    generate(model, jnp.zeros((1, 20), jnp.int32), SamplingConfig(max_new_tokens=10))
