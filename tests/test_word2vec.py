"""Word2Vec: data formulas, loss and updates against numpy and gensim's rules, evaluation, export, CLI."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch.cli import main
from research.data.words import (WordBatches, batch_arrays, build_vocab, context_offsets, encode,
                                 keep_probabilities, negative_distribution, sentences, tokenize, unigram_table)
from research.evaluate import word_vectors as wv
from research.objectives import word2vec as w2v

jax.config.update("jax_default_matmul_precision", "highest")


# ------------------------------------------------------------------------------ data


def test_tokenisation_and_vocabulary_rule():
  assert tokenize("Don't STOP: 3.5 cafés_x!") == ["don", "t", "stop", "3", "5", "cafés", "x"]
  sents = sentences(["b a c\n\nA b", "c a a d"], max_length=2)
  assert sents == [["b", "a"], ["c"], ["a", "b"], ["c", "a"], ["a", "d"]]
  vocab = build_vocab(sents, min_count=2)
  assert vocab.words == ["a", "b", "c"] and vocab.counts.tolist() == [4, 2, 2]  # ties: first seen first
  ids, sentence = encode(sents, vocab)
  assert ids.tolist() == [1, 0, 2, 0, 1, 2, 0, 0] and sentence.tolist() == [0, 0, 1, 2, 2, 3, 3, 4]


def test_keep_probabilities_are_gensims():
  from gensim.models import Word2Vec

  corpus = [["the"] * 300 + ["of"] * 60 + ["cat"] * 6 + ["dog"] * 2] * 3
  model = Word2Vec(vector_size=4, min_count=1, sample=1e-2)
  model.build_vocab(corpus)
  vocab = build_vocab(corpus, 1)
  ours = keep_probabilities(vocab.counts, 1e-2)
  theirs = [model.wv.get_vecattr(w, "sample_int") / 2**32 for w in vocab.words]
  np.testing.assert_allclose(ours, theirs, atol=1e-9)
  t = 1e-2 * vocab.counts.sum()  # the formula, for "the" (count 900)
  assert ours[0] == pytest.approx((math.sqrt(900 / t) + 1) * t / 900) and ours[-1] == 1.0
  assert keep_probabilities(vocab.counts, 0).tolist() == [1.0] * 4


def test_subsampling_keeps_each_word_at_its_rate():
  counts = np.array([20000, 2000, 200])
  ids = np.repeat(np.arange(3, dtype=np.int32), counts)
  batches = WordBatches(ids, np.zeros_like(ids), counts, window=2, sample=1e-2, negative=2, ns_exponent=0.75,
                        epochs=2, batch_words=64, sub_steps=2, alpha=0.025, min_alpha=1e-4, seed=0)
  keep = keep_probabilities(counts, 1e-2)
  for epoch in (0, 1):
    kept = np.bincount(batches.epoch_stream(epoch)[0], minlength=3)
    assert np.all(np.abs(kept / counts - keep) <= 4 * np.sqrt(keep * (1 - keep) / counts) + 1e-9)
  assert not np.array_equal(batches.epoch_stream(0)[0], batches.epoch_stream(1)[0])  # fresh draws per epoch


def test_negatives_follow_unigram_to_the_075_like_gensim():
  from gensim.models import Word2Vec

  corpus = [["a"] * 500 + ["b"] * 120 + ["c"] * 30 + ["d"] * 7 + ["e"] * 1]
  model = Word2Vec(vector_size=4, min_count=1)
  model.build_vocab(corpus)
  counts = build_vocab(corpus, 1).counts
  expected = counts ** 0.75 / (counts ** 0.75).sum()
  np.testing.assert_allclose(negative_distribution(counts), expected)
  gensim_p = np.diff(model.cum_table, prepend=0) / model.cum_table[-1]
  np.testing.assert_allclose(expected, gensim_p, atol=1e-8)
  table = unigram_table(counts, size=1 << 16)
  shares = np.bincount(table, minlength=len(counts)) / len(table)
  assert len(table) == 1 << 16 and np.abs(shares - expected).max() <= 1 / len(table)
  draws = batch_arrays(np.zeros(4096, np.int32), np.zeros(4096, np.int32), 0, 512, 8, 2, 5, table,
                       np.random.default_rng(0), np.zeros(8, np.float32))["negatives"]
  freq = np.bincount(draws.ravel(), minlength=len(counts)) / draws.size
  assert np.all(np.abs(freq - expected) <= 4 * np.sqrt(expected / draws.size) + 1 / len(table))


def test_windows_shrink_and_stop_at_sentence_ends():
  ids = np.arange(10, 30, dtype=np.int32)
  sentence = np.repeat([0, 1, 2], [7, 3, 10]).astype(np.int32)
  W, B, S = 3, 4, 5
  b = batch_arrays(ids, sentence, 0, B, S, W, 2, np.zeros(8, np.int32), np.random.default_rng(1),
                   np.zeros(S, np.float32))
  offsets = context_offsets(W)
  assert b["span"].shape == (S, B + 2 * W) and b["context"].shape == (S, B, 2 * W)
  assert b["span"][1].tolist() == [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]  # centres 4..7 with a halo of 3
  assert b["centre"].ravel().tolist() == [1.0] * 20
  spans = []
  for s in range(S):
    for i in range(B):
      p = s * B + i
      ctx = offsets[b["context"][s, i] > 0]
      assert all(sentence[p + o] == sentence[p] for o in ctx)  # never across a sentence end
      reach = np.abs(ctx).max() if len(ctx) else 0
      # Every in-sentence slot within the reduced window is used: the window is symmetric.
      inside = [o for o in offsets if abs(o) <= reach and 0 <= p + o < 20 and sentence[p + o] == sentence[p]]
      assert sorted(ctx.tolist()) == sorted(inside)
      spans.append(reach)
  assert 1 <= max(spans) <= W and len(set(spans)) > 1  # reduced windows vary, never past W
  tail = batch_arrays(ids, sentence, 16, B, 2, W, 2, np.zeros(8, np.int32), np.random.default_rng(1),
                      np.zeros(2, np.float32))
  assert tail["centre"].ravel().tolist() == [1.0] * 4 + [0.0] * 4 and tail["context"][1].sum() == 0


def test_batches_are_a_pure_function_of_seed_and_step():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 50, 3000).astype(np.int32)
  counts = np.bincount(ids, minlength=50) + 1
  make = lambda: WordBatches(ids, np.arange(3000, dtype=np.int32) // 15, counts, window=3, sample=1e-2, negative=3,
                             ns_exponent=0.75, epochs=3, batch_words=32, sub_steps=4, alpha=0.025, min_alpha=1e-4,
                             seed=7)
  a, b = make(), make()
  assert a.steps == int(sum(-(-n // 128) for n in a.epoch_words)) > 6
  later = b.batch(a.steps - 1)  # out of order: a resumed run starts anywhere
  for step in (0, 3, a.steps - 1):
    x, y = a.batch(step), (later if step == a.steps - 1 else b.batch(step))
    assert all(np.array_equal(x[k], y[k]) for k in x)
  alphas = np.concatenate([a.batch(k)["alpha"] for k in range(a.steps)])
  # gensim's schedule: linear in words done, from alpha down to min_alpha at the end of the last epoch.
  assert alphas[0] == pytest.approx(0.025, rel=1e-6) and np.all(np.diff(alphas) <= 0)
  assert np.diff(alphas)[:20].max() < 0 and 1e-4 <= alphas[-1] < 1e-3


# ----------------------------------------------------------------- loss, gradient, update


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_examples(sub, architecture):
  """(input word ids, the true word, its negatives) of every example, read from the arrays."""
  span, context, negatives = sub["span"], sub["context"], sub["negatives"]
  W = context.shape[1] // 2
  for i in range(context.shape[0]):
    centre = span[W + i]
    ctx = [span[W + i + o] for j, o in enumerate(context_offsets(W)) if context[i, j]]
    negs = [n for n in negatives[i] if n != centre]
    if architecture == "cbow" and ctx:
      yield ctx, centre, negs
    elif architecture == "skipgram":
      for c in ctx:
        yield [c], centre, negs


def numpy_loss_and_grads(syn0, syn1, sub, architecture):
  """Eq. 4 of Mikolov et al. 2013b summed over examples, and its gradient, by hand."""
  loss, g0, g1 = 0.0, np.zeros_like(syn0), np.zeros_like(syn1)
  for ctx, centre, negs in numpy_examples(sub, architecture):
    h = syn0[ctx].mean(0)
    dh = np.zeros_like(h)
    for t, label in [(centre, 1)] + [(n, 0) for n in negs]:
      s = sigmoid(h @ syn1[t])
      loss -= np.log(s if label else 1 - s)
      g1[t] += (s - label) * h
      dh += (s - label) * syn1[t]
    for c in ctx:
      g0[c] += dh / len(ctx)
  return loss, g0, g1


def gensim_rule(syn0, syn1, sub, architecture, alpha):
  """gensim's word2vec_inner.pyx update, example by example (fast_sentence_sg_neg / fast_sentence_cbow_neg)."""
  syn0, syn1 = syn0.copy(), syn1.copy()
  for ctx, centre, negs in numpy_examples(sub, architecture):
    h = syn0[ctx].mean(0)
    work = np.zeros_like(h)
    for t, label in [(centre, 1)] + [(n, 0) for n in negs]:
      g = (label - sigmoid(h @ syn1[t])) * alpha
      work += g * syn1[t]
      syn1[t] += g * h
    for c in ctx:
      syn0[c] += work  # cbow_mean=1: the error is not divided by the window size
  return syn0, syn1


def tiny_sub(seed, V=9, D=6, B=4, W=2, K=3, single=False):
  rng = np.random.default_rng(seed)
  syn0 = rng.normal(0, 0.5, (V, D)).astype(np.float32)
  syn1 = rng.normal(0, 0.5, (V, D)).astype(np.float32)
  sub = {"span": rng.permutation(V)[:B + 2 * W].astype(np.int32),  # distinct rows: no duplicate updates
         "context": (rng.random((B, 2 * W)) < 0.7).astype(np.float32),
         "centre": np.ones(B, np.float32),
         "negatives": rng.integers(0, V, (B, K)).astype(np.int32),
         "alpha": np.float32(0.1)}
  sub["negatives"][0, 0] = sub["span"][W]  # a negative equal to the true word is skipped
  if single:  # one centre word, one context word: gensim's sequential rule and a batch agree exactly
    sub["context"][:] = 0
    sub["context"][0, W] = 1
    sub["negatives"][0] = [n for n in range(V) if n not in sub["span"][W:W + 2]][:K]
  return syn0, syn1, sub


@pytest.mark.parametrize("architecture", ["cbow", "skipgram"])
def test_loss_and_gradient_match_numpy(architecture):
  syn0, syn1, sub = tiny_sub(0)
  (loss, n), grads = jax.value_and_grad(w2v.sub_step_loss, argnums=(0, 1), has_aux=True)(
      jnp.asarray(syn0), jnp.asarray(syn1), jax.tree.map(jnp.asarray, sub), architecture)
  ref_loss, ref_g0, ref_g1 = numpy_loss_and_grads(syn0.astype(np.float64), syn1.astype(np.float64), sub, architecture)
  assert int(n) == len(list(numpy_examples(sub, architecture))) > 2
  assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
  np.testing.assert_allclose(grads[0], ref_g0, atol=1e-5)
  np.testing.assert_allclose(grads[1], ref_g1, atol=1e-5)


@pytest.mark.parametrize("architecture", ["cbow", "skipgram"])
def test_update_is_gensims_rule(architecture):
  update = w2v.cbow_update if architecture == "cbow" else w2v.skipgram_update
  for single in (True, False):
    syn0, syn1, sub = tiny_sub(1, single=single)
    new0, new1, loss, n, _ = update(jnp.asarray(syn0), jnp.asarray(syn1), jax.tree.map(jnp.asarray, sub), 2)
    ref0, ref1 = gensim_rule(syn0.astype(np.float64), syn1.astype(np.float64), sub, architecture, 0.1)
    exact, examples = w2v.sub_step_loss(jnp.asarray(syn0), jnp.asarray(syn1), jax.tree.map(jnp.asarray, sub), architecture)
    assert float(loss) == pytest.approx(float(exact), rel=1e-5) and int(n) == int(examples)  # the reported loss
    if single:  # one example: exactly gensim's update
      np.testing.assert_allclose(new0, ref0, atol=1e-6)
      np.testing.assert_allclose(new1, ref1, atol=1e-6)
    else:  # a batch: the output rows move by -alpha x the summed gradient (gensim applies them one by one)
      _, _, g1 = numpy_loss_and_grads(syn0.astype(np.float64), syn1.astype(np.float64), sub, architecture)
      np.testing.assert_allclose(new1, syn1 - 0.1 * g1, atol=1e-6)
      assert np.abs(new1 - ref1).max() < 0.02  # and stay close to the sequential rule


# --------------------------------------------------------------------- evaluation, export


def planted():
  """Vectors in which every analogy a:b :: c:d holds exactly: word = country/capital axis + identity."""
  pairs = [("france", "paris"), ("italy", "rome"), ("spain", "madrid"), ("japan", "tokyo")]
  words, vecs = [], []
  for k, (country, capital) in enumerate(pairs):
    for w, kind in ((country, 0), (capital, 1)):
      v = np.zeros(10)
      v[k] = 1.0
      v[8] = 2.0 * kind  # "capital of" is one direction, shared by all pairs
      words.append(w)
      vecs.append(v)
  words.append("zebra")
  vecs.append(np.eye(10)[9])
  return words, np.asarray(vecs, np.float32)


def test_analogy_and_similarity_on_planted_vectors(tmp_path):
  words, vectors = planted()
  questions = [("france", "paris", "italy", "rome"), ("spain", "madrid", "japan", "tokyo"),
               ("paris", "france", "rome", "italy"), ("france", "paris", "italy", "unknownword")]
  accuracy, answered, total = wv.analogy_accuracy(vectors, words, questions)
  assert (accuracy, answered, total) == (1.0, 3, 4)  # the question with an unknown word is skipped
  # restrict_vocab: only the 6 most frequent words are searched; questions with others are skipped.
  accuracy, answered, _ = wv.analogy_accuracy(vectors, words, questions, restrict_vocab=6)
  assert (accuracy, answered) == (1.0, 2)
  pairs = [("france", "france", 10.0), ("france", "paris", 5.0), ("france", "zebra", 0.0), ("rome", "nope", 3.0)]
  assert wv.pair_spearman(vectors, words, pairs) == (pytest.approx(1.0), 3)
  assert wv.nearest(vectors, words, ["paris", "italy"], ["france"], k=1)[0][0] == "rome"


def test_evaluation_agrees_with_gensim():
  from gensim.models import KeyedVectors
  from gensim.test.utils import datapath

  questions = wv.read_analogies()
  vocab = sorted({w for q in questions for w in q})
  rng = np.random.default_rng(0)
  base = {w: rng.normal(size=20) for w in vocab}
  for a, b, c, d in questions[::7]:  # make some analogies (nearly) true, so accuracy is not ~0
    base[d] = base[b] - base[a] + base[c] + 0.1 * rng.normal(size=20)
  vectors = np.asarray([base[w] for w in vocab], np.float32)
  kv = KeyedVectors(20)
  kv.add_vectors(vocab, vectors)
  ours, _, _ = wv.analogy_accuracy(vectors, vocab, restrict_vocab=400)
  theirs, _ = kv.evaluate_word_analogies(datapath("questions-words.txt"), restrict_vocab=400)
  assert ours == pytest.approx(theirs) and ours > 0.05
  for name in ("wordsim353.tsv", "simlex999.txt"):
    _, (rho, _), _ = kv.evaluate_word_pairs(datapath(name))
    assert wv.pair_spearman(vectors, vocab, wv.read_pairs(datapath(name)))[0] == pytest.approx(rho, abs=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_export_loads_in_gensim(tmp_path, binary):
  from gensim.models import KeyedVectors

  words = ["the", "café", "naïve", "x"]
  vectors = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
  path = tmp_path / ("v.bin" if binary else "v.txt")
  wv.save_word2vec_format(path, vectors, words, binary=binary)
  kv = KeyedVectors.load_word2vec_format(str(path), binary=binary)
  assert kv.index_to_key == words
  np.testing.assert_array_equal(kv.vectors, vectors)


# ------------------------------------------------------------------------ training, CLI


def topic_corpus(path, n_lines=600, seed=0):
  """Two topics that never share a sentence: words should end up nearer their own topic."""
  rng = np.random.default_rng(seed)
  topics = [["cat", "dog", "pet", "fur", "paw", "tail"], ["car", "road", "wheel", "motor", "fuel", "drive"]]
  lines = [" ".join(rng.choice(topics[k % 2], 12)) for k in range(n_lines)]
  path.write_text("\n".join(lines) + "\n")
  return topics


@pytest.mark.parametrize("architecture", ["cbow", "skipgram"])
def test_training_separates_topics_and_cli_answers(tmp_path, capsys, architecture):
  topics = topic_corpus(tmp_path / "topics.txt")
  run = tmp_path / "run"
  overrides = [f"data.path={tmp_path / 'topics.txt'}", f"data.cache_dir={tmp_path / 'cache'}", "objective.min_count=1",
               "model.vector_size=16", "objective.batch_words=32", "objective.sub_steps=8", "objective.epochs=3",
               "objective.sample=0", "objective.alpha=0.05", "train.progress=false", "train.log_every=2"]
  assert main(["train", f"experiments/{architecture}_wiki", *overrides, "--run-dir", str(run)]) == 0
  out = capsys.readouterr().out
  assert "analogy_accuracy" in out and "restrict_vocab=300,000" in out and (run / "artifacts/vocab.txt").exists()

  assert main(["neighbors", str(run), "cat", "-k", "3"]) == 0
  near = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
  assert len(near) == 3 and set(near) <= set(topics[0])
  assert main(["neighbors", str(run), "dog - cat + car", "-k", "2"]) == 0
  assert len(capsys.readouterr().out.splitlines()) == 2
  assert main(["neighbors", str(run), "unicorn"]) == 2
  assert "not in the vocabulary: unicorn" in capsys.readouterr().err
  assert main(["neighbors", str(run), "--export", str(tmp_path / "v.bin"), "--binary"]) == 0
  from gensim.models import KeyedVectors
  kv = KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
  assert set(kv.index_to_key) == set(topics[0] + topics[1]) and kv.vector_size == 16
