"""Recurrent layers and LMs: cells equal numpy and PyTorch, padding changes nothing, LM trains."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import gpt, lstm, rnn
from research.train import flops as flops_lib
from research.train import loop


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_stack(kind, layers, x, lengths=None):
  """Reference: a plain loop over time per layer. x [B, T, D]; layers [(w_ih, w_hh, b)]."""
  B, T, _ = x.shape
  finals = []
  for w_ih, w_hh, b in layers:
    H = w_hh.shape[0]
    h, c, out = np.zeros((B, H)), np.zeros((B, H)), np.zeros((B, T, H))
    for t in range(T):
      z = x[:, t] @ w_ih + h @ w_hh + b
      if kind == "lstm":
        i, f, g, o = np.split(z, 4, axis=-1)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
      else:
        h_new, c_new = np.tanh(z), c
      live = np.ones(B, bool) if lengths is None else t < np.asarray(lengths)
      h = np.where(live[:, None], h_new, h)
      c = np.where(live[:, None], c_new, c)
      out[:, t] = np.where(live[:, None], h_new, 0.0)
    finals.append((h, c))
    x = out
  return x, finals


def weights(stack):
  return [(np.asarray(c.w_ih[...], np.float64), np.asarray(c.w_hh[...], np.float64), np.asarray(c.bias[...], np.float64))
          for c in stack.forward]


@pytest.mark.parametrize("kind", ["lstm", "elman"])
def test_cells_match_numpy(kind):
  stack = rnn.StackedRNN(kind, 5, 7, 2, rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(3, 9, 5)).astype(np.float32)
  out, finals = stack(jnp.asarray(x))
  ref_out, ref_finals = numpy_stack(kind, weights(stack), x.astype(np.float64))
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  for (h, *c), (rh, rc) in zip(finals, ref_finals):
    np.testing.assert_allclose(h, rh, atol=1e-5)
    if kind == "lstm":
      np.testing.assert_allclose(c[0], rc, atol=1e-5)


def test_lstm_matches_torch_nn_lstm():
  torch = pytest.importorskip("torch")
  stack = rnn.StackedRNN("lstm", 6, 8, 2, rngs=nnx.Rngs(1))
  ref = torch.nn.LSTM(6, 8, num_layers=2, batch_first=True)
  with torch.no_grad():
    for layer, cell in enumerate(stack.forward):
      # torch keeps W as [4H, D] and two biases; ours is x @ W_ih with one bias (their sum).
      getattr(ref, f"weight_ih_l{layer}").copy_(torch.from_numpy(np.asarray(cell.w_ih[...]).T.copy()))
      getattr(ref, f"weight_hh_l{layer}").copy_(torch.from_numpy(np.asarray(cell.w_hh[...]).T.copy()))
      getattr(ref, f"bias_ih_l{layer}").copy_(torch.from_numpy(np.asarray(cell.bias[...]).copy()))
      getattr(ref, f"bias_hh_l{layer}").zero_()
  x = np.random.default_rng(1).normal(size=(4, 11, 6)).astype(np.float32)
  out, finals = stack(jnp.asarray(x))
  ref_out, (ref_h, ref_c) = ref(torch.from_numpy(x))
  np.testing.assert_allclose(out, ref_out.detach().numpy(), atol=1e-5)
  for layer, (h, c) in enumerate(finals):
    np.testing.assert_allclose(h, ref_h[layer].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(c, ref_c[layer].detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("kind,bidirectional", [("lstm", False), ("lstm", True), ("elman", True)])
def test_padded_batch_equals_each_sequence_alone(kind, bidirectional):
  stack = rnn.StackedRNN(kind, 4, 6, 2, bidirectional=bidirectional, rngs=nnx.Rngs(2))
  lengths = [7, 3, 1]
  x = np.random.default_rng(2).normal(size=(3, 7, 4)).astype(np.float32)
  mask = np.arange(7)[None] < np.array(lengths)[:, None]
  x_padded = np.where(mask[..., None], x, 99.0)  # garbage in the padding must not leak
  out, finals = stack(jnp.asarray(x_padded), mask=jnp.asarray(mask))
  for b, n in enumerate(lengths):
    alone, alone_finals = stack(jnp.asarray(x[b:b + 1, :n]))
    np.testing.assert_allclose(out[b, :n], alone[0], atol=1e-5)
    assert np.all(np.asarray(out[b, n:]) == 0)
    for carry, carry_alone in zip(finals, alone_finals):
      for part, part_alone in zip(carry, carry_alone):
        np.testing.assert_allclose(part[b], part_alone[0], atol=1e-5)
  if not bidirectional:  # and equals the numpy loop that holds state through padding
    ref_out, _ = numpy_stack(kind, weights(stack), x_padded.astype(np.float64), lengths)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)


def test_lm_cached_decoding_matches_full_forward():
  cfg = lstm.Config(vocab_size=31, block_size=16, n_layer=2, n_embd=12, n_hidden=16)
  model = lstm.build(cfg, rngs=nnx.Rngs(3))
  tokens = jax.random.randint(jax.random.key(0), (2, 10), 0, cfg.vocab_size)
  forward = nnx.jit(lambda m, t: m(t))  # one compile per shape, instead of eager op by op
  full = forward(model, tokens)
  model.init_cache(2)
  steps = [forward(model, tokens[:, :4])] + [forward(model, tokens[:, t:t + 1]) for t in range(4, 10)]
  model.clear_cache()
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "elman"])
def test_analytic_flops_match_xla_on_unrolled_scan(cell, monkeypatch):
  cfg = rnn.Config(cell=cell, vocab_size=64, block_size=8, n_layer=2, n_embd=96, n_hidden=128)
  model = rnn.build(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  batch = {"inputs": jnp.zeros((4, 8), jnp.int32), "targets": jnp.zeros((4, 8), jnp.int32)}

  def loss(p):
    return nnx.merge(graphdef, p)(batch["inputs"]).mean()

  scan = jax.lax.scan
  monkeypatch.setattr(jax.lax, "scan", lambda *a, **k: scan(*a, **{**k, "unroll": True}))
  xla = flops_lib.compiled_flops(jax.jit(jax.grad(loss)).lower(params).compile())
  # XLA also counts elementwise work (gates, tanh, the softmax-free mean here); matmuls dominate.
  assert rnn.train_flops(cfg, batch) == pytest.approx(xla, rel=0.15)


TEXT = "".join(f"the {a} {b} sat on the {c} mat.\n" for a in ("cat", "dog", "owl") for b in ("red", "big")
               for c in ("old", "new", "wet", "dry")) * 40


def lm_config(model, tmp_path) -> Config:
  corpus = tmp_path / "tiny.txt"
  corpus.write_text(TEXT)
  return Config(
      experiment="tiny", objective="lm", model=model,
      data=DataConfig(path=str(corpus), cache_dir=str(tmp_path / "cache")),
      tokenizer=TokenizerConfig(kind="char"),
      optim=OptimConfig(lr=1e-2, warmup_steps=2),
      train=TrainConfig(steps=60, batch_size=8, log_every=10, eval_every=60, eval_batches=2,
                        checkpoint_every=60, runs_dir=str(tmp_path / "runs"), progress=False))


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_lstm_lm_trains_with_the_lm_objective_and_logs_gpts_metric_names(tmp_path):
  cfg = lm_config(lstm.Config(block_size=16, n_layer=2, n_embd=32, n_hidden=48), tmp_path)
  cfg.optim.lr, cfg.train.steps, cfg.train.eval_every = 3e-2, 100, 100
  result = loop.train(cfg, run_dir=tmp_path / "lstm", log=lambda *_: None)
  assert result.eval["loss"] < 1.2  # ln(vocab) is ~3; the corpus is highly regular
  gpt_cfg = lm_config(gpt.Config(block_size=16, n_layer=1, n_head=2, n_embd=16), tmp_path)
  gpt_cfg.train.steps = gpt_cfg.train.log_every = gpt_cfg.train.eval_every = 2
  loop.train(gpt_cfg, run_dir=tmp_path / "gpt", log=lambda *_: None)
  names = lambda run: set().union(*(json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()))
  assert names("lstm") == names("gpt")
  # The scan's FLOPs are counted analytically (XLA would count the loop body once).
  facts = json.loads((tmp_path / "lstm" / "run.json").read_text())
  model_cfg = lstm.Config(block_size=16, n_layer=2, n_embd=32, n_hidden=48, vocab_size=facts["vocab_size"])
  expected = rnn.train_flops(model_cfg, {"inputs": np.zeros((8, 16))}) / jax.device_count()
  assert facts["flops_per_step_per_device"] == pytest.approx(expected)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_handwritten_backward_equals_autodiff(reverse):
  cell = rnn.LSTMCell(5, 6, rngs=nnx.Rngs(4))
  rng = np.random.default_rng(4)
  gx = jnp.asarray(rng.normal(size=(7, 3, 24)), jnp.float32)
  carry = tuple(jnp.asarray(rng.normal(size=(3, 6)), jnp.float32) for _ in range(2))
  mask = jnp.asarray(np.arange(7)[:, None] < np.array([7, 4, 1])[None])
  probe = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((7, 3, 6), (3, 6), (3, 6))]

  graphdef, state = nnx.split(cell)

  def loss(state, gx, carry, fused):
    (h, c), out = rnn.scan_cell(nnx.merge(graphdef, state), gx, carry, mask, reverse=reverse, fused=fused)
    return (out * probe[0]).sum() + (h * probe[1]).sum() + (c * probe[2]).sum()

  w = state
  fused = jax.grad(loss, argnums=(0, 1, 2))(w, gx, carry, True)
  plain = jax.grad(loss, argnums=(0, 1, 2))(w, gx, carry, False)
  for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  assert loss(w, gx, carry, True) == pytest.approx(float(loss(w, gx, carry, False)), rel=1e-6)
