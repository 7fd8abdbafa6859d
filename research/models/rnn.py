"""Recurrent networks: Elman RNN and LSTM cells, stacked layers scanned over time, and an RNN LM.

The cells:
- Elman (1990): h_t = tanh(W_ih x_t + W_hh h_{t-1} + b).
- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), in
  PyTorch's gate order i, f, g, o so weights copy across one to one:
    i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o)   where z = W_ih x_t + W_hh h_{t-1} + b
    c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

A layer runs in two parts, as cuDNN does: the input projection W_ih x_t of every time step
is one large matmul over the whole sequence, and only the recurrent part is a `lax.scan`
over time (no Python loop over steps, so the jitted program is one loop body, not T copies).
A `mask` [B, T] makes a layer padding-aware: at a padded step the carry is held and the
output is zero, so a padded sequence ends in the same state as the same sequence unpadded,
in either direction.

`RNNLM` (Mikolov et al. 2010; Zaremba et al. 2014) is embedding -> stacked cells -> a
linear head, with dropout on the non-recurrent connections only (Zaremba et al. 2014). It
maps tokens [B, T] -> logits [B, T, V] like GPT, so it trains with `objectives/lm.py`
unchanged and `lineage sample` decodes it: its "KV cache" is the carried hidden state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import one_of, positive, probability
from research.models.layers import Dense, Embed

Carry = tuple[jax.Array, ...]  # (h,) for Elman, (h, c) for the LSTM; each [B, H]


@dataclass
class Config:
  name: str = "rnn"
  cell: str = "elman"  # "elman" | "lstm"
  vocab_size: int = 0  # 0 = the tokenizer's vocabulary size
  block_size: int = 128  # length of a training block (the LM data pipeline's unit)
  n_layer: int = 2
  n_embd: int = 256  # token embedding width
  n_hidden: int = 256  # units per layer
  dropout: float = 0.0  # on embeddings, between layers and before the head (not recurrent)

  def validate(self):
    one_of("model.cell", self.cell, tuple(CELLS))
    positive("model", self, "block_size", "n_layer", "n_embd", "n_hidden")
    probability("model.dropout", self.dropout)


def flat_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., D] @ w [D, N] as one 2-D matmul. XLA:CPU runs the backward of a 3-D x @ w (a
  weight gradient contracting two axes) ~1.5x slower than the same matmul on [B*T, D]."""
  return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def _uniform(scale: float):
  # PyTorch's nn.RNN / nn.LSTM init, U(-1/sqrt(H), 1/sqrt(H)): keeps tanh/sigmoid unsaturated.
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -scale, scale)


class Cell(nnx.Module):
  """One recurrent layer's weights: W_ih [D, G*H], W_hh [H, G*H], b [G*H] (G gates)."""

  gates = 1

  def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.hidden, self.dtype = hidden, dtype
    init = _uniform(1.0 / math.sqrt(hidden))
    width = self.gates * hidden
    self.w_ih = nnx.Param(init(rngs.params(), (d_in, width), jnp.float32), out_sharding=("embed", "mlp"))
    self.w_hh = nnx.Param(init(rngs.params(), (hidden, width), jnp.float32), out_sharding=(None, "mlp"))
    self.bias = nnx.Param(self.initial_bias(init(rngs.params(), (width,), jnp.float32)), out_sharding=("mlp",))

  def initial_bias(self, b: jax.Array) -> jax.Array:
    return b

  def input_projection(self, x: jax.Array) -> jax.Array:
    """W_ih x + b for all time steps at once: [..., D] -> [..., G*H]."""
    return flat_matmul(x.astype(self.dtype), self.w_ih[...].astype(self.dtype)) + self.bias[...].astype(self.dtype)

  def zero_carry(self, batch: int) -> Carry:
    raise NotImplementedError

  def step(self, w_hh: jax.Array, carry: Carry, gx: jax.Array) -> tuple[Carry, jax.Array]:
    """One time step given the precomputed input projection gx [B, G*H] -> (carry, h_t)."""
    raise NotImplementedError


class ElmanCell(Cell):
  """Elman (1990), eq. h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)."""

  gates = 1

  def zero_carry(self, batch: int) -> Carry:
    return (jnp.zeros((batch, self.hidden), self.dtype),)

  def step(self, w_hh, carry, gx):
    h = jnp.tanh(gx + carry[0] @ w_hh)
    return (h,), h


class LSTMCell(Cell):
  """Hochreiter & Schmidhuber (1997) with a forget gate (Gers et al. 2000); gate order i, f, g, o."""

  gates = 4

  def initial_bias(self, b):
    # Forget-gate bias +1 (Gers et al. 2000; Jozefowicz et al. 2015): remember by default, so
    # gradients reach far back early in training.
    h = self.hidden
    return b.at[h:2 * h].add(1.0)

  def zero_carry(self, batch: int) -> Carry:
    zeros = jnp.zeros((batch, self.hidden), self.dtype)
    return (zeros, zeros)

  def step(self, w_hh, carry, gx):
    h, c = carry
    i, f, g, o = jnp.split(lstm_gates(gx + h @ w_hh), 4, axis=-1)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), h


def _is_g_column(width: int) -> jax.Array:
  h = width // 4
  return (jnp.arange(width) >= 2 * h) & (jnp.arange(width) < 3 * h)


def lstm_gates(z: jax.Array) -> jax.Array:
  """[σ(z_i), σ(z_f), tanh(z_g), σ(z_o)] as one tanh over the whole [B, 4H] array, using
  σ(x) = (1 + tanh(x/2)) / 2. On XLA:CPU this is ~2x faster per time step than four sliced
  activations, and the recurrent step is the LSTM's bottleneck."""
  is_g = _is_g_column(z.shape[-1])
  t = jnp.tanh(z * jnp.where(is_g, 1.0, 0.5).astype(z.dtype))
  return jnp.where(is_g, t, 0.5 * t + 0.5)


CELLS = {"elman": ElmanCell, "lstm": LSTMCell}


def scan_cell(cell: Cell, gx: jax.Array, carry: Carry, mask: jax.Array | None = None,
              reverse: bool = False, fused: bool = True) -> tuple[Carry, jax.Array]:
  """Runs `cell` over time. gx [T, B, G*H] time-major, mask [T, B] (1 = real token) or None.

  Returns the final carry (the state after each sequence's last real token) and the
  outputs [T, B, H], zero at padded steps. An LSTM runs `lstm_recurrence` (hand-written
  backward pass) unless `fused=False`, which differentiates this plain scan instead.
  """
  w_hh = cell.w_hh[...].astype(cell.dtype)
  if fused and isinstance(cell, LSTMCell):
    return lstm_recurrence(w_hh, gx, carry, mask, reverse)

  def body(carry, inputs):
    g_t, m_t = inputs
    new, h = cell.step(w_hh, carry, g_t)
    if m_t is not None:  # hold the state through padding
      keep = m_t[:, None]
      new = tuple(jnp.where(keep, n, old) for n, old in zip(new, carry))
      h = jnp.where(keep, h, jnp.zeros_like(h))
    return new, h

  return jax.lax.scan(body, carry, (gx, mask), reverse=reverse)


# ------------------------------------------------------------- LSTM with a hand-written backward
#
# Differentiating the scan above makes the backward loop accumulate dW_hh += h_{t-1}ᵀ dz_t one
# step at a time, a small matmul plus a read-modify-write of W_hh's gradient per step. Here the
# backward loop only carries dh, dc and emits dz_t; dW_hh is then one [H, T·B] x [T·B, 4H]
# matmul after the loop, and dz (= the gradient of the input projection) flows into W_ih's
# single large matmul, as in cuDNN's RNN backward. The formulas are the chain rule of the cell:
#   dc_t = dc_{t+1}·f_{t+1} + dh_t·o_t·(1 - tanh²c_t)
#   dz_t = [dc·g·i(1-i), dc·c_{t-1}·f(1-f), dc·i·(1-g²), dh·tanh(c)·o(1-o)],  dh_{t-1} = dz_t W_hhᵀ
# With a mask, a padded step copies the state through: its gradient passes straight back.
# The forward saves each gate and tanh(c_t) as its own [T, B, H] array, so the backward loop
# has no transcendental and reads whole arrays: slicing the gates out of one [T, B, 4H] array
# inside the loop made XLA:CPU's fusions ~3x slower (54 against 19 us a step in isolation), and
# the LSTM LM's train step ran x1.06 faster with the split (interleaved A/B, Zen 4).
# Tried without gain on that CPU, where one layer's forward + backward still takes ~1.25x
# torch's oneDNN RNN: scan unroll 2 and 4; fewer per-step outputs; the bias added inside the
# loop (+1%, in the noise); dz built with selects over a [B, 4, H] view or with pads instead of the
# concatenation (x0.81, x0.88); the loop's dz·W_hhᵀ contracting W_hh's minor axis (x0.97);
# both layers in one loop body, layer 1 a step behind (a wavefront: +3% forward, because
# XLA:CPU runs the independent small ops of a loop body one at a time); XNNPACK or oneDNN for
# the dots (XLA flags: level).


def _lstm_forward(w_hh, gx, h0, c0, mask):
  def body(carry, inputs):
    h, c = carry
    g_t, m_t = inputs
    i, f, g, o = jnp.split(lstm_gates(g_t + h @ w_hh), 4, axis=-1)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    keep = m_t[:, None]
    h_next, c_next = jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)
    return (h_next, c_next), (jnp.where(keep, h_new, 0), (i, f, g, o, tanh_c, h, c))

  (h, c), (out, saved) = jax.lax.scan(body, (h0, c0), (gx, mask))
  return (h, c), out, saved


@jax.custom_vjp
def _lstm_scan(w_hh, gx, h0, c0, mask):
  (h, c), out, _ = _lstm_forward(w_hh, gx, h0, c0, mask)
  return (h, c), out


def _lstm_scan_fwd(w_hh, gx, h0, c0, mask):
  (h, c), out, saved = _lstm_forward(w_hh, gx, h0, c0, mask)
  return ((h, c), out), (w_hh, mask, saved)


def _lstm_scan_bwd(residuals, cotangents):
  w_hh, mask, (i, f, g, o, tanh_c, h_prev, c_prev) = residuals
  (d_h, d_c), d_out = cotangents
  w_t = w_hh.T

  def body(carry, inputs):
    dh_next, dc_next = carry  # gradients w.r.t. the state leaving this step
    d_out_t, (i_t, f_t, g_t, o_t, tanh_c_t, c_prev_t), m_t = inputs
    keep = m_t[:, None]
    dh = jnp.where(keep, d_out_t + dh_next, 0)
    dc = jnp.where(keep, dc_next, 0) + dh * o_t * (1 - tanh_c_t * tanh_c_t)
    dz = jnp.concatenate([dc * g_t * i_t * (1 - i_t), dc * c_prev_t * f_t * (1 - f_t),
                          dc * i_t * (1 - g_t * g_t), dh * tanh_c_t * o_t * (1 - o_t)], -1)
    dh_prev = dz @ w_t + jnp.where(keep, 0, dh_next)
    dc_prev = dc * f_t + jnp.where(keep, 0, dc_next)
    return (dh_prev, dc_prev), dz

  (dh0, dc0), dz = jax.lax.scan(body, (d_h, d_c), (d_out, (i, f, g, o, tanh_c, c_prev), mask), reverse=True)
  d_w_hh = h_prev.reshape(-1, h_prev.shape[-1]).T @ dz.reshape(-1, dz.shape[-1])
  return d_w_hh, dz, dh0, dc0, None


_lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


def lstm_recurrence(w_hh: jax.Array, gx: jax.Array, carry: Carry, mask: jax.Array | None = None,
                    reverse: bool = False) -> tuple[Carry, jax.Array]:
  """The LSTM part of `scan_cell` (same arguments and results), with the backward pass above."""
  if mask is None:
    mask = jnp.ones(gx.shape[:2], bool)
  if reverse:  # run the flipped sequence forwards; padding is then at the start, and is held
    gx, mask = gx[::-1], mask[::-1]
  final, out = _lstm_scan(w_hh, gx, carry[0], carry[1], mask)
  return final, out[::-1] if reverse else out


class StackedRNN(nnx.Module):
  """`n_layer` cells, each scanned over the whole sequence before the next (time-major inside).

  With `bidirectional`, each layer has a forward and a backward cell of `hidden // 2` units
  whose outputs are concatenated (Schuster & Paliwal 1997), so every layer outputs `hidden`.
  """

  def __init__(self, cell: str, d_in: int, hidden: int, n_layer: int, *, dropout: float = 0.0,
               bidirectional: bool = False, rngs: nnx.Rngs, dtype=jnp.float32):
    if cell not in CELLS:
      raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if bidirectional and hidden % 2:
      raise ValueError(f"a bidirectional layer splits hidden={hidden} in two halves: use an even size")
    cls, width = CELLS[cell], hidden // 2 if bidirectional else hidden
    self.bidirectional, self.hidden = bidirectional, hidden
    dims = [d_in] + [hidden] * (n_layer - 1)
    self.forward = nnx.List([cls(d, width, rngs=rngs, dtype=dtype) for d in dims])
    self.backward = nnx.List([cls(d, width, rngs=rngs, dtype=dtype) for d in dims]) if bidirectional else None
    self.dropout = nnx.Dropout(dropout)

  def zero_carries(self, batch: int) -> list[Carry]:
    return [cell.zero_carry(batch) for cell in self.forward]

  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None, initial: list[Carry] | None = None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, list[Carry]]:
    """x [B, T, D] -> (outputs [B, T, hidden], final carry of each layer).

    A bidirectional layer's final carry is its forward and backward carries concatenated,
    each component [B, hidden]: what a unidirectional decoder of `hidden` units starts from.
    """
    B = x.shape[0]
    xs = x.swapaxes(0, 1)  # [T, B, D]: the scan runs over the leading axis
    mask_t = None if mask is None else mask.swapaxes(0, 1).astype(bool)
    finals = []
    for layer, cell in enumerate(self.forward):
      if layer:
        xs = self.dropout(xs, deterministic=deterministic, rngs=rngs)
      start = initial[layer] if initial is not None else cell.zero_carry(B)
      carry, out = scan_cell(cell, cell.input_projection(xs), start, mask_t)
      if self.bidirectional:
        back = self.backward[layer]
        carry_b, out_b = scan_cell(back, back.input_projection(xs), back.zero_carry(B), mask_t, reverse=True)
        carry = tuple(jnp.concatenate([f, b], -1) for f, b in zip(carry, carry_b))
        out = jnp.concatenate([out, out_b], -1)
      finals.append(carry)
      xs = out
    return xs.swapaxes(0, 1), finals

  def step(self, x: jax.Array, carries: list[Carry], *, deterministic: bool = True,
           rngs: nnx.Rngs | None = None) -> tuple[jax.Array, list[Carry]]:
    """One time step of a unidirectional stack (decoding): x [B, D] -> (h [B, hidden], carries)."""
    new = []
    for layer, (cell, carry) in enumerate(zip(self.forward, carries)):
      if layer:
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)
      carry, x = cell.step(cell.w_hh[...].astype(cell.dtype), carry, cell.input_projection(x))
      new.append(carry)
    return x, new


class RecurrentCache(nnx.Variable):
  """Each layer's carried state between decoding calls, [n_layer, B, H]; decoding only."""


class RNNLM(nnx.Module):
  """tokens [B, T] -> logits [B, T, V]: embedding, stacked Elman or LSTM layers, a linear head."""

  def __init__(self, cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
    assert cfg.vocab_size > 0, "an RNN LM needs vocab_size (set from the tokenizer)"
    self.cfg = cfg
    self.embed = Embed(cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), rngs=rngs, dtype=dtype)
    self.rnn = StackedRNN(cfg.cell, cfg.n_embd, cfg.n_hidden, cfg.n_layer, dropout=cfg.dropout,
                          rngs=rngs, dtype=dtype)
    self.drop = nnx.Dropout(cfg.dropout)
    self.head = Dense(cfg.n_hidden, cfg.vocab_size, ("embed", "vocab"), bias=True, rngs=rngs,
                      std=1.0 / math.sqrt(cfg.n_hidden), dtype=dtype)
    self.cache_h: RecurrentCache | None = nnx.data(None)
    self.cache_c: RecurrentCache | None = nnx.data(None)

  def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None, mask: jax.Array | None = None,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    """`positions` is accepted for the decoding interface and ignored: the state knows where it is."""
    x = self.drop(self.embed(tokens), deterministic=deterministic, rngs=rngs)
    initial = None
    if self.cache_h is not None:
      initial = [(h, c)[:len(carry)] for h, c, carry in
                 zip(self.cache_h[...], self.cache_c[...], self.rnn.zero_carries(tokens.shape[0]))]
    h, finals = self.rnn(x, mask=mask, initial=initial, deterministic=deterministic, rngs=rngs)
    if self.cache_h is not None:
      self.cache_h[...] = jnp.stack([f[0] for f in finals]).astype(self.cache_h.dtype)
      self.cache_c[...] = jnp.stack([f[-1] for f in finals]).astype(self.cache_c.dtype)
    h = self.drop(h, deterministic=deterministic, rngs=rngs)
    return self.head(h.reshape(-1, h.shape[-1])).reshape(*h.shape[:-1], -1).astype(jnp.float32)

  def init_cache(self, batch: int, max_len: int | None = None, dtype=jnp.float32):
    shape = (self.cfg.n_layer, batch, self.cfg.n_hidden)
    self.cache_h, self.cache_c = RecurrentCache(jnp.zeros(shape, dtype)), RecurrentCache(jnp.zeros(shape, dtype))

  def clear_cache(self):
    self.cache_h = self.cache_c = None


def train_flops(cfg: Config, batch: dict) -> float:
  """Analytic FLOPs of one LM train step on `batch` (forward + backward = 3x forward matmuls).

  XLA's cost analysis counts a `lax.scan` body once, not once per step, so the trainer's
  compiled count misses (T - 1) recurrent steps; tests check this count against XLA on a
  fully unrolled small config. Only matmuls are counted, as for MFU conventionally.
  """
  gates = CELLS[cfg.cell].gates
  per_token = 0
  for layer in range(cfg.n_layer):
    d_in = cfg.n_embd if layer == 0 else cfg.n_hidden
    per_token += 2 * (d_in + cfg.n_hidden) * gates * cfg.n_hidden
  per_token += 2 * cfg.n_hidden * cfg.vocab_size
  return 3.0 * per_token * math.prod(batch["inputs"].shape)


def build(cfg: Config, *, rngs: nnx.Rngs, dtype=jnp.float32) -> RNNLM:
  return RNNLM(cfg, rngs=rngs, dtype=dtype)
