"""Generation from autoregressive models: greedy and sampling (temperature, top-k, top-p).

The model keeps keys and values of past positions in a KV cache (`model.init_cache`), so
each new token costs one position's forward pass, not the whole prefix's. The prompt is
fed in one call (prefill); then one jitted `lax.fori_loop` runs the remaining steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx


@dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 200
  temperature: float = 1.0  # 0 = greedy (argmax)
  top_k: int = 0  # keep the k most likely tokens (0 = all)
  top_p: float = 1.0  # keep the smallest set whose probability reaches p (Holtzman et al. 2020)


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Sets logits outside the top-k / top-p nucleus to -inf. logits [B, V]."""
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the mass strictly before it is < p: the most likely token always stays.
    before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def next_token(logits: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  if cfg.temperature == 0:
    return logits.argmax(-1)
  logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
  return jax.random.categorical(rng, logits, axis=-1)


def generate(model: nnx.Module, prompt: jax.Array, cfg: SamplingConfig, *, seed: int = 0,
             max_len: int | None = None) -> jax.Array:
  """prompt [B, P] int32 -> tokens [B, P + max_new_tokens]. Deterministic for a given seed."""
  B, P = prompt.shape
  max_len = max_len or model.cfg.block_size
  total = P + cfg.max_new_tokens
  if total > max_len:
    raise ValueError(f"prompt ({P} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
                     f"model's context of {max_len} tokens")
  model.init_cache(B, max_len)
  graphdef, state = nnx.split(model)
  rng = jax.random.key(seed)

  @jax.jit
  def run(state, prompt):
    m = nnx.merge(graphdef, state)
    logits = m(prompt, positions=jnp.arange(P))[:, -1]
    tokens = jnp.zeros((B, total), jnp.int32).at[:, :P].set(prompt)
    tokens = tokens.at[:, P].set(next_token(logits, jax.random.fold_in(rng, P), cfg))

    def body(t, carry):
      tokens, state = carry
      m = nnx.merge(graphdef, state)
      token = jax.lax.dynamic_slice_in_dim(tokens, t, 1, axis=1)
      logits = m(token, positions=t + jnp.arange(1))[:, -1]
      tokens = tokens.at[:, t + 1].set(next_token(logits, jax.random.fold_in(rng, t + 1), cfg))
      return tokens, nnx.state(m)

    tokens, _ = jax.lax.fori_loop(P, total - 1, body, (tokens, nnx.state(m)))
    return tokens

  tokens = run(state, prompt.astype(jnp.int32))
  model.clear_cache()  # the model goes back to whole-sequence use
  return tokens
