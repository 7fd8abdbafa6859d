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


# ---------------------------------------------------------- encoder-decoder: greedy and beam
#
# Both take a model-agnostic `step_fn(state, token [N]) -> (logits [N, V], state)`, where
# `state` is a pytree whose leaves all lead with the batch axis N (decoder carries, encoder
# memory, a KV cache, ...), so the LSTM Seq2Seq and an encoder-decoder Transformer share them.
# Outputs exclude the leading bos and hold pad (0) after eos. Pure JAX: call them under jit.


def greedy_search(step_fn, state, *, batch: int, bos_id: int, eos_id: int, pad_id: int = 0,
                  max_len: int) -> jax.Array:
  """The argmax token at every step until eos: tokens [batch, max_len]."""
  def body(carry, _):
    token, done, state = carry
    logits, state = step_fn(state, token)
    token = jnp.where(done, pad_id, logits.argmax(-1).astype(jnp.int32))
    return (token, done | (token == eos_id), state), token

  start = (jnp.full((batch,), bos_id, jnp.int32), jnp.zeros((batch,), bool), state)
  _, tokens = jax.lax.scan(body, start, None, length=max_len)
  return tokens.T


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's length normalisation lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14)."""
  return ((5.0 + length) / 6.0) ** alpha


def beam_search(step_fn, state, *, batch: int, bos_id: int, eos_id: int, pad_id: int = 0, max_len: int,
                beam_size: int = 4, alpha: float = 0.6) -> tuple[jax.Array, jax.Array]:
  """Beam search with length normalisation: (best tokens [batch, max_len], their scores [batch]).

  Hypotheses are ranked by log p(Y) / lp(|Y|) at every step. A finished hypothesis stays in
  the beam, extended by pad at no cost and with its length frozen, so it competes with the
  live ones on equal terms; with beam_size=1 this is exactly `greedy_search`.
  """
  K = beam_size
  # Every leaf of the state [batch, ...] -> [batch * K, ...]: beam k of row b is row b * K + k.
  state = jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), state)
  neg = jnp.float32(-1e9)

  def body(carry, t):
    token, done, logp, length, tokens, state = carry  # [B*K] [B*K] [B, K] [B, K] [B, K, L]
    logits, state = step_fn(state, token.reshape(-1))
    V = logits.shape[-1]
    step_logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1).reshape(batch, K, V)
    # A finished hypothesis has exactly one continuation, pad, which costs nothing.
    finished_row = jnp.full((V,), neg).at[pad_id].set(0.0)
    step_logp = jnp.where(done.reshape(batch, K, 1), finished_row, step_logp)
    total = logp[..., None] + step_logp  # [B, K, V]
    new_length = jnp.where(done.reshape(batch, K), length, length + 1)[..., None]
    ranked = total / length_penalty(new_length.astype(jnp.float32), alpha)
    _, flat = jax.lax.top_k(ranked.reshape(batch, K * V), K)  # [B, K]
    parent, word = flat // V, (flat % V).astype(jnp.int32)
    pick = lambda x: jnp.take_along_axis(x, parent, axis=1)
    logp = jnp.take_along_axis(total.reshape(batch, K * V), flat, axis=1)
    length = pick(jnp.broadcast_to(new_length[..., 0], (batch, K)))
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(word)
    done = pick(done.reshape(batch, K)) | (word == eos_id)
    rows = (jnp.arange(batch)[:, None] * K + parent).reshape(-1)
    state = jax.tree.map(lambda x: x[rows], state)
    return (word.reshape(-1), done.reshape(-1), logp, length, tokens, state), None

  # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
  logp = jnp.tile(jnp.array([0.0] + [-1e9] * (K - 1), jnp.float32), (batch, 1))
  start = (jnp.full((batch * K,), bos_id, jnp.int32), jnp.zeros((batch * K,), bool), logp,
           jnp.zeros((batch, K), jnp.int32), jnp.full((batch, K, max_len), pad_id, jnp.int32), state)
  (_, _, logp, length, tokens, _), _ = jax.lax.scan(body, start, jnp.arange(max_len))
  score = logp / length_penalty(jnp.maximum(length, 1).astype(jnp.float32), alpha)
  best = score.argmax(-1)
  return tokens[jnp.arange(batch), best], score[jnp.arange(batch), best]
