"""Attention: masks hide what they should, the fast backward is exact for every mask, decoding
with a KV cache equals the full forward, and the layer equals numpy's and PyTorch's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.models import vjp
from research.models.layers import MultiHeadAttention, causal_mask, combine_masks, padding_mask

B, H, D, C = 2, 2, 4, 8  # batch, heads, head width, model width


def randn(i, *shape):
  return jax.random.normal(jax.random.key(i), shape)


def valid_lengths(lengths, size):
  return jnp.arange(size)[None, :] < jnp.array(lengths)[:, None]


def mha(seed=0, **kwargs):
  kwargs = dict(bias=True, dropout=0.0) | kwargs
  return MultiHeadAttention(C, H, rngs=nnx.Rngs(seed), **kwargs)


# ------------------------------------------------------------------------ masks


def test_mask_helpers():
  assert padding_mask(valid_lengths([2, 3], 3)).shape == (2, 1, 1, 3)
  np.testing.assert_array_equal(causal_mask(3, 3), np.tril(np.ones((3, 3), bool)))
  # Two queries at positions 2 and 3 of a 5-slot cache.
  np.testing.assert_array_equal(causal_mask(2, 5, 2), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
  assert combine_masks(None, None) is None
  both = combine_masks(padding_mask(valid_lengths([2], 3)), None, causal_mask(3, 3))
  np.testing.assert_array_equal(both[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])


@pytest.mark.parametrize("dropout", [0.0, 0.5])  # 0.5: the plain path that drops attention weights
def test_padded_keys_never_change_unpadded_outputs(dropout):
  attn = mha(dropout=dropout)
  valid = valid_lengths([5, 3], 6)
  x = randn(0, B, 6, C)
  noise = jnp.where(valid[..., None], x, randn(1, B, 6, C) * 10)  # new values at padded positions only
  run = lambda x, mask: attn(x, mask=mask, deterministic=dropout == 0, rngs=nnx.Rngs(dropout=7))
  a, b = run(x, padding_mask(valid)), run(noise, padding_mask(valid))
  np.testing.assert_array_equal(np.where(valid[..., None], a, 0), np.where(valid[..., None], b, 0))
  assert not np.allclose(run(x, None)[valid], run(noise, None)[valid])  # without the mask they would


def test_causal_mask_hides_the_future():
  attn = mha(causal=True)
  x = randn(2, B, 7, C)
  changed = x.at[:, 4].add(1.0)
  a, b = attn(x), attn(changed)
  np.testing.assert_array_equal(a[:, :4], b[:, :4])
  assert not np.allclose(a[:, 4:], b[:, 4:])


def test_fully_masked_row_gives_uniform_weights_not_nan():
  q, k, v = randn(3, 1, H, 3, D), randn(4, 1, H, 5, D), randn(5, 1, H, 5, D)
  out = vjp.attention(q, k, v, padding_mask(jnp.zeros((1, 5), bool)))
  np.testing.assert_allclose(out, jnp.broadcast_to(v.mean(2, keepdims=True), out.shape), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------ against references


def numpy_attention(q, k, v, mask):
  """The formula in float64 numpy: softmax over keys where mask; a fully masked row, uniform."""
  q, k, v, mask = (np.asarray(a, np.float64) if a.dtype != bool else np.asarray(a) for a in (q, k, v, mask))
  mask = np.broadcast_to(mask, q.shape[:-1] + k.shape[-2:-1])
  scores = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
  scores = np.where(mask, scores, -np.inf)
  scores = np.where(mask.any(-1, keepdims=True), scores, 0.0)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  return np.einsum("bhqk,bhkd->bhqd", weights / weights.sum(-1, keepdims=True), v)


def test_cross_attention_equals_numpy_reference():
  attn = mha(cross=True, context_dim=6)
  x, context = randn(6, B, 3, C), randn(7, B, 5, 6)
  valid = valid_lengths([5, 2], 5)
  got = attn(x, context, mask=padding_mask(valid))

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(attn, nnx.Param)))
  heads = lambda a: a.reshape(B, -1, H, D).transpose(0, 2, 1, 3)
  q = heads(np.asarray(x) @ p["q"]["kernel"] + p["q"]["bias"])
  kv = np.asarray(context) @ p["kv"]["kernel"] + p["kv"]["bias"]
  k, v = heads(kv[..., :C]), heads(kv[..., C:])
  y = numpy_attention(q, k, v, valid[:, None, None, :]).transpose(0, 2, 1, 3).reshape(B, 3, C)
  np.testing.assert_allclose(got, y @ p["proj"]["kernel"] + p["proj"]["bias"], rtol=1e-5, atol=1e-6)
  # The encoder memory projected once gives the same result.
  np.testing.assert_array_equal(attn(x, context_kv=attn.project_context(context), mask=padding_mask(valid)), got)


def plain_attention(q, k, v, mask):
  """The formula for autodiff: the same finite mask value, differentiated by JAX."""
  scores = q @ jnp.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
  return jax.nn.softmax(jnp.where(mask, scores, vjp.MASKED), axis=-1) @ v


# Key lengths [4, 0]: the second example is all padding, so its every row is fully masked.
# Causal over left padding ([2, 4] valid from the right) fully masks the first rows of example 0.
PAD = valid_lengths([4, 0], 6)
LEFT_PAD = valid_lengths([4, 6], 6)[:, ::-1]
MASK_KINDS = {  # name: (Tq, Tk, mask for vjp.attention, causal, q_offset)
    "none": (6, 6, None, False, 0),
    "causal": (6, 6, None, True, 0),
    "padding": (6, 6, padding_mask(PAD), False, 0),
    "causal+padding": (6, 6, padding_mask(LEFT_PAD), True, 0),
    "cross+padding": (3, 6, padding_mask(PAD), False, 0),
    "causal, offset (KV cache)": (2, 6, None, True, 3),
}


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_backward_equals_autodiff_for_every_mask(kind):
  Tq, Tk, mask, causal, offset = MASK_KINDS[kind]
  q, k, v = randn(8, B, H, Tq, D), randn(9, B, H, Tk, D), randn(10, B, H, Tk, D)
  cotangent = randn(11, B, H, Tq, D)  # a random direction, not just sum()
  full_mask = combine_masks(mask, causal_mask(Tq, Tk, offset) if causal else None)
  fast = lambda q, k, v: vjp.attention(q, k, v, mask, causal=causal, q_offset=offset)
  plain = lambda q, k, v: plain_attention(q, k, v, True if full_mask is None else full_mask)
  np.testing.assert_allclose(fast(q, k, v), plain(q, k, v), rtol=1e-5, atol=1e-6)
  if full_mask is not None:  # and the plain formula is the right one
    np.testing.assert_allclose(fast(q, k, v), numpy_attention(q, k, v, full_mask), rtol=1e-5, atol=1e-6)
  grads = [jax.grad(lambda *a: (f(*a) * cotangent).sum(), (0, 1, 2))(q, k, v) for f in (fast, plain)]
  for g_fast, g_plain in zip(*grads):
    assert np.isfinite(g_fast).all()
    np.testing.assert_allclose(g_fast, g_plain, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ decoding


def test_kv_cache_decoding_equals_full_causal_forward():
  attn = mha(causal=True)
  x = randn(12, B, 9, C)
  full = attn(x)
  attn.init_cache(B, 12)
  steps = [attn(x[:, :4], positions=jnp.arange(4))]  # prefill, then one token at a time
  steps += [attn(x[:, t:t + 1], positions=jnp.arange(t, t + 1)) for t in range(4, 9)]
  attn.clear_cache()
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ PyTorch


def torch_mha(attn, cross=False):
  """torch.nn.MultiheadAttention holding attn's weights (torch keeps (out, in), rows q|k|v)."""
  torch = pytest.importorskip("torch")
  p = nnx.to_pure_dict(nnx.state(attn, nnx.Param))
  in_w = np.concatenate([p["q"]["kernel"], p["kv"]["kernel"]], 1) if cross else p["qkv"]["kernel"]
  in_b = np.concatenate([p["q"]["bias"], p["kv"]["bias"]]) if cross else p["qkv"]["bias"]
  ref = torch.nn.MultiheadAttention(C, H, bias=True, batch_first=True, dtype=torch.float64)
  with torch.no_grad():
    ref.in_proj_weight.copy_(torch.from_numpy(np.asarray(in_w, np.float64).T))
    ref.in_proj_bias.copy_(torch.from_numpy(np.asarray(in_b, np.float64)))
    ref.out_proj.weight.copy_(torch.from_numpy(np.asarray(p["proj"]["kernel"], np.float64).T))
    ref.out_proj.bias.copy_(torch.from_numpy(np.asarray(p["proj"]["bias"], np.float64)))
  return torch, ref


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_equals_torch(causal):
  attn = mha(causal=causal)
  torch, ref = torch_mha(attn)
  x, valid = randn(13, B, 6, C), valid_lengths([6, 4], 6)
  got = attn(x, mask=padding_mask(valid))
  xt = torch.from_numpy(np.asarray(x, np.float64))
  # torch's masks say where NOT to attend.
  future = torch.from_numpy(~np.asarray(causal_mask(6, 6))) if causal else None
  with torch.no_grad():
    want, _ = ref(xt, xt, xt, key_padding_mask=torch.from_numpy(~np.asarray(valid)), attn_mask=future,
                  need_weights=False)
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_cross_attention_equals_torch():
  attn = mha(cross=True)
  torch, ref = torch_mha(attn, cross=True)
  x, context, valid = randn(14, B, 3, C), randn(15, B, 5, C), valid_lengths([5, 3], 5)
  ct = torch.from_numpy(np.asarray(context, np.float64))
  with torch.no_grad():
    want, _ = ref(torch.from_numpy(np.asarray(x, np.float64)), ct, ct,
                  key_padding_mask=torch.from_numpy(~np.asarray(valid)), need_weights=False)
  np.testing.assert_allclose(attn(x, context, mask=padding_mask(valid)), want.numpy(), rtol=1e-5, atol=1e-6)
