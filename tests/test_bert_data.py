"""BERT pretraining data (research/data/bert.py): pairs, lengths, segment ids, masking, determinism.

The documents are synthetic token ids: document d uses only ids in its own range and each
id once, in order, so a segment's document and position can be read off its tokens.
"""

import numpy as np
import pytest

from research.data import bert
from research.data.errors import DataError
from research.tokenizers import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_PIECES

N_SPECIAL = len(SPECIAL_PIECES)
RANGE = 1000  # ids per document
N_DOCS = 12
VOCAB = N_SPECIAL + RANGE * N_DOCS


def synthetic_docs(seed=0, n_docs=N_DOCS):
  """Documents of 200-1000 tokens in sentences of 3-30."""
  rng = np.random.default_rng(seed)
  docs = []
  for d in range(n_docs):
    ids = N_SPECIAL + d * RANGE + np.arange(rng.integers(200, RANGE), dtype=np.int32)
    cuts = np.cumsum(rng.integers(3, 30, len(ids)))
    docs.append(np.split(ids, cuts[cuts < len(ids)]))
  return docs


def data(seq_len=64, short_seq_prob=0.1, nsp=True, seed=0, **kwargs):
  return bert.PretrainingData(synthetic_docs(), synthetic_docs(1, n_docs=4), seq_len, kwargs.pop("mask_prob", 0.15),
                              kwargs.pop("max_predictions", 10), short_seq_prob, nsp, VOCAB, seed, **kwargs)


def doc_of(ids):
  return (ids - N_SPECIAL) // RANGE


def segments(row, length):
  """(A, B) token ids of one unmasked row."""
  seps = np.flatnonzero(row[:length] == SEP_ID)
  return row[1:seps[0]], row[seps[0] + 1:seps[1]]


def test_pairs_true_next_follows_a_and_random_next_comes_from_another_document():
  inst = bert.build_instances(synthetic_docs(), 64, 0.1, True, np.random.default_rng(0))
  assert 0.45 < inst.random_next.mean() < 0.65  # 0.5, plus one-sentence chunks (always random)
  for r in range(len(inst)):
    a, b = segments(inst.tokens[r], inst.length[r])
    assert len(a) >= 1 and len(b) >= 1
    assert len(set(doc_of(a))) == 1 and len(set(doc_of(b))) == 1
    assert doc_of(a[0]) == inst.doc_a[r] and doc_of(b[0]) == inst.doc_b[r]
    if inst.random_next[r]:
      assert doc_of(b[0]) != doc_of(a[0])
    else:  # the actual next text: B starts after A ends, in the same document
      assert doc_of(b[0]) == doc_of(a[0]) and b[0] > a[-1]
    # Inside a segment the text is contiguous: sentences in order, truncation only cuts the ends.
    assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)


def test_segment_ids_lengths_and_specials():
  d = data(seq_len=48)
  batch, inst = d.batch(1, 64), d._epochs[0].take(np.arange(64) + 64)
  for r in range(64):
    n, row, seg = inst.length[r], inst.tokens[r], batch["segment_ids"][r]
    assert 5 <= n <= 48 and np.all(row[n:] == PAD_ID) and np.all(row[:n] != PAD_ID)
    assert row[0] == CLS_ID and row[n - 1] == SEP_ID and (row[:n] == SEP_ID).sum() == 2
    first_sep = np.flatnonzero(row == SEP_ID)[0]
    assert first_sep == inst.len_a[r] + 1
    np.testing.assert_array_equal(seg, np.r_[np.zeros(first_sep + 1), np.ones(n - first_sep - 1), np.zeros(48 - n)])
    assert batch["nsp_label"][r] == inst.random_next[r]
  # Without NSP an instance is [CLS] X [SEP], one segment, never a random next.
  one = data(seq_len=48, nsp=False)
  b, inst = one.batch(0, 32), one._epochs[0].take(np.arange(32))
  assert np.all(b["segment_ids"] == 0) and np.all(b["nsp_label"] == 0)
  assert all((inst.tokens[r] == SEP_ID).sum() == 1 and inst.tokens[r, inst.length[r] - 1] == SEP_ID for r in range(32))


def test_target_lengths_follow_short_seq_prob():
  def full_share(p):
    inst = bert.build_instances(synthetic_docs(n_docs=60), 64, p, True, np.random.default_rng(1))
    return (inst.length == 64).mean(), inst.length.mean()
  full0, mean0 = full_share(0.0)
  full1, mean1 = full_share(1.0)
  full_default, _ = full_share(0.1)
  assert full0 > 0.75  # all but the documents' last chunks fill the sequence exactly
  assert full1 < 0.3 and mean1 < 0.8 * mean0  # a target is drawn per document
  assert full1 < full_default < full0


def test_truncation_cuts_the_longer_side_at_random_ends():
  rng = np.random.default_rng(0)
  fronts = backs = 0
  for _ in range(200):
    la, lb = rng.integers(1, 80, 2)
    (fa, ba), (fb, bb) = bert._truncate_pair(int(la), int(lb), 60, rng)
    new_a, new_b = la - fa - ba, lb - fb - bb
    assert new_a + new_b == min(la + lb, 60) and new_a >= 1 and new_b >= 1
    if la + lb > 60:
      assert abs(new_a - new_b) <= max(1, abs(int(la) - int(lb)))  # the longer side went first
    fronts, backs = fronts + fa + fb, backs + ba + bb
  assert 0.4 < fronts / (fronts + backs) < 0.6


def test_masking_rates_over_many_draws():
  d = data(seq_len=64, max_predictions=10)
  chosen = kept = masked = random = 0
  for step in range(60):
    batch = d.batch(step, 32)
    samples = step * 32 + np.arange(32)
    epochs, pos = np.divmod(samples, d.n_instances)
    rows = [d._epochs[int(e)].take(np.array([p])) for e, p in zip(epochs, pos)]
    tokens = np.concatenate([r.tokens for r in rows])
    lengths = np.concatenate([r.length for r in rows])
    w = batch["mlm_weights"].astype(bool)
    # How many: round(15% of the length), at least 1, at most max_predictions.
    np.testing.assert_array_equal(w.sum(1), np.minimum(10, np.maximum(1, np.rint(lengths * 0.15))))
    positions, ids = batch["mlm_positions"], batch["mlm_ids"]
    r = np.arange(32)[:, None]
    np.testing.assert_array_equal(ids[w], tokens[r, positions][w])  # targets are the original tokens
    assert np.all(positions[~w] == 0) and np.all(ids[~w] == 0)
    # Never [CLS], [SEP] or padding; positions ascending and distinct.
    assert not np.isin(tokens[r, positions][w], [CLS_ID, SEP_ID, PAD_ID]).any()
    assert all(np.all(np.diff(positions[i][w[i]]) > 0) for i in range(32))
    # Unchosen positions are untouched.
    untouched = np.ones_like(tokens, bool)
    untouched[np.repeat(np.arange(32), 10)[w.ravel()], positions[w]] = False
    np.testing.assert_array_equal(batch["input_ids"][untouched], tokens[untouched])
    now = batch["input_ids"][r, positions][w]
    chosen += w.sum()
    masked += (now == MASK_ID).sum()
    kept += (now == ids[w]).sum()
    random += ((now != MASK_ID) & (now != ids[w])).sum()
    assert np.all(now[now != MASK_ID] >= N_SPECIAL)  # a random replacement is never a special token
  n = chosen
  for share, expected in ((masked / n, 0.8), (kept / n, 0.1), (random / n, 0.1)):
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert abs(share - expected) < 4 * sigma, (share, expected, n)


def test_whole_word_masking_takes_every_piece_of_a_word():
  starts = np.zeros(VOCAB, bool)
  starts[::3] = True  # a word is an id divisible by 3 and the (up to two) ids after it
  d = data(seq_len=64, max_predictions=10, starts=starts)
  batch = d.batch(0, 32)
  inst = d._epochs[0].take(np.arange(32))
  for r in range(32):
    w = batch["mlm_weights"][r].astype(bool)
    chosen = set(batch["mlm_positions"][r][w].tolist())
    assert 1 <= len(chosen) <= 10
    row, n = inst.tokens[r], inst.length[r]
    for p in chosen:
      # the whole word: back to its start (or a special), forward to the next start
      q = p
      while not starts[row[q]] and row[q - 1] not in (CLS_ID, SEP_ID):
        q -= 1
        assert q in chosen
      q = p + 1
      while q < n and not starts[row[q]] and row[q] not in (CLS_ID, SEP_ID):
        assert q in chosen
        q += 1


def test_batches_are_a_pure_function_of_seed_and_step():
  a, b = data(seed=3), data(seed=3)
  n = a.n_instances
  for step in (0, 5, n // 32, n // 32 + 1, 3 * n // 32 + 2):  # some batches span two epochs
    for k, v in b.batch(step, 32).items():  # b has not seen the earlier steps: a resumed run
      np.testing.assert_array_equal(v, a.batch(step, 32)[k])
  assert not np.array_equal(a.batch(0, 32)["input_ids"], a.batch(1, 32)["input_ids"])
  assert not np.array_equal(a.batch(0, 32)["input_ids"], data(seed=4).batch(0, 32)["input_ids"])
  # Epochs pair the sentences anew but keep epoch 0's length.
  assert len(a._epochs[1]) == n and not np.array_equal(a._epochs[1].tokens[:n // 2], a._epochs[0].tokens[:n // 2])


def test_eval_batches_are_fixed_and_held_out():
  d = data()
  first, again = d.eval_batches(16, 3), data().eval_batches(16, 3)
  assert len(first) == 3 and all(b["input_ids"].shape == (16, 64) for b in first)
  for x, y in zip(first, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  ids = np.concatenate([b["mlm_ids"][b["mlm_weights"] > 0] for b in first])
  assert set(doc_of(ids).tolist()) <= set(range(4))  # the validation documents' own ranges
  with pytest.raises(DataError, match="fewer than one batch of 4096"):
    d.eval_batches(4096)


def test_split_sentences_rule():
  text = ("Dr. Smith went to Washington, D.C. in 1990. He stayed! J. R. R. Tolkien wrote it, e.g. The Hobbit. "
          "\"Yes.\" She left (again.) Then 3 more came?\nA heading\n\nLast one.")
  assert bert.split_sentences(text) == [
      "Dr. Smith went to Washington, D.C. in 1990.", "He stayed!", "J. R. R. Tolkien wrote it, e.g. The Hobbit.",
      "\"Yes.\"", "She left (again.)", "Then 3 more came?", "A heading", "Last one."]
