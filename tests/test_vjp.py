"""The hand-written backward passes equal autodiff of the plain formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from research.models import vjp


def plain_layer_norm(x, scale, bias, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps) * scale + bias


def plain_attention(q, k, v):
  T = q.shape[-2]
  scores = q @ jnp.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
  scores = jnp.where(np.tril(np.ones((T, T), bool)), scores, -jnp.inf)
  return jax.nn.softmax(scores, axis=-1) @ v


def check_same_gradients(fast, plain, *args):
  keys = jax.random.split(jax.random.key(42), 2)
  out = plain(*args)
  cotangent = jax.random.normal(keys[0], out.shape)  # a random direction, not just sum()
  np.testing.assert_allclose(fast(*args), out, rtol=1e-5, atol=1e-5)
  argnums = tuple(range(len(args)))
  g_fast = jax.grad(lambda *a: (fast(*a) * cotangent).sum(), argnums)(*args)
  g_plain = jax.grad(lambda *a: (plain(*a) * cotangent).sum(), argnums)(*args)
  for a, b in zip(g_fast, g_plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def randn(i, *shape):
  return jax.random.normal(jax.random.key(i), shape)


def test_matmul():
  check_same_gradients(vjp.matmul, lambda x, w: x @ w, randn(0, 2, 5, 8), randn(1, 8, 32))


def test_layer_norm():
  check_same_gradients(vjp.layer_norm, plain_layer_norm, randn(2, 3, 7, 16) * 3 + 1, randn(3, 16), randn(4, 16))


@pytest.mark.parametrize("T", [1, 9])
def test_causal_attention(T):
  check_same_gradients(lambda q, k, v: vjp.attention(q, k, v, causal=True), plain_attention,
                       randn(5, 2, 3, T, 8), randn(6, 2, 3, T, 8), randn(7, 2, 3, T, 8))
