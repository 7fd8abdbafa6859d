"""Losses and metrics shared by the objectives: masked token cross-entropy, accuracy, perplexity."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None, *,
                        label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
  """Mean cross-entropy (nats) over the tokens where `mask` is true, and metrics.

  logits [..., V], targets [...] int, mask [...] (None = every token). With label smoothing
  (Szegedy et al. 2016) the loss is against (1 - eps) one-hot + eps / V; the metrics then
  also hold `nll`, the plain cross-entropy, which perplexity is computed from.
  Accuracy is "the target's logit is the largest": argmax == target but for exact ties, and
  a max-reduction is ~18x cheaper than argmax on XLA:CPU (~18 ms a step at V=4096).
  """
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = target_logit >= logits.max(-1)
  if label_smoothing:
    # -sum_v q_v log p_v with q = (1 - eps) onehot + eps / V  =  (1 - eps) nll + eps * mean_v(-log p_v),
    # and mean_v(-log p_v) = logsumexp - mean_v(logits) = nll + target_logit - mean_v(logits): no
    # second pass over [..., V] for a log-softmax, nor its backward (~2x faster at V=4000 on CPU).
    uniform = nll + target_logit - logits.mean(-1)
    loss = (1.0 - label_smoothing) * nll + label_smoothing * uniform
  else:
    loss = nll
  if mask is None:
    metrics = {"accuracy": correct.mean()}
    if label_smoothing:
      metrics["nll"] = nll.mean()
    return loss.mean(), metrics
  mask = mask.astype(jnp.float32)
  n = jnp.maximum(mask.sum(), 1.0)
  mean = lambda x: (x * mask).sum() / n
  metrics = {"accuracy": mean(correct)}
  if label_smoothing:
    metrics["nll"] = mean(nll)
  return mean(loss), metrics


def perplexity(metrics: dict) -> dict:
  """exp of the mean cross-entropy (the unsmoothed `nll` when there is one), not a mean of exps."""
  nll = metrics.get("nll", metrics.get("loss"))
  return {} if nll is None else {"perplexity": math.exp(min(nll, 50.0))}
