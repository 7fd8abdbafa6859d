"""The GPT train step that gpt_step.py and python_ab.py time: its configs, batches and task.

The model is nanoGPT's shape (token + learned position embeddings, pre-LN blocks, causal
attention, exact-erf GELU MLP, tied head, no bias, no dropout) trained with AdamW (lr 1e-3,
betas 0.9/0.99, weight decay 0.1 on matrices) after global-norm clipping at 1.0, on four
fixed batches of a learnable sequence (a noisy cyclic pattern), so a sameness check follows
a falling loss. Nothing here imports torch.
"""

from __future__ import annotations

import numpy as np

from research.config import Config, MeshConfig, OptimConfig, TrainConfig
from research.models import gpt
from research.objectives import base, lm

CONFIGS = {  # vocab 65: nanoGPT's shakespeare_char
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
    "big": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=8),
}
VOCAB = 65


class SyntheticTask(base.Task):
  """The LM objective on fixed batches: what the trainer needs, and no corpus."""

  def __init__(self, cfg: Config, batches: list[dict]):
    super().__init__(cfg, log=lambda *_: None)
    self.batches = batches

  def loss_fn(self, model, batch, rng, train):
    return lm.loss_fn(model, batch, rng, train)

  def train_batch(self, step: int) -> dict:
    return self.batches[step % len(self.batches)]


def config(name: str, compute_dtype: str = "float32") -> Config:
  spec = CONFIGS[name]
  return Config(
      experiment=f"bench_{name}", objective="lm",
      model=gpt.Config(vocab_size=VOCAB, block_size=spec["block_size"], n_layer=spec["n_layer"],
                       n_head=spec["n_head"], n_embd=spec["n_embd"], dropout=0.0, bias=False),
      optim=OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant", beta1=0.9, beta2=0.99, eps=1e-8,
                        weight_decay=0.1, grad_clip=1.0),
      mesh=MeshConfig(),
      train=TrainConfig(steps=10_000, batch_size=spec["batch"], compute_dtype=compute_dtype))


def batches(name: str, n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
  spec = CONFIGS[name]
  B, T = spec["batch"], spec["block_size"]
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    start = rng.integers(0, VOCAB, (B, 1))
    seq = (start + np.arange(T + 1)) % VOCAB
    seq = np.where(rng.random(seq.shape) < 0.1, rng.integers(0, VOCAB, seq.shape), seq).astype(np.int32)
    out.append({"inputs": seq[:, :-1], "targets": seq[:, 1:]})
  return out
