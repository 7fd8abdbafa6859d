"""The hand-written backward passes equal autodiff of the plain formulas; the CPU switch is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.models import gpt, vjp


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


@pytest.fixture
def restore_cpu_tricks():
  yield
  vjp.set_cpu_tricks(None)


def randn(i, *shape):
  return jax.random.normal(jax.random.key(i), shape)


def test_matmul():
  check_same_gradients(vjp.matmul, lambda x, w: x @ w, randn(0, 2, 5, 8), randn(1, 8, 32))


@pytest.mark.parametrize("w_is_out_in", [False, True])
@pytest.mark.parametrize("n, m", [(8, 24), (24, 8), (16, 16)])  # a square kernel would hide a dW^T
def test_bfloat16_matmul_gradients_are_those_of_the_float32_product(n, m, w_is_out_in):
  x, dy = randn(8, 3, 5, n).astype(jnp.bfloat16), randn(9, 3, 5, m)
  w = randn(10, *((m, n) if w_is_out_in else (n, m))).astype(jnp.bfloat16)
  plain = lambda x, w: jnp.einsum("...i,oi->...o" if w_is_out_in else "...i,io->...o", x, w)
  y = vjp.matmul_bf16(x, w, w_is_out_in)
  assert y.dtype == jnp.bfloat16
  f32 = lambda a: a.astype(jnp.float32)
  g_fast = jax.grad(lambda x, w: (f32(vjp.matmul_bf16(x, w, w_is_out_in)) * dy).sum(), (0, 1))(x, w)
  g_plain = jax.grad(lambda x, w: (plain(x, w) * dy).sum(), (0, 1))(f32(x), f32(w))
  np.testing.assert_allclose(f32(y), plain(f32(x), f32(w)), rtol=1e-2, atol=1e-2)  # one bf16 rounding
  for a, b in zip(g_fast, g_plain):
    assert a.shape == b.shape and a.dtype == jnp.bfloat16
    np.testing.assert_allclose(f32(a), b, rtol=2e-2, atol=2e-2 * float(jnp.abs(b).max()))


def test_gelu():
  """Exact-erf GELU and its one-pass gradient; in bfloat16 it is the float32 value rounded once."""
  check_same_gradients(vjp.gelu, lambda x: jax.nn.gelu(x, approximate=False), randn(11, 3, 5, 16) * 3)
  x = (randn(12, 64) * 3).astype(jnp.bfloat16)
  y = vjp.gelu(x)
  assert y.dtype == jnp.bfloat16
  exact = jax.nn.gelu(x.astype(jnp.float32), approximate=False)
  np.testing.assert_allclose(y.astype(jnp.float32), exact, rtol=2 ** -8, atol=1e-6)  # one bfloat16 rounding


def test_layer_norm():
  check_same_gradients(vjp.layer_norm, plain_layer_norm, randn(2, 3, 7, 16) * 3 + 1, randn(3, 16), randn(4, 16))


@pytest.mark.parametrize("tricks", [True, False])
@pytest.mark.parametrize("T, blocks", [(1, 1), (9, 1), (64, 2), (96, 3), (256, 4)])
def test_causal_attention(T, blocks, tricks, restore_cpu_tricks):
  """Exact whether or not it is cut into query blocks (on CPU, T >= 64) and transposes for dv, dk."""
  assert vjp.causal_query_blocks(T) == blocks
  vjp.set_cpu_tricks(tricks)
  check_same_gradients(lambda q, k, v: vjp.attention(q, k, v, causal=True), plain_attention,
                       randn(5, 2, 3, T, 8), randn(6, 2, 3, T, 8), randn(7, 2, 3, T, 8))


def test_causal_attention_skips_the_blocks_above_the_diagonal(restore_cpu_tricks):
  """XLA's own FLOP count: 4 query blocks compute 10/16 of the products and of the softmax."""
  q = randn(0, 2, 3, 256, 8)
  def flops(tricks):
    vjp.set_cpu_tricks(tricks)
    f = jax.jit(lambda q: vjp.attention(q, q, q, causal=True))
    return f.lower(q).compile().cost_analysis()["flops"]
  assert flops(True) / flops(False) == pytest.approx(10 / 16, abs=0.03)


@pytest.mark.parametrize("causal", [True, False])
def test_cpu_attention_gradient_contracts_only_minor_axes(causal, restore_cpu_tricks):
  """dv = p^T dout and dk = ds^T q as plain einsums contract p's row axis, a slow XLA:CPU kernel;
  with the CPU tricks every batched dot of the gradient contracts the minor axis."""
  import re
  q = randn(0, 2, 3, 64, 8)
  def contracted_axes(tricks):
    vjp.set_cpu_tricks(tricks)
    grad = jax.jit(jax.grad(lambda q: vjp.attention(q, q, q, causal=causal).sum()))
    return set(re.findall(r"lhs_contracting_dims=\{(\d)\}", grad.lower(q).compile().as_text()))
  assert contracted_axes(True) == {"3"}
  assert "2" in contracted_axes(False)


def test_cpu_tricks_switch_changes_the_program_not_the_result(restore_cpu_tricks):
  cfg = gpt.Config(vocab_size=29, block_size=8, n_layer=2, n_head=2, n_embd=16)
  tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 29)
  params, results = {}, {}
  for on in (True, False):
    vjp.set_cpu_tricks(on)
    graphdef, params[on] = nnx.split(gpt.build(cfg, rngs=nnx.Rngs(0)))
    loss = lambda p: jax.nn.log_softmax(nnx.merge(graphdef, p)(tokens)).mean()
    # The trick is the barrier on x^T in matmul's backward: present only when switched on.
    assert ("optimization_barrier" in str(jax.make_jaxpr(jax.grad(loss))(params[on]))) == on
    results[on] = jax.jit(jax.value_and_grad(loss))(params[on])
  # The storage layout does not follow the switch: same shapes, so checkpoints are portable.
  assert jax.tree.map(jnp.shape, params[True]) == jax.tree.map(jnp.shape, params[False])
  np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), results[True][1], results[False][1])
