"""BERT pretraining: masked language modelling plus next-sentence prediction (Devlin et al. 2019, sec. 3.1).

The loss is the mean cross-entropy of the masked tokens (over the real prediction slots)
plus the mean cross-entropy of the is-next / random-next label, as in the reference
`run_pretraining.py`. Data: research/data/bert.py (pairs, masking); model: research/models/
bert.py (`Pretraining`: the encoder with `mlm` and `nsp` heads). Held-out batches come
from the validation documents; MLM accuracy is logged against the most-frequent-token
baseline (`facts["baselines"]`, printed at the start).

What is the objective's and what the model's: the sequence length of the instances and
everything about masking and pairing are the objective's; the model only fixes how long an
input it can read (`model.max_len`, its position table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research import config as config_lib
from research.config import need, positive, probability
from research.data import bert as data
from research.data.text import cache_dir, load_documents, split_documents
from research.models import bert
from research.objectives import base
from research.objectives.losses import token_cross_entropy
from research.tokenizers import load_tokenizer, train_or_load


@dataclass
class Config:
  name: str = "mlm_nsp"
  seq_len: int = 128  # tokens of an instance, [CLS] A [SEP] B [SEP] and padding (<= model.max_len)
  mask_prob: float = 0.15  # share of an instance's tokens chosen for prediction
  max_predictions: int = 20  # at most this many per instance (the reference's 20 at 128 tokens)
  short_seq_prob: float = 0.1  # share of documents whose instances aim at a random shorter length
  whole_word: bool = False  # choose all pieces of a word together (sentencepiece "▁" word starts)
  nsp: bool = True  # False: one segment per instance, no random next, no NSP head or loss

  def validate(self):
    positive("objective", self, "seq_len", "max_predictions")
    need(self.seq_len >= 5, f"objective.seq_len must be at least 5 ([CLS] A [SEP] B [SEP]), got {self.seq_len}")
    need(0.0 < self.mask_prob < 1.0, f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")
    need(self.max_predictions <= self.seq_len,
         f"objective.max_predictions={self.max_predictions} exceeds objective.seq_len={self.seq_len}")
    probability("objective.short_seq_prob", self.short_seq_prob)


def loss_fn(model, batch: dict, rng: jax.Array, train: bool, *, nsp: bool = True):
  mlm_logits, nsp_logits = model(batch["input_ids"], batch["segment_ids"], batch["mlm_positions"],
                                 deterministic=not train, rngs=nnx.Rngs(dropout=rng))
  mlm_loss, mlm = token_cross_entropy(mlm_logits, batch["mlm_ids"], batch["mlm_weights"] > 0)
  metrics = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm["accuracy"]}
  if not nsp:
    return mlm_loss, metrics
  nsp_loss, nsp_metrics = token_cross_entropy(nsp_logits, batch["nsp_label"])
  return mlm_loss + nsp_loss, {**metrics, "nsp_loss": nsp_loss, "nsp_accuracy": nsp_metrics["accuracy"]}


def baselines(batches: list[dict]) -> dict:
  """What a model that ignores the input scores: the most frequent masked token, the majority NSP label."""
  ids = np.concatenate([b["mlm_ids"][b["mlm_weights"] > 0] for b in batches])
  labels = np.concatenate([b["nsp_label"] for b in batches])
  return {"mlm_accuracy": float(np.bincount(ids).max() / len(ids)),
          "nsp_accuracy": float(max(labels.mean(), 1 - labels.mean()))}


class Task(base.Task):
  """Documents -> sentences -> tokenizer -> masked sentence pairs -> BERT with MLM and NSP heads."""

  @classmethod
  def build_model(cls, cfg: config_lib.Config, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Module:
    return bert.Pretraining(cfg.model, nsp=cfg.objective.nsp, rngs=rngs, dtype=dtype)

  def __init__(self, cfg: config_lib.Config, log=print):
    super().__init__(cfg, log)
    o, tc = cfg.objective, cfg.train
    need(o.seq_len <= cfg.model.max_len,
         f"objective.seq_len={o.seq_len} exceeds model.max_len={cfg.model.max_len}, the model's position table")
    docs = load_documents(cfg.data)
    train_docs, val_docs = split_documents(docs, cfg.data.val_fraction)
    if self.init_run:
      self.tokenizer = load_tokenizer(self.init_run / "artifacts" / "tokenizer")
    else:
      self.tokenizer = train_or_load(cfg.tokenizer, train_docs, cache_dir(cfg.data))
    self.derive(cfg.model, "vocab_size", self.tokenizer.vocab_size, "the tokenizer's vocabulary")
    self.data = data.PretrainingData(
        data.encode_documents(train_docs, self.tokenizer), data.encode_documents(val_docs, self.tokenizer),
        seq_len=o.seq_len, mask_prob=o.mask_prob, max_predictions=o.max_predictions,
        short_seq_prob=o.short_seq_prob, nsp=o.nsp, vocab_size=self.tokenizer.vocab_size, seed=tc.seed,
        starts=data.word_starts(self.tokenizer) if o.whole_word else None)
    self._eval = self.data.eval_batches(tc.batch_size, tc.eval_batches)
    self.tokens_per_step = tc.batch_size * o.seq_len  # padded positions processed
    self.facts = {
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "instances_per_epoch": self.data.n_instances, "vocab_size": self.tokenizer.vocab_size,
        "baselines": baselines(self._eval),
    }
    b = self.facts["baselines"]
    log(f"data: {len(train_docs):,} train / {len(val_docs):,} val documents, {self.data.n_instances:,} instances "
        f"of {o.seq_len} tokens an epoch, vocab {self.tokenizer.vocab_size:,}; held-out baselines: MLM accuracy "
        f"{b['mlm_accuracy']:.3f} (most frequent token), NSP accuracy {b['nsp_accuracy']:.3f} (majority label)")

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    return loss_fn(model, batch, rng, train, nsp=self.cfg.objective.nsp)

  def train_batch(self, step: int) -> dict:
    return self.data.batch(step, self.cfg.train.batch_size)

  def eval_batches(self) -> list[dict]:
    return self._eval

  def save_artifacts(self, directory: Path) -> None:
    self.tokenizer.save(directory / "tokenizer")
