"""Language modelling: predict each next token (any model mapping tokens [B,T] -> logits [B,T,V]).

Shared by GPT and the recurrent LMs: the data is text packed into blocks of
`model.block_size` + 1 tokens; the loss is the mean next-token cross-entropy (nats).
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.config import Config
from research.data.lm import build_lm_data
from research.data.text import cache_dir, load_documents, split_documents
from research.models import build_model
from research.tokenizers import train_or_load


def loss_fn(model, batch: dict, rng: jax.Array, train: bool):
  logits = model(batch["inputs"], deterministic=not train, rngs=nnx.Rngs(dropout=rng))
  targets = batch["targets"]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
  # "The target's logit is the largest" rather than argmax == target: the same except on
  # exact ties, and a max-reduction is ~18x cheaper than argmax on XLA:CPU (~18 ms a step at V=4096).
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  accuracy = (target_logit >= logits.max(-1)).mean()
  return loss, {"accuracy": accuracy}


def derived_metrics(metrics: dict) -> dict:
  """Metrics computed from averaged ones: perplexity is exp of the mean loss, not a mean of exps."""
  return {"perplexity": math.exp(min(metrics["loss"], 50.0))} if "loss" in metrics else {}


class Task:
  """Text -> tokenizer -> packed blocks -> a next-token model."""

  loss_fn = staticmethod(loss_fn)
  derived_metrics = staticmethod(derived_metrics)

  def __init__(self, cfg: Config, log=print):
    self.cfg = cfg
    docs = load_documents(cfg.data)
    train_docs, val_docs = split_documents(docs, cfg.data.val_fraction)
    self.tokenizer = train_or_load(cfg.tokenizer, train_docs, cache_dir(cfg.data))
    if not cfg.model.vocab_size:
      cfg.model.vocab_size = self.tokenizer.vocab_size
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

  def build_model(self, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Module:
    return build_model(self.cfg, rngs, dtype)

  def train_batch(self, step: int) -> dict:
    return self.data.batch(step, self.cfg.train.batch_size)

  def eval_batches(self) -> list[dict]:
    return self.data.eval_batches(self.cfg.train.batch_size, self.cfg.train.eval_batches)

  def save_artifacts(self, directory: Path) -> None:
    self.tokenizer.save(directory / "tokenizer")
