"""Seq2Seq: attention masks padding, decoding paths agree, a copy task is learned, scheduled sampling.

The searches themselves (beam 1 is greedy, beam vs brute force): test_decode.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research import decode
from research.models import seq2seq
from research.objectives import translation
from research.tokenizers import BOS_ID, EOS_ID, PAD_ID


def tiny(**kw) -> seq2seq.Config:
  return seq2seq.Config(**{"src_vocab_size": 17, "tgt_vocab_size": 17, "max_src_len": 8, "max_tgt_len": 9,
                           "n_layer": 2, "n_embd": 12, "n_hidden": 16, **kw})


SRC = np.array([[9, 10, 11, 12, 13, 14, 0, 0],
                [8, 9, 0, 0, 0, 0, 0, 0],
                [15, 14, 13, 12, 11, 10, 9, 8]], np.int32)
TGT_IN = np.array([[BOS_ID, 9, 10, 11, 12, 13, 14, 0, 0]] * 3, np.int32)


@pytest.mark.parametrize("kind,bidirectional", [("dot", False), ("scaled_dot", True), ("additive", True)])
def test_attention_weights_sum_to_one_and_ignore_padding(kind, bidirectional):
  model = seq2seq.build(tiny(attention=kind, bidirectional=bidirectional), rngs=nnx.Rngs(0))
  _, weights = model(jnp.asarray(SRC), jnp.asarray(TGT_IN), return_attention=True)
  weights = np.asarray(weights)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  padded = np.broadcast_to((SRC == PAD_ID)[:, None, :], weights.shape)
  assert np.all(weights[padded] == 0.0)
  # Each padded row attends exactly as its sentence does alone, without the padding.
  for b, n in ((1, 2),):
    _, alone = model(jnp.asarray(SRC[b:b + 1, :n]), jnp.asarray(TGT_IN[b:b + 1]), return_attention=True)
    np.testing.assert_allclose(weights[b, :, :n], alone[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["none", "additive"])
def test_step_by_step_decoding_equals_the_teacher_forced_pass(kind):
  model = seq2seq.build(tiny(attention=kind, bidirectional=True), rngs=nnx.Rngs(1))
  full = model(jnp.asarray(SRC), jnp.asarray(TGT_IN))
  state, steps = model.decode_start(model.encode(jnp.asarray(SRC))), []
  for t in range(TGT_IN.shape[1]):
    logits, state = model.decode_step(state, jnp.asarray(TGT_IN[:, t]))
    steps.append(logits)
  np.testing.assert_allclose(jnp.stack(steps, 1), full, atol=2e-5)


def test_padded_source_translates_like_the_same_source_alone():
  model = seq2seq.build(tiny(attention="additive", bidirectional=True), rngs=nnx.Rngs(2))
  batch = decode.translate(model, SRC, max_len=6)
  alone = decode.translate(model, SRC[1:2, :2], max_len=6)
  np.testing.assert_array_equal(batch[1], alone[0])


def copy_batch(rng: np.random.Generator, batch: int, length: int = 6) -> dict:
  """Random sequences of tokens 7..16 of random lengths 2..length; the target is the source."""
  lengths = rng.integers(2, length + 1, batch)
  rows = [list(rng.integers(7, 17, n)) for n in lengths]
  src = np.zeros((batch, 8), np.int32)
  tgt_in, tgt_out = np.zeros((batch, 9), np.int32), np.zeros((batch, 9), np.int32)
  for i, r in enumerate(rows):
    src[i, :len(r)] = r
    tgt_in[i, :len(r) + 1] = [BOS_ID] + r
    tgt_out[i, :len(r) + 1] = r + [EOS_ID]
  return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}


def test_copy_task_loss_falls_near_zero_and_greedy_reproduces_the_input():
  model = seq2seq.build(tiny(attention="dot", n_layer=1, n_embd=32, n_hidden=64), rngs=nnx.Rngs(4))
  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = translation.make_loss_fn()
  tx = optax.adam(optax.cosine_decay_schedule(2e-2, 500, alpha=0.05))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch):
    loss_of = lambda p: loss_fn(nnx.merge(graphdef, p), batch, jax.random.key(0), True)
    (loss, _), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(0)
  losses = []
  for _ in range(500):
    params, opt, loss = step(params, opt, copy_batch(rng, 32))
    losses.append(float(loss))
  assert losses[0] > 2.0 and np.mean(losses[-10:]) < 0.02
  test = copy_batch(np.random.default_rng(1), 64)
  out = np.asarray(decode.translate(nnx.merge(graphdef, params), test["src"], max_len=9))
  np.testing.assert_array_equal(out, test["tgt_out"])


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_scheduled_sampling_trains_and_differs_from_teacher_forcing():
  model = seq2seq.build(tiny(attention="dot"), rngs=nnx.Rngs(5))
  batch = {k: jnp.asarray(v) for k, v in copy_batch(np.random.default_rng(2), 4).items()}
  loss_fn = translation.make_loss_fn(sampling_ratio=1.0)
  forced, _ = loss_fn(model, batch, jax.random.key(0), False)  # evaluation always teacher-forces
  graphdef, params = nnx.split(model, nnx.Param)
  sampled, grads = jax.value_and_grad(
      lambda p: loss_fn(nnx.merge(graphdef, p), batch, jax.random.key(0), True)[0])(params)
  assert np.isfinite(float(sampled)) and float(sampled) != pytest.approx(float(forced))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # With ratio 1 every input after bos is the previous argmax: the logits are greedy decoding's.
  logits = decode.scheduled_sampling_logits(model, batch["src"], batch["tgt_in"], 1.0, jax.random.key(0))
  greedy = np.asarray(decode.translate(model, batch["src"], max_len=9))
  sampled_tokens = np.asarray(logits.argmax(-1))
  for row, g in zip(sampled_tokens, greedy):  # equal up to greedy's eos (greedy pads after it)
    n = list(g).index(EOS_ID) + 1 if EOS_ID in g else len(g)
    np.testing.assert_array_equal(row[:n], g[:n])


def test_attention_plot_has_a_panel_per_layer_and_head(tmp_path):
  from launch.attention import plot_attention

  def size(layers, heads):  # (width, height) in pixels, from the PNG header
    weights = np.random.default_rng(0).dirichlet(np.ones(5), (layers, heads, 4))  # [layers, heads, T, S]
    plot_attention(weights, list("abcde"), list("wxyz"), tmp_path / "a.png", "test")
    png = (tmp_path / "a.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")

  (w1, h1), (w6, h6) = size(1, 1), size(2, 3)
  assert w6 == pytest.approx(3 * w1, abs=2) and h6 > 1.8 * h1  # 3 heads across, 2 layers down
