"""Translation with teacher forcing: an encoder-decoder maps source tokens to target logits.

The loss is the mean cross-entropy (nats) over real target tokens (padding masked out) of
predicting y_t from the source and the gold prefix y_<t (teacher forcing; Sutskever et al.
2014). Evaluation adds BLEU of greedy translations of the validation pairs
(`research/evaluate/bleu.py`); test BLEU is `lineage bleu RUN_DIR --split test`.
Data: research/data/translation.py; model: any `model.name` whose model takes
(src [B, S], tgt_in [B, T]) -> logits [B, T, V] and has `encode`/`decode_step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from research import config as config_lib
from research import decode
from research.config import need
from research.data import translation as data
from research.data.pairs import load_pairs
from research.data.text import cache_dir
from research.evaluate.bleu import bleu
from research.objectives import base
from research.objectives.losses import perplexity, token_cross_entropy
from research.tokenizers import PAD_ID, load_tokenizer, train_or_load


@dataclass
class Config:
  name: str = "translation"
  label_smoothing: float = 0.0  # Szegedy et al. 2016; the Transformer's paper uses 0.1
  sampling_ratio: float = 0.0  # scheduled sampling (Bengio et al. 2015): P(feed the model's own prediction)

  def validate(self):
    need(0.0 <= self.label_smoothing < 1.0, f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing}")
    need(0.0 <= self.sampling_ratio <= 1.0, f"objective.sampling_ratio must be in [0, 1], got {self.sampling_ratio}")


def make_loss_fn(sampling_ratio: float = 0.0, label_smoothing: float = 0.0):
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
    return token_cross_entropy(logits, targets, targets != PAD_ID, label_smoothing=label_smoothing)

  return loss_fn


def tokenizers(cfg: config_lib.Config, train_pairs, cache: Path):
  """(source, target) tokenizers: one shared sentencepiece model, or one per language."""
  if cfg.train.init_from:
    return load_tokenizers(Path(cfg.train.init_from))
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


class Task(base.Task):
  """Sentence pairs -> tokenizers -> fixed-shape padded batches -> an encoder-decoder."""

  def __init__(self, cfg: config_lib.Config, log=print):
    super().__init__(cfg, log)
    m = cfg.model
    self.splits = load_pairs(cfg.data)
    self.src_tok, self.tgt_tok = tokenizers(cfg, self.splits["train"], cache_dir(cfg.data))
    self.derive(m, "src_vocab_size", self.src_tok.vocab_size, "the source tokenizer's vocabulary")
    self.derive(m, "tgt_vocab_size", self.tgt_tok.vocab_size, "the target tokenizer's vocabulary")
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

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    o = self.cfg.objective
    return make_loss_fn(o.sampling_ratio, o.label_smoothing)(model, batch, rng, train)

  def derived_metrics(self, metrics: dict) -> dict:
    return perplexity(metrics)

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
