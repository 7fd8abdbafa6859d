"""The tasks of `lineage eval`: documents of (context, choices, gold), few-shot prompts, metrics.

Two kinds, lm-evaluation-harness's output types:
- "choice" (its `multiple_choice`): each choice, after the task's delimiter, is scored as a
  continuation of the context. `acc`: the gold choice has the highest sum of log-probs;
  `acc_norm`: the highest log-prob per character of the choice (lm-eval's acc_norm).
- "completion" (its `loglikelihood`, as LAMBADA): one continuation. `acc`: it is what greedy
  decoding writes; `perplexity`: exp(-mean log-prob) over the documents, per continuation.

Few-shot prompts (lm-eval's default delimiters): K solved examples, each its context, the
delimiter and its gold choice, joined by a blank line ("\\n\\n"), then a blank line and the
document's context. Document i draws its K examples without replacement from the task's
pool with numpy's `default_rng([seed, i])`; the pool is a fixed, seeded part of the data that
is never evaluated, so zero- and few-shot scores cover the same documents.

The tasks, all offline:
- `lastword`: LAMBADA-style (Paperno et al. 2016) on the held-out split of the run's own corpus
  (research.data.text.split_documents with the run's data settings). Every line of at least
  MIN_WORDS words whose last word is alphabetic gives one example: the target is that word
  (trailing punctuation dropped), the context is the document before it, from the earliest
  line start within CONTEXT_CHARS characters. Zero-shot only.
- `polarity`: sentence sentiment on gensim's test_data/pang_lee_polarity.cor, 200 movie-review
  sentences (Pang & Lee 2005), cp1252 text, lower-cased and tokenized, one per line as
  "__label__neg <sentence>" (lines 1-100) or "__label__pos <sentence>" (lines 101-200).
  Prompt "Review: <sentence>\\nSentiment:", choices "negative" / "positive"; a seeded 40
  sentences are the few-shot pool, the other 160 are evaluated.
- `analogy`: gensim's questions-words.txt (Mikolov et al. 2013) as prompts "A is to B as C is
  to" completed by " D", case kept; of a seeded permutation of all 19,544 questions (14
  sections), the first 50 are the pool and the next ANALOGIES are evaluated.
- `jsonl:PATH`: one {"context": str, "choices": [str, ...], "gold": int} object per line,
  choices after a space (lm-eval's target_delimiter). With --shots K > 0 the first
  max(K, lines // 10) lines of a seeded permutation are the pool; with 0, every line counts.

Tasks drawn from a fixed set (polarity, analogy, a JSONL with a pool) evaluate their documents in
the seeded order, so `--limit N` scores a random sample; lastword keeps the corpus order.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.config import ConfigError

MIN_WORDS = 6  # a line shorter than this is rarely a sentence worth completing
CONTEXT_CHARS = 4096  # ~4 characters a BPE token: fills a 1,024-token block; the scorer cuts by tokens
ANALOGIES = 300
POOL_SEED = 0  # which documents form the few-shot pool: fixed, not the --seed of the prompts
SHOT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Doc:
  context: str
  choices: tuple[str, ...]  # without the delimiter
  gold: int = 0


@dataclass
class EvalTask:
  name: str
  kind: str  # "choice" | "completion"
  docs: list[Doc]
  pool: list[Doc] = field(default_factory=list)
  delimiter: str = " "  # between a context and its continuation

  def prompt(self, i: int, shots: int, seed: int = 0) -> str:
    """The context of document i after `shots` solved examples from the pool."""
    doc = self.docs[i]
    if not shots:
      return doc.context
    picks = np.random.default_rng([seed, i]).choice(len(self.pool), shots, replace=False)
    solved = [self.pool[j].context + self.delimiter + self.pool[j].choices[self.pool[j].gold] for j in picks]
    return SHOT_SEPARATOR.join(solved + [doc.context])

  def requests(self, shots: int, seed: int = 0) -> list[tuple[str, str]]:
    """Every (context, continuation) to score, document by document, choice by choice."""
    return [(self.prompt(i, shots, seed), self.delimiter + choice)
            for i, doc in enumerate(self.docs) for choice in doc.choices]

  def metrics(self, logprobs: list[float], greedy: list[bool]) -> dict[str, float]:
    """The task's metrics from the scores of `requests()`, in its order."""
    n = len(self.docs)
    if self.kind == "completion":
      acc = float(np.mean(greedy))
      return {"acc": acc, "acc_stderr": _stderr(acc, n), "perplexity": math.exp(-float(np.mean(logprobs))),
              "logprob": float(np.mean(logprobs)), "n": n}
    hits, hits_norm, k = [], [], 0
    for doc in self.docs:
      lls = np.array(logprobs[k:k + len(doc.choices)])
      k += len(doc.choices)
      hits.append(int(np.argmax(lls)) == doc.gold)
      hits_norm.append(int(np.argmax(lls / np.array([len(c) for c in doc.choices], float))) == doc.gold)
    acc, acc_norm = float(np.mean(hits)), float(np.mean(hits_norm))
    return {"acc": acc, "acc_stderr": _stderr(acc, n), "acc_norm": acc_norm, "n": n}


def _stderr(p: float, n: int) -> float:
  """Standard error of a mean of n 0/1 outcomes (lm-eval's sample stderr)."""
  return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def _split_pool(docs: list[Doc], pool_size: int) -> tuple[list[Doc], list[Doc]]:
  """(evaluated, pool): the first `pool_size` of a permutation seeded by POOL_SEED, and the rest
  in that order, so `--limit N` scores a random sample rather than, say, only the negatives."""
  order = np.random.default_rng(POOL_SEED).permutation(len(docs))
  return [docs[i] for i in order[pool_size:]], [docs[i] for i in order[:pool_size]]


def _datapath(name: str) -> str:
  from gensim.test.utils import datapath

  return datapath(name)


# ------------------------------------------------------------------------------- the tasks


def lastword_docs(texts: list[str]) -> list[Doc]:
  docs = []
  for text in texts:
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for line_start in starts:
      end = text.find("\n", line_start)
      line = text[line_start:end if end >= 0 else len(text)].rstrip()
      words = line.split()
      if len(words) < MIN_WORDS:
        continue
      target = re.sub(r"\W+$", "", words[-1])
      if not target.isalpha():
        continue
      word_start = line_start + len(line) - len(words[-1])
      context_start = starts[min(bisect.bisect_left(starts, word_start - CONTEXT_CHARS),
                                 bisect.bisect_right(starts, line_start) - 1)]
      docs.append(Doc(text[context_start:word_start], (target,)))
  return docs


def lastword(cfg) -> EvalTask:
  from research.data.text import load_documents, split_documents

  _, held_out = split_documents(load_documents(cfg.data), cfg.data.val_fraction)
  # The delimiter is part of the context here: the scorer moves its trailing space over.
  return EvalTask("lastword", "completion", lastword_docs(held_out), delimiter="")


def polarity(cfg=None) -> EvalTask:
  docs = []
  for line in Path(_datapath("pang_lee_polarity.cor")).read_bytes().decode("cp1252").splitlines():
    label, sentence = line.split(" ", 1)
    docs.append(Doc(f"Review: {sentence.strip()}\nSentiment:", ("negative", "positive"),
                    {"__label__neg": 0, "__label__pos": 1}[label]))
  evaluated, pool = _split_pool(docs, 40)
  return EvalTask("polarity", "choice", evaluated, pool)


def analogy(cfg=None) -> EvalTask:
  docs = []
  for line in Path(_datapath("questions-words.txt")).read_text(encoding="utf-8").splitlines():
    if line.startswith(":") or not line.strip():
      continue
    a, b, c, d = line.split()
    docs.append(Doc(f"{a} is to {b} as {c} is to", (d,)))
  evaluated, pool = _split_pool(docs, 50)
  return EvalTask("analogy", "completion", evaluated[:ANALOGIES], pool)


def jsonl(path: str, shots: int) -> EvalTask:
  file = Path(path).expanduser()
  if not file.is_file():
    raise ConfigError(f"--task jsonl:{path}: no such file")
  docs = []
  for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      doc = Doc(str(row["context"]), tuple(str(c) for c in row["choices"]), int(row["gold"]))
    except (ValueError, KeyError, TypeError) as e:
      raise ConfigError(f"{file}:{number}: expected {{\"context\": str, \"choices\": [str], \"gold\": int}} "
                        f"({type(e).__name__}: {e})") from None
    if not 0 <= doc.gold < len(doc.choices):
      raise ConfigError(f"{file}:{number}: gold={doc.gold} is not an index of its {len(doc.choices)} choices")
    docs.append(doc)
  if not docs:
    raise ConfigError(f"{file} holds no documents")
  evaluated, pool = _split_pool(docs, max(shots, len(docs) // 10)) if shots else (docs, [])
  return EvalTask(f"jsonl_{file.stem}", "choice", evaluated, pool)


TASKS = {"lastword": lastword, "polarity": polarity, "analogy": analogy}


def load_task(spec: str, cfg, shots: int = 0) -> EvalTask:
  """A task by name (`lastword`, `polarity`, `analogy`) or `jsonl:PATH`; `cfg` is the run's config."""
  if spec.startswith("jsonl:"):
    task = jsonl(spec[len("jsonl:"):], shots)
  elif spec in TASKS:
    task = TASKS[spec](cfg)
  else:
    raise ConfigError(f"--task {spec!r} is not a task; known: {', '.join(TASKS)}, jsonl:PATH")
  if shots < 0:
    raise ConfigError(f"--shots must be >= 0, got {shots}")
  if shots and task.name == "lastword":
    raise ConfigError("lastword is zero-shot (LAMBADA's setting): use --shots 0")
  if shots > len(task.pool):
    raise ConfigError(f"--shots {shots}: the {task.name} task's few-shot pool holds {len(task.pool)} examples")
  return task


def evaluate(task: EvalTask, model, tokenizer, block_size: int, *, shots: int = 0, seed: int = 0,
             batch_size: int = 16) -> dict[str, float]:
  """The task's metrics for a model mapping tokens [B, T] -> logits [B, T, V]."""
  from research.evaluate.lm_scoring import score_texts

  scores = score_texts(model, tokenizer, task.requests(shots, seed), block_size, batch_size)
  return task.metrics([s.logprob for s in scores], [s.greedy for s in scores])
