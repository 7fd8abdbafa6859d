"""A PyTorch Transformer translation step, the peer lineage's Transformer is measured against.

The model is `torch.nn.Transformer` itself (its encoder and decoder layers, built on
`nn.MultiheadAttention`), post-LN with ReLU FFNs, with what the paper adds around it
(Vaswani et al. 2017) and `research/models/transformer.py` has:

- one token table for source, target and the pre-softmax projection (tied), multiplied
  by sqrt(d_model) on the way in (sec 3.4), plus sinusoidal positions (sec 3.5), with
  sin/cos interleaved as `transformer.sinusoids` lays them out;
- no final LayerNorm after either stack: nn.Transformer always adds one, the paper's
  post-LN stacks end in their last layer's own LayerNorm, so both are removed;
- masks: padded source keys hidden from the encoder's and the cross-attention's queries,
  causal decoder self-attention (target padding needs none: it comes last and its loss
  is masked);
- the loss: cross-entropy with label smoothing 0.1 (Szegedy et al. 2016) over non-pad
  targets, `F.cross_entropy(..., ignore_index=pad, label_smoothing=eps)`, which is the same
  (1 - eps) nll + eps * mean_v(-log p_v) as research/objectives/losses.py;
- Adam (0.9, 0.98, eps 1e-9), no weight decay, no clipping, on the inverse square root
  schedule scale * d^-0.5 * min(step^-0.5, step * warmup^-1.5) (sec 5.3; update k uses
  step k + 1, as research/train/optimizer.py).

Initialisation is nn.Transformer's (Glorot-uniform matrices), biases zero and the table
normal with std d^-0.5, as lineage's. Dropout is 0 (a benchmark compares losses exactly).

Usage:
    model = Seq2SeqTransformer(vocab=4000, d_model=128, n_head=4, n_layer=3, d_ff=512, max_len=48)
    step = make_train_step(model, scale=0.3, warmup=400, compile=False)
    loss = step(src, tgt_in, tgt_out)   # int64 [B, S], [B, T], [B, T]; returns a Python float
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_ID = 0


def sinusoids(length: int, dim: int) -> torch.Tensor:
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (sec 3.5): [length, dim]."""
  inverse_wavelength = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
  angles = torch.arange(length, dtype=torch.float32)[:, None] * inverse_wavelength[None, :]
  return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(length, dim)


class Seq2SeqTransformer(nn.Module):

  def __init__(self, vocab: int, d_model: int, n_head: int, n_layer: int, d_ff: int, max_len: int,
               label_smoothing: float = 0.1, seed: int = 0):
    super().__init__()
    torch.manual_seed(seed)
    self.d_model, self.label_smoothing = d_model, label_smoothing
    self.embed = nn.Embedding(vocab, d_model)
    self.transformer = nn.Transformer(d_model, n_head, n_layer, n_layer, d_ff, dropout=0.0, activation="relu",
                                      batch_first=True, norm_first=False)  # Glorot-uniform matrices
    self.transformer.encoder.norm = None  # the paper's post-LN stacks end in their last layer's LayerNorm
    self.transformer.decoder.norm = None
    with torch.no_grad():
      nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
      for name, p in self.transformer.named_parameters():
        if name.endswith("bias"):
          p.zero_()
    self.register_buffer("positions", sinusoids(max_len, d_model), persistent=False)
    self.register_buffer("future", torch.ones(max_len, max_len, dtype=torch.bool).triu(1), persistent=False)

  def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over the non-pad targets."""
    S, T = src.shape[1], tgt_in.shape[1]
    scale = math.sqrt(self.d_model)
    pad = src == PAD_ID  # torch's masks say where NOT to attend
    y = self.transformer(self.embed(src) * scale + self.positions[:S], self.embed(tgt_in) * scale + self.positions[:T],
                         tgt_mask=self.future[:T, :T], src_key_padding_mask=pad, memory_key_padding_mask=pad,
                         tgt_is_causal=True)  # SDPA's causal kernel for decoder self-attention
    logits = F.linear(y, self.embed.weight)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=PAD_ID,
                           label_smoothing=self.label_smoothing)


def inverse_sqrt(scale: float, d_model: int, warmup: int) -> Callable[[int], float]:
  """The learning rate of update k (from 0): the paper's step_num is k + 1."""
  return lambda k: scale * d_model ** -0.5 * min((k + 1) ** -0.5, (k + 1) * warmup ** -1.5)


def make_train_step(model: Seq2SeqTransformer, scale: float, warmup: int, compile: bool = False,
                    betas=(0.9, 0.98), eps: float = 1e-9) -> Callable[..., float]:
  """A `step(src, tgt_in, tgt_out) -> loss` closure: Adam on the inverse square root schedule.

  With compile=True the model (forward and, through AOTAutograd, backward) goes through
  torch.compile; the optimizer runs eagerly (foreach, the fastest non-fused variant on CPU).
  """
  optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=betas, eps=eps, foreach=True)
  schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt(scale, model.d_model, warmup))
  fwd = torch.compile(model) if compile else model

  def step(src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = fwd(src, tgt_in, tgt_out)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item()

  return step
