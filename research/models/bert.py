"""BERT: a bidirectional Transformer encoder (Devlin et al. 2019), and its pretraining heads.

Token + learned position + segment embeddings, summed and layer-normalised; `n_layer`
post-LayerNorm blocks, x = LN(x + Attn(x)) then x = LN(x + MLP(x)), as in Vaswani et al.
2017 and BERT (GPT-2 later moved the norms before each branch); exact-erf GELU, as
Hugging Face's "gelu"; a pooler (dense + tanh on the [CLS] position) for sentence-level
heads. Padded positions are masked out of every attention's keys.

The heads are modules of their own around the shared encoder, so every model built on it
keeps the encoder's parameters at `encoder/...`: the pretraining model below (`mlm`, `nsp`)
and fine-tuning models alike (`Classifier`, with `classifier`; `SpanQA`, with `span`), and
`train.init_from` carries the encoder from one to the other. `build` returns the encoder alone;
objectives add their heads (see research/objectives/mlm_nsp.py, classification.py,
extractive_qa.py). Weights to and from Hugging Face: research/interop/hf_bert.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import ConfigError, need, one_of, positive, probability
from research.models.layers import MLP, Dense, Embed, LayerNorm, MultiHeadAttention, padding_mask, param
from research.models.transformer import sinusoids
from research.tokenizers import PAD_ID


@dataclass
class Config:
  name: str = "bert"
  vocab_size: int = 0  # 0 = the tokenizer's vocabulary size
  max_len: int = 512  # the position table: the longest input the model can read
  n_layer: int = 4
  n_head: int = 4
  n_embd: int = 256
  n_mlp: int = 0  # MLP width; 0 = 4 * n_embd, as every BERT size
  dropout: float = 0.1  # embeddings, attention weights and each residual branch, as BERT
  type_vocab: int = 2  # segments: A and B
  ln_eps: float = 1e-12  # BERT's LayerNorm epsilon (Hugging Face's layer_norm_eps)
  # How the learned position table starts: "normal" (std 0.02, BERT's) or "sinusoidal" (Vaswani
  # et al.'s sines and cosines at the same std), which attention can read relative offsets from
  # at step 0. Only the initial values differ: the table is learned and exported the same way.
  pos_init: str = "normal"

  def validate(self):
    positive("model", self, "max_len", "n_layer", "n_head", "n_embd", "type_vocab")
    need(self.n_embd % self.n_head == 0, f"model.n_embd={self.n_embd} must be a multiple of model.n_head={self.n_head}")
    need(self.vocab_size >= 0, f"model.vocab_size must be >= 0 (0 = from the tokenizer), got {self.vocab_size}")
    need(self.n_mlp >= 0, f"model.n_mlp must be >= 0 (0 = 4 * n_embd), got {self.n_mlp}")
    need(self.ln_eps > 0, f"model.ln_eps must be positive, got {self.ln_eps}")
    probability("model.dropout", self.dropout)
    one_of("model.pos_init", self.pos_init, ("normal", "sinusoidal"))
    need(self.pos_init != "sinusoidal" or self.n_embd % 2 == 0,
         f"sinusoidal positions pair sines and cosines: model.n_embd={self.n_embd} must be even")

  @property
  def mlp_width(self) -> int:
    return self.n_mlp or 4 * self.n_embd


# The small BERTs of Turc et al. 2019 ("Well-Read Students Learn Better"): layers / width,
# heads = width / 64, MLP = 4 x width.
SIZES = {
    "tiny": dict(n_layer=2, n_embd=128, n_head=2),
    "mini": dict(n_layer=4, n_embd=256, n_head=4),
    "small": dict(n_layer=4, n_embd=512, n_head=8),
}


def sized(size: str, **settings) -> Config:
  """The Config of a named size, other settings as given: `sized("mini", max_len=128)`."""
  if size not in SIZES:
    raise ConfigError(f"BERT size {size!r} is not one of {', '.join(SIZES)}")
  return Config(**{**SIZES[size], **settings})


class Embeddings(nnx.Module):
  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.tok = Embed(cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), rngs=rngs, dtype=dtype)
    self.pos = Embed(cfg.max_len, cfg.n_embd, (None, "embed"), rngs=rngs, dtype=dtype)
    if cfg.pos_init == "sinusoidal":  # sines and cosines have std 1/sqrt(2); scaled to the table's 0.02
      self.pos.embedding.set_value(sinusoids(jnp.arange(cfg.max_len), cfg.n_embd) * (0.02 * 2 ** 0.5))
    self.seg = Embed(cfg.type_vocab, cfg.n_embd, (None, "embed"), rngs=rngs, dtype=dtype)
    self.ln = LayerNorm(cfg.n_embd, bias=True, eps=cfg.ln_eps, rngs=rngs)
    self.drop = nnx.Dropout(cfg.dropout)

  def __call__(self, input_ids, segment_ids, *, deterministic=True, rngs=None):
    x = self.tok(input_ids) + self.pos(jnp.arange(input_ids.shape[1]))[None] + self.seg(segment_ids)
    return self.drop(self.ln(x), deterministic=deterministic, rngs=rngs)


class Layer(nnx.Module):
  """One post-LN encoder block (Vaswani et al. 2017, sec. 3.1): LN(x + Attn(x)), LN(x + MLP(x))."""

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.attn = MultiHeadAttention(cfg.n_embd, cfg.n_head, bias=True, dropout=cfg.dropout, rngs=rngs, dtype=dtype)
    self.ln_1 = LayerNorm(cfg.n_embd, bias=True, eps=cfg.ln_eps, rngs=rngs)
    self.mlp = MLP(cfg.n_embd, cfg.mlp_width, bias=True, dropout=cfg.dropout, rngs=rngs, dtype=dtype)
    self.ln_2 = LayerNorm(cfg.n_embd, bias=True, eps=cfg.ln_eps, rngs=rngs)

  def __call__(self, x, mask, *, deterministic=True, rngs=None):
    x = self.ln_1(x + self.attn(x, mask=mask, deterministic=deterministic, rngs=rngs))
    return self.ln_2(x + self.mlp(x, deterministic=deterministic, rngs=rngs))


class Encoder(nnx.Module):
  """input_ids, segment_ids [B, T] -> (hidden states [B, T, C], pooled [CLS] [B, C])."""

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    assert cfg.vocab_size > 0, "BERT needs vocab_size (set from the tokenizer)"
    self.cfg = cfg
    self.embed = Embeddings(cfg, rngs=rngs, dtype=dtype)
    self.layers = nnx.List([Layer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.n_layer)])
    self.pooler = Dense(cfg.n_embd, cfg.n_embd, ("embed", None), bias=True, rngs=rngs, dtype=dtype)

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array | None = None, *, valid: jax.Array | None = None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
    """`valid` [B, T] marks real tokens (default: input_ids != pad); padding is never attended to."""
    if segment_ids is None:
      segment_ids = jnp.zeros_like(input_ids)
    mask = padding_mask(input_ids != PAD_ID if valid is None else valid)
    x = self.embed(input_ids, segment_ids, deterministic=deterministic, rngs=rngs)
    for layer in self.layers:
      x = layer(x, mask, deterministic=deterministic, rngs=rngs)
    return x, jnp.tanh(self.pooler(x[:, 0]))


class MLMHead(nnx.Module):
  """Masked-token logits: dense, GELU, LayerNorm, then the token embedding (tied) plus a bias."""

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.dense = Dense(cfg.n_embd, cfg.n_embd, ("embed", None), bias=True, rngs=rngs, dtype=dtype)
    self.ln = LayerNorm(cfg.n_embd, bias=True, eps=cfg.ln_eps, rngs=rngs)
    self.bias = param(rngs, nnx.initializers.zeros, (cfg.vocab_size,), ("vocab",))

  def __call__(self, hidden: jax.Array, embedding: Embed) -> jax.Array:
    h = self.ln(jax.nn.gelu(self.dense(hidden), approximate=False))
    return (embedding.attend(h) + self.bias[...]).astype(jnp.float32)


class NSPHead(nnx.Module):
  """Is-next / random-next logits [B, 2] from the pooled [CLS] (0 = B follows A, as Hugging Face)."""

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.dense = Dense(cfg.n_embd, 2, ("embed", None), bias=True, rngs=rngs, dtype=dtype)

  def __call__(self, pooled: jax.Array) -> jax.Array:
    return self.dense(pooled).astype(jnp.float32)


class Pretraining(nnx.Module):
  """The encoder with the MLM head and (unless `nsp=False`) the NSP head: BERT's pretraining model."""

  def __init__(self, cfg: Config, *, nsp: bool = True, rngs: nnx.Rngs, dtype=jnp.float32):
    self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
    self.mlm = MLMHead(cfg, rngs=rngs, dtype=dtype)
    self.nsp = NSPHead(cfg, rngs=rngs, dtype=dtype) if nsp else None

  def __call__(self, input_ids, segment_ids=None, mlm_positions=None, *, valid=None, deterministic=True, rngs=None):
    """-> (MLM logits [B, P, V] at `mlm_positions` [B, P] (all T positions if None), NSP logits [B, 2] or None).

    Projecting only the predicted positions onto the vocabulary, as the reference does,
    saves most of the head's cost: 20 of 128 positions are predicted.
    """
    hidden, pooled = self.encoder(input_ids, segment_ids, valid=valid, deterministic=deterministic, rngs=rngs)
    if mlm_positions is not None:
      hidden = jnp.take_along_axis(hidden, mlm_positions[..., None], axis=1)
    mlm = self.mlm(hidden, self.encoder.embed.tok)
    return mlm, self.nsp(pooled) if self.nsp is not None else None


class Classifier(nnx.Module):
  """The encoder with a classifier on the pooled [CLS]: dropout, then a dense layer to the labels.

  As Devlin et al. 2019 (sec. 4.1) and run_classifier.py: the pooler is the encoder's (so it is
  carried over from pretraining, where NSP trained it); only `classifier` is new.
  """

  def __init__(self, cfg: Config, num_labels: int, *, dropout: float = 0.1, rngs: nnx.Rngs, dtype=jnp.float32):
    self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
    self.drop = nnx.Dropout(dropout)
    self.classifier = Dense(cfg.n_embd, num_labels, ("embed", None), bias=True, rngs=rngs, dtype=dtype)

  def __call__(self, input_ids, segment_ids=None, *, valid=None, deterministic=True, rngs=None) -> jax.Array:
    """-> logits [B, num_labels], float32."""
    _, pooled = self.encoder(input_ids, segment_ids, valid=valid, deterministic=deterministic, rngs=rngs)
    return self.classifier(self.drop(pooled, deterministic=deterministic, rngs=rngs)).astype(jnp.float32)


class SpanQA(nnx.Module):
  """The encoder with a span head on every token: start and end logits for extractive QA.

  As Devlin et al. 2019 (sec. 4.2) and run_squad.py: a start vector S and an end vector E (one
  dense layer to 2 outputs), P(start = i) = softmax_i(S . T_i) over the window's tokens T_i;
  no dropout before it. Only `span` is new; the pooler is kept (unused) so the encoder's
  parameters are the same as every other head's.
  """

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
    self.span = Dense(cfg.n_embd, 2, ("embed", None), bias=True, rngs=rngs, dtype=dtype)

  def __call__(self, input_ids, segment_ids=None, *, valid=None, deterministic=True, rngs=None) -> jax.Array:
    """-> logits [B, T, 2], float32: [..., 0] of the answer's first token, [..., 1] of its last."""
    hidden, _ = self.encoder(input_ids, segment_ids, valid=valid, deterministic=deterministic, rngs=rngs)
    return self.span(hidden).astype(jnp.float32)


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> Encoder:
  return Encoder(cfg, rngs=rngs, dtype=dtype)
