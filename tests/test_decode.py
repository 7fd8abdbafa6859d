"""Decoding (research/decode.py), each search checked against an independent reference:
brute force over a tiny vocabulary, greedy, the full forward pass, the teacher-forced pass."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research import decode
from research.decode import SamplingConfig, filter_logits, generate, lm_decoder
from research.models import gpt, rnn, seq2seq
from research.tokenizers import BOS_ID, EOS_ID, PAD_ID

# ------------------------------------------------------------------------------- a toy model
#
# Its state is a hash of everything fed so far, and its logits are a random table looked up by
# that hash: the next-token distribution depends on the whole history, so a beam that is given
# another beam's state (a wrong reorder) scores its continuations wrongly.

V, M = 6, 997
REAL = (EOS_ID, 4, 5)  # the tokens the toy emits; pad, unk and bos are all but impossible
TABLE = np.random.default_rng(0).normal(0, 2.0, (M, V)).astype(np.float32)
TABLE[:, [PAD_ID, 1, BOS_ID]] = -50.0
TABLE[:, EOS_ID] -= 1.5  # rarer eos: the best hypotheses are long, where reordering matters


def toy_step(state, token):
  state = (state * 31 + token + 1) % M
  return jnp.asarray(TABLE)[state], state


def toy_logp(start_state: int, tokens) -> float:
  """log p(tokens) under the toy, in float64 numpy."""
  state, token, total = start_state, BOS_ID, 0.0
  for t in tokens:
    state = (state * 31 + token + 1) % M
    logits = TABLE[state].astype(np.float64)
    total += logits[t] - np.log(np.exp(logits).sum())
    token = t
  return total


def brute_force(start_state: int, max_len: int, alpha: float, limit: int | None = None):
  """The best (tokens padded to max_len, score) over every hypothesis beam search may return."""
  limit = limit or max_len + 1
  best = None
  for n in range(1, min(max_len, limit) + 1):
    for seq in itertools.product(REAL, repeat=n):
      if EOS_ID in seq[:-1]:
        continue
      # Unfinished only if cut by max_len before reaching the row's limit.
      if seq[-1] != EOS_ID and not (n == max_len and n < limit):
        continue
      score = toy_logp(start_state, seq) / ((5 + n) / 6) ** alpha  # GNMT, Wu et al. 2016 eq. 14
      if best is None or score > best[1]:
        best = (list(seq) + [PAD_ID] * (max_len - n), score)
  return best


STARTS = jnp.arange(16) * 61 + 7


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_finds_the_brute_force_best(alpha):
  # 3 real tokens, 4 steps: 81 beams keep every hypothesis, so beam search is exact here.
  start = jnp.full(STARTS.shape, BOS_ID)
  tokens, scores = decode.beam_search(toy_step, STARTS, start, max_len=4, beam_size=81, alpha=alpha)
  bests = [brute_force(s, 4, alpha) for s in STARTS.tolist()]
  for b, (best, score) in enumerate(bests):
    assert tokens[b].tolist() == best
    assert float(scores[b]) == pytest.approx(score, abs=1e-4)
  # The toy is a real test: some best hypotheses are long, some are not greedy's, and the
  # length penalty changes some.
  greedy = decode.greedy_search(toy_step, STARTS, start, max_len=4).tolist()
  assert max(4 - best.count(PAD_ID) for best, _ in bests) == 4
  assert any(best != g for (best, _), g in zip(bests, greedy))
  if alpha:
    assert any(best != brute_force(s, 4, 0.0)[0] for (best, _), s in zip(bests, STARTS.tolist()))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_respects_each_rows_limit(alpha):
  limits = jnp.arange(16) % 4 + 1
  tokens, scores = decode.beam_search(toy_step, STARTS, jnp.full(STARTS.shape, BOS_ID), max_len=4,
                                      beam_size=81, alpha=alpha, row_limit=limits)
  for b, (s, limit) in enumerate(zip(STARTS.tolist(), limits.tolist())):
    best, score = brute_force(s, 4, alpha, limit)
    assert tokens[b].tolist() == best and EOS_ID in best[:limit]
    assert float(scores[b]) == pytest.approx(score, abs=1e-4)


def test_greedy_stops_each_row_at_its_limit():
  start = jnp.full(STARTS.shape, BOS_ID)
  free = np.asarray(decode.greedy_search(toy_step, STARTS, start, max_len=8))
  limits = [1, 3, 8, 2, 5, 4] * 2 + [6, 7, 1, 2]
  capped = np.asarray(decode.greedy_search(toy_step, STARTS, start, max_len=8, row_limit=jnp.array(limits)))
  for row_free, row, limit in zip(free, capped, limits):
    n = list(row_free).index(EOS_ID) + 1 if EOS_ID in row_free else len(row_free)
    if n <= limit:  # ended on its own: the limit changes nothing
      np.testing.assert_array_equal(row, row_free)
    else:  # the same tokens up to the limit, where eos is forced
      np.testing.assert_array_equal(row[:limit - 1], row_free[:limit - 1])
      assert row[limit - 1] == EOS_ID and np.all(row[limit:] == PAD_ID)
  assert not np.array_equal(free, capped)  # some row was cut


def test_beam_of_one_is_greedy_on_the_toy():
  start = jnp.full(STARTS.shape, BOS_ID)
  greedy = decode.greedy_search(toy_step, STARTS, start, max_len=6)
  beam, _ = decode.beam_search(toy_step, STARTS, start, max_len=6, beam_size=1)
  np.testing.assert_array_equal(beam, greedy)


def test_beam_search_finds_the_sequence_greedy_misses():
  # The first step prefers token 4 (p=.6) over 5 (p=.4), but after 4 every continuation is
  # uncertain (p=.25 each) while after 5 token 6 is sure: p(5 6 eos) = .4 > p(4 x eos) = .15.
  table = jnp.full((8, 8), 1e-6)
  table = table.at[BOS_ID, 4].set(0.6).at[BOS_ID, 5].set(0.4)
  table = table.at[4, jnp.arange(4, 8)].set(0.25).at[5, 6].set(1.0)
  table = table.at[jnp.arange(4, 8), EOS_ID].set(0.0).at[6, EOS_ID].set(1.0).at[7, EOS_ID].set(1.0)
  table = table.at[EOS_ID, EOS_ID].set(1.0)
  step_fn = lambda state, token: (jnp.log(table[token] / table[token].sum(-1, keepdims=True)), state)

  start = jnp.full((1,), BOS_ID)
  greedy = decode.greedy_search(step_fn, jnp.zeros((1,)), start, max_len=3)
  beam, score = decode.beam_search(step_fn, jnp.zeros((1,)), start, max_len=3, beam_size=2, alpha=0.0)
  assert greedy[0, 0] == 4
  np.testing.assert_array_equal(beam[0], [5, 6, EOS_ID])
  assert float(score[0]) == pytest.approx(np.log(0.4), abs=1e-4)


# ----------------------------------------------------------------------------- Seq2Seq


SRC = np.array([[9, 10, 11, 12, 13, 14, 0, 0],
                [8, 9, 0, 0, 0, 0, 0, 0],
                [15, 14, 13, 12, 11, 10, 9, 8]], np.int32)
TGT_IN = np.array([[BOS_ID, 9, 10, 11, 12, 13, 14, 0, 0]] * 3, np.int32)


@pytest.fixture(scope="module")
def s2s():
  cfg = seq2seq.Config(src_vocab_size=17, tgt_vocab_size=17, max_src_len=8, max_tgt_len=9, n_layer=2,
                       n_embd=12, n_hidden=16, attention="dot")
  return seq2seq.build(cfg, rngs=nnx.Rngs(3))


def test_beam_of_one_is_greedy_on_seq2seq(s2s):
  graphdef, state = nnx.split(s2s)

  @jax.jit
  def beam_of_one(state, src):
    m = nnx.merge(graphdef, state)
    start = jnp.full((src.shape[0],), BOS_ID)
    return decode.beam_search(m.decode_step, m.decode_start(m.encode(src)), start, max_len=9, beam_size=1)[0]

  greedy = decode.translate(s2s, SRC, beam_size=1)
  np.testing.assert_array_equal(beam_of_one(state, jnp.asarray(SRC)), greedy)


def test_translate_respects_a_row_limit(s2s):
  limits = np.array([1, 2, 9])
  for beam in (1, 3):
    out = np.asarray(decode.translate(s2s, SRC, beam_size=beam, row_limit=limits))
    for row, limit in zip(out, limits):
      assert EOS_ID in row[:limit]


def test_scheduled_sampling_with_ratio_zero_is_teacher_forcing(s2s):
  forced = s2s(jnp.asarray(SRC), jnp.asarray(TGT_IN))
  sampled = decode.scheduled_sampling_logits(s2s, jnp.asarray(SRC), jnp.asarray(TGT_IN), 0.0, jax.random.key(0))
  np.testing.assert_allclose(sampled, forced, atol=2e-5)
  half = decode.scheduled_sampling_logits(s2s, jnp.asarray(SRC), jnp.asarray(TGT_IN), 0.5, jax.random.key(0))
  assert not np.allclose(half, forced, atol=1e-3)  # the test can tell the two apart


# --------------------------------------------------------------------------------- GPT

CFG = gpt.Config(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32, bias=True)


@pytest.fixture(scope="module")
def model():
  return gpt.build(CFG, rngs=nnx.Rngs(3))


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_greedy_generation_equals_argmax_of_full_forward(model, kind):
  if kind == "lstm":  # a recurrent LM: its cache is the carried state, [layers, B, H]
    model = rnn.build(rnn.Config(cell="lstm", vocab_size=61, block_size=24, n_layer=2, n_embd=16, n_hidden=24),
                      rngs=nnx.Rngs(4))
  prompt = jnp.array([[5, 9, 2], [1, 1, 7]])
  out = generate(model, prompt, SamplingConfig(max_new_tokens=12, temperature=0.0))
  # Without a cache: the whole (zero-padded) sequence each time; causality makes padding harmless.
  forward = nnx.jit(lambda m, t: m(t))
  tokens = jnp.zeros((2, 15), jnp.int32).at[:, :3].set(prompt)
  for t in range(3, 15):
    tokens = tokens.at[:, t].set(forward(model, tokens)[:, t - 1].argmax(-1))
  np.testing.assert_array_equal(out, tokens)


def test_generation_from_a_single_token_prompt(model):
  out = generate(model, jnp.array([[4], [9]]), SamplingConfig(max_new_tokens=5, temperature=0.0))
  assert out.shape == (2, 6)
  np.testing.assert_array_equal(out[:, 1], model(jnp.array([[4], [9]]))[:, 0].argmax(-1))


def test_sampling_is_seeded_compiles_once_and_respects_top_k(model, monkeypatch):
  traces = []  # lm_decoder runs only while _generate is traced
  monkeypatch.setattr(decode, "lm_decoder", lambda *a: traces.append(1) or lm_decoder(*a))
  prompt = jnp.array([[4, 4, 4]] * 3)
  s = SamplingConfig(max_new_tokens=15, temperature=1.0, top_k=3)
  a, b, c = generate(model, prompt, s, seed=1), generate(model, prompt, s, seed=1), generate(model, prompt, s, seed=2)
  assert len(traces) == 1  # one program (prefill and loop) for every seed
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a[0], a[1])  # the rows of a batch are independent draws
  # Every sampled token is among the 3 most likely under the model given its prefix.
  top3 = jnp.argsort(model(a[:, :-1])[:, 2:], axis=-1)[..., -3:]
  assert np.all(np.any(np.asarray(a[:, 3:, None]) == np.asarray(top3), axis=-1))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_stream_yields_the_tokens_of_generate_chunk_by_chunk(model, temperature):
  prompt = jnp.array([[4, 8, 4], [2, 2, 9]])
  s = SamplingConfig(max_new_tokens=13, temperature=temperature, top_k=20)
  chunks = list(decode.generate_stream(model, prompt, s, seed=5, chunk=5))
  assert [c.shape for c in chunks] == [(2, 5), (2, 5), (2, 3)]  # the KV cache carried between calls
  np.testing.assert_array_equal(np.concatenate(chunks, axis=1), generate(model, prompt, s, seed=5)[:, 3:])
  assert model.blocks[0].attn.cache_k is None  # cleared after the stream, as after generate


def test_sampling_respects_top_p(model):
  prompt = jnp.array([[4, 4, 4]] * 2)
  s = SamplingConfig(max_new_tokens=15, temperature=0.5, top_p=0.3)
  out = generate(model, prompt, s, seed=3)
  nucleus = filter_logits(model(out[:, :-1])[:, 2:] / 0.5, 0, 0.3)  # [B, 15, V]
  kept = jnp.take_along_axis(nucleus, out[:, 3:, None], axis=-1)[..., 0]
  assert np.all(np.isfinite(np.asarray(kept)))
  assert np.isfinite(np.asarray(nucleus)).sum(-1).max() < CFG.vocab_size  # the nucleus did exclude tokens


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda f: np.isfinite(np.asarray(f))[0].tolist()
  assert keep(filter_logits(logits, 2, 1.0)) == [True, True, False, False]
  assert keep(filter_logits(logits, 0, 0.5)) == [True, False, False, False]  # 0.5 reached by the first
  assert keep(filter_logits(logits, 0, 0.7)) == [True, True, False, False]
  assert keep(filter_logits(logits, 0, 0.96)) == [True, True, True, True]


def test_prompt_longer_than_context_is_an_error(model):
  with pytest.raises(ValueError, match="exceeds the model's context of 24"):
    generate(model, jnp.zeros((1, 20), jnp.int32), SamplingConfig(max_new_tokens=10))
