"""AdamW with a learning-rate schedule, global-norm clipping (Loshchilov & Hutter 2019).

Schedules: linear warmup then cosine decay or a constant, or the Transformer's inverse
square root (Vaswani et al. 2017, sec 5.3), with which the paper uses Adam betas (0.9, 0.98)
and eps 1e-9 (set them in the experiment's OptimConfig).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from research.config import ConfigError, OptimConfig


def inverse_sqrt(scale: float, d_model: int, warmup_steps: int) -> optax.Schedule:
  """scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (Vaswani et al. 2017, eq. 3):
  linear warmup to a peak at step = warmup, then decay as 1/sqrt(step). The paper's step_num
  counts from 1; optax counts updates from 0, so update k uses step k + 1."""
  def lr(count):
    step = jnp.asarray(count, jnp.float32) + 1.0
    return scale * d_model ** -0.5 * jnp.minimum(step ** -0.5, step * warmup_steps ** -1.5)

  return lr


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  if cfg.schedule == "inverse_sqrt":
    if cfg.d_model <= 0 or cfg.warmup_steps <= 0:
      raise ConfigError(f"optim.schedule='inverse_sqrt' needs optim.d_model > 0 (the task fills it from "
                        f"model.n_embd) and optim.warmup_steps > 0 (the paper's 4000), got {cfg.d_model} "
                        f"and {cfg.warmup_steps}")
    return inverse_sqrt(cfg.lr, cfg.d_model, cfg.warmup_steps)
  warmup = min(cfg.warmup_steps, total_steps)
  if cfg.schedule == "constant":
    return optax.linear_schedule(0.0, cfg.lr, warmup) if warmup else optax.constant_schedule(cfg.lr)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)


def _decay_mask(params):
  # Decay matrices (weights, embeddings), not vectors (biases, LayerNorm scales).
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  adamw = optax.adamw(schedule(cfg, total_steps), b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=_decay_mask)
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw) if cfg.grad_clip > 0 else adamw
