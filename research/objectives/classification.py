"""Sequence and sentence-pair classification with BERT, from the pooled [CLS] (Devlin et al. 2019, sec. 4.1).

The model is the BERT encoder with a classifier on its pooler (`bert.Classifier`): its encoder
keeps the pretraining paths `encoder/...`, so `train.init_from=<an mlm_nsp run>
train.init_skip=classifier/*` fine-tunes the pretrained encoder and pooler with a fresh head.
The loss is the mean cross-entropy of the labels. Held-out loss, accuracy and (two classes) F1
of class 1 are computed in `evaluate` over the whole evaluation set at once, so F1 is not a
mean of per-batch F1s; the majority label's accuracy is logged as the baseline.

Data (loading, labels, held-out split, `[CLS] A [SEP] (B [SEP])` encoding): research/data/
classification.py. The tokenizer is the init run's (or `tokenizer_from`'s); with neither, one
is trained on the training texts with the experiment's `tokenizer` settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research import config as config_lib
from research.config import ConfigError, DataConfig, need, probability
from research.data import classification as data
from research.data.text import cache_dir
from research.evaluate.classification import classification_metrics
from research.models import bert
from research.objectives import base
from research.objectives.losses import token_cross_entropy
from research.tokenizers import load_tokenizer, train_or_load


@dataclass
class Config:
  name: str = "classification"
  text_column: str = "text"  # the text (sentence A); classification reads these, not data.text_column
  pair_column: str = ""  # sentence B of a pair task (e.g. "sentence2" for glue/mrpc); "" = single texts
  label_column: str = "label"
  num_labels: int = 0  # 0 = from the data's labels
  seq_len: int = 0  # tokens of an example with [CLS]/[SEP] and padding; 0 = the longest example's, at most model.max_len
  dropout: float = 0.1  # on the pooled [CLS] before the classifier, as BERT's run_classifier
  eval_split: str = ""  # "" = hold out eval_fraction; else an evaluation file (data.path) or hub split (data.hub_name)
  eval_fraction: float = 0.25  # share of each label's rows held out when eval_split is ""
  split_seed: int = 0  # which rows are held out: the same for every train.seed
  tokenizer_from: str = ""  # a run whose tokenizer to use ("" = train.init_from's, else one trained here)

  def validate(self):
    need(bool(self.text_column) and bool(self.label_column),
         "objective.text_column and objective.label_column must name columns")
    columns = [c for c in (self.text_column, self.pair_column, self.label_column) if c]
    need(len(set(columns)) == len(columns), f"objective columns must differ, got {', '.join(columns)}")
    need(self.num_labels == 0 or self.num_labels >= 2,
         f"objective.num_labels must be 0 (from the data) or at least 2, got {self.num_labels}")
    need(self.seq_len == 0 or self.seq_len >= (4 if self.pair_column else 3),
         f"objective.seq_len must be 0 (from the data) or leave room for [CLS], [SEP] and a token, got {self.seq_len}")
    probability("objective.dropout", self.dropout)
    need(0.0 < self.eval_fraction < 1.0, f"objective.eval_fraction must be in (0, 1), got {self.eval_fraction}")
    need(not self.tokenizer_from or Path(self.tokenizer_from, "artifacts", "tokenizer").is_dir(),
         f"objective.tokenizer_from={self.tokenizer_from!r} is not a run directory with artifacts/tokenizer")


def loss_fn(model, batch: dict, rng: jax.Array, train: bool):
  logits = model(batch["input_ids"], batch["segment_ids"], deterministic=not train, rngs=nnx.Rngs(dropout=rng))
  return token_cross_entropy(logits, batch["label"])


def predict_logits(model, split: data.Split, batch_size: int, cache: dict | None = None) -> np.ndarray:
  """Logits [N, K] of every example, in batches of one shape (the last one filled with example 0).

  `cache` keeps the jitted forward pass between calls (a GraphDef holding a model config is not
  hashable, so it cannot be a static argument of one module-level jit).
  """
  graphdef, state = nnx.split(model)
  cache = {} if cache is None else cache
  if cache.get("graphdef") != graphdef:
    forward = lambda state, ids, seg: nnx.merge(graphdef, state)(ids, seg, deterministic=True)
    cache.update(graphdef=graphdef, forward=jax.jit(forward))
  out = []
  for start in range(0, len(split), batch_size):
    index = np.arange(start, start + batch_size)
    index[index >= len(split)] = 0
    b = split.take(index)
    out.append(np.asarray(cache["forward"](state, b["input_ids"], b["segment_ids"])))
  return np.concatenate(out)[:len(split)]


class Task(base.Task):
  """Labelled texts (or pairs) -> tokenizer -> fixed-length [CLS] A [SEP] (B [SEP]) -> BERT + classifier."""

  @classmethod
  def build_model(cls, cfg: config_lib.Config, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Module:
    if cfg.model.name != "bert":
      raise ConfigError(f"objective classification fine-tunes a BERT encoder; model.name is {cfg.model.name!r}")
    if cfg.objective.num_labels < 2:
      raise ConfigError(f"objective.num_labels={cfg.objective.num_labels}: the task derives it from the data")
    return bert.Classifier(cfg.model, cfg.objective.num_labels, dropout=cfg.objective.dropout, rngs=rngs, dtype=dtype)

  def __init__(self, cfg: config_lib.Config, log=print):
    super().__init__(cfg, log)
    o, tc = cfg.objective, cfg.train
    need(cfg.model.name == "bert", f"objective classification fine-tunes a BERT encoder; model.name is {cfg.model.name!r}")
    need(cfg.data.text_column == DataConfig.text_column,
         f"data.text_column={cfg.data.text_column!r} is not read by classification; set objective.text_column")
    columns = data.Columns(o.text_column, o.pair_column, o.label_column)

    # ------------------------------------------------------------ rows, labels, split
    train_rows, eval_rows, names = data.load_rows(cfg.data, columns, o.eval_split)
    if eval_rows is None:
      _, ids, _ = data.label_ids(train_rows, names=names)
      train_index, eval_index = data.stratified_holdout(ids, o.eval_fraction, o.split_seed)
      train_rows, eval_rows = train_rows.take(train_index), train_rows.take(eval_index)
      split_rule = f"{o.eval_fraction:g} of each label held out, objective.split_seed={o.split_seed}"
    else:
      split_rule = f"objective.eval_split={o.eval_split!r}"
    self.label_names, train_labels, eval_labels = data.label_ids(train_rows, eval_rows, names)
    self.derive(o, "num_labels", len(self.label_names), "the labels in the data")

    # ------------------------------------------------------------ tokenizer, encoding
    source = Path(o.tokenizer_from) if o.tokenizer_from else self.init_run
    if source:
      self.tokenizer = load_tokenizer(source / "artifacts" / "tokenizer")
    else:
      self.tokenizer = train_or_load(cfg.tokenizer, train_rows.texts + (train_rows.pairs or []), cache_dir(cfg.data))
    self.derive(cfg.model, "vocab_size", self.tokenizer.vocab_size, "the tokenizer's vocabulary")
    encoded = {}
    for split, rows in (("train", train_rows), ("eval", eval_rows)):
      a = self.tokenizer.encode_batch(rows.texts)
      b = self.tokenizer.encode_batch(rows.pairs) if rows.pairs is not None else None
      encoded[split] = (a, b, data.example_lengths(a, b))
    longest = max(int(lengths.max()) for _, _, lengths in encoded.values())
    if not o.seq_len:
      self.derive(o, "seq_len", min(cfg.model.max_len, -(-longest // 8) * 8),
                  f"the longest example, {longest} tokens, rounded up to a multiple of 8, at most model.max_len")
    need(o.seq_len <= cfg.model.max_len,
         f"objective.seq_len={o.seq_len} exceeds model.max_len={cfg.model.max_len}, the model's position table")
    self.train_split, self.eval_split = (
        data.Split(**data.encode(a, b, o.seq_len), label=labels)
        for (a, b, _), labels in ((encoded["train"], train_labels), (encoded["eval"], eval_labels)))
    self.data = data.Batches(self.train_split, tc.seed)
    self._forward: dict = {}  # the jitted evaluation forward pass, built at the first evaluation

    # ------------------------------------------------------------ facts
    truncated = sum(int((lengths > o.seq_len).sum()) for _, _, lengths in encoded.values())
    count = lambda labels: {n: int((labels == i).sum()) for i, n in enumerate(self.label_names)}
    majority = float(np.bincount(eval_labels, minlength=len(self.label_names)).max() / len(eval_labels))
    self.tokens_per_step = tc.batch_size * o.seq_len
    self.facts = {
        "examples": {"train": count(train_labels), "eval": count(eval_labels)}, "split": split_rule,
        "labels": self.label_names, "truncated": truncated, "vocab_size": self.tokenizer.vocab_size,
        "baselines": {"accuracy": majority},
    }
    log(f"data: {len(train_labels)} train / {len(eval_labels)} eval examples ({split_rule}), labels "
        f"{', '.join(f'{n} {c}/{e}' for (n, c), e in zip(count(train_labels).items(), count(eval_labels).values()))}; "
        f"{o.seq_len} tokens an example, {truncated} truncated; held-out baseline: accuracy {majority:.3f} (majority label)")

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    return loss_fn(model, batch, rng, train)

  def train_batch(self, step: int) -> dict:
    return self.data.batch(step, self.cfg.train.batch_size)

  def evaluate(self, model) -> dict:
    """Loss, accuracy and (two labels) F1 of class 1 over every evaluation example."""
    logits = predict_logits(model, self.eval_split, self.cfg.train.batch_size, self._forward)
    return classification_metrics(logits, self.eval_split.label)

  def save_artifacts(self, directory: Path) -> None:
    self.tokenizer.save(directory / "tokenizer")
    (directory / "labels.json").write_text(json.dumps(self.label_names) + "\n")
