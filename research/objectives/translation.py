"""Translation with teacher forcing: an encoder-decoder maps source tokens to target logits.

The loss is the mean cross-entropy (nats) over real target tokens (padding masked out) of
predicting y_t from the source and the gold prefix y_<t (teacher forcing; Sutskever et al.
2014). Evaluation adds BLEU of greedy translations of the validation pairs
(`research/evaluate/bleu.py`); test BLEU is `lineage bleu RUN_DIR --split test`.
Data: research/data/translation.py; model: any `model.name` whose model takes
(src [B, S], tgt_in [B, T]) -> logits [B, T, V] and has `encode`/`decode_step`.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research import decode
from research.config import Config
from research.data import translation as data
from research.data.text import cache_dir
from research.evaluate.bleu import bleu
from research.models import build_model
from research.tokenizers import PAD_ID, load_tokenizer, train_or_load


def make_loss_fn(sampling_ratio: float = 0.0):
  """The pure `loss_fn(model, batch, rng, train)`; in training, with `sampling_ratio` > 0, each
  decoder input after bos is the model's own previous prediction with that probability
  (scheduled sampling, Bengio et al. 2015) instead of the gold token."""

  def loss_fn(model, batch: dict, rng: jax.Array, train: bool):
    if train and sampling_ratio > 0:
      logits = decode.scheduled_sampling_logits(model, batch["src"], batch["tgt_in"], sampling_ratio,
                                                jax.random.fold_in(rng, 1))
    else:
      logits = model(batch["src"], batch["tgt_in"], deterministic=not train, rngs=nnx.Rngs(dropout=rng))
    targets = batch["tgt_out"]
    mask = (targets != PAD_ID).astype(jnp.float32)
    n = jnp.maximum(mask.sum(), 1.0)
    loss = (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * mask).sum() / n
    # The target's logit is the largest (argmax == target but for exact ties; far cheaper on CPU).
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    accuracy = ((target_logit >= logits.max(-1)) * mask).sum() / n
    return loss, {"accuracy": accuracy}

  return loss_fn


def derived_metrics(metrics: dict) -> dict:
  return {"perplexity": math.exp(min(metrics["loss"], 50.0))} if "loss" in metrics else {}


def tokenizers(cfg: Config, train_pairs, cache: Path):
  """(source, target) tokenizers: one shared sentencepiece model, or one per language."""
  if cfg.model.shared_vocab:
    tok = train_or_load(cfg.tokenizer, [s for s, _ in train_pairs] + [t for _, t in train_pairs], cache)
    return tok, tok
  return (train_or_load(cfg.tokenizer, [s for s, _ in train_pairs], cache),
          train_or_load(cfg.tokenizer, [t for _, t in train_pairs], cache))


def save_tokenizers(directory: Path, src_tok, tgt_tok) -> None:
  src_tok.save(directory / "src_tokenizer")
  tgt_tok.save(directory / "tgt_tokenizer")


def load_tokenizers(run_dir: Path):
  return load_tokenizer(run_dir / "artifacts" / "src_tokenizer"), load_tokenizer(run_dir / "artifacts" / "tgt_tokenizer")


class Task:
  """Sentence pairs -> tokenizers -> fixed-shape padded batches -> an encoder-decoder."""

  derived_metrics = staticmethod(derived_metrics)

  def __init__(self, cfg: Config, log=print):
    self.cfg, m = cfg, cfg.model
    self.loss_fn = make_loss_fn(sampling_ratio=0.0)  # teacher forcing
    self.splits = data.load_pairs(cfg.data)
    self.src_tok, self.tgt_tok = tokenizers(cfg, self.splits["train"], cache_dir(cfg.data))
    m.src_vocab_size = m.src_vocab_size or self.src_tok.vocab_size
    m.tgt_vocab_size = m.tgt_vocab_size or self.tgt_tok.vocab_size
    src, tgt = data.encode_pairs(self.splits["train"], self.src_tok, self.tgt_tok)
    keep = [i for i in range(len(src)) if data.fits(src[i], tgt[i], m.max_src_len, m.max_tgt_len)]
    tc = cfg.train
    self.data = data.TranslationData([src[i] for i in keep], [tgt[i] for i in keep], m.max_src_len,
                                     m.max_tgt_len, tc.seed, tc.batch_size)
    vsrc, vtgt = data.encode_pairs(self.splits["valid"], self.src_tok, self.tgt_tok)
    self._eval = data.eval_batches(vsrc, vtgt, tc.batch_size, m.max_src_len, m.max_tgt_len, tc.eval_batches)
    self.tokens_per_step = tc.batch_size * (m.max_src_len + m.max_tgt_len)  # padded positions processed
    n = {k: len(v) for k, v in self.splits.items()}
    self.facts = {"pairs": n, "train_pairs_kept": len(keep),
                  "vocab_size": {"src": self.src_tok.vocab_size, "tgt": self.tgt_tok.vocab_size}}
    log(f"data: {n['train']:,} train ({len(keep):,} within {m.max_src_len}/{m.max_tgt_len} tokens) / "
        f"{n['valid']:,} valid / {n['test']:,} test pairs; vocab {self.src_tok.vocab_size:,} -> "
        f"{self.tgt_tok.vocab_size:,}{' (shared)' if m.shared_vocab else ''}")

  def build_model(self, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Module:
    return build_model(self.cfg, rngs, dtype)

  def train_batch(self, step: int) -> dict:
    return self.data.batch(step)

  def eval_batches(self) -> list[dict]:
    return self._eval

  def evaluate(self, model) -> dict:
    """BLEU of greedy translations of (at most eval_batches x batch_size) validation pairs."""
    tc = self.cfg.train
    pairs = self.splits["valid"][: tc.eval_batches * tc.batch_size or None]
    return {"bleu": bleu(model, pairs, self.src_tok, self.tgt_tok, batch_size=tc.batch_size)}

  def save_artifacts(self, directory: Path) -> None:
    save_tokenizers(directory, self.src_tok, self.tgt_tok)
