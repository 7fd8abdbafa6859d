"""Extractive question answering data: SQuAD v1.1-format questions, windows of tokens, and back to text.

Questions come from the first source the data config names:
- `data.path`: a SQuAD v1.1 JSON file, {"data": [{"title", "paragraphs": [{"context", "qas":
  [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]} (Rajpurkar et al. 2016),
  e.g. train-v1.1.json; the evaluation file is `objective.eval_split` (dev-v1.1.json), or if
  that is "" the last `data.val_fraction` of the file's articles are held out.
- `data.hub_name` (e.g. "squad"; needs network): rows {"id", "title", "context", "question",
  "answers": {"text": [...], "answer_start": [...]}} of split `data.hub_split` and of the
  evaluation split `objective.eval_split` ("" = "validation").
- `data.bundled`: a bundled set (research/data/bundled.py), e.g. "enwiki_cloze", cloze questions
  on the bundled Wikipedia articles (research/data/enwiki_cloze.py); evaluation on its
  "validation" split.
A file that is not SQuAD-shaped, a question without text or answers, a repeated id, or an
answer that is not its context's text at its `answer_start` is one `DataError` line naming
the file (or hub split) and the question id (or the place in the JSON when there is no id).
Training uses each question's first answer; evaluation scores against all of them.

Encoding, as google-research/bert's run_squad.py and Hugging Face's run_qa.py: each question is
`[CLS] question [SEP] context [SEP]`, segment 0 up to the first [SEP] and 1 after it; the
question keeps its first `max_query_len` tokens. A context longer than the room left
(seq_len - question - 3) is read in windows: the next window starts `doc_stride` tokens after
the last one, until one reaches the context's end. The answer's token span comes from the
tokenizer's character offsets (`encode_with_offsets`): the first and last context tokens whose
characters overlap the answer's. A window that holds the whole span marks its start and end
there; any other window marks both at [CLS] (position 0), so the model learns "not here".
Each context token keeps its span of characters, whitespace at its ends left out, so a
predicted span of tokens i..j maps back to the exact characters context[start(i):end(j)].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.config import DataConfig
from research.data.bundled import bundled_qa
from research.data.errors import DataError
from research.data.text import cache_dir, check_utf8, hub_split, resolve_paths
from research.tokenizers import CLS_ID, PAD_ID, SEP_ID, Tokenizer


@dataclass
class Question:
  id: str
  question: str
  context: str
  answers: list[str]  # gold answer texts (SQuAD's dev set has three a question)
  starts: list[int]  # their character offsets in the context


# ------------------------------------------------------------------------------ reading


def _field(record, key: str, kind: type, where: str):
  value = record.get(key) if isinstance(record, dict) else None
  if not isinstance(value, kind) or isinstance(value, bool):
    raise DataError(f"{where} has no {kind.__name__} {key!r} (not SQuAD v1.1 format)")
  return value


def _question(qid: str, question, context: str, answers: list[tuple], where: str) -> Question:
  """A checked Question; `answers` are (text, answer_start) pairs as read."""
  at = f"{where}: question {qid!r}"
  if not isinstance(question, str) or not question.strip():
    raise DataError(f"{at} has no question text")
  if not answers:
    raise DataError(f"{at} has no answers (SQuAD v2's unanswerable questions are not supported)")
  for text, start in answers:
    if not isinstance(text, str) or not text.strip() or not isinstance(start, int) or isinstance(start, bool):
      raise DataError(f"{at}: an answer needs a non-empty 'text' and an integer 'answer_start', got {text!r}, {start!r}")
    if start < 0 or context[start:start + len(text)] != text:
      raise DataError(f"{at}: answer {text!r} is not in its context at answer_start={start} "
                      f"(the context there reads {context[max(start, 0):max(start, 0) + len(text)]!r})")
  return Question(qid, question, context, [t for t, _ in answers], [s for _, s in answers])


def read_squad(squad, where: str) -> list[Question]:
  """The questions of a SQuAD v1.1-format object, in file order; `where` names it in errors."""
  articles = squad.get("data") if isinstance(squad, dict) else None
  if not isinstance(articles, list):
    raise DataError(f"{where} is not SQuAD v1.1 JSON: expected an object with a list \"data\" of articles")
  questions, seen = [], set()
  for i, article in enumerate(articles):
    for j, paragraph in enumerate(_field(article, "paragraphs", list, f"{where}: data[{i}]")):
      at = f"{where}: data[{i}].paragraphs[{j}]"
      context = _field(paragraph, "context", str, at)
      for k, qa in enumerate(_field(paragraph, "qas", list, at)):
        qid = qa.get("id") if isinstance(qa, dict) else None
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
          raise DataError(f"{at}.qas[{k}] has no 'id' (not SQuAD v1.1 format)")
        qid = str(qid)
        if qid in seen:
          raise DataError(f"{where}: question {qid!r} appears twice")
        seen.add(qid)
        answers = qa.get("answers")
        if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
          raise DataError(f"{where}: question {qid!r} has no list of answers {{\"text\", \"answer_start\"}}")
        questions.append(_question(qid, qa.get("question"), context,
                                   [(a.get("text"), a.get("answer_start")) for a in answers], where))
  if not questions:
    raise DataError(f"{where} holds no questions")
  return questions


def _read_json(path: Path):
  path = Path(path)
  if not path.is_file():
    raise DataError(f"{path} does not exist")
  check_utf8(path)
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"{path} is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def read_squad_file(path: Path) -> list[Question]:
  return read_squad(_read_json(path), str(path))


def _hub_questions(cfg: DataConfig, split: str) -> list[Question]:
  ds, what = hub_split(cfg, split)
  where = f"{what} split {split!r}"
  missing = [c for c in ("id", "context", "question", "answers") if c not in ds.column_names]
  if missing:
    raise DataError(f"{where} has no column {missing[0]!r} (not SQuAD-shaped); columns: {', '.join(ds.column_names)}")
  questions = []
  for row in ds:
    answers = row["answers"] or {}
    questions.append(_question(str(row["id"]), row["question"], row["context"],
                               list(zip(answers.get("text") or [], answers.get("answer_start") or [])), where))
  return questions


def held_out_articles(squad: dict, fraction: float, where: str) -> tuple[dict, dict]:
  """(training, held-out) SQuAD dicts: the last `fraction` of the articles (at least one) held out."""
  articles = squad["data"]
  if len(articles) < 2:
    raise DataError(f"{where} holds {len(articles)} article; holding some out needs 2 or more "
                    f"(or name an evaluation file in objective.eval_split)")
  n = min(len(articles) - 1, max(1, round(len(articles) * fraction)))
  return {**squad, "data": articles[:-n]}, {**squad, "data": articles[-n:]}


def load_questions(cfg: DataConfig, eval_split: str = "") -> tuple[list[Question], list[Question], str]:
  """(training questions, evaluation questions, how they were split), from the first source `cfg` names."""
  if cfg.path:
    paths = resolve_paths(cfg.path)
    if len(paths) != 1:
      raise DataError(f"data.path={cfg.path!r} names {len(paths)} files; extractive QA reads one SQuAD JSON file")
    if eval_split:
      return read_squad_file(paths[0]), read_squad_file(Path(eval_split)), f"objective.eval_split={eval_split!r}"
    where, squad = str(paths[0]), _read_json(paths[0])
    read_squad(squad, where)  # the whole file is checked, so a repeated id across the parts is found too
    train, held = held_out_articles(squad, cfg.val_fraction, where)
    rule = f"the last {len(held['data'])} of {len(squad['data'])} articles held out (data.val_fraction={cfg.val_fraction})"
    return read_squad(train, where), read_squad(held, where), rule
  if cfg.hub_name:
    split = eval_split or "validation"
    return _hub_questions(cfg, cfg.hub_split), _hub_questions(cfg, split), f"hub splits {cfg.hub_split!r} / {split!r}"
  if eval_split:
    raise DataError(f"objective.eval_split={eval_split!r} is for data.path or data.hub_name; "
                    f"data.bundled={cfg.bundled!r} evaluates on its own validation split")
  splits = bundled_qa(cfg.bundled, cache_dir(cfg))
  where = f"data.bundled={cfg.bundled!r}"
  return (read_squad(splits["train"], f"{where} train"), read_squad(splits["validation"], f"{where} validation"),
          f"the validation split of {where}")


# ------------------------------------------------------------------------------ windows


def trimmed_spans(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
  """Each token's characters without the whitespace at its ends; a whitespace-only token's span is empty."""
  out = []
  for start, end in offsets:
    while start < end and text[start].isspace():
      start += 1
    while end > start and text[end - 1].isspace():
      end -= 1
    out.append((start, end))
  return out


def answer_tokens(spans: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
  """(first, last) token whose characters overlap [start, end), or None when none does."""
  hits = [i for i, (s, e) in enumerate(spans) if s < e and s < end and e > start]
  return (hits[0], hits[-1]) if hits else None


def windows(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
  """(first token, length) of each window over a context of `n_tokens`, as run_squad.py's doc spans."""
  out, start = [], 0
  while True:
    length = min(n_tokens - start, room)
    out.append((start, length))
    if start + length >= n_tokens:
      return out
    start += min(length, stride)


@dataclass
class Windows:
  """One row per window: input_ids, segment_ids [N, T]; the answer's start, end [N] (0 = [CLS]);
  the question [N] it belongs to; each token's characters in its context [N, T, 2] ((0, 0) outside it)."""
  input_ids: np.ndarray
  segment_ids: np.ndarray
  start: np.ndarray
  end: np.ndarray
  question: np.ndarray
  chars: np.ndarray

  @property
  def candidate(self) -> np.ndarray:
    """[N, T]: context tokens with text, where an answer may start or end (never the question)."""
    return self.chars[..., 1] > self.chars[..., 0]

  def take(self, index) -> dict[str, np.ndarray]:
    return {"input_ids": self.input_ids[index], "segment_ids": self.segment_ids[index],
            "start": self.start[index], "end": self.end[index]}

  def __len__(self) -> int:
    return len(self.start)


def encode(questions: list[Question], tokenizer: Tokenizer, seq_len: int, doc_stride: int,
           max_query_len: int) -> tuple[Windows, dict]:
  """The windows of every question (labelled by its first answer), and counts for run.json."""
  rows = {k: [] for k in ("input_ids", "segment_ids", "start", "end", "question", "chars")}
  contexts: dict[str, tuple] = {}  # SQuAD asks ~5 questions of a context: tokenize it once
  not_fitting = 0
  for qi, q in enumerate(questions):
    if q.context not in contexts:
      ids, offsets = tokenizer.encode_with_offsets(q.context)
      contexts[q.context] = (ids, trimmed_spans(q.context, offsets))
    ids, spans = contexts[q.context]
    query = tokenizer.encode(q.question)[:max_query_len]
    offset = len(query) + 2  # [CLS] question [SEP]
    answer = answer_tokens(spans, q.starts[0], q.starts[0] + len(q.answers[0]))
    fitted = False
    for first, length in windows(len(ids), seq_len - len(query) - 3, doc_stride):
      input_ids, segment_ids = np.full(seq_len, PAD_ID, np.int32), np.zeros(seq_len, np.int32)
      chars = np.zeros((seq_len, 2), np.int32)
      input_ids[:offset + length + 1] = [CLS_ID, *query, SEP_ID, *ids[first:first + length], SEP_ID]
      segment_ids[offset:offset + length + 1] = 1
      chars[offset:offset + length] = np.reshape(spans[first:first + length], (length, 2))
      inside = answer is not None and first <= answer[0] and answer[1] < first + length
      fitted |= inside
      rows["start"].append(answer[0] - first + offset if inside else 0)
      rows["end"].append(answer[1] - first + offset if inside else 0)
      for key, value in (("input_ids", input_ids), ("segment_ids", segment_ids), ("question", qi), ("chars", chars)):
        rows[key].append(value)
    not_fitting += not fitted
  out = Windows(**{k: np.asarray(v, np.int32) for k, v in rows.items()})
  return out, {"questions": len(questions), "windows": len(out), "answer_in_no_window": not_fitting}


def answer_text(windows: Windows, row: int, first: int, last: int, context: str) -> str:
  """The context's characters under tokens first..last of window `row`."""
  return context[windows.chars[row, first, 0]:windows.chars[row, last, 1]]
