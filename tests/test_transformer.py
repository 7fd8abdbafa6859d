"""Transformer: no information leaks through the masks, its layers equal PyTorch's, decoding
paths agree, a copy task is learned, the paper's schedule, XLA's FLOP count."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research import decode
from research.config import OptimConfig
from research.models import transformer
from research.objectives import translation
from research.tokenizers import BOS_ID, EOS_ID, PAD_ID
from research.train.optimizer import schedule


def tiny(**kw) -> transformer.Config:
  return transformer.Config(**{"src_vocab_size": 17, "tgt_vocab_size": 17, "max_src_len": 8, "max_tgt_len": 9,
                               "n_layer": 2, "n_head": 2, "n_embd": 16, "d_ff": 32, "dropout": 0.0,
                               "max_len_offset": 3, **kw})


SRC = np.array([[9, 10, 11, 12, 13, 14, 0, 0],
                [8, 9, 0, 0, 0, 0, 0, 0],
                [15, 14, 13, 12, 11, 10, 9, 8]], np.int32)
TGT_IN = np.array([[BOS_ID, 9, 10, 11, 12, 13, 14, 0, 0]] * 3, np.int32)
VARIANTS = [dict(norm="post", positions="sinusoidal"), dict(norm="pre", positions="learned")]


def test_sinusoids_are_the_papers_formula():
  pe = np.asarray(transformer.sinusoids(jnp.arange(50), 16))
  pos, i = np.arange(50)[:, None], np.arange(8)[None, :]
  np.testing.assert_allclose(pe[:, 0::2], np.sin(pos / 10000 ** (2 * i / 16)), atol=1e-5)
  np.testing.assert_allclose(pe[:, 1::2], np.cos(pos / 10000 ** (2 * i / 16)), atol=1e-5)


# ------------------------------------------------------------------------ masks


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["norm"])
def test_decoder_output_at_t_ignores_later_target_tokens(variant):
  model = transformer.build(tiny(**variant), rngs=nnx.Rngs(0))
  logits = model(jnp.asarray(SRC), jnp.asarray(TGT_IN))
  for t in (0, 3, 7):
    changed = TGT_IN.copy()
    changed[:, t + 1:] = np.random.default_rng(t).integers(3, 17, changed[:, t + 1:].shape)
    other = model(jnp.asarray(SRC), jnp.asarray(changed))
    np.testing.assert_allclose(other[:, :t + 1], logits[:, :t + 1], atol=1e-5)
    assert not np.allclose(other[:, t + 1:], logits[:, t + 1:])


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["norm"])
def test_padding_changes_no_real_position(variant):
  model = transformer.build(tiny(**variant), rngs=nnx.Rngs(1))
  src = jnp.asarray(SRC[:2])
  memory = model.encode(src)
  alone = model.encode(src[1:, :2])  # the second sentence without its 6 pads
  np.testing.assert_allclose(memory.outputs[1, :2], alone.outputs[0], atol=1e-5)
  # ... and the decoder's logits do not see how much padding there was.
  np.testing.assert_allclose(model(src[1:], jnp.asarray(TGT_IN[:1])), model(src[1:, :2], jnp.asarray(TGT_IN[:1])),
                             atol=1e-5)
  weights = np.asarray(model.cross_attention(src, jnp.asarray(TGT_IN[:2])))  # [B, layers, heads, T, S]
  assert weights.shape == (2, 2, 2, 9, 8)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert np.all(weights[1, ..., 2:] == 0.0) and np.all(weights[0, ..., 6:] == 0.0)


# ------------------------------------------------------------------------ PyTorch's layers


def torch_layer(layer, decoder: bool, pre_ln: bool):
  """torch.nn.Transformer{En,De}coderLayer (built on nn.MultiheadAttention) holding layer's weights."""
  torch = pytest.importorskip("torch")
  p = jax.tree.map(lambda a: torch.from_numpy(np.asarray(a, np.float64)), nnx.to_pure_dict(nnx.state(layer, nnx.Param)))
  kind = torch.nn.TransformerDecoderLayer if decoder else torch.nn.TransformerEncoderLayer
  ref = kind(16, 2, dim_feedforward=32, dropout=0.0, activation="relu", batch_first=True, norm_first=pre_ln,
             dtype=torch.float64)

  def attention(module, a, cross=False):  # torch keeps (out, in) with rows q | k | v
    in_w = torch.cat([a["q"]["kernel"], a["kv"]["kernel"]], 1) if cross else a["qkv"]["kernel"]
    in_b = torch.cat([a["q"]["bias"], a["kv"]["bias"]]) if cross else a["qkv"]["bias"]
    module.in_proj_weight.copy_(in_w.T)
    module.in_proj_bias.copy_(in_b)
    module.out_proj.weight.copy_(a["proj"]["kernel"].T)
    module.out_proj.bias.copy_(a["proj"]["bias"])

  with torch.no_grad():
    attention(ref.self_attn, p["self_attn"])
    if decoder:
      attention(ref.multihead_attn, p["cross_attn"], cross=True)
    ref.linear1.weight.copy_(p["ffn"]["fc"]["kernel"].T)
    ref.linear1.bias.copy_(p["ffn"]["fc"]["bias"])
    ref.linear2.weight.copy_(p["ffn"]["proj"]["kernel"])  # stored (out, in) already
    ref.linear2.bias.copy_(p["ffn"]["proj"]["bias"])
    for k in (1, 2, 3) if decoder else (1, 2):
      getattr(ref, f"norm{k}").weight.copy_(p[f"ln_{k}"]["scale"])
      getattr(ref, f"norm{k}").bias.copy_(p[f"ln_{k}"]["bias"])
  return torch, ref.eval()


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_layers_equal_torch_transformer_layers(norm):
  from research.models.layers import padding_mask

  model = transformer.build(tiny(norm=norm), rngs=nnx.Rngs(2))
  x = jax.random.normal(jax.random.key(0), (3, 9, 16))
  memory = jax.random.normal(jax.random.key(1), (3, 8, 16))
  valid = jnp.asarray(SRC != PAD_ID)
  enc, dec = model.encoder[0], model.decoder[0]
  got_enc = enc(memory, padding_mask(valid))
  got_dec, _ = dec(x, dec.cross_attn.project_context(memory), padding_mask(valid))

  t = lambda a: __import__("torch").from_numpy(np.asarray(a, np.float64))
  torch, ref_enc = torch_layer(enc, decoder=False, pre_ln=norm == "pre")
  _, ref_dec = torch_layer(dec, decoder=True, pre_ln=norm == "pre")
  pad = t(~np.asarray(valid)).bool()  # torch's masks say where NOT to attend
  future = torch.nn.Transformer.generate_square_subsequent_mask(9, dtype=torch.float64)
  with torch.no_grad():
    want_enc = ref_enc(t(memory), src_key_padding_mask=pad)
    want_dec = ref_dec(t(x), t(memory), tgt_mask=future, memory_key_padding_mask=pad)
  real = np.asarray(valid)[..., None]  # torch's encoder fast path may zero padded rows
  np.testing.assert_allclose(np.where(real, got_enc, 0), np.where(real, want_enc.numpy(), 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got_dec, want_dec.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["norm"])
def test_step_by_step_decoding_equals_the_teacher_forced_pass(variant):
  model = transformer.build(tiny(**variant), rngs=nnx.Rngs(3))
  full = model(jnp.asarray(SRC), jnp.asarray(TGT_IN))
  state, steps = model.decode_start(model.encode(jnp.asarray(SRC))), []
  for t in range(TGT_IN.shape[1]):
    logits, state = model.decode_step(state, jnp.asarray(TGT_IN[:, t]))
    steps.append(logits)
  np.testing.assert_allclose(jnp.stack(steps, 1), full, atol=2e-5)


def test_beam_of_one_is_greedy_and_rows_stop_at_source_length_plus_offset():
  model = transformer.build(tiny(), rngs=nnx.Rngs(4))
  src = jnp.asarray(SRC)
  start = jnp.full((3,), BOS_ID)
  state = model.decode_start(model.encode(src))
  limit = (src != PAD_ID).sum(1) + model.max_len_offset  # sec 6.1: source length + offset
  max_len = model.max_src_len + model.max_len_offset
  greedy = decode.greedy_search(model.decode_step, state, start, max_len=max_len, row_limit=limit)
  beam1, _ = decode.beam_search(model.decode_step, state, start, max_len=max_len, beam_size=1, row_limit=limit)
  np.testing.assert_array_equal(beam1, greedy)
  beam4 = np.asarray(decode.translate(model, src, beam_size=4, max_len=max_len, row_limit=limit))
  for row, n in zip(beam4, np.asarray(limit)):
    assert EOS_ID in row[:n].tolist()


class NeverEnds(nnx.Module):
  """Says token 9 forever, never eos: its translations run to whatever limit decoding sets."""

  max_src_len, max_tgt_len = 8, 4

  def __init__(self, max_len_offset: int):
    self.max_len_offset = max_len_offset

  def encode(self, src):
    return src

  def decode_start(self, memory):
    return memory

  def decode_step(self, state, token):
    return jnp.zeros((token.shape[0], 17)).at[:, 9].set(1.0).at[:, EOS_ID].set(-1e9), state


@pytest.mark.parametrize("offset", [0, 2])
def test_bleu_decodes_to_source_length_plus_offset(offset):
  from research.evaluate.bleu import translate_texts

  class Tok:  # the ids themselves, space-separated
    eos_id = EOS_ID
    encode_batch = staticmethod(lambda texts: [[int(w) for w in t.split()] for t in texts])
    decode = staticmethod(lambda ids: " ".join(map(str, ids)))

  out = translate_texts(NeverEnds(offset), ["9 10 11", "8 9 10 11 12 13"], Tok, Tok, batch_size=2)
  # eos is forced as token number (source length + offset), or none is said within max_tgt_len.
  assert [len(o.split()) for o in out] == ([3 + offset - 1, 6 + offset - 1] if offset else [4, 4])


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
  model = transformer.build(tiny(n_layer=1, n_embd=32, d_ff=64), rngs=nnx.Rngs(6))
  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = translation.make_loss_fn()
  tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 30, 400, 1e-4))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch):
    loss_of = lambda p: loss_fn(nnx.merge(graphdef, p), batch, jax.random.key(0), True)
    (loss, _), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(0)
  losses = []
  for _ in range(400):
    params, opt, loss = step(params, opt, copy_batch(rng, 32))
    losses.append(float(loss))
  assert losses[0] > 2.0 and np.mean(losses[-10:]) < 0.02
  test = copy_batch(np.random.default_rng(1), 64)
  out = np.asarray(decode.translate(nnx.merge(graphdef, params), test["src"], max_len=9))
  np.testing.assert_array_equal(out, test["tgt_out"])


# ------------------------------------------------------------------------ schedule, config, FLOPs


def test_inverse_sqrt_schedule_is_the_papers_formula():
  lr = schedule(OptimConfig(schedule="inverse_sqrt", lr=1.0, warmup_steps=4000, d_model=512), 100_000)
  for step_num in (1, 100, 3999, 4000, 4001, 10_000, 100_000):  # the paper counts steps from 1
    paper = 512 ** -0.5 * min(step_num ** -0.5, step_num * 4000 ** -1.5)  # eq. 3
    assert float(lr(step_num - 1)) == pytest.approx(paper, rel=1e-6)
  assert float(lr(3999)) == pytest.approx((512 * 4000) ** -0.5, rel=1e-6)  # the peak, at step_num = warmup


def test_task_derives_d_model_and_config_checks():
  from research.config import Config, ConfigError, validate
  from research.objectives import base

  cfg = Config(objective="translation", model=tiny(n_embd=32), optim=OptimConfig(schedule="inverse_sqrt"))
  validate(cfg)
  base.Task(cfg, log=lambda *_: None)
  assert cfg.optim.d_model == 32
  for bad in (dict(norm="post-ln"), dict(positions="rotary"), dict(n_head=3), dict(src_vocab_size=5)):
    with pytest.raises(ConfigError):
      tiny(**bad).validate()


def test_xla_flop_count_matches_the_matmul_count():
  """No layer scans, so XLA's count of the compiled step is whole (the trainer uses it): the
  matmuls' count, 3x the forward pass's, plus a few percent of elementwise work."""
  from research.train.flops import compiled_flops

  B, S, C, F, V, L = 8, 16, 64, 256, 256, 2
  model = transformer.build(tiny(n_embd=C, d_ff=F, n_layer=L, src_vocab_size=V, tgt_vocab_size=V, max_src_len=S,
                                 max_tgt_len=S), rngs=nnx.Rngs(7))
  graphdef, params = nnx.split(model, nnx.Param)
  batch = {k: jnp.asarray(np.random.default_rng(i).integers(3, V, (B, S)), jnp.int32)
           for i, k in enumerate(("src", "tgt_in", "tgt_out"))}
  loss_of = lambda p: translation.make_loss_fn()(nnx.merge(graphdef, p), batch, jax.random.key(0), True)[0]
  xla = compiled_flops(jax.jit(jax.grad(loss_of)).lower(params).compile())
  T = S
  enc = L * (S * (2 * 4 * C * C + 2 * 2 * C * F) + 2 * 2 * S * S * C)  # q, k, v, output; FFN; scores, values
  dec = L * (T * (2 * 6 * C * C + 2 * 2 * C * F) + 2 * 2 * T * T * C  # self- and cross-attention's; FFN; scores
             + S * 2 * 2 * C * C + 2 * 2 * T * S * C) + T * 2 * C * V  # memory keys, values; cross scores; head
  assert 1.0 < xla / (3 * B * (enc + dec)) < 1.06
