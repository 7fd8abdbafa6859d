"""Hand-written backward passes for the Transformer's hot ops: the same math, a faster gradient.

Why: on XLA:CPU the gradient program of a plain GPT ran ~1.4x slower than PyTorch's,
though the forward passes ran at parity (see benchmarks/gpt_step.py). Profiles showed
the time going to transposes that XLA inserts for weight-gradient matmuls and fuses into
elementwise ops, and to the many small passes autodiff makes for LayerNorm and softmax.
A transpose of an activation whose last dim is wide (4C) runs ~10x slower per element
than one whose last dim is narrow (C). So:
  - `matmul`: x @ w whose backward materialises the narrow x^T behind an optimization
    barrier, so XLA cannot choose to transpose the wide output gradient instead; kernels
    are stored [narrow, wide] (see layers.Dense);
  - `layer_norm` and `causal_attention`: backward passes written out (a few fused passes).
Each equals autodiff of the plain formula to float tolerance (tests/test_vjp.py).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp


# ------------------------------------------------------------------------ matmul


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., n] @ w [n, m], for n <= m (a narrow input)."""
  return x @ w


def _matmul_fwd(x, w):
  return x @ w, (x, w)


def _matmul_bwd(res, dy):
  x, w = res
  xt = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)  # [n, rows]: narrow, cheap
  return dy @ w.T, (xt @ dy.reshape(-1, dy.shape[-1])).astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


# ------------------------------------------------------------------------ layer norm


def _normalize(x, eps):
  centred = x - x.mean(-1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.square(centred).mean(-1, keepdims=True) + eps)
  return centred * rstd, rstd


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (Ba et al. 2016)."""
  return _layer_norm(x, scale, bias, eps)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
  return _normalize(x, eps)[0] * scale + bias


def _layer_norm_fwd(x, scale, bias, eps):
  xhat, rstd = _normalize(x, eps)
  return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_bwd(eps, res, dy):
  xhat, rstd, scale = res
  rows = lambda a: a.reshape(-1, a.shape[-1])
  dxhat = dy * scale
  # d/dx of xhat: subtract the mean gradient and its projection on xhat, then scale by 1/std.
  dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
  return dx, rows(dy * xhat).sum(0), rows(dy).sum(0)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


# ------------------------------------------------------------------------ attention


@jax.custom_vjp
def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(d) + causal mask) v on [B, H, T, D] (Vaswani et al. 2017, eq. 1)."""
  return _attention_fwd(q, k, v)[0]


def _attention_fwd(q, k, v):
  T, D = q.shape[-2], q.shape[-1]
  scores = jnp.einsum("bhqd,bhkd->bhqk", q * (1.0 / math.sqrt(D)), k).astype(jnp.float32)
  scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, -jnp.inf)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
  return out, (q, k, v, probs, out)


def _attention_bwd(res, dout):
  q, k, v, probs, out = res
  scale = 1.0 / math.sqrt(q.shape[-1])
  dv = jnp.einsum("bhqk,bhqd->bhkd", probs, dout)
  dprobs = jnp.einsum("bhqd,bhkd->bhqk", dout, v)
  # Softmax backward: p * (dp - sum_k p dp), and sum_k p dp = sum_d dout * out. Masked p are 0.
  dscores = probs * (dprobs - (dout * out).sum(-1, keepdims=True))
  dq = jnp.einsum("bhqk,bhkd->bhqd", dscores, k) * scale
  dk = jnp.einsum("bhqk,bhqd->bhkd", dscores, q) * scale
  return dq, dk, dv


causal_attention.defvjp(_attention_fwd, _attention_bwd)


_CPU_TRICKS: bool | None = None  # TEMPORARY stand-in until the attention branch lands


def set_cpu_tricks(on: bool | None) -> None:
  global _CPU_TRICKS
  _CPU_TRICKS = on
