"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

Token + learned position embeddings, `n_layer` pre-LayerNorm blocks of causal self-attention
and a GELU MLP, a final LayerNorm and an output head tied to the token embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import need, positive, probability
from research.models.layers import MLP, Embed, LayerNorm, MultiHeadAttention


@dataclass
class Config:
  name: str = "gpt"
  vocab_size: int = 0  # 0 = the tokenizer's vocabulary size
  block_size: int = 256  # longest context, and the length of a training block
  n_layer: int = 6
  n_head: int = 6
  n_embd: int = 384
  dropout: float = 0.0
  bias: bool = False  # biases in Dense and LayerNorm; nanoGPT finds them unnecessary

  def validate(self):
    positive("model", self, "block_size", "n_layer", "n_head", "n_embd")
    need(self.n_embd % self.n_head == 0, f"model.n_embd={self.n_embd} must be a multiple of model.n_head={self.n_head}")
    need(self.vocab_size >= 0, f"model.vocab_size must be >= 0 (0 = from the tokenizer), got {self.vocab_size}")
    probability("model.dropout", self.dropout)


class Block(nnx.Module):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    # GPT-2 scales the init of each residual output projection by 1/sqrt(2 * n_layer).
    out_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias, rngs=rngs)
    self.attn = MultiHeadAttention(cfg.n_embd, cfg.n_head, causal=True, bias=cfg.bias, dropout=cfg.dropout,
                                   rngs=rngs, out_std=out_std, dtype=dtype)
    self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias, rngs=rngs)
    self.mlp = MLP(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias, dropout=cfg.dropout, rngs=rngs,
                   out_std=out_std, dtype=dtype)

  def __call__(self, x, *, positions=None, deterministic=True, rngs=None):
    x = x + self.attn(self.ln_1(x), positions=positions, deterministic=deterministic, rngs=rngs)
    return x + self.mlp(self.ln_2(x), deterministic=deterministic, rngs=rngs)


class GPT(nnx.Module):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    assert cfg.vocab_size > 0, "GPT needs vocab_size (set from the tokenizer)"
    self.cfg = cfg
    self.wte = Embed(cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), rngs=rngs, dtype=dtype)
    self.wpe = Embed(cfg.block_size, cfg.n_embd, (None, "embed"), rngs=rngs, dtype=dtype)
    self.drop = nnx.Dropout(cfg.dropout)
    self.blocks = nnx.List([Block(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.n_layer)])
    self.ln_f = LayerNorm(cfg.n_embd, bias=cfg.bias, rngs=rngs)

  def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    """tokens [B, T] -> logits [B, T, vocab] in float32.

    `positions` ([T], absolute) is given when decoding with a KV cache; otherwise 0..T-1.
    """
    if positions is None:
      positions = jnp.arange(tokens.shape[1])
    x = self.drop(self.wte(tokens) + self.wpe(positions)[None], deterministic=deterministic, rngs=rngs)
    for block in self.blocks:
      x = block(x, positions=positions, deterministic=deterministic, rngs=rngs)
    return self.wte.attend(self.ln_f(x)).astype(jnp.float32)

  def init_cache(self, batch: int, max_len: int | None = None, dtype=jnp.float32):
    for block in self.blocks:
      block.attn.init_cache(batch, max_len or self.cfg.block_size, dtype)

  def clear_cache(self):
    for block in self.blocks:
      block.attn.clear_cache()


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> GPT:
  return GPT(cfg, rngs=rngs, dtype=dtype)
