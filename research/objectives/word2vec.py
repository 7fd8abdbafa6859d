"""Word2Vec's objective: CBOW and skip-gram with negative sampling, trained by sparse SGD.

The loss of one (input vector h, predicted word t) example is Mikolov et al. (2013b) eq. 4:
    -log s(h . u_t) - sum_k log s(-h . u_{n_k}),   s = sigmoid, n_k ~ unigram^0.75,
with h the mean of the context vectors (CBOW, gensim `cbow_mean=1`, predicting the centre)
or one context word's vector (skip-gram, predicting the centre from each context word,
as word2vec.c and gensim pair them). A negative equal to t is skipped, as both do.
One deliberate difference: in skip-gram the K negatives of a centre word are shared by all
its context pairs (BlazingText's minibatching, Gupta & Khare 2017), where gensim draws K
per pair. Each pair still sees K negatives from unigram^0.75; the gather and scatter of
output rows shrink from 2W * K to K per centre word and the scores become small batched
matmuls (a first version with per-pair negatives ran at ~0.07M words/s here; shared, the
benchmark measures ~0.5M, with analogy/SimLex within a point of gensim's).
The sigmoid is exact; gensim and word2vec.c read a 1000-entry table clamped at |f| = 6.

The update is plain SGD with gensim's per-example rule (word2vec_inner.pyx
`fast_sentence_*_neg`): g = (label - s(f)) * alpha; each output row gets g * h and the
input side gets the error sum_k g_k u_k; in CBOW every context word gets that whole error,
undivided by the window size, exactly as gensim and word2vec.c do with `cbow_mean=1`.
Updates touch only the rows a sub-step uses: a gather, the arithmetic, a scatter-add.
Examples inside one sub-step see the same tables and their updates add up (gensim's
threads apply theirs one by one, Hogwild-style); `batch_words` bounds that difference.

Speed (see benchmarks/word2vec_vs_gensim.py): a sub-step covers a contiguous span of the
token stream, so the input rows are gathered once per span position (B + 2W rows, not
B * 2W) and the 2W context offsets become static slices of that span; the input errors
are added back into span positions and scattered once. `sub_steps` sub-steps run in one
jitted `lax.scan`, so dispatch costs once per B * S centre words. On the 2-core CPU the
step then spends its time in the output-row gather/scatter and the small dots, not in
dispatch or the host (the host builds a step's arrays in ~6 ms, overlapped with the step).
A CBOW sub-step (B = 256) profiled on a Zen 4 EPYC, ~270 us: the scatter-add of the 1536
output rows 64 us, their gather 43 us, the g * h rows it adds 42 us, the input errors'
spread 29 us, the two batched dots ~15 us each, the input gather and scatter ~15 us each.
The g * h rows cost that much because XLA fuses h's 10-slice context sum into them, once per
row (1 + K times per centre). Tried without gain (interleaved A/B, paired ratios):
- the output scatter with [B, 1 + K] indices (no reshape); B = 512 or 1024 with fewer sub-steps;
- keeping h from being recomputed: an optimization barrier (XLA:CPU drops it before fusion);
  h from a gather + reduce (x0.85); h ending in a divide XLA will not duplicate (x0.59-0.65:
  the input gather then fuses into h, ten times over); h of the next sub-step computed at the
  end of this one and carried by the scan (the rows fell to 12 us, but the gather fused into
  h: x0.57). B = 128 with 128 sub-steps gave the same analogy as B = 256 (11.61 / 11.00 /
  11.62 against 11.56 / 10.98 / 11.67 over seeds 1-3): batching is not what keeps CBOW's
  analogy below gensim's.
- the second core. XLA:CPU runs a while body's small ops one at a time, and two jitted calls
  on one device one after the other, so a sub-step uses one core (gensim runs two Hogwild
  threads). Two CPU devices do run at once: each scanned half the sub-steps from the same
  tables and the step summed their changes. Summing two 17 MB tables across devices costs
  XLA:CPU 4-8 ms a table, so only long steps gain: sub_steps=256 ran level with one device,
  512 x1.3-1.4 the words/s. But the replicas see each other's updates once a step, and at 512
  analogy fell 1.2 points (seed 1; 0.8 at 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import config as config_lib
from research.config import ConfigError, need, one_of
from research.data.text import load_documents
from research.data.words import WordBatches, build_vocab, context_offsets, encode, sentences
from research.objectives import base


@dataclass
class Config:
  """The algorithm's settings, with gensim 4's defaults (`Word2Vec(window=5, min_count=5,
  sample=1e-3, negative=5, alpha=0.025, min_alpha=0.0001, epochs=5)`)."""
  name: str = "word2vec"
  architecture: str = "cbow"  # "cbow" (mean of the context, gensim's cbow_mean=1) | "skipgram"
  window: int = 5  # largest distance to a context word; each centre draws its own in 1..window
  min_count: int = 5  # rarer words are dropped from the vocabulary (and the text)
  sample: float = 1e-3  # frequent-word subsampling threshold (0 = off)
  negative: int = 5  # negatives per predicted word, drawn from unigram^0.75
  ns_exponent: float = 0.75
  alpha: float = 0.025  # SGD learning rate, decayed linearly over all epochs ...
  min_alpha: float = 0.0001  # ... to this
  epochs: int = 5  # sets train.steps (derived from the corpus, as model.vocab_size is)
  # Execution, not the algorithm: a jitted step runs `sub_steps` SGD updates of
  # `batch_words` centre words each (lax.scan), so dispatch costs once per many updates.
  batch_words: int = 256
  sub_steps: int = 64
  max_sentence_length: int = 10_000  # longer sentences are cut, as gensim's MAX_WORDS_IN_BATCH

  def validate(self):
    one_of("objective.architecture", self.architecture, ("cbow", "skipgram"))
    for key in ("window", "min_count", "negative", "epochs", "batch_words", "sub_steps", "max_sentence_length"):
      need(getattr(self, key) > 0, f"objective.{key} must be positive, got {getattr(self, key)}")
    need(self.sample >= 0, f"objective.sample must be >= 0, got {self.sample}")
    need(0 < self.min_alpha <= self.alpha, f"objective.min_alpha={self.min_alpha} must be in (0, alpha={self.alpha}]")


def _gather(table, ids):
  return table.at[ids].get(mode="promise_in_bounds")


def _scatter_add(table, ids, rows):
  return table.at[ids.reshape(-1)].add(rows.reshape(-1, table.shape[1]), mode="promise_in_bounds")


def _shifts(window: int):
  """(slot j, first span row) of each context offset: X[start : start + B] are the inputs at offset j."""
  return [(j, window + int(o)) for j, o in enumerate(context_offsets(window))]


def _spread(errors, context, window):
  """Adds each example's input error into the span rows of its context words.

  `errors` is [B, D] (CBOW: one error for all context words of a centre) or [B, 2W, D]
  (skip-gram: one per pair). Span row r takes row r - start_j of slot j: static slices of
  the inputs padded once, which XLA fuses into one loop (padding each term costs 5x more).
  """
  B, W = context.shape[0], window
  pad = lambda x: jnp.pad(x, ((2 * W, 2 * W),) + ((0, 0),) * (x.ndim - 1))
  errors, context = pad(errors), pad(context)
  total = None
  for j, start in _shifts(window):
    rows = slice(2 * W - start, 2 * W - start + B + 2 * W)
    part = context[rows, j, None] * (errors[rows] if errors.ndim == 2 else errors[rows, j])
    total = part if total is None else total + part
  return total


# ------------------------------------------------------------------------------- CBOW


def _cbow_logits(syn0, syn1, sub, window):
  span, context, negatives = sub["span"], sub["context"], sub["negatives"]
  B = context.shape[0]
  X = _gather(syn0, span)  # [B + 2W, D]
  ctx_sum = sum(context[:, j, None] * X[start:start + B] for j, start in _shifts(window))
  count = context.sum(1)
  h = ctx_sum / jnp.maximum(count, 1.0)[:, None]
  centre = span[window:window + B]
  targets = jnp.concatenate([centre[:, None], negatives], 1)  # [B, 1 + K]
  U = _gather(syn1, targets)
  f = jnp.einsum("bd,bkd->bk", h, U)  # batched dots: 1.3x faster than a broadcast-multiply-sum on CPU
  # A centre with no context word trains nothing; a negative that is the centre is skipped.
  weight = (count > 0)[:, None] * jnp.concatenate(
      [jnp.ones_like(centre[:, None]), negatives != centre[:, None]], 1).astype(f.dtype)
  return f, weight, (h, U, targets)


def _ns_loss(f, weight):
  """Summed negative-sampling loss; column 0 of the last axis is the true word."""
  return -(jax.nn.log_sigmoid(f[..., 0]) * weight[..., 0]).sum() - (
      jax.nn.log_sigmoid(-f[..., 1:]) * weight[..., 1:]).sum()


def _sgd_scale(f, weight, alpha):
  """gensim's g = (label - sigmoid(f)) * alpha (minus alpha times d loss / d f), and the loss.

  The loss is only reported, so it reuses the sigmoid: log_sigmoid's exact form (softplus,
  selects) cost skip-gram a fifth of its step time on CPU.
  """
  labels = jnp.zeros(f.shape[-1], f.dtype).at[0].set(1.0)
  s = jax.nn.sigmoid(f)
  p_label = jnp.where(labels > 0, s, 1.0 - s)
  loss = -(jnp.log(jnp.maximum(p_label, 1e-30)) * weight).sum()
  return (labels - s) * weight * alpha, loss


def cbow_update(syn0, syn1, sub, window):
  """One SGD sub-step of CBOW; returns the new tables, the summed loss, the examples and |g|^2."""
  f, weight, (h, U, targets) = _cbow_logits(syn0, syn1, sub, window)
  g, loss = _sgd_scale(f, weight, sub["alpha"])
  error = jnp.einsum("bk,bkd->bd", g, U)  # gensim's `work`, before any row changes
  syn1 = _scatter_add(syn1, targets, g[..., None] * h[:, None, :])
  syn0 = _scatter_add(syn0, sub["span"], _spread(error, sub["context"], window))
  return syn0, syn1, loss, weight[:, 0].sum(), jnp.square(g).sum()


# --------------------------------------------------------------------------- skip-gram


def _skipgram_logits(syn0, syn1, sub, window):
  span, context, negatives = sub["span"], sub["context"], sub["negatives"]
  B = context.shape[0]
  X = _gather(syn0, span)
  inputs = jnp.stack([X[start:start + B] for _, start in _shifts(window)], 1)  # [B, 2W, D]
  centre = span[window:window + B]
  targets = jnp.concatenate([centre[:, None], negatives], 1)  # [B, 1 + K], shared by the pairs
  U = _gather(syn1, targets)
  f = jnp.einsum("bjd,bkd->bjk", inputs, U)  # [B, 2W, 1 + K]; batched dots: 3x a broadcast-multiply-sum
  keep = jnp.concatenate([jnp.ones_like(centre[:, None]), negatives != centre[:, None]], 1)
  weight = context[..., None] * keep[:, None, :].astype(f.dtype)
  return f, weight, (inputs, U, targets)


def skipgram_update(syn0, syn1, sub, window):
  """One SGD sub-step of skip-gram; returns the new tables, the summed loss, the pairs and |g|^2."""
  f, weight, (inputs, U, targets) = _skipgram_logits(syn0, syn1, sub, window)
  g, loss = _sgd_scale(f, weight, sub["alpha"])  # [B, 2W, 1 + K]
  error = jnp.einsum("bjk,bkd->bjd", g, U)  # each pair's input error
  # Output rows sum g * input over the pairs: written as 2W slice terms, which XLA fuses into
  # one loop; as a dot contracting g's middle axis it fell back to a 5x slower dot loop.
  rows = sum(g[:, j, :, None] * inputs[:, j, None, :] for j in range(inputs.shape[1]))
  syn1 = _scatter_add(syn1, targets, rows)
  syn0 = _scatter_add(syn0, sub["span"], _spread(error, sub["context"], window))
  return syn0, syn1, loss, weight[..., 0].sum(), jnp.square(g).sum()


# ------------------------------------------------------------------------ trainer seams


def _tables(model):
  return model.syn0[...], model.syn1neg[...]


def sub_step_loss(syn0, syn1, sub: dict, architecture: str):
  """(summed loss, examples) of one sub-step's arrays: the function the updates descend."""
  window = sub["context"].shape[-1] // 2
  logits = _skipgram_logits if architecture == "skipgram" else _cbow_logits
  f, weight, _ = logits(syn0, syn1, sub, window)
  return _ns_loss(f, weight), weight[..., 0].sum()


def loss_fn(model, batch: dict, rng: jax.Array, train: bool, *, architecture: str):
  """Mean negative-sampling loss of a step's examples at the current tables (no update)."""
  del rng, train
  syn0, syn1 = _tables(model)
  loss, n = jax.vmap(lambda sub: sub_step_loss(syn0, syn1, sub, architecture))(batch)
  return loss.sum() / jnp.maximum(n.sum(), 1.0), {"examples": n.sum()}


def make_train_step(graphdef, objective: Config):
  """The trainer's step for Word2Vec: `sub_steps` sparse SGD updates in one lax.scan."""
  window = objective.window
  update = skipgram_update if objective.architecture == "skipgram" else cbow_update

  def body(tables, sub):
    syn0, syn1, loss, n, g2 = update(*tables, sub, window)
    return (syn0, syn1), (loss, n, g2)

  def train_step(state: dict, batch: dict):
    model = nnx.merge(graphdef, state["params"])
    (syn0, syn1), (loss, n, g2) = jax.lax.scan(body, _tables(model), batch)
    model.syn0[...] = syn0
    model.syn1neg[...] = syn1
    metrics = {
        "loss": loss.sum() / jnp.maximum(n.sum(), 1.0),
        # The norm of the SGD step scalars g (alpha * dloss/dlogit): what the NaN check watches.
        "grad_norm": jnp.sqrt(g2.sum()),
        "alpha": batch["alpha"][-1],
        "examples": n.sum(),
    }
    return {"step": state["step"] + 1, "params": nnx.state(model, nnx.Param), "opt": state["opt"]}, metrics

  return train_step


class Task(base.Task):
  """Text -> words -> vocabulary -> subsampled windows -> CBOW or skip-gram tables.

  Word2Vec trains on the whole corpus (as gensim does): no validation split; its
  evaluation is analogy and similarity (`evaluate`). `train.steps` is derived from
  `objective.epochs` and the corpus, as `model.vocab_size` is from the vocabulary.
  """

  def __init__(self, cfg: config_lib.Config, log=print):
    super().__init__(cfg, log)
    o = cfg.objective
    sents = sentences(load_documents(cfg.data), o.max_sentence_length)
    self.vocab = build_vocab(sents, o.min_count)
    if len(self.vocab.words) < 2:
      raise ConfigError(f"objective.min_count={o.min_count} leaves {len(self.vocab.words)} words; lower it or use more text")
    ids, sentence = encode(sents, self.vocab)
    self.derive(cfg.model, "vocab_size", len(self.vocab.words), "the corpus vocabulary")
    self.batches = WordBatches(
        ids, sentence, self.vocab.counts, window=o.window, sample=o.sample, negative=o.negative,
        ns_exponent=o.ns_exponent, epochs=o.epochs, batch_words=o.batch_words, sub_steps=o.sub_steps,
        alpha=o.alpha, min_alpha=o.min_alpha, seed=cfg.train.seed)
    self.derive(cfg.train, "steps", self.batches.steps, f"objective.epochs={o.epochs} over the corpus")
    self.tokens_per_step = o.batch_words * o.sub_steps  # effective (subsampled) centre words
    raw = sum(len(s) for s in sents)
    self.facts = {"raw_words": raw, "vocab_words": int(len(ids)), "vocab_size": cfg.model.vocab_size,
                  "effective_words": self.batches.total_words, "sentences": len(sents)}
    log(f"data: {len(sents):,} sentences, {raw:,} words, {len(ids):,} in a vocabulary of {cfg.model.vocab_size:,} "
        f"(min_count {o.min_count}); {self.batches.total_words:,} effective words over {o.epochs} epochs "
        f"after subsampling (sample {o.sample}) = train.steps {cfg.train.steps:,} of "
        f"{o.sub_steps} x {o.batch_words} words")

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    return loss_fn(model, batch, rng, train, architecture=self.cfg.objective.architecture)

  def optimizer(self, total_steps: int) -> optax.GradientTransformation:
    return optax.identity()  # SGD with the per-sub-step alpha the batch carries; no state to keep

  def make_train_step(self, graphdef, tx):
    return make_train_step(graphdef, self.cfg.objective)

  def step_flops(self, graphdef, compiled, example: dict, state: dict) -> float:
    from research.train.flops import compiled_flops

    # XLA counts the body of the sub-step scan once; nearly all of a step is that body.
    return compiled_flops(compiled) * self.cfg.objective.sub_steps

  def train_batch(self, step: int) -> dict:
    return self.batches.batch(step)

  def evaluate(self, model) -> dict:
    from research.evaluate.word_vectors import evaluate_vectors

    vectors = np.asarray(jax.device_get(model.syn0[...]))
    result = evaluate_vectors(vectors, self.vocab.words)
    self.log(result.pop("note"))
    return result

  def save_artifacts(self, directory) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    self.vocab.save(directory / "vocab.txt")
