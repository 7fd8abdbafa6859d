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
  - `layer_norm`, `gelu` and `attention` (any boolean mask, causal or not): backward passes
    written out (a few fused passes).
  - on CPU, `attention`'s dv and dk go through a materialised transpose (XLA:CPU's batched
    dots that contract rows are slow), and causal self-attention runs in query blocks that
    skip the wholly masked blocks above the diagonal, as FlashAttention-style kernels do
    (XLA:CPU runs a batched dot on one core, so the blocks also give it independent work).
Each equals autodiff of the plain formula to float tolerance (tests/test_vjp.py,
tests/test_attention.py). The CPU tricks answer XLA:CPU's kernels and layout choices, so
they are switchable (`set_cpu_tricks`); the others are just fewer passes and stay on everywhere.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp


# ------------------------------------------------------------------------ the CPU switch

_cpu_tricks: bool | None = None


def set_cpu_tricks(on: bool | None) -> None:
  """Turns the XLA:CPU compute tricks (`matmul` in layers.Dense, `attention`'s transposes and
  query blocks) on, off, or None = automatic.

  Read when a function is traced: set it before jit compiles a step. It changes how the
  program computes (the same values to float tolerance), never the parameters: layers.Dense
  keeps its storage layout either way, so shapes and checkpoints do not depend on the backend.
  """
  global _cpu_tricks
  _cpu_tricks = on


def cpu_tricks() -> bool:
  """Whether to use the tricks now: the setting, or automatically on the CPU backend only."""
  return jax.default_backend() == "cpu" if _cpu_tricks is None else _cpu_tricks


# ------------------------------------------------------------------------ matmul


def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """jnp.einsum, except that bfloat16 operands accumulate in float32 and the result is rounded
  to bfloat16 once. On XLA:CPU that is also the fast path: a bfloat16-result dot runs at under
  half the speed of a float32-accumulating one (AMD Zen 5 with AVX512-BF16, 2048^3: 240 vs 600
  GFLOP/s). On TPU and GPU the accumulation is float32 either way."""
  if a.dtype == jnp.bfloat16 and b.dtype == jnp.bfloat16:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(jnp.bfloat16)
  return jnp.einsum(spec, a, b)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  """a [..., n] @ b [n, m] through `einsum`."""
  return einsum("...n,nm->...m", a, b)


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., n] @ w [n, m], for n <= m (a narrow input)."""
  return _mm(x, w)


def _matmul_fwd(x, w):
  return _mm(x, w), (x, w)


def _matmul_bwd(res, dy):
  x, w = res
  xt = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)  # [n, rows]: narrow, cheap
  return _mm(dy, w.T), _mm(xt, dy.reshape(-1, dy.shape[-1])).astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul_bf16(x: jax.Array, w: jax.Array, w_is_out_in: bool = False) -> jax.Array:
  """x [..., n] @ w for bfloat16 operands, w [n, m] (or [m, n] with `w_is_out_in`), whose
  gradients are float32-accumulating bfloat16 dots too. (Autodiff of a float32-accumulating
  dot gives a float32 cotangent, so its backward dots would run in float32.)"""
  return _matmul_bf16_fwd(x, w, w_is_out_in)[0]


def _matmul_bf16_fwd(x, w, w_is_out_in):
  return einsum("...i,oi->...o" if w_is_out_in else "...i,io->...o", x, w), (x, w)


def _matmul_bf16_bwd(w_is_out_in, res, dy):
  x, w = res
  x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  dx = einsum("...o,oi->...i" if w_is_out_in else "...o,io->...i", dy, w)
  dw = einsum("ro,ri->oi" if w_is_out_in else "ro,ri->io", dy2, x2)  # no activation transpose
  return dx, dw


matmul_bf16.defvjp(_matmul_bf16_fwd, _matmul_bf16_bwd)


# ------------------------------------------------------------------------ GELU


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x) (Hendrycks & Gimpel 2016), computed in float32 and returned in x's dtype.

  The gradient is one pass too: dy * (Phi(x) + x * phi(x)). Autodiff of a bfloat16 GELU
  rounds to bfloat16 after each of its ops (XLA:CPU ran its gradient 2.5x slower than float32's)."""
  return _gelu_fwd(x)[0]


def _normal_cdf(x32):
  return 0.5 * (1.0 + jax.lax.erf(x32 * (1.0 / math.sqrt(2.0))))


def _gelu_fwd(x):
  x32 = x.astype(jnp.float32)
  return (x32 * _normal_cdf(x32)).astype(x.dtype), x


def _gelu_bwd(x, dy):
  x32 = x.astype(jnp.float32)
  cdf = _normal_cdf(x32)
  pdf = jnp.exp(-0.5 * x32 * x32) * (1.0 / math.sqrt(2.0 * math.pi))
  return ((dy.astype(jnp.float32) * (cdf + x32 * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


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

# Finite, so a fully masked row (e.g. in an all-padding example) gets uniform weights instead
# of the NaN that -inf gives (exp(-inf - -inf)), in the forward and the backward pass.
MASKED = float(jnp.finfo(jnp.float32).min)


def causal_mask(q_len: int, k_len: int, offset: jax.Array | int = 0) -> jax.Array:
  """[q_len, k_len], True = attend: query i, at absolute position offset + i, sees keys <= it.

  offset = 0 with q_len = k_len is the usual lower triangle; with a KV cache of k_len slots,
  offset is the position of the first query (keys past it are unwritten and stay hidden).
  """
  return jnp.arange(q_len)[:, None] + offset >= jnp.arange(k_len)[None, :]


def attention_mask(q_len: int, k_len: int, mask: jax.Array | None = None, *, causal: bool = False,
                   q_offset: jax.Array | int = 0) -> jax.Array | None:
  """`mask` (boolean, broadcastable to [B, H, q_len, k_len]) and, if `causal`, the causal mask."""
  if not causal:
    return mask
  tril = causal_mask(q_len, k_len, q_offset)
  return tril if mask is None else jnp.logical_and(mask, tril)


def attention_weights(q: jax.Array, k: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(d)) over the keys where `mask` is True: [B, H, Tq, Tk], in float32."""
  scores = einsum("bhqd,bhkd->bhqk", q * (1.0 / math.sqrt(q.shape[-1])), k).astype(jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, MASKED)
  return jax.nn.softmax(scores, axis=-1)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
              causal: bool = False, q_offset: jax.Array | int = 0) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1): q [B, H, Tq, D], k, v [B, H, Tk, D].

  `mask` is boolean (True = attend), broadcastable to [B, H, Tq, Tk]: padding of the keys
  (layers.padding_mask) or anything else. `causal` adds causal_mask(Tq, Tk, q_offset >= 0). The
  mask gets no gradient. With neither, no mask is built at all.
  """
  cpu = cpu_tricks()
  T = q.shape[-2]
  if cpu and causal and mask is None and isinstance(q_offset, int) and q_offset == 0 and k.shape[-2] == T:
    n_blocks = causal_query_blocks(T)
    if n_blocks > 1:
      return _causal_attention(q, k, v, n_blocks)
  full_mask = attention_mask(T, k.shape[-2], mask, causal=causal, q_offset=q_offset)
  # Only an explicit mask can empty a row (a causal query always sees key 0), so GPT's causal
  # backward skips the select below.
  return _attention(q, k, v, full_mask, mask is not None, cpu)


def _transposed(x: jax.Array) -> jax.Array:
  """x with its last two axes swapped and materialised: XLA:CPU's batched dots that contract
  the rows of an operand (p^T dout) fall back to a kernel that ran 1.5-2x slower per core than
  a transpose plus the usual row-contracting kernel. Without the barrier XLA folds the
  transpose back into the dot (tests/test_vjp.py checks the contracted axes)."""
  return jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


def _keys_grad(a: jax.Array, b: jax.Array, cpu: bool) -> jax.Array:
  """a^T b over the query axis: a [B, H, Tq, Tk], b [B, H, Tq, D] -> [B, H, Tk, D] (dv and dk)."""
  if cpu:
    return einsum("bhkq,bhqd->bhkd", _transposed(a), b)
  return einsum("bhqk,bhqd->bhkd", a, b)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, mask, rows_may_be_empty, cpu):
  return _attention_fwd(q, k, v, mask, rows_may_be_empty, cpu)[0]


def _attention_fwd(q, k, v, mask, rows_may_be_empty, cpu):
  probs = attention_weights(q, k, mask).astype(v.dtype)
  out = einsum("bhqk,bhkd->bhqd", probs, v)
  return out, (q, k, v, mask if rows_may_be_empty else None, probs, out)


def _attention_bwd(rows_may_be_empty, cpu, res, dout):
  q, k, v, mask, probs, out = res
  scale = 1.0 / math.sqrt(q.shape[-1])
  dv = _keys_grad(probs, dout, cpu)
  dprobs = einsum("bhqd,bhkd->bhqk", dout, v)
  # Softmax backward: p * (dp - sum_k p dp), and sum_k p dp = sum_d dout * out. Masked p are 0...
  dscores = probs * (dprobs - (dout * out).sum(-1, keepdims=True))
  if rows_may_be_empty:
    # ...except in a fully masked row, whose uniform weights do not depend on its scores.
    dscores = jnp.where(mask, dscores, 0.0)
  dscores = dscores.astype(q.dtype)
  dq = einsum("bhqk,bhkd->bhqd", dscores, k) * scale
  dk = _keys_grad(dscores, q, cpu) * scale
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


# ------------------------------------------------------------------------ causal attention in query blocks


def causal_query_blocks(T: int) -> int:
  """Into how many query blocks CPU causal self-attention of length T is cut (1: not cut).

  Query block i of n attends keys [0, (i + 1) T / n) only, so the blocks above the diagonal,
  wholly masked, are never computed: (n + 1) / 2n of the full score and value products (62%
  at n = 4), as a FlashAttention-style kernel skips them. Blocks of 64 queries (32 below
  T = 128) were the fastest measured on a 2-core CPU; at most 8 blocks, and T must divide.
  """
  n = min(8, T // (32 if T < 128 else 64))
  return n if n > 1 and T % n == 0 else 1


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _causal_attention(q, k, v, n_blocks):
  return _causal_attention_fwd(q, k, v, n_blocks)[0]


def _query_blocks(q, k, v, n_blocks):
  """Each query block's (queries, keys, values, causal mask): block i sees keys [0, end_i)."""
  size = q.shape[2] // n_blocks
  for i in range(n_blocks):
    end = (i + 1) * size
    yield q[:, :, i * size:end], k[:, :, :end], v[:, :, :end], causal_mask(size, end, i * size)


def _causal_attention_fwd(q, k, v, n_blocks):
  # Each block is the plain attention above, over the keys it can see.
  blocks = [_attention_fwd(*block, False, True) for block in _query_blocks(q, k, v, n_blocks)]
  out = jnp.concatenate([block_out for block_out, _ in blocks], axis=2)
  return out, (q, k, v, [res[4] for _, res in blocks], out)


def _causal_attention_bwd(n_blocks, res, dout):
  # _attention_bwd of each block, written out so that sum_k p dp is taken once over all
  # queries and dk is scaled once after the sum (calling it per block ran ~3% slower on baby).
  q, k, v, probs, out = res
  T, size = q.shape[2], q.shape[2] // n_blocks
  scale = 1.0 / math.sqrt(q.shape[-1])
  delta = (dout * out).sum(-1, keepdims=True)
  dq, dk, dv = [], [], []
  for i, ((qi, ki, vi, _), p) in enumerate(zip(_query_blocks(q, k, v, n_blocks), probs)):
    rows = slice(i * size, (i + 1) * size)
    dv.append(_keys_grad(p, dout[:, :, rows], True))
    dscores = (p * (einsum("bhqd,bhkd->bhqk", dout[:, :, rows], vi) - delta[:, :, rows])).astype(q.dtype)
    dq.append(einsum("bhqk,bhkd->bhqd", dscores, ki) * scale)
    dk.append(_keys_grad(dscores, qi, True))
  # Block i's key gradients cover keys [0, end_i): pad to T and add (XLA fuses it into one pass).
  pad_sum = lambda parts: sum(jnp.pad(a, ((0, 0), (0, 0), (0, T - a.shape[2]), (0, 0))) for a in parts)
  return jnp.concatenate(dq, axis=2), pad_sum(dk) * scale, pad_sum(dv)


_causal_attention.defvjp(_causal_attention_fwd, _causal_attention_bwd)
