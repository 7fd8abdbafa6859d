"""Language modelling: predict each next token (any model mapping tokens [B,T] -> logits [B,T,V]).

Shared by GPT and the recurrent LMs: the data is text packed into blocks of
`model.block_size` + 1 tokens; the loss is the mean next-token cross-entropy (nats).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from research import config as config_lib
from research.config import need
from research.data.lm import build_lm_data
from research.data.text import cache_dir, load_documents, split_documents
from research.objectives import base
from research.objectives.losses import perplexity, token_cross_entropy
from research.tokenizers import load_tokenizer, train_or_load


@dataclass
class Config:
  name: str = "lm"
  label_smoothing: float = 0.0  # 0 = plain cross-entropy; perplexity is always of the plain one

  def validate(self):
    need(0.0 <= self.label_smoothing < 1.0, f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing}")


def loss_fn(model, batch: dict, rng: jax.Array, train: bool, *, label_smoothing: float = 0.0):
  logits = model(batch["inputs"], deterministic=not train, rngs=nnx.Rngs(dropout=rng))
  return token_cross_entropy(logits, batch["targets"], label_smoothing=label_smoothing)


class Task(base.Task):
  """Text -> tokenizer -> packed blocks -> a next-token model."""

  def __init__(self, cfg: config_lib.Config, log=print):
    super().__init__(cfg, log)
    docs = load_documents(cfg.data)
    train_docs, val_docs = split_documents(docs, cfg.data.val_fraction)
    if self.init_run:
      self.tokenizer = load_tokenizer(self.init_run / "artifacts" / "tokenizer")
    else:
      self.tokenizer = train_or_load(cfg.tokenizer, train_docs, cache_dir(cfg.data))
    self.derive(cfg.model, "vocab_size", self.tokenizer.vocab_size, "the tokenizer's vocabulary")
    self.data = build_lm_data(train_docs, val_docs, self.tokenizer, cfg.model.block_size, cfg.train.seed)
    self.tokens_per_step = cfg.train.batch_size * cfg.model.block_size
    self.facts = {
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "tokens": {"train": self.data.n_train_tokens, "val": self.data.n_val_tokens},
        "vocab_size": self.tokenizer.vocab_size,
        "unigram_entropy": self.data.unigram_entropy(),
    }
    log(f"data: {len(train_docs):,} train / {len(val_docs):,} val documents, "
        f"{self.data.n_train_tokens:,} / {self.data.n_val_tokens:,} tokens, vocab {self.tokenizer.vocab_size:,}, "
        f"unigram entropy {self.facts['unigram_entropy']:.3f} nats")

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    return loss_fn(model, batch, rng, train, label_smoothing=self.cfg.objective.label_smoothing)

  def derived_metrics(self, metrics: dict) -> dict:
    return perplexity(metrics)

  def train_batch(self, step: int) -> dict:
    return self.data.batch(step, self.cfg.train.batch_size)

  def eval_batches(self) -> list[dict]:
    return self.data.eval_batches(self.cfg.train.batch_size, self.cfg.train.eval_batches)

  def save_artifacts(self, directory: Path) -> None:
    self.tokenizer.save(directory / "tokenizer")
