"""Building blocks shared by the attention models: dense, layer norm, embeddings, attention, MLP.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`) in its
`out_sharding` metadata; `research/train/sharding.py` maps them onto the mesh. Parameters
are float32; `dtype` is the compute dtype (bfloat16 runs keep float32 master weights).
"""

from __future__ import annotations

import functools

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
  transpose of the wide activation (see vjp.py). The layout is fixed at construction,
  whatever the backend, so checkpoints are portable; on TPU/GPU an (out, in) kernel is
  neutral, as XLA picks the layouts itself. Narrow-input layers use `vjp.matmul` while
  `vjp.cpu_tricks()` holds (on CPU by default), else a plain x @ W.
  """

  def __init__(self, d_in: int, d_out: int, axes: Axes, *, bias: bool, rngs: nnx.Rngs,
               std: float = 0.02, dtype=jnp.float32, store_transposed: bool = False):
    shape, kernel_axes = ((d_out, d_in), axes[::-1]) if store_transposed else ((d_in, d_out), axes)
    self.kernel = param(rngs, nnx.initializers.normal(std), shape, kernel_axes)
    self.bias = param(rngs, nnx.initializers.zeros, (d_out,), axes[1:]) if bias else None
    self.dtype, self.store_transposed, self.narrow_input = dtype, store_transposed, d_in < d_out

  def __call__(self, x: jax.Array) -> jax.Array:
    x, w = x.astype(self.dtype), self.kernel[...].astype(self.dtype)
    if self.dtype == jnp.bfloat16:
      y = vjp.matmul_bf16(x, w, self.store_transposed)
    elif self.store_transposed:
      y = jnp.einsum("...i,oi->...o", x, w)
    elif self.narrow_input and vjp.cpu_tricks():
      y = vjp.matmul(x, w)
    else:
      y = x @ w
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


# ------------------------------------------------------------------------ attention
#
# Masks are boolean, True = attend, broadcastable to [batch, heads, queries, keys].

causal_mask = vjp.causal_mask  # (q_len, k_len, offset=0) -> [q_len, k_len]


def padding_mask(valid: jax.Array) -> jax.Array:
  """valid [B, S] (True = a real token) -> [B, 1, 1, S]: every query ignores padded keys."""
  return valid[:, None, None, :].astype(bool)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
  """Attend where every given mask allows; None entries are skipped, all None gives None."""
  masks = [m for m in masks if m is not None]
  return functools.reduce(jnp.logical_and, masks) if masks else None


class KVCache(nnx.Variable):
  """Keys or values of past positions, [batch, heads, max_len, head_dim]; decoding only."""


class MultiHeadAttention(nnx.Module):
  """Multi-head scaled dot-product attention (Vaswani et al. 2017, sec. 3.2).

  Self-attention (`cross=False`) projects q, k, v from x with one fused `qkv` Dense;
  cross-attention (`cross=True`) takes queries from x and keys/values from a `context`
  sequence (the encoder's output) with `q` and a fused `kv`. Both end in `proj`.
  `causal=True` lets query t see keys <= t (a decoder); `mask` at call time adds any
  boolean mask, e.g. `padding_mask(valid)` of the keys.

  Decoding: self-attention first calls `init_cache`, then feeds the prompt and one token
  at a time with `positions` = their absolute positions; keys and values of past positions
  are kept in the cache. Cross-attention projects the encoder memory once with
  `project_context` and passes the result as `context_kv` at every step.
  """

  def __init__(self, n_embd: int, n_head: int, *, bias: bool, dropout: float, rngs: nnx.Rngs,
               causal: bool = False, cross: bool = False, context_dim: int | None = None,
               out_std: float = 0.02, dtype=jnp.float32):
    assert n_embd % n_head == 0, f"n_embd={n_embd} must be a multiple of n_head={n_head}"
    self.n_head, self.head_dim, self.causal, self.cross = n_head, n_embd // n_head, causal, cross
    dense = functools.partial(Dense, bias=bias, rngs=rngs, dtype=dtype)
    if cross:
      self.q = dense(n_embd, n_embd, ("embed", "heads"))
      self.kv = dense(context_dim or n_embd, 2 * n_embd, ("embed", "heads"))
    else:
      self.qkv = dense(n_embd, 3 * n_embd, ("embed", "heads"))
    self.proj = dense(n_embd, n_embd, ("heads", "embed"), std=out_std)
    self.attn_dropout = nnx.Dropout(dropout)
    self.resid_dropout = nnx.Dropout(dropout)
    self.cache_k: KVCache | None = nnx.data(None)
    self.cache_v: KVCache | None = nnx.data(None)

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32):
    # Unwritten slots hold zeros; only the causal mask keeps a query from seeing them.
    assert self.causal and not self.cross, "a KV cache serves causal self-attention (a decoder)"
    shape = (batch, self.n_head, max_len, self.head_dim)
    self.cache_k, self.cache_v = KVCache(jnp.zeros(shape, dtype)), KVCache(jnp.zeros(shape, dtype))

  def clear_cache(self):
    self.cache_k = self.cache_v = None

  def _heads(self, a: jax.Array) -> jax.Array:
    """[B, T, H * D] -> [B, H, T, D]."""
    B, T, _ = a.shape
    return a.reshape(B, T, self.n_head, self.head_dim).transpose(0, 2, 1, 3)

  def project_context(self, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-attention's keys and values of context [B, S, C'], each [B, H, S, D]."""
    k, v = jnp.split(self.kv(context), 2, axis=-1)
    return self._heads(k), self._heads(v)

  def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
               context_kv: tuple[jax.Array, jax.Array] | None = None, mask: jax.Array | None = None,
               positions: jax.Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """x [B, T, C] -> [B, T, C].

    `mask` broadcasts to [B, H, T, keys]; with a KV cache the keys are its max_len slots.
    """
    B, T, C = x.shape
    if self.cross:
      assert (context is None) != (context_kv is None), "cross-attention takes context or context_kv"
      q = self._heads(self.q(x))
      k, v = context_kv if context_kv is not None else self.project_context(context)
    else:
      assert context is None and context_kv is None, "self-attention takes no context: build it with cross=True"
      q, k, v = (self._heads(a) for a in jnp.split(self.qkv(x), 3, axis=-1))
    q_offset = 0
    if self.cache_k is not None:  # write this call's keys/values at their positions, attend over the whole cache
      q_offset = positions[0]
      self.cache_k[...] = jax.lax.dynamic_update_slice(self.cache_k[...], k.astype(self.cache_k.dtype), (0, 0, q_offset, 0))
      self.cache_v[...] = jax.lax.dynamic_update_slice(self.cache_v[...], v.astype(self.cache_v.dtype), (0, 0, q_offset, 0))
      k, v = self.cache_k[...].astype(q.dtype), self.cache_v[...].astype(q.dtype)
    if deterministic or self.attn_dropout.rate == 0:
      y = vjp.attention(q, k, v, mask, causal=self.causal, q_offset=q_offset)  # the fast-gradient path
    else:  # attention dropout needs the weights themselves: the plain formulation, autodiff
      full_mask = vjp.attention_mask(T, k.shape[2], mask, causal=self.causal, q_offset=q_offset)
      weights = vjp.attention_weights(q, k, full_mask).astype(v.dtype)
      y = self.attn_dropout(weights, deterministic=deterministic, rngs=rngs) @ v
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
    return self.resid_dropout(self.proj(y), deterministic=deterministic, rngs=rngs)


class CausalSelfAttention(MultiHeadAttention):
  """Causal self-attention, GPT's: the name this layer had before MultiHeadAttention."""

  def __init__(self, n_embd: int, n_head: int, **kwargs):
    super().__init__(n_embd, n_head, causal=True, **kwargs)


class MLP(nnx.Module):
  """Position-wise feed-forward network with exact (erf) GELU (Hendrycks & Gimpel 2016)."""

  def __init__(self, n_embd: int, hidden: int, *, bias: bool, dropout: float, rngs: nnx.Rngs,
               out_std: float = 0.02, dtype=jnp.float32):
    self.fc = Dense(n_embd, hidden, ("embed", "mlp"), bias=bias, rngs=rngs, dtype=dtype)
    self.proj = Dense(hidden, n_embd, ("mlp", "embed"), bias=bias, rngs=rngs, std=out_std, dtype=dtype,
                      store_transposed=True)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    h = vjp.gelu(self.fc(x))
    return self.dropout(self.proj(h), deterministic=deterministic, rngs=rngs)
