"""A small extractive-QA set built offline from the bundled Wikipedia excerpt: cloze questions.

`enwiki_cloze(cache_dir)` turns the "enwiki" corpus (research/data/bundled.py) into two SQuAD
v1.1-format splits, the same on every machine, in the manner of Lewis et al. 2019
("Unsupervised Question Answering by Cloze Translation"): the context is a paragraph, the
answer a span of one of its sentences, the question that sentence with the answer replaced
by a wh-word and lightly noised, so that answering takes more than finding a copy of the
question in the context.

1. Articles: split as every lineage corpus is (`split_documents`, research/data/text.py, with
   the default data.val_fraction 0.1): questions on the last 10 of the 99 articles are the
   "validation" split, on the other 89 the "train" split. bert_wiki pretrains on exactly those
   89, so a held-out context was never seen in pretraining.
2. Paragraphs: lines of 40 to 200 words (SQuAD's average ~120); one question on every such
   paragraph of a held-out article and on every second one of a training article: 1,462
   training and 372 held-out questions (more held-out ones than a tenth of the training
   ones, to tell runs apart).
3. Answers: spans of sentences of 6 to 40 words, never a sentence's first word (capitalised
   for another reason). In order of preference when they overlap:
   - a date (a month with a day and/or year, or a year 1000-2029): the wh-word is "when";
   - another number (up to 4 digits, or with thousands commas; a decimal part): "how many";
   - a run of capitalised words, "of", "de" or "the" allowed inside ("Battle of Saratoga"),
     a leading "The" / "A" / "An" left out (SQuAD's scoring ignores articles anyway):
     "where" if "in", "at" or "near" comes right before it (the preposition is replaced
     too), else "what".
   A possessive "'s" is not part of the answer, and a single letter ("I", the "C" of "°C")
   is none. One candidate of the paragraph is drawn with
   `random.Random(f"{title}/{line}")`, which also draws the noise below.
4. Question: the sentence with the answer replaced by its wh-word; then, after the noise model
   of unsupervised MT (Lample et al. 2018) that Lewis et al.'s "noisy clozes" use, every other
   word is dropped with probability 0.1 and the words are shuffled locally (sorted by position
   + U(0, 2), so a word moves at most 1 place; Lample et al. allow 3); the sentence's final
   punctuation becomes "?".

Question ids are "<title>/<line>" (the paragraph's line in its article).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

_MIN_WORDS, _MAX_WORDS = 40, 200  # a paragraph's words
_MIN_SENTENCE, _MAX_SENTENCE = 6, 40  # a sentence's words
_DROP, _SHUFFLE = 0.1, 2.0  # word dropout, local shuffle

_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE = re.compile(rf"\b(?:{_MONTH} \d{{1,2}}, \d{{4}}|\d{{1,2}} {_MONTH} \d{{4}}|{_MONTH} \d{{4}}|{_MONTH} \d{{1,2}}\b"
                   r"|(?<![\d.,])(?:1\d{3}|20[0-2]\d)(?![\w%]|[.,]\d))")
_NUMBER = re.compile(r"(?<![\w.,-])(?:\d{1,3}(?:,\d{3})+|\d{1,4})(?:\.\d+)?(?![\w%-]|[.,]\d)")
_WORD = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*")
_CONNECTORS = {"of", "de", "the"}
_PLACE_PREPOSITIONS = {"in", "at", "near"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]*\s+(?=[A-Z\"“])")


def _sentences(paragraph: str) -> list[tuple[int, str]]:
  """(offset, text) of each sentence: a split after . ! ? when a capital follows."""
  out, start = [], 0
  for m in _SENTENCE_END.finditer(paragraph):
    out.append((start, paragraph[start:m.start()]))
    start = m.end()
  out.append((start, paragraph[start:]))
  return out


def _capitalised_runs(sentence: str) -> list[tuple[int, int]]:
  """(start, end) of each run of capitalised words joined by single spaces, "of"/"de"/"the" inside."""
  runs, run = [], []
  for m in _WORD.finditer(sentence):
    adjacent = bool(run) and sentence[run[-1].end():m.start()] == " "
    if m.group()[0].isupper():
      if not adjacent:
        runs.append(run)
        run = []
      run.append(m)
    elif adjacent and m.group() in _CONNECTORS:
      run.append(m)
    else:
      runs.append(run)
      run = []
  runs.append(run)
  spans = []
  for run in runs:
    while run and run[0].group() in ("The", "A", "An"):  # "The Hague" answers as "Hague", as SQuAD scores it
      run = run[1:]
    while run and run[-1].group() in _CONNECTORS:  # "Bank of" is not a name; "Bank" is
      run = run[:-1]
    if run and len(run) + len(run[0].group()) > 2:  # not "I", nor "C" of "°C"
      possessive = run[-1].group().endswith(("'s", "’s"))
      spans.append((run[0].start(), run[-1].end() - 2 * possessive))
  return spans


def _candidates(sentence: str) -> list[tuple[int, int, str]]:
  """(start, end, wh-word) of the answers a sentence offers, none at its first word."""
  first = _WORD.search(sentence)
  found: list[tuple[int, int, str]] = []
  free = lambda s, e: not any(s < e2 and s2 < e for s2, e2, _ in found)
  for m in _DATE.finditer(sentence):
    found.append((m.start(), m.end(), "when"))
  for m in _NUMBER.finditer(sentence):
    if free(m.start(), m.end()):
      found.append((m.start(), m.end(), "how many"))
  for s, e in _capitalised_runs(sentence):
    if free(s, e):
      before = sentence[:s].split()
      found.append((s, e, "where" if before and before[-1] in _PLACE_PREPOSITIONS else "what"))
  return [c for c in found if first and c[0] > first.start()]


def _question(sentence: str, start: int, end: int, wh: str, rng: random.Random) -> str:
  """The sentence with [start, end) (and a place preposition before it) replaced by `wh`, noised."""
  left, right = sentence[:start].split(), sentence[end:].rstrip().rstrip(".!?").split()
  if wh == "where":
    left = left[:-1]  # "in Boston" -> "where"
  words = [(w, False) for w in left] + [(wh, True)] + [(w, False) for w in right]
  words = [(w, is_wh) for w, is_wh in words if is_wh or rng.random() >= _DROP]
  keys = [i + rng.uniform(0, _SHUFFLE) for i in range(len(words))]
  return " ".join(w for _, (w, _) in sorted(zip(keys, words), key=lambda x: x[0])) + "?"


def _paragraph_question(title: str, line: int, paragraph: str) -> dict | None:
  """The SQuAD "qas" entry of one paragraph, or None when no sentence offers an answer."""
  options = []
  for offset, sentence in _sentences(paragraph):
    if _MIN_SENTENCE <= len(sentence.split()) <= _MAX_SENTENCE:
      options += [(offset, sentence, *c) for c in _candidates(sentence)]
  if not options:
    return None
  rng = random.Random(f"{title}/{line}")
  offset, sentence, start, end, wh = options[rng.randrange(len(options))]
  return {"id": f"{title}/{line}", "question": _question(sentence, start, end, wh, rng),
          "answers": [{"text": sentence[start:end], "answer_start": offset + start}]}


def _split(articles: list[dict], every: int) -> dict:
  """SQuAD v1.1 JSON of one split: a question on every `every`-th qualifying paragraph."""
  data = []
  for article in articles:
    paragraphs, qualifying = [], 0
    for line, paragraph in enumerate(article["text"].split("\n")):
      if not _MIN_WORDS <= len(paragraph.split()) <= _MAX_WORDS:
        continue
      qualifying += 1
      if (qualifying - 1) % every:
        continue
      qa = _paragraph_question(article["title"], line, paragraph)
      if qa is not None:
        paragraphs.append({"context": paragraph, "qas": [qa]})
    if paragraphs:
      data.append({"title": article["title"], "paragraphs": paragraphs})
  return {"version": "enwiki_cloze-1", "data": data}


def enwiki_cloze(cache_dir: Path) -> dict[str, dict]:
  """{"train", "validation"}: SQuAD v1.1-format dicts of cloze questions on the bundled articles."""
  from research.data.bundled import bundled_corpus
  from research.data.text import split_documents

  path = bundled_corpus("enwiki", cache_dir)
  articles = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  by_text = {a["text"]: a for a in articles}
  train, held_out = split_documents([a["text"] for a in articles], 0.1)
  return {"train": _split([by_text[t] for t in train], every=2),
          "validation": _split([by_text[t] for t in held_out], every=1)}
