"""LSTM sequence-to-sequence translation, with or without attention.

Sutskever et al. (2014): an LSTM encoder reads the source; its final state starts an LSTM
decoder that predicts the target one token at a time, trained with teacher forcing (the
decoder's input at step t is the gold token t-1). With `attention="none"` that final state is
the only thing the decoder knows about the source: one fixed-size context vector.

Attention (Bahdanau et al. 2015; Luong et al. 2015) lets every decoder step look back at all
encoder states h̄_s. We follow Luong's "global attention" with his attentional output layer:

    a_t(s) = softmax_s score(h_t, h̄_s)             (Luong eq. 7; padded s get weight 0)
    c_t    = Σ_s a_t(s) h̄_s
    h̃_t    = tanh(W_c [c_t; h_t])                  (Luong eq. 5)
    p(y_t) = softmax(W_s h̃_t)                      (Luong eq. 6)

with score = dot h_tᵀh̄_s, scaled dot h_tᵀh̄_s / √n (Vaswani et al. 2017), or additive
vᵀ tanh(W_q h_t + W_k h̄_s) (Bahdanau et al. 2015, eq. 6; Luong's "concat"). Without input
feeding (Luong §3.3), the decoder LSTM does not depend on the attention, so in training it
runs over the whole target in one scan and attention is computed for all steps at once.

The model implements `research.decode.EncoderDecoder` (`encode`, `decode_start`,
`decode_step`), so greedy and beam search, BLEU and scheduled sampling (Bengio et al. 2015;
`decode.scheduled_sampling_logits`) all decode it through research/decode.py.
The encoder may be bidirectional: each direction gets n_hidden/2 units, and their final
states are concatenated to start the decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import need, one_of, positive, probability
from research.models.layers import Dense, Embed, param
from research.models.rnn import Carry, StackedRNN
from research.tokenizers import PAD_ID

ATTENTION = ("none", "dot", "scaled_dot", "additive")


@dataclass
class Config:
  name: str = "seq2seq"
  src_vocab_size: int = 0  # 0 = from the tokenizer(s)
  tgt_vocab_size: int = 0
  shared_vocab: bool = True  # one sentencepiece vocabulary and one embedding table for both sides
  max_src_len: int = 64  # source tokens; longer training pairs are dropped, longer test sources cut
  max_tgt_len: int = 64  # target tokens including eos; also the longest translation decoded
  n_layer: int = 1
  n_embd: int = 256
  n_hidden: int = 256
  bidirectional: bool = False  # encoder only; the decoder always reads left to right
  attention: str = "dot"  # "none" | "dot" | "scaled_dot" | "additive"
  dropout: float = 0.0

  def validate(self):
    one_of("model.attention", self.attention, ATTENTION)
    positive("model", self, "max_src_len", "max_tgt_len", "n_layer", "n_embd", "n_hidden")
    need(not self.bidirectional or self.n_hidden % 2 == 0,
         f"model.bidirectional splits model.n_hidden={self.n_hidden} in two halves: use an even size")
    probability("model.dropout", self.dropout)


class Memory(NamedTuple):
  """What the decoder reads from the encoder."""
  outputs: jax.Array  # h̄_s [B, S, H]
  keys: jax.Array  # W_k h̄_s for additive attention (computed once per sentence), else h̄_s
  mask: jax.Array  # [B, S] bool, True at real source tokens
  finals: list  # each layer's final (h, c), [B, H]


class DecoderState(NamedTuple):
  """Everything one decoding step reads and updates; every leaf leads with the batch."""
  memory: Memory
  carries: list[Carry]  # each decoder layer's (h, c), [B, H]


class Attention(nnx.Module):
  """Score, mask and normalise; returns the context c_t and the weights a_t."""

  def __init__(self, kind: str, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    if kind not in ATTENTION[1:]:
      raise ValueError(f"attention must be one of {ATTENTION}, got {kind!r}")
    self.kind, self.hidden, self.dtype = kind, hidden, dtype
    if kind == "additive":
      self.w_q = Dense(hidden, hidden, ("embed", "mlp"), bias=False, rngs=rngs, std=1 / math.sqrt(hidden), dtype=dtype)
      self.w_k = Dense(hidden, hidden, ("embed", "mlp"), bias=True, rngs=rngs, std=1 / math.sqrt(hidden), dtype=dtype)
      self.v = param(rngs, nnx.initializers.normal(1 / math.sqrt(hidden)), (hidden,), ("mlp",))

  def keys(self, outputs: jax.Array) -> jax.Array:
    return self.w_k(outputs) if self.kind == "additive" else outputs

  def scores(self, queries: jax.Array, keys: jax.Array) -> jax.Array:
    """queries [B, T, H], keys [B, S, H] -> [B, T, S]."""
    if self.kind == "additive":
      hidden = jnp.tanh(self.w_q(queries)[:, :, None, :] + keys[:, None, :, :])
      return hidden @ self.v[...].astype(self.dtype)
    scores = queries @ keys.swapaxes(1, 2)
    return scores / math.sqrt(self.hidden) if self.kind == "scaled_dot" else scores

  def __call__(self, queries: jax.Array, memory: Memory) -> tuple[jax.Array, jax.Array]:
    scores = self.scores(queries, memory.keys).astype(jnp.float32)
    # A large finite negative rather than -inf: an all-padding row (a filler row of an eval
    # batch) then gets uniform weights instead of NaN.
    scores = jnp.where(memory.mask[:, None, :], scores, -1e9)
    weights = jax.nn.softmax(scores, axis=-1)
    context = weights.astype(memory.outputs.dtype) @ memory.outputs
    return context, weights


class Seq2Seq(nnx.Module):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    assert cfg.src_vocab_size > 0 and cfg.tgt_vocab_size > 0, "Seq2Seq needs vocabulary sizes (set from the tokenizers)"
    if cfg.attention not in ATTENTION:
      raise ValueError(f"model.attention must be one of {ATTENTION}, got {cfg.attention!r}")
    # Plain values rather than the Config dataclass, which is unhashable: the graph definition
    # is a static (hashed) argument of the jitted decoder.
    self.max_src_len, self.max_tgt_len = cfg.max_src_len, cfg.max_tgt_len
    self.src_embed = Embed(cfg.src_vocab_size, cfg.n_embd, ("vocab", "embed"), rngs=rngs, dtype=dtype)
    self.tgt_embed = None if cfg.shared_vocab else Embed(cfg.tgt_vocab_size, cfg.n_embd, ("vocab", "embed"),
                                                         rngs=rngs, dtype=dtype)
    self.encoder = StackedRNN("lstm", cfg.n_embd, cfg.n_hidden, cfg.n_layer, dropout=cfg.dropout,
                              bidirectional=cfg.bidirectional, rngs=rngs, dtype=dtype)
    self.decoder = StackedRNN("lstm", cfg.n_embd, cfg.n_hidden, cfg.n_layer, dropout=cfg.dropout, rngs=rngs, dtype=dtype)
    self.attention = None if cfg.attention == "none" else Attention(cfg.attention, cfg.n_hidden, rngs=rngs, dtype=dtype)
    self.combine = None if self.attention is None else Dense(  # W_c of Luong eq. 5
        2 * cfg.n_hidden, cfg.n_hidden, ("mlp", "embed"), bias=False, rngs=rngs,
        std=1 / math.sqrt(2 * cfg.n_hidden), dtype=dtype)
    self.head = Dense(cfg.n_hidden, cfg.tgt_vocab_size, ("embed", "vocab"), bias=True, rngs=rngs,
                      std=1 / math.sqrt(cfg.n_hidden), dtype=dtype)  # W_s of Luong eq. 6
    self.drop = nnx.Dropout(cfg.dropout)

  def embed_target(self, tokens: jax.Array) -> jax.Array:
    return (self.tgt_embed or self.src_embed)(tokens)

  def encode(self, src: jax.Array, *, deterministic: bool = True, rngs: nnx.Rngs | None = None) -> Memory:
    mask = src != PAD_ID
    x = self.drop(self.src_embed(src), deterministic=deterministic, rngs=rngs)
    outputs, finals = self.encoder(x, mask=mask, deterministic=deterministic, rngs=rngs)
    keys = self.attention.keys(outputs) if self.attention is not None else outputs
    return Memory(outputs, keys, mask, finals)

  def output(self, h: jax.Array, memory: Memory, *, deterministic: bool = True,
             rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array | None]:
    """Decoder states [B, T, H] -> (logits [B, T, V] float32, attention weights [B, T, S] or None)."""
    weights = None
    if self.attention is not None:
      context, weights = self.attention(h, memory)
      h = jnp.tanh(self.combine(jnp.concatenate([context, h], axis=-1)))
    h = self.drop(h, deterministic=deterministic, rngs=rngs)
    return self.head(h).astype(jnp.float32), weights

  def decode_start(self, memory: Memory) -> DecoderState:
    return DecoderState(memory, memory.finals)

  def decode_step(self, state: DecoderState, token: jax.Array) -> tuple[jax.Array, DecoderState]:
    """One decoding step, token [B] -> (logits [B, V], the next state)."""
    h, carries = self.decoder.step(self.embed_target(token), state.carries)
    logits, _ = self.output(h[:, None], state.memory)
    return logits[:, 0], DecoderState(state.memory, carries)

  def __call__(self, src: jax.Array, tgt_in: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, return_attention: bool = False):
    """src [B, S], tgt_in [B, T] (bos + target) -> logits [B, T, V] (and weights [B, T, S])."""
    memory = self.encode(src, deterministic=deterministic, rngs=rngs)
    x = self.drop(self.embed_target(tgt_in), deterministic=deterministic, rngs=rngs)
    h, _ = self.decoder(x, initial=memory.finals, deterministic=deterministic, rngs=rngs)
    logits, weights = self.output(h, memory, deterministic=deterministic, rngs=rngs)
    return (logits, weights) if return_attention else logits

  def cross_attention(self, src: jax.Array, tgt_in: jax.Array) -> jax.Array | None:
    """Weights [B, layers, heads, T, S] of the teacher-forced pass (`lineage attention`):
    one layer, one head here; None without attention."""
    if self.attention is None:
      return None
    _, weights = self(src, tgt_in, return_attention=True)
    return weights[:, None, None]


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> Seq2Seq:
  return Seq2Seq(cfg, rngs=rngs, dtype=dtype)


def train_flops(cfg: Config, batch: dict) -> float:
  """Analytic matmul FLOPs of one teacher-forced train step (3x the forward pass).

  The encoder and decoder are `lax.scan`s, whose bodies XLA's cost analysis counts once.
  """
  B, S = batch["src"].shape
  T = batch["tgt_in"].shape[1]
  E, H, V = cfg.n_embd, cfg.n_hidden, cfg.tgt_vocab_size
  enc = sum(2 * ((E if l == 0 else H) + (H // 2 if cfg.bidirectional else H)) * 4 * H for l in range(cfg.n_layer))
  dec = sum(2 * ((E if l == 0 else H) + H) * 4 * H for l in range(cfg.n_layer))
  per_target = dec + 2 * H * V
  if cfg.attention != "none":
    per_target += 2 * 2 * S * H + 2 * 2 * H * H  # scores and context; W_c
    if cfg.attention == "additive":
      per_target += 2 * H * H + 2 * S * H  # W_q h_t and v . tanh(.)
      enc += 2 * H * H  # W_k h̄_s
  return 3.0 * B * (S * enc + T * per_target)
