"""A PyTorch GPT train step, the peer our JAX GPT is measured against.

The model is nanoGPT-style (written from the architecture, not copied):
token + learned position embeddings, pre-LayerNorm blocks (LayerNorm without
bias), causal multi-head self-attention with one fused qkv projection, an MLP
of width 4C with exact-erf GELU, a final LayerNorm and an output head tied to
the token embedding. No biases, no dropout, f32. The step is AdamW (weight
decay only on >= 2-D weights) with global-norm gradient clipping.

Weights move between frameworks as a flat dict of numpy arrays (see
`export_weights` / `load_weights`) with these names and shapes, linear kernels
in ``x @ W`` layout (in, out), as in Flax:

    wte               [V, C]     token embedding, also the output head
    wpe               [T, C]     position embedding
    h.{i}.ln_1        [C]        LayerNorm scale
    h.{i}.attn.c_attn [C, 3C]    q | k | v, each split into heads of C/H
    h.{i}.attn.c_proj [C, C]
    h.{i}.ln_2        [C]
    h.{i}.mlp.c_fc    [C, 4C]
    h.{i}.mlp.c_proj  [4C, C]
    ln_f              [C]

Usage:
    model = GPT(GPTConfig(...)); opt = make_optimizer(model)
    step = make_train_step(model, opt, compile=False)
    loss = step(x, y)          # x, y: int64 [B, T]; returns a Python float
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
  vocab_size: int = 65
  block_size: int = 64
  n_layer: int = 4
  n_head: int = 4
  n_embd: int = 128


# The two configs the performance work targets.
BABY = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
BIG = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)


class SelfAttention(nn.Module):

  def __init__(self, cfg: GPTConfig):
    super().__init__()
    self.n_head = cfg.n_head
    self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
    self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    B, T, C = x.shape
    q, k, v = self.c_attn(x).split(C, dim=2)
    # [B, T, C] -> [B, H, T, D]
    q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
    # SDPA is torch's fastest CPU attention; it computes softmax(q k^T / sqrt(D) + causal) v.
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):

  def __init__(self, cfg: GPTConfig):
    super().__init__()
    self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
    self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.c_proj(F.gelu(self.c_fc(x), approximate="none"))


class Block(nn.Module):

  def __init__(self, cfg: GPTConfig):
    super().__init__()
    self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=False)
    self.attn = SelfAttention(cfg)
    self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=False)
    self.mlp = MLP(cfg)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

  def __init__(self, cfg: GPTConfig, seed: int = 0):
    super().__init__()
    self.cfg = cfg
    self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
    self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
    self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
    self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
    # Tied head: no weight of its own; logits use wte.weight.
    gen = torch.Generator().manual_seed(seed)
    for name, p in self.named_parameters():
      if p.dim() == 2:
        # GPT-2 init; residual output projections scaled by depth.
        std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
        with torch.no_grad():
          p.normal_(0.0, std, generator=gen)

  def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over all B*T positions."""
    T = idx.shape[1]
    x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
    for block in self.h:
      x = block(x)
    logits = F.linear(self.ln_f(x), self.wte.weight)
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


# ---------------------------------------------------------------------------
# Weight exchange (flat numpy dict, Flax layout; see module docstring)
# ---------------------------------------------------------------------------


def _name_map(cfg: GPTConfig) -> dict[str, tuple[str, bool]]:
  """Exchange name -> (torch parameter name, whether to transpose)."""
  m = {"wte": ("wte.weight", False), "wpe": ("wpe.weight", False), "ln_f": ("ln_f.weight", False)}
  for i in range(cfg.n_layer):
    m[f"h.{i}.ln_1"] = (f"h.{i}.ln_1.weight", False)
    m[f"h.{i}.ln_2"] = (f"h.{i}.ln_2.weight", False)
    for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
      m[f"h.{i}.{lin}"] = (f"h.{i}.{lin}.weight", True)  # torch Linear is [out, in]
  return m


def export_weights(model: GPT) -> dict[str, np.ndarray]:
  params = dict(model.named_parameters())
  out = {}
  for key, (tname, transpose) in _name_map(model.cfg).items():
    w = params[tname].detach().cpu().numpy()
    out[key] = np.ascontiguousarray(w.T if transpose else w)
  return out


def load_weights(model: GPT, weights: Mapping[str, np.ndarray]) -> None:
  """Copy a flat numpy dict (Flax layout) into the model, checking shapes."""
  params = dict(model.named_parameters())
  names = _name_map(model.cfg)
  missing = set(names) - set(weights)
  if missing:
    raise KeyError(f"weights missing {sorted(missing)}")
  with torch.no_grad():
    for key, (tname, transpose) in names.items():
      w = np.array(weights[key], dtype=np.float32)  # copy: source may be read-only
      w = w.T if transpose else w
      if tuple(w.shape) != tuple(params[tname].shape):
        raise ValueError(f"{key}: shape {w.shape}, expected {tuple(params[tname].shape)}")
      params[tname].copy_(torch.from_numpy(np.ascontiguousarray(w)))


# ---------------------------------------------------------------------------
# Optimizer and step
# ---------------------------------------------------------------------------


def make_optimizer(model: GPT,
                   lr: float = 1e-3,
                   weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.99),
                   eps: float = 1e-8,
                   foreach: bool = True) -> torch.optim.AdamW:
  """AdamW that decays only the >= 2-D weights (embeddings, kernels), not LayerNorm scales.

    foreach=True (multi-tensor) is the fastest non-fused variant on CPU.
    """
  decay = [p for p in model.parameters() if p.dim() >= 2]
  no_decay = [p for p in model.parameters() if p.dim() < 2]
  groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
  return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=foreach, fused=False)


def train_step(model: nn.Module,
               optimizer: torch.optim.Optimizer,
               x: torch.Tensor,
               y: torch.Tensor,
               clip: float = 1.0,
               autocast: torch.dtype | None = None) -> float:
  """One AdamW step with global-norm clipping; returns the loss before the update.

    With `autocast` (torch.bfloat16) the forward runs under CPU autocast, as nanoGPT's
    training loop does: matmuls in bf16, weights, gradients and optimizer in float32.
    """
  optimizer.zero_grad(set_to_none=True)
  with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
    loss = model(x, y)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
  optimizer.step()
  return loss.item()


def make_train_step(model: GPT,
                    optimizer: torch.optim.Optimizer,
                    compile: bool = False,
                    clip: float = 1.0,
                    autocast: torch.dtype | None = None) -> Callable[[torch.Tensor, torch.Tensor], float]:
  """A `step(x, y) -> loss` closure; with compile=True the model goes through torch.compile.

    Only the model (forward, and through AOTAutograd its backward) is compiled;
    the optimizer and clipping run eagerly, as in nanoGPT's own training loop.
    """
  fwd = torch.compile(model) if compile else model

  def step(x: torch.Tensor, y: torch.Tensor) -> float:
    return train_step(fwd, optimizer, x, y, clip, autocast)

  return step
