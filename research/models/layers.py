"""Building blocks shared by the attention models: dense, layer norm, embeddings, attention, MLP.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`) in its
`out_sharding` metadata; `research/train/sharding.py` maps them onto the mesh. Parameters
are float32; `dtype` is the compute dtype (bfloat16 runs keep float32 master weights).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from research.models import vjp

Axes = tuple[str | None, ...]


def param(rngs: nnx.Rngs, init, shape: tuple[int, ...], axes: Axes) -> nnx.Param:
  return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=axes)


class Dense(nnx.Module):
  """y = x W (+ b). `axes` names W's (input, output) axes.

  `store_transposed` keeps W as (output, input): for a wide-input layer (4C -> C) that is
  the [narrow, wide] layout whose weight gradient XLA:CPU computes without a slow
  transpose of the wide activation (see vjp.py). Narrow-input layers use `vjp.matmul`.
  """

  def __init__(self, d_in: int, d_out: int, axes: Axes, *, bias: bool, rngs: nnx.Rngs,
               std: float = 0.02, dtype=jnp.float32, store_transposed: bool = False):
    shape, kernel_axes = ((d_out, d_in), axes[::-1]) if store_transposed else ((d_in, d_out), axes)
    self.kernel = param(rngs, nnx.initializers.normal(std), shape, kernel_axes)
    self.bias = param(rngs, nnx.initializers.zeros, (d_out,), axes[1:]) if bias else None
    self.dtype, self.store_transposed, self.narrow_input = dtype, store_transposed, d_in < d_out

  def __call__(self, x: jax.Array) -> jax.Array:
    x, w = x.astype(self.dtype), self.kernel[...].astype(self.dtype)
    if self.store_transposed:
      y = jnp.einsum("...i,oi->...o", x, w)
    else:
      y = vjp.matmul(x, w) if self.narrow_input else x @ w
    return y + self.bias[...].astype(self.dtype) if self.bias is not None else y


class LayerNorm(nnx.Module):
  """Layer normalisation (Ba et al. 2016), statistics in float32 whatever the compute dtype."""

  def __init__(self, dim: int, *, bias: bool, rngs: nnx.Rngs, eps: float = 1e-5):
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("embed",))
    self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",)) if bias else None
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    bias = self.bias[...] if self.bias is not None else jnp.zeros_like(self.scale[...])
    return vjp.layer_norm(x.astype(jnp.float32), self.scale[...], bias, self.eps).astype(x.dtype)


class Embed(nnx.Module):
  """A lookup table; `attend` reuses it as the output projection (weight tying)."""

  def __init__(self, num: int, dim: int, axes: Axes, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.embedding = param(rngs, nnx.initializers.normal(0.02), (num, dim), axes)
    self.dtype = dtype

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    return x.astype(self.dtype) @ self.embedding[...].astype(self.dtype).T


class KVCache(nnx.Variable):
  """Keys or values of past positions, [batch, heads, max_len, head_dim]; decoding only."""


class CausalSelfAttention(nnx.Module):
  """Multi-head self-attention where position t sees positions <= t (Vaswani et al. 2017, eq. 1).

  Training calls it on whole blocks. Decoding first calls `init_cache`, then feeds the
  prompt and one token at a time with `positions` = their absolute positions; keys and
  values of past positions are kept in the cache instead of being recomputed.
  """

  def __init__(self, n_embd: int, n_head: int, *, bias: bool, dropout: float, rngs: nnx.Rngs,
               out_std: float = 0.02, dtype=jnp.float32):
    assert n_embd % n_head == 0, f"n_embd={n_embd} must be a multiple of n_head={n_head}"
    self.n_head, self.head_dim = n_head, n_embd // n_head
    self.qkv = Dense(n_embd, 3 * n_embd, ("embed", "heads"), bias=bias, rngs=rngs, dtype=dtype)
    self.proj = Dense(n_embd, n_embd, ("heads", "embed"), bias=bias, rngs=rngs, std=out_std, dtype=dtype)
    self.attn_dropout = nnx.Dropout(dropout)
    self.resid_dropout = nnx.Dropout(dropout)
    self.cache_k: KVCache | None = nnx.data(None)
    self.cache_v: KVCache | None = nnx.data(None)

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32):
    shape = (batch, self.n_head, max_len, self.head_dim)
    self.cache_k, self.cache_v = KVCache(jnp.zeros(shape, dtype)), KVCache(jnp.zeros(shape, dtype))

  def clear_cache(self):
    self.cache_k = self.cache_v = None

  def __call__(self, x: jax.Array, *, positions: jax.Array | None = None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    B, T, C = x.shape
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    # [B, T, C] -> [B, H, T, D]
    q, k, v = (a.reshape(B, T, self.n_head, self.head_dim).transpose(0, 2, 1, 3) for a in (q, k, v))
    if self.cache_k is None:
      q_pos = k_pos = jnp.arange(T)
    else:  # write this call's keys/values at their positions, attend over the whole cache
      start = positions[0]
      self.cache_k[...] = jax.lax.dynamic_update_slice(self.cache_k[...], k.astype(self.cache_k.dtype), (0, 0, start, 0))
      self.cache_v[...] = jax.lax.dynamic_update_slice(self.cache_v[...], v.astype(self.cache_v.dtype), (0, 0, start, 0))
      k, v = self.cache_k[...].astype(q.dtype), self.cache_v[...].astype(q.dtype)
      q_pos, k_pos = positions, jnp.arange(k.shape[2])
    if self.cache_k is None and (deterministic or self.attn_dropout.rate == 0):
      y = vjp.causal_attention(q, k, v)  # training and scoring: the fast-gradient path
    else:
      y = self._attention(q, k, v, q_pos, k_pos, deterministic, rngs)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
    return self.resid_dropout(self.proj(y), deterministic=deterministic, rngs=rngs)

  def _attention(self, q, k, v, q_pos, k_pos, deterministic, rngs):
    """The plain formulation: with a KV cache (positions need not start at 0) or attention dropout."""
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(self.head_dim))
    mask = q_pos[:, None] >= k_pos[None, :]
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    weights = self.attn_dropout(weights, deterministic=deterministic, rngs=rngs)
    return weights @ v


class MLP(nnx.Module):
  """Position-wise feed-forward network with exact (erf) GELU (Hendrycks & Gimpel 2016)."""

  def __init__(self, n_embd: int, hidden: int, *, bias: bool, dropout: float, rngs: nnx.Rngs,
               out_std: float = 0.02, dtype=jnp.float32):
    self.fc = Dense(n_embd, hidden, ("embed", "mlp"), bias=bias, rngs=rngs, dtype=dtype)
    self.proj = Dense(hidden, n_embd, ("mlp", "embed"), bias=bias, rngs=rngs, std=out_std, dtype=dtype,
                      store_transposed=True)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    h = jax.nn.gelu(self.fc(x), approximate=False)
    return self.dropout(self.proj(h), deterministic=deterministic, rngs=rngs)
