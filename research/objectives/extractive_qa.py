"""Extractive question answering with BERT: start and end logits on the encoder's tokens (Devlin et al. 2019, sec. 4.2).

The model is the BERT encoder with a span head (`bert.SpanQA`): its encoder keeps the
pretraining paths `encoder/...`, so `train.init_from=<an mlm_nsp run> train.init_skip=span/*`
fine-tunes the pretrained encoder with a fresh head. The loss is the mean of the start and the
end cross-entropy over a window's positions, as run_squad.py; a window that does not hold the
answer has both at [CLS].

Prediction, as run_squad.py's and run_qa.py's post-processing: in each window, the `n_best`
highest start and end logits among the context's tokens, every pair with start <= end and at
most `max_answer_len` tokens scored start + end; a question's answer is its best pair over all
its windows, mapped back to the context's own characters (never a question token, never
[CLS]; "" if no window has a pair). The reference takes the top n over every position and then
drops those outside the context; taking them among the context's tokens first never leaves a
window without a candidate. Exact match and F1 are the official SQuAD v1.1 script's
(research/evaluate/squad.py), in percent; each evaluation writes the predictions as SQuAD's
{id: answer} JSON to <run>/eval/predictions_step<N>.json, and `lineage eval RUN` scores a
run's checkpoint again, on its held-out questions or another SQuAD file.

Data (SQuAD JSON, the hub's "squad", the bundled cloze set; windows with a document stride;
character offsets): research/data/qa.py; `data.max_docs` keeps the first N training questions.
The tokenizer is the init run's (or `tokenizer_from`'s); with neither, one is trained on the
training contexts and questions.
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
from research.config import ConfigError, need, positive
from research.data import qa as data
from research.data.classification import Batches
from research.data.text import cache_dir
from research.evaluate.squad import squad_metrics
from research.models import bert
from research.objectives import base
from research.objectives.classification import predict_logits
from research.objectives.losses import token_cross_entropy
from research.tokenizers import load_tokenizer, train_or_load


@dataclass
class Config:
  name: str = "extractive_qa"
  seq_len: int = 128  # tokens of a window: [CLS] question [SEP] context [SEP] and padding (<= model.max_len)
  doc_stride: int = 64  # tokens from one window's start to the next's (run_squad.py: 128 of 384)
  max_query_len: int = 64  # a question keeps its first this many tokens (run_squad.py's 64)
  max_answer_len: int = 30  # tokens of the longest answer predicted (run_squad.py's 30)
  n_best: int = 20  # starts and ends tried in each window (run_squad.py's n_best_size)
  # "" = the source's held-out questions; else an evaluation file (data.path) or hub split (data.hub_name)
  eval_split: str = ""
  tokenizer_from: str = ""  # a run whose tokenizer to use ("" = train.init_from's, else one trained here)

  def validate(self):
    positive("objective", self, "seq_len", "doc_stride", "max_query_len", "max_answer_len", "n_best")
    need(self.max_query_len + 4 <= self.seq_len,
         f"objective.max_query_len={self.max_query_len} leaves no context in objective.seq_len={self.seq_len}; "
         f"seq_len must be at least max_query_len + 4 ([CLS], two [SEP] and a context token)")
    need(not self.tokenizer_from or Path(self.tokenizer_from, "artifacts", "tokenizer").is_dir(),
         f"objective.tokenizer_from={self.tokenizer_from!r} is not a run directory with artifacts/tokenizer")


def loss_fn(model, batch: dict, rng: jax.Array, train: bool):
  logits = model(batch["input_ids"], batch["segment_ids"], deterministic=not train, rngs=nnx.Rngs(dropout=rng))
  start_loss, start = token_cross_entropy(logits[..., 0], batch["start"])
  end_loss, end = token_cross_entropy(logits[..., 1], batch["end"])
  return (start_loss + end_loss) / 2, {"start_loss": start_loss, "end_loss": end_loss,
                                       "start_accuracy": start["accuracy"], "end_accuracy": end["accuracy"]}


def span_loss(logits: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
  """The mean of the start and end cross-entropy (nats) over windows, from logits [N, T, 2]."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  rows = np.arange(len(start))
  return float(-(log_probs[rows, start, 0] + log_probs[rows, end, 1]).mean() / 2)


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, candidate: np.ndarray, n_best: int,
              max_answer_len: int) -> tuple[float, int, int] | None:
  """(score, first, last) of the best span of one window, or None: first and last among the
  `n_best` highest start and end logits of the candidate tokens, first <= last < first + max_answer_len."""
  positions = np.flatnonzero(candidate)
  if not len(positions):
    return None
  starts = positions[np.argsort(-start_logits[positions], kind="stable")[:n_best]]
  ends = positions[np.argsort(-end_logits[positions], kind="stable")[:n_best]]
  length = ends[None, :] - starts[:, None]
  score = np.where((length >= 0) & (length < max_answer_len), start_logits[starts][:, None] + end_logits[ends][None, :],
                   -np.inf)
  i, j = np.unravel_index(np.argmax(score), score.shape)
  return None if score[i, j] == -np.inf else (float(score[i, j]), int(starts[i]), int(ends[j]))


def predict_answers(questions: list[data.Question], windows: data.Windows, logits: np.ndarray, n_best: int,
                    max_answer_len: int) -> dict[str, str]:
  """{question id: answer text}: each question's best span over its windows ("" if none has one)."""
  best: dict[int, tuple] = {}  # question -> (score, window, first, last)
  candidate = windows.candidate
  for row in range(len(windows)):
    span = best_span(logits[row, :, 0], logits[row, :, 1], candidate[row], n_best, max_answer_len)
    q = int(windows.question[row])
    if span is not None and (q not in best or span[0] > best[q][0]):
      best[q] = (span[0], row, span[1], span[2])
  return {q.id: data.answer_text(windows, *best[i][1:], q.context) if i in best else ""
          for i, q in enumerate(questions)}


def evaluate_questions(model, questions: list[data.Question], windows: data.Windows, objective: Config,
                       batch_size: int, cache: dict | None = None) -> tuple[dict, dict[str, str]]:
  """({"loss", "exact_match", "f1"}, predictions {id: answer}) of `model` on these questions."""
  logits = predict_logits(model, windows, batch_size, cache)
  predictions = predict_answers(questions, windows, logits, objective.n_best, objective.max_answer_len)
  scores = squad_metrics(predictions, {q.id: q.answers for q in questions})
  return {"loss": span_loss(logits, windows.start, windows.end), **scores}, predictions


def write_predictions(path: Path, predictions: dict[str, str]) -> None:
  """SQuAD's prediction file: one JSON object {question id: answer text}."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(predictions, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


class Task(base.Task):
  """SQuAD-format questions -> tokenizer -> windows of [CLS] question [SEP] context [SEP] -> BERT + span head."""

  @classmethod
  def build_model(cls, cfg: config_lib.Config, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Module:
    if cfg.model.name != "bert":
      raise ConfigError(f"objective extractive_qa fine-tunes a BERT encoder; model.name is {cfg.model.name!r}")
    return bert.SpanQA(cfg.model, rngs=rngs, dtype=dtype)

  def __init__(self, cfg: config_lib.Config, log=print):
    super().__init__(cfg, log)
    o, tc = cfg.objective, cfg.train
    need(cfg.model.name == "bert", f"objective extractive_qa fine-tunes a BERT encoder; model.name is {cfg.model.name!r}")
    need(o.seq_len <= cfg.model.max_len,
         f"objective.seq_len={o.seq_len} exceeds model.max_len={cfg.model.max_len}, the model's position table")

    # ------------------------------------------------------------ questions, tokenizer
    train, self.eval_questions, split_rule = data.load_questions(cfg.data, o.eval_split)
    if cfg.data.max_docs > 0:
      train = train[:cfg.data.max_docs]
    source = Path(o.tokenizer_from) if o.tokenizer_from else self.init_run
    if source:
      self.tokenizer = load_tokenizer(source / "artifacts" / "tokenizer")
    else:
      texts = list(dict.fromkeys(q.context for q in train)) + [q.question for q in train]
      self.tokenizer = train_or_load(cfg.tokenizer, texts, cache_dir(cfg.data))
    self.derive(cfg.model, "vocab_size", self.tokenizer.vocab_size, "the tokenizer's vocabulary")

    # ------------------------------------------------------------ windows
    encode = lambda questions: data.encode(questions, self.tokenizer, o.seq_len, o.doc_stride, o.max_query_len)
    self.train_windows, train_counts = encode(train)
    self.eval_windows, eval_counts = encode(self.eval_questions)
    self.data = Batches(self.train_windows, tc.seed)
    self._forward: dict = {}  # the jitted evaluation forward pass, built at the first evaluation
    self.predictions: dict[str, str] = {}  # of the last evaluation

    # ------------------------------------------------------------ facts
    self.tokens_per_step = tc.batch_size * o.seq_len
    self.facts = {"examples": {"train": train_counts, "eval": eval_counts}, "split": split_rule,
                  "vocab_size": self.tokenizer.vocab_size}
    log(f"data: {len(train)} train / {len(self.eval_questions)} eval questions ({split_rule}) in "
        f"{train_counts['windows']} / {eval_counts['windows']} windows of {o.seq_len} tokens "
        f"(doc_stride {o.doc_stride}); answers in no window: {train_counts['answer_in_no_window']} train, "
        f"{eval_counts['answer_in_no_window']} eval")

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    return loss_fn(model, batch, rng, train)

  def train_batch(self, step: int) -> dict:
    return self.data.batch(step, self.cfg.train.batch_size)

  def evaluate(self, model) -> dict:
    """Held-out span loss, exact match and F1 over every evaluation question."""
    metrics, self.predictions = evaluate_questions(model, self.eval_questions, self.eval_windows, self.cfg.objective,
                                                   self.cfg.train.batch_size, self._forward)
    return metrics

  def save_evaluation(self, run_dir: Path, step: int) -> None:
    write_predictions(run_dir / "eval" / f"predictions_step{step}.json", self.predictions)

  def save_artifacts(self, directory: Path) -> None:
    self.tokenizer.save(directory / "tokenizer")
