"""The Transformer encoder-decoder (Vaswani et al. 2017, "Attention Is All You Need").

The encoder is `n_layer` layers of self-attention and a position-wise feed-forward network;
the decoder `n_layer` layers of causal self-attention, attention over the encoder's output
and the same FFN (sec 3.1). Each sub-layer is wrapped as the paper has it (post-LN),

    LayerNorm(x + Dropout(Sublayer(x)))                      (sec 3.1, residual dropout sec 5.4)

or, with norm="pre", as x + Dropout(Sublayer(LayerNorm(x))) with a final LayerNorm after
each stack (Xiong et al. 2020), which trains without warmup and is stabler when deep.

- Attention: research/models/layers.MultiHeadAttention (eq. 1, sec 3.2.2). Padded source
  tokens are hidden from every query; decoder self-attention is causal (sec 3.2.3).
  Padded target positions need no mask: they come last, so causality hides them from
  every real query, and their own loss is masked.
- FFN(x) = max(0, x W1 + b1) W2 + b2 (eq. 2).
- Embeddings: with a shared vocabulary one table serves the source, the target and the
  pre-softmax projection, multiplied by sqrt(d_model) in the embedding layers (sec 3.4);
  positions are sinusoidal (sec 3.5) or learned; dropout on their sum (sec 5.4).
- Initialisation: Glorot-uniform matrices, zero biases, as torch.nn.Transformer; the token
  table normal with std d_model^-0.5, so that the scaled embedding has unit variance like
  the sinusoids it is added to (as tensor2tensor does).

Decoding implements research.decode.EncoderDecoder: `encode` once, `decode_start` projects
every decoder layer's memory keys and values once and allocates a KV cache of decoder
self-attention, `decode_step` feeds one token. The cache lives in the explicit decoder
state rather than in the layers, so beam search can reorder it. Translations may run to
source length + `max_len_offset` tokens (sec 6.1; research/evaluate/bleu.py asks for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import need, one_of, positive, probability
from research.models import vjp
from research.models.layers import Dense, Embed, LayerNorm, MultiHeadAttention, padding_mask, param
from research.tokenizers import PAD_ID

POSITIONS = ("sinusoidal", "learned")
NORMS = ("post", "pre")


@dataclass
class Config:
  name: str = "transformer"
  src_vocab_size: int = 0  # 0 = from the tokenizer(s)
  tgt_vocab_size: int = 0
  shared_vocab: bool = True  # one sentencepiece vocabulary, one table for both sides and the output
  max_src_len: int = 64  # source tokens; longer training pairs are dropped, longer test sources cut
  max_tgt_len: int = 64  # target tokens including eos, in training
  n_layer: int = 6  # in the encoder, and again in the decoder
  n_head: int = 8
  n_embd: int = 512  # d_model
  d_ff: int = 2048  # the FFN's inner width
  dropout: float = 0.1  # P_drop of sec 5.4
  positions: str = "sinusoidal"  # "sinusoidal" (sec 3.5) | "learned"
  norm: str = "post"  # "post" (the paper) | "pre"
  max_len_offset: int = 50  # translations run to source length + this (sec 6.1); 0 = max_tgt_len

  def validate(self):
    one_of("model.positions", self.positions, POSITIONS)
    one_of("model.norm", self.norm, NORMS)
    positive("model", self, "max_src_len", "max_tgt_len", "n_layer", "n_head", "n_embd", "d_ff")
    need(self.n_embd % self.n_head == 0, f"model.n_embd={self.n_embd} must be a multiple of model.n_head={self.n_head}")
    need(self.positions != "sinusoidal" or self.n_embd % 2 == 0,
         f"sinusoidal positions pair sines and cosines: model.n_embd={self.n_embd} must be even")
    need(min(self.src_vocab_size, self.tgt_vocab_size) >= 0, "vocabulary sizes must be >= 0 (0 = from the tokenizers)")
    need(not self.shared_vocab or self.src_vocab_size == self.tgt_vocab_size,
         f"model.shared_vocab needs one vocabulary, got src_vocab_size={self.src_vocab_size} and "
         f"tgt_vocab_size={self.tgt_vocab_size}")
    need(self.max_len_offset >= 0, f"model.max_len_offset must be >= 0, got {self.max_len_offset}")
    probability("model.dropout", self.dropout)


def sinusoids(positions: jax.Array, dim: int) -> jax.Array:
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)) (sec 3.5): [T, dim]."""
  inverse_wavelength = 10000.0 ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = positions.astype(jnp.float32)[:, None] * inverse_wavelength[None, :]
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(-1, dim)


class TokenEmbed(nnx.Module):
  """A token table, multiplied by sqrt(d_model) on the way in; `attend` is the tied
  pre-softmax projection (sec 3.4), unscaled."""

  def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.embedding = param(rngs, nnx.initializers.normal(dim ** -0.5), (vocab, dim), ("vocab", "embed"))
    self.scale, self.dtype = math.sqrt(dim), dtype

  def __call__(self, ids: jax.Array) -> jax.Array:
    return (jnp.take(self.embedding[...], ids, axis=0) * self.scale).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    # [C, V] is a narrow-input kernel: vjp.matmul's backward spares XLA:CPU a transpose of the
    # wide [B*T, V] logits gradient (~1.5x faster for the head's gradient, measured at V=4000).
    w = self.embedding[...].astype(self.dtype).T
    return vjp.matmul(x.astype(self.dtype), w) if vjp.cpu_tricks() else x.astype(self.dtype) @ w


class FeedForward(nnx.Module):
  """FFN(x) = max(0, x W1 + b1) W2 + b2 (eq. 2), applied to each position alike."""

  def __init__(self, dim: int, d_ff: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.fc = Dense(dim, d_ff, ("embed", "mlp"), bias=True, rngs=rngs, dtype=dtype)
    # (out, in) storage: the wide-input layer's fast weight gradient on XLA:CPU (layers.Dense).
    self.proj = Dense(d_ff, dim, ("mlp", "embed"), bias=True, rngs=rngs, dtype=dtype, store_transposed=True)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj(jax.nn.relu(self.fc(x)))


def glorot(dense: Dense, rngs: nnx.Rngs) -> None:
  """Re-draws a kernel Glorot-uniform (Glorot & Bengio 2010), as torch.nn.Transformer and
  tensor2tensor do. layers.Dense's normal(0.02) suits wide models: at d_model 32, attention
  scores start so small that a copy task stalls at a uniform guess for hundreds of steps."""
  kernel = dense.kernel  # the formula is symmetric in fan-in and fan-out: either storage order
  kernel.set_value(nnx.initializers.xavier_uniform()(rngs.params(), kernel.shape, jnp.float32))


class Cache(NamedTuple):
  """Keys and values of the target positions fed so far, each [B, heads, max_len, head_dim]."""
  k: jax.Array
  v: jax.Array


def _heads(x: jax.Array, n_head: int) -> jax.Array:
  B, T, C = x.shape
  return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def cached_self_attention(attn: MultiHeadAttention, x: jax.Array, cache: Cache,
                          position: jax.Array) -> tuple[jax.Array, Cache]:
  """Causal self-attention of new positions x [B, t, C] (from `position` on) over a cache held
  in the decoder state: the layer's own KV cache (`init_cache`) lives in the module, which
  beam search could not reorder. Unwritten slots are hidden by the causal mask."""
  q, k, v = (_heads(a, attn.n_head) for a in jnp.split(attn.qkv(x), 3, axis=-1))
  write = lambda slots, new: jax.lax.dynamic_update_slice(slots, new.astype(slots.dtype), (0, 0, position, 0))
  cache = Cache(write(cache.k, k), write(cache.v, v))
  y = vjp.attention(q, cache.k.astype(q.dtype), cache.v.astype(q.dtype), causal=True, q_offset=position)
  B, _, T, _ = y.shape
  return attn.proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1)), cache


class Layer(nnx.Module):
  """What encoder and decoder layers share: residual sub-layers, post- or pre-LN, residual dropout."""

  def residual(self, x, sublayer, norm: LayerNorm, deterministic: bool, rngs):
    if self.pre_ln:
      return x + self.drop(sublayer(norm(x)), deterministic=deterministic, rngs=rngs)
    return norm(x + self.drop(sublayer(x), deterministic=deterministic, rngs=rngs))


def _attention(cfg: Config, rngs: nnx.Rngs, dtype, **kwargs) -> MultiHeadAttention:
  # The paper drops each sub-layer's output (sec 5.4), not attention weights: the layer's own
  # dropouts stay off, which also keeps it on the fast-gradient path of vjp.attention.
  return MultiHeadAttention(cfg.n_embd, cfg.n_head, bias=True, dropout=0.0, rngs=rngs, dtype=dtype, **kwargs)


class EncoderLayer(Layer):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.self_attn = _attention(cfg, rngs, dtype)
    self.ffn = FeedForward(cfg.n_embd, cfg.d_ff, rngs=rngs, dtype=dtype)
    self.ln_1 = LayerNorm(cfg.n_embd, bias=True, rngs=rngs)
    self.ln_2 = LayerNorm(cfg.n_embd, bias=True, rngs=rngs)
    self.drop, self.pre_ln = nnx.Dropout(cfg.dropout), cfg.norm == "pre"

  def __call__(self, x, mask, *, deterministic=True, rngs=None):
    x = self.residual(x, lambda h: self.self_attn(h, mask=mask), self.ln_1, deterministic, rngs)
    return self.residual(x, self.ffn, self.ln_2, deterministic, rngs)


class DecoderLayer(Layer):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.self_attn = _attention(cfg, rngs, dtype, causal=True)
    self.cross_attn = _attention(cfg, rngs, dtype, cross=True)
    self.ffn = FeedForward(cfg.n_embd, cfg.d_ff, rngs=rngs, dtype=dtype)
    self.ln_1 = LayerNorm(cfg.n_embd, bias=True, rngs=rngs)
    self.ln_2 = LayerNorm(cfg.n_embd, bias=True, rngs=rngs)
    self.ln_3 = LayerNorm(cfg.n_embd, bias=True, rngs=rngs)
    self.drop, self.pre_ln = nnx.Dropout(cfg.dropout), cfg.norm == "pre"

  def __call__(self, x, memory_kv, mask, *, cache: Cache | None = None, position=None, deterministic=True,
               rngs=None, weights: list | None = None):
    """x [B, T, C] -> (x, the updated cache or None). `memory_kv`: the memory's keys and values
    (MultiHeadAttention.project_context); `mask`: padding_mask of the source. With `cache`, x
    holds the positions from `position` on. A `weights` list receives the cross-attention weights."""
    def self_attention(h):
      nonlocal cache
      if cache is None:
        return self.self_attn(h)
      y, cache = cached_self_attention(self.self_attn, h, cache, position)
      return y

    def cross_attention(h):
      if weights is not None:
        q = _heads(self.cross_attn.q(h), self.cross_attn.n_head)
        weights.append(vjp.attention_weights(q, memory_kv[0], mask))
      return self.cross_attn(h, context_kv=memory_kv, mask=mask)

    x = self.residual(x, self_attention, self.ln_1, deterministic, rngs)
    x = self.residual(x, cross_attention, self.ln_2, deterministic, rngs)
    return self.residual(x, self.ffn, self.ln_3, deterministic, rngs), cache


class Memory(NamedTuple):
  """What the decoder reads from the encoder."""
  outputs: jax.Array  # [B, S, C]
  mask: jax.Array  # [B, S] bool, True at real source tokens


class DecoderState(NamedTuple):
  """Everything one decoding step reads and updates; every leaf but `position` leads with the batch."""
  memory_kv: list  # per decoder layer, the memory's (keys, values), each [B, heads, S, head_dim]
  mask: jax.Array  # [B, S]
  cache: list[Cache]  # per decoder layer
  position: jax.Array  # scalar int32: the position of the next token fed


class Transformer(nnx.Module):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    assert cfg.src_vocab_size > 0 and cfg.tgt_vocab_size > 0, "Transformer needs vocabulary sizes (set from the tokenizers)"
    cfg.validate()
    # Plain values, not the Config: the decoder's jit hashes the graph definition.
    self.max_src_len, self.max_tgt_len, self.max_len_offset = cfg.max_src_len, cfg.max_tgt_len, cfg.max_len_offset
    self.max_decode_len = max(cfg.max_tgt_len, cfg.max_src_len + cfg.max_len_offset)  # KV cache slots
    self.n_embd, self.n_head, self.pre_ln, self.dtype = cfg.n_embd, cfg.n_head, cfg.norm == "pre", dtype
    self.src_embed = TokenEmbed(cfg.src_vocab_size, cfg.n_embd, rngs=rngs, dtype=dtype)
    self.tgt_embed = None if cfg.shared_vocab else TokenEmbed(cfg.tgt_vocab_size, cfg.n_embd, rngs=rngs, dtype=dtype)
    learned = cfg.positions == "learned"
    self.src_pos = Embed(cfg.max_src_len, cfg.n_embd, (None, "embed"), rngs=rngs, dtype=dtype) if learned else None
    self.tgt_pos = Embed(self.max_decode_len, cfg.n_embd, (None, "embed"), rngs=rngs, dtype=dtype) if learned else None
    self.encoder = nnx.List([EncoderLayer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.n_layer)])
    self.decoder = nnx.List([DecoderLayer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.n_layer)])
    self.enc_ln = LayerNorm(cfg.n_embd, bias=True, rngs=rngs) if self.pre_ln else None
    self.dec_ln = LayerNorm(cfg.n_embd, bias=True, rngs=rngs) if self.pre_ln else None
    self.drop = nnx.Dropout(cfg.dropout)
    for _, module in nnx.iter_graph(self):
      if isinstance(module, Dense):
        glorot(module, rngs)

  # ------------------------------------------------------------------ embeddings

  @property
  def target_table(self) -> TokenEmbed:
    return self.tgt_embed or self.src_embed

  def embed(self, tokens, positions, table: TokenEmbed, learned: Embed | None, deterministic, rngs):
    pos = learned(positions) if learned is not None else sinusoids(positions, self.n_embd).astype(self.dtype)
    return self.drop(table(tokens) + pos[None], deterministic=deterministic, rngs=rngs)

  # ------------------------------------------------------------------ encoder and decoder

  def encode(self, src: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None) -> Memory:
    valid = src != PAD_ID
    mask = padding_mask(valid)
    x = self.embed(src, jnp.arange(src.shape[1]), self.src_embed, self.src_pos, deterministic, rngs)
    for layer in self.encoder:
      x = layer(x, mask, deterministic=deterministic, rngs=rngs)
    return Memory(self.enc_ln(x) if self.pre_ln else x, valid)

  def project_memory(self, memory: Memory) -> list:
    return [layer.cross_attn.project_context(memory.outputs) for layer in self.decoder]

  def decode(self, tgt_in, memory_kv, valid, *, caches=None, position=0, deterministic=True, rngs=None,
             weights=None):
    """Target tokens (from `position` on) -> (logits [B, T, V] float32, the updated caches)."""
    positions = position + jnp.arange(tgt_in.shape[1])
    x = self.embed(tgt_in, positions, self.target_table, self.tgt_pos, deterministic, rngs)
    mask, new_caches = padding_mask(valid), []
    for i, layer in enumerate(self.decoder):
      x, cache = layer(x, memory_kv[i], mask, cache=None if caches is None else caches[i], position=position,
                       deterministic=deterministic, rngs=rngs, weights=weights)
      new_caches.append(cache)
    if self.pre_ln:
      x = self.dec_ln(x)
    return self.target_table.attend(x).astype(jnp.float32), new_caches

  def __call__(self, src: jax.Array, tgt_in: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """src [B, S], tgt_in [B, T] (bos + target) -> logits [B, T, V] (teacher forcing)."""
    memory = self.encode(src, deterministic=deterministic, rngs=rngs)
    logits, _ = self.decode(tgt_in, self.project_memory(memory), memory.mask, deterministic=deterministic, rngs=rngs)
    return logits

  # ------------------------------------------------------------------ the decoding protocol

  def decode_start(self, memory: Memory) -> DecoderState:
    B = memory.outputs.shape[0]
    slots = jnp.zeros((B, self.n_head, self.max_decode_len, self.n_embd // self.n_head), self.dtype)
    return DecoderState(self.project_memory(memory), memory.mask, [Cache(slots, slots) for _ in self.decoder],
                        jnp.zeros((), jnp.int32))

  def decode_step(self, state: DecoderState, token: jax.Array) -> tuple[jax.Array, DecoderState]:
    """token [B] at state.position -> (logits [B, V], the next state). At most max_decode_len steps."""
    logits, caches = self.decode(token[:, None], state.memory_kv, state.mask, caches=state.cache,
                                 position=state.position)
    return logits[:, 0], DecoderState(state.memory_kv, state.mask, caches, state.position + 1)

  def cross_attention(self, src: jax.Array, tgt_in: jax.Array) -> jax.Array:
    """Weights [B, layers, heads, T, S] of the teacher-forced pass, for `lineage attention`."""
    memory, weights = self.encode(src), []
    self.decode(tgt_in, self.project_memory(memory), memory.mask, weights=weights)
    return jnp.stack(weights, axis=1)


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> Transformer:
  return Transformer(cfg, rngs=rngs, dtype=dtype)
