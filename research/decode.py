"""Decoding for every model in lineage: greedy, sampling (temperature/top-k/top-p), beam search.

Everything here runs over one step function over explicit state,

    step_fn(state, token [N]) -> (logits [N, V], state)

where every leaf of `state` with a shape leads with the batch axis N (decoder carries, encoder
memory, a KV cache) and scalar leaves (a position counter) are shared by all rows. Explicit
state is what lets beam search reorder hypotheses: it gathers the rows of every leaf. (Greedy
and sampled decoding never reorder, so they take any state.)

Two kinds of model supply a step function:

- An encoder-decoder (the LSTM Seq2Seq, the Transformer) implements `EncoderDecoder`;
  `translate` decodes it under one jit per shape and `scheduled_sampling_logits` trains it on
  its own predictions.
- A decoder-only LM with a KV cache (`init_cache` / `clear_cache`, called with `positions`)
  goes through `lm_decoder`: the prompt is prefilled into the cache in one call, then
  `generate` steps one token at a time, prefill and loop in one compiled program;
  `generate_stream` yields the same tokens a chunk of steps at a time, as they are drawn.

Outputs exclude the start token and hold pad after eos.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from research.tokenizers import BOS_ID, EOS_ID, PAD_ID

State = Any  # a pytree; leaves with a shape lead with the batch axis
StepFn = Callable[[State, jax.Array], tuple[jax.Array, State]]
NEG = -1e9  # log-probability of an excluded choice; finite, so sums never turn into NaN


class EncoderDecoder(Protocol):
  """What `translate`, `scheduled_sampling_logits` and `lineage bleu` need of a model.

  `decode_start(encode(src))` followed by `decode_step` on bos + y_<t must give the same
  logits as the model's teacher-forced pass `model(src, tgt_in)`. For `lineage attention` a
  model may also offer `cross_attention(src, tgt_in) -> [B, layers, heads, T, S]`.
  """

  max_src_len: int  # sources are padded (or cut) to this many tokens
  max_tgt_len: int  # the longest translation decoded, eos included, unless told otherwise

  def encode(self, src: jax.Array) -> State:
    """src [B, S] (pad = 0) -> memory: whatever the decoder reads of the source."""

  def decode_start(self, memory: State) -> State:
    """The decoder state before the first token (bos) is fed."""

  def decode_step(self, state: State, token: jax.Array) -> tuple[jax.Array, State]:
    """token [N] -> (logits [N, V] float32 for the next token, the next state)."""


# ------------------------------------------------------------------------ choosing a token


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


# -------------------------------------------------------------- greedy and sampled decoding


def _feed_back_steps(step_fn: StepFn, carry, steps: jax.Array, choose, *, eos_id: int | None, pad_id: int,
                     row_limit: jax.Array | None):
  """The loop of `_feed_back` over step numbers `steps`: (carry (token, done, state), tokens [N, len(steps)]).

  Split from `_feed_back` so a stream can run the loop a chunk of steps at a time.
  """
  def body(carry, t):
    token, done, state = carry
    logits, state = step_fn(state, token)
    token = choose(logits, t).astype(jnp.int32)
    if row_limit is not None:
      token = jnp.where(t + 1 >= row_limit, eos_id, token)
    if eos_id is not None:
      token = jnp.where(done, pad_id, token)
      done = done | (token == eos_id)
    return (token, done, state), token

  carry, tokens = jax.lax.scan(body, carry, steps)
  return carry, tokens.T


def _feed_back(step_fn: StepFn, state: State, start: jax.Array, choose, *, max_len: int,
               eos_id: int | None, pad_id: int, row_limit: jax.Array | None) -> jax.Array:
  """Feeds each chosen token back as the next input: tokens [N, max_len].

  choose(logits [N, V], t) -> token [N]. A row stops at eos (then pad); with `row_limit` [N],
  eos is forced as a row's token number row_limit (counting from 1) if it has not ended yet.
  """
  carry = (start.astype(jnp.int32), jnp.zeros(start.shape, bool), state)
  return _feed_back_steps(step_fn, carry, jnp.arange(max_len), choose, eos_id=eos_id, pad_id=pad_id,
                          row_limit=row_limit)[1]


def greedy_search(step_fn: StepFn, state: State, start: jax.Array, *, max_len: int,
                  eos_id: int | None = EOS_ID, pad_id: int = PAD_ID,
                  row_limit: jax.Array | None = None) -> jax.Array:
  """The argmax token at every step, from the start tokens [N]: tokens [N, max_len]."""
  return _feed_back(step_fn, state, start, lambda logits, t: logits.argmax(-1), max_len=max_len,
                    eos_id=eos_id, pad_id=pad_id, row_limit=row_limit)


def sample(step_fn: StepFn, state: State, start: jax.Array, rng: jax.Array, cfg: SamplingConfig, *,
           eos_id: int | None = None, pad_id: int = PAD_ID, row_limit: jax.Array | None = None) -> jax.Array:
  """cfg.max_new_tokens tokens drawn one at a time: [N, max_new_tokens]. Step t draws with
  fold_in(rng, t), so the result is a function of the seed alone."""
  return _feed_back(step_fn, state, start, _sampler(rng, cfg), max_len=cfg.max_new_tokens, eos_id=eos_id,
                    pad_id=pad_id, row_limit=row_limit)


def _sampler(rng: jax.Array, cfg: SamplingConfig):
  """choose(logits, t) of `sample`: step t draws with fold_in(rng, t)."""
  return lambda logits, t: next_token(logits, jax.random.fold_in(rng, t), cfg)


# ---------------------------------------------------------------------------- beam search


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's length normalisation lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14)."""
  return ((5.0 + length) / 6.0) ** alpha


def _rows(state: State, index: jax.Array) -> State:
  """The rows `index` of every batch-leading leaf; scalars are shared and stay."""
  return jax.tree.map(lambda x: x[index] if jnp.ndim(x) else x, state)


def beam_search(step_fn: StepFn, state: State, start: jax.Array, *, max_len: int, beam_size: int = 4,
                alpha: float = 0.6, eos_id: int = EOS_ID, pad_id: int = PAD_ID,
                row_limit: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Beam search with length normalisation: (best tokens [B, max_len], their scores [B]).

  Hypotheses are ranked by log p(Y) / lp(|Y|) at every step. A finished hypothesis stays in
  the beam, extended by pad at no cost and with its length frozen, so it competes with the
  live ones on equal terms; with beam_size=1 this is exactly `greedy_search`. At a row's
  `row_limit` a live hypothesis may only end: every token but eos is excluded (eos keeps its
  own log-probability).
  """
  B, K = start.shape[0], beam_size
  # Beam k of row b is row b * K + k of every batch-leading leaf.
  state = _rows(state, jnp.repeat(jnp.arange(B), K))

  def body(carry, t):
    token, done, logp, length, tokens, state = carry  # [B*K] [B*K] [B, K] [B, K] [B, K, L]
    logits, state = step_fn(state, token.reshape(-1))
    V = logits.shape[-1]
    step_logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1).reshape(B, K, V)
    if row_limit is not None:
      at_limit = (t + 1 >= row_limit)[:, None, None]
      step_logp = jnp.where(at_limit & (jnp.arange(V) != eos_id), NEG, step_logp)
    # A finished hypothesis has exactly one continuation, pad, which costs nothing.
    finished_row = jnp.full((V,), NEG).at[pad_id].set(0.0)
    step_logp = jnp.where(done.reshape(B, K, 1), finished_row, step_logp)
    total = logp[..., None] + step_logp  # [B, K, V]
    new_length = jnp.where(done.reshape(B, K), length, length + 1)
    ranked = total / length_penalty(new_length[..., None].astype(jnp.float32), alpha)
    _, flat = jax.lax.top_k(ranked.reshape(B, K * V), K)  # [B, K]
    parent, word = flat // V, (flat % V).astype(jnp.int32)
    pick = lambda x: jnp.take_along_axis(x, parent, axis=1)
    logp = jnp.take_along_axis(total.reshape(B, K * V), flat, axis=1)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(word)
    done = pick(done.reshape(B, K)) | (word == eos_id)
    state = _rows(state, (jnp.arange(B)[:, None] * K + parent).reshape(-1))
    return (word.reshape(-1), done.reshape(-1), logp, pick(new_length), tokens, state), None

  # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
  logp = jnp.tile(jnp.array([0.0] + [NEG] * (K - 1), jnp.float32), (B, 1))
  carry = (jnp.repeat(start.astype(jnp.int32), K), jnp.zeros((B * K,), bool), logp,
           jnp.zeros((B, K), jnp.int32), jnp.full((B, K, max_len), pad_id, jnp.int32), state)
  (_, _, logp, length, tokens, _), _ = jax.lax.scan(body, carry, jnp.arange(max_len))
  score = logp / length_penalty(jnp.maximum(length, 1).astype(jnp.float32), alpha)
  best = score.argmax(-1)
  return tokens[jnp.arange(B), best], score[jnp.arange(B), best]


# ---------------------------------------------------------------------- encoder-decoder


def search(step_fn: StepFn, state: State, start: jax.Array, *, beam_size: int, max_len: int,
           alpha: float = 0.6, row_limit: jax.Array | None = None) -> jax.Array:
  """Greedy (beam_size=1) or beam search, with eos and pad of the shared tokenizers."""
  if beam_size == 1:
    return greedy_search(step_fn, state, start, max_len=max_len, row_limit=row_limit)
  return beam_search(step_fn, state, start, max_len=max_len, beam_size=beam_size, alpha=alpha,
                     row_limit=row_limit)[0]


# nnx.jit treats the model's graph definition as static, as jax.jit would with
# static_argnames, without needing it hashable (a model may keep its Config dataclass).
@functools.partial(nnx.jit, static_argnames=("beam_size", "max_len", "alpha"))
def _translate(model, src, row_limit, *, beam_size: int, max_len: int, alpha: float):
  state = model.decode_start(model.encode(src))
  start = jnp.full((src.shape[0],), BOS_ID, jnp.int32)
  return search(model.decode_step, state, start, beam_size=beam_size, max_len=max_len, alpha=alpha,
                row_limit=row_limit)


def translate(model: EncoderDecoder, src: jax.Array, *, beam_size: int = 1, max_len: int | None = None,
              alpha: float = 0.6, row_limit: jax.Array | None = None) -> jax.Array:
  """src [B, S] -> target tokens [B, max_len] (no bos; eos, then pad), greedy or beam search.

  One compiled program per shape and setting. `row_limit` [B] caps each row's length, eos
  included: the Transformer decodes up to source length + 50 (Vaswani et al. 2017, §6.1)
  with max_len = max_src_len + 50.
  """
  if row_limit is not None:
    row_limit = jnp.asarray(row_limit, jnp.int32)
  return _translate(model, jnp.asarray(src, jnp.int32), row_limit, beam_size=beam_size,
                    max_len=max_len or model.max_tgt_len, alpha=alpha)


def scheduled_sampling_logits(model: EncoderDecoder, src: jax.Array, tgt_in: jax.Array, ratio: float,
                              rng: jax.Array) -> jax.Array:
  """Scheduled sampling (Bengio et al. 2015): logits [B, T, V] of decoding bos + target step by
  step, where each input after bos is the model's previous argmax with probability `ratio`,
  else the gold token. No gradient flows through the choice. With ratio 0 these are the
  teacher-forced logits. (Dropout is not applied on this path.)"""
  coins = jax.random.bernoulli(rng, ratio, tgt_in.shape).T.at[0].set(False)  # [T, B]; bos is always fed

  def body(carry, inputs):
    state, previous = carry
    gold, coin = inputs
    logits, state = model.decode_step(state, jnp.where(coin, previous, gold))
    return (state, jax.lax.stop_gradient(logits.argmax(-1)).astype(tgt_in.dtype)), logits

  start = (model.decode_start(model.encode(src)), tgt_in[:, 0])
  _, logits = jax.lax.scan(body, start, (tgt_in.T, coins))
  return logits.swapaxes(0, 1)


# ------------------------------------------------------------------------- decoder-only LM


def lm_decoder(model: nnx.Module, prompt: jax.Array) -> tuple[StepFn, State, jax.Array]:
  """A cached LM (after `init_cache`) and a prompt [B, P] -> (step_fn, state, start tokens).

  All but the last prompt token are prefilled into the cache in one call; the last is the
  first input of the step function, so the search functions above serve LMs unchanged. The
  state is the model's cache variables and the next position. Call under jit. (GPT's KV cache
  leads with the batch, so beam search could reorder it; the RNN LM's [layers, B, H] could not.)
  """
  P = prompt.shape[1]
  _prefill(model, prompt)
  step_fn, cache = _cached_step(model)
  return step_fn, (cache, jnp.asarray(P - 1, jnp.int32)), prompt[:, -1]


def _prefill(model: nnx.Module, prompt: jax.Array) -> None:
  """Writes the keys and values of all but the last prompt token into the model's cache."""
  if prompt.shape[1] > 1:
    model(prompt[:, :-1], positions=jnp.arange(prompt.shape[1] - 1))


def _cached_step(model: nnx.Module) -> tuple[StepFn, State]:
  """(step_fn over (cache, position), the model's cache now): one token in, its logits out."""
  graphdef, params, cache = nnx.split(model, nnx.Param, ...)

  def step_fn(state, token):
    cache, position = state
    m = nnx.merge(graphdef, params, cache)
    logits = m(token[:, None], positions=position + jnp.arange(1))[:, 0]
    return logits, (nnx.split(m, nnx.Param, ...)[2], position + 1)

  return step_fn, cache


@functools.partial(nnx.jit, static_argnames=("cfg",))
def _generate(model, prompt, rng, *, cfg: SamplingConfig):
  step_fn, state, start = lm_decoder(model, prompt)
  return jnp.concatenate([prompt, sample(step_fn, state, start, rng, cfg)], axis=1)


def _check_lengths(model: nnx.Module, prompt, cfg: SamplingConfig, max_len: int | None) -> int:
  P, max_len = prompt.shape[1], max_len or model.cfg.block_size
  if P == 0:
    raise ValueError("generate needs at least one prompt token (e.g. bos or eos)")
  if P + cfg.max_new_tokens > max_len:
    raise ValueError(f"prompt ({P} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
                     f"model's context of {max_len} tokens")
  return max_len


def generate(model: nnx.Module, prompt: jax.Array, cfg: SamplingConfig, *, seed: int = 0,
             max_len: int | None = None) -> jax.Array:
  """prompt [B, P] int32 -> tokens [B, P + max_new_tokens]. Deterministic for a given seed;
  one compiled program (prefill and the decoding loop) per shape and SamplingConfig."""
  model.init_cache(prompt.shape[0], _check_lengths(model, prompt, cfg, max_len))
  try:
    return _generate(model, jnp.asarray(prompt, jnp.int32), jax.random.key(seed), cfg=cfg)
  finally:
    model.clear_cache()  # the model goes back to whole-sequence use


# A stream runs the same loop a chunk at a time: nnx.jit carries the model's KV cache from
# one call to the next (it writes the cache variables back into the model after each call).
_prefill_jit = nnx.jit(_prefill)


@functools.partial(nnx.jit, static_argnames=("cfg", "n"))
def _sample_chunk(model, carry, rng, t0, *, cfg: SamplingConfig, n: int):
  step_fn, cache = _cached_step(model)
  token, done, position = carry
  (token, done, (cache, position)), tokens = _feed_back_steps(
      step_fn, (token, done, (cache, position)), t0 + jnp.arange(n), _sampler(rng, cfg), eos_id=None,
      pad_id=PAD_ID, row_limit=None)
  nnx.update(model, cache)
  return tokens, (token, done, position)


def generate_stream(model: nnx.Module, prompt: jax.Array, cfg: SamplingConfig, *, seed: int = 0, chunk: int = 8,
                    max_len: int | None = None):
  """Yields the new tokens [B, n] of `generate` as they are drawn, `chunk` steps at a time.

  The same tokens as `generate(model, prompt, cfg, seed=seed)[:, P:]`: step t still draws with
  fold_in(key(seed), t). Compiled: the prefill, the chunk, and a shorter last chunk if any.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  model.init_cache(prompt.shape[0], _check_lengths(model, prompt, cfg, max_len))
  try:
    _prefill_jit(model, prompt)
    carry = (prompt[:, -1], jnp.zeros(prompt.shape[:1], bool), jnp.asarray(prompt.shape[1] - 1, jnp.int32))
    rng = jax.random.key(seed)
    for t0 in range(0, cfg.max_new_tokens, chunk):
      tokens, carry = _sample_chunk(model, carry, rng, jnp.asarray(t0, jnp.int32), cfg=cfg,
                                    n=min(chunk, cfg.max_new_tokens - t0))
      yield tokens
  finally:
    model.clear_cache()
