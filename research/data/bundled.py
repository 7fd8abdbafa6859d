"""Bundled data that needs no network, in one registry: corpora of documents and pair tasks.

`BUNDLED` names everything `data.bundled=` accepts: "enwiki" (documents, below),
"numbers_en_es" (generated translation pairs, research/data/numbers_en_es.py),
"polarity" (labelled movie-review sentences, `_polarity` below) and "enwiki_cloze"
(cloze questions on the enwiki articles, SQuAD-format, research/data/enwiki_cloze.py).

The default corpus is English Wikipedia text.

The gensim wheel ships a shortened Wikipedia dump (about 100 articles, 1.7 MB bz2) for its
own tests. `bundled_corpus("enwiki", cache_dir)` turns it once into plain article text,
`<cache_dir>/corpora/enwiki.jsonl` with one {"title", "text"} object per article, so a fresh
checkout can train a language model on real prose without downloading anything.

gensim's `filter_wiki` removes most markup but leaves bold/italic quotes, headings, table
cells, image captions and list bullets, and drops every template (so "an area of
{{convert|2381741|km2}}" loses its number). So this module removes tables, files and
reference sections itself, keeps the text of a few prose templates (units, foreign words),
and tidies the lines after.
"""

from __future__ import annotations

import bz2
import json
import os
import re
import tempfile
from pathlib import Path

from research.data.errors import DataError

_ENWIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# Sections that hold citations and link lists rather than prose; they are dropped.
_NON_PROSE_SECTIONS = {
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "footnotes", "sources", "citations", "works cited", "notes and references",
    "references and notes", "general references", "primary sources", "secondary sources",
    "filmography", "discography", "gallery", "literature", "other uses", "publications",
    "selected works", "works", "list of works", "awards and nominations", "awards",
}
_MIN_ARTICLE_WORDS = 100  # shorter articles are stubs or disambiguation lists
_MIN_LIST_ITEM_WORDS = 6  # shorter bullet items are link lists, not sentences
_MIN_LINE_WORDS = 4  # orphan fragments (table cells, captions) are shorter than this

_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_FILE_LINK_START = re.compile(r"\[\[\s*(?:file|image|category|media)\s*:", re.IGNORECASE)
_DROPPED_TAGS = re.compile(
    r"<(gallery|ref|math|code|syntaxhighlight|source|pre|timeline|imagemap|score|chem|hiero)"
    r"\b[^>/]*>.*?</\1\s*>|<ref\b[^>]*/>", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+")


_TEMPLATE = re.compile(r"\{\{([^{}]*)\}\}")  # innermost templates: no braces inside
_TEMPLATE_ARG_SPLIT = re.compile(r"\|(?![^\[]*\]\])")  # a pipe that is not inside [[link|text]]
_RANGE_WORDS = {"to", "-", "–", "and", "or", "by", "x", "×", "+/-", "±"}
_UNIT_NAMES = {"C": "°C", "F": "°F", "K": "K", "sqmi": "sq mi", "km2": "km²", "m2": "m²", "ft2": "sq ft",
               "mi": "mi", "km": "km", "ha": "ha", "acre": "acres", "lb": "lb", "kg": "kg"}


def _expand_template(match: re.Match) -> str:
  """Text for the templates that carry prose (units, foreign words); "" for the rest."""
  name, *args = [a.strip() for a in _TEMPLATE_ARG_SPLIT.split(match.group(1))]
  name = name.lower().replace("_", " ")
  positional = [a for a in args if "=" not in a.split("[[")[0]]
  if name in ("convert", "cvt") and positional:
    words = [positional[0]]
    for a in positional[1:]:  # "{{convert|3|to|5|km|mi}}" reads "3 to 5 km"
      if a in _RANGE_WORDS or not words or words[-1] in _RANGE_WORDS:
        words.append(a)
      else:
        words.append(_UNIT_NAMES.get(a, a))
        break
    return " ".join(words)
  if name in ("lang", "transl") and len(positional) >= 2:
    return positional[-1]
  if name.startswith("lang-") or name in ("small", "nowrap", "nobr", "nowrap begin", "formatnum", "flag",
                                          "nihongo", "sic", "em", "smallcaps", "angbr", "keypress"):
    return positional[0] if positional else ""
  if name == "as of" and positional:
    return "as of " + " ".join(positional[:3])
  if name in ("quote", "blockquote", "cquote", "quotation"):
    named = dict(a.split("=", 1) for a in args if "=" in a.split("[[")[0])
    return "\n" + (named.get("text") or (positional[0] if positional else "")) + "\n"
  return ""


def _expand_templates(text: str) -> str:
  # Innermost first, so "{{lang|fr|{{small|x}}}}" works outwards; a few rounds cover the nesting.
  for _ in range(8):
    text, n = _TEMPLATE.subn(_expand_template, text)
    if not n:
      break
  return text


def _strip_nested(text: str, start: re.Pattern, open_: str, close: str) -> str:
  """Removes every span that `start` opens, up to its matching `close` (brackets nest)."""
  out, pos = [], 0
  while (m := start.search(text, pos)):
    out.append(text[pos:m.start()])
    depth, i = 0, m.start()
    while i < len(text):
      if text.startswith(open_, i):
        depth, i = depth + 1, i + len(open_)
      elif text.startswith(close, i):
        depth, i = depth - 1, i + len(close)
        if depth == 0:
          break
      else:
        i += 1
    pos = i
  out.append(text[pos:])
  return "".join(out)


def _strip_tables(text: str) -> str:
  """Removes `{| ... |}` tables, which may nest; their cells are not prose."""
  out, depth = [], 0
  for line in text.split("\n"):
    s = line.lstrip()
    if s.startswith("{|"):
      depth += 1
    elif depth and s.startswith("|}"):
      depth -= 1
    elif not depth:
      out.append(line)
  return "\n".join(out)


def _tidy_line(line: str) -> str:
  line = line.replace("'''", "").replace("''", "")
  line = _URL.sub("", line)
  line = line.replace("\xa0", " ").replace("\t", " ")
  # Templates removed from inside parentheses leave "( )", "(; ; ...)", "word , word".
  line = re.sub(r"([,;])(?:\s*[,;])+", r"\1", line)
  line = re.sub(r"\(\s*[,;:]?\s*\)", "", line)
  line = re.sub(r"\(\s*[,;:]\s*", "(", line)
  line = re.sub(r"\s*[,;:]\s*\)", ")", line)
  line = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", line))
  line = re.sub(r"\s+([,.;:!?])", r"\1", line)
  line = re.sub(r"</?[A-Za-z][^<>]{0,40}>", "", line)  # stray tags the regexes above did not pair
  return re.sub(r" {2,}", " ", line).strip()


def clean_article(wikitext: str) -> str:
  """Plain prose of one article: paragraphs and headings, one per line."""
  from gensim.corpora.wikicorpus import filter_wiki

  text = _DROPPED_TAGS.sub("", wikitext)
  text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
  text = _strip_tables(text)
  text = _strip_nested(text, _FILE_LINK_START, "[[", "]]")
  text = _expand_templates(text)
  text = filter_wiki(text)
  lines, skipping = [], False
  for raw in text.split("\n"):
    if (m := _HEADING.match(raw.strip())):
      title = _tidy_line(m.group(2))
      skipping = title.lower() in _NON_PROSE_SECTIONS
      if not skipping and title:
        lines.append(("heading", title))
      continue
    if skipping or raw[:1] in (" ", "|", "!", "{", "}"):
      continue  # preformatted code and table debris
    is_item = raw[:1] in ("*", "#", ":", ";")
    line = _tidy_line(raw.lstrip("*#:; "))
    words = len(line.split())
    if words < (_MIN_LIST_ITEM_WORDS if is_item else _MIN_LINE_WORDS) or line[0] in ",.;:)":
      continue  # too short for prose, or left headless by a removed formula
    lines.append(("text", line))
  # A heading whose section lost all its text would read as a dangling title.
  kept = [line for i, (kind, line) in enumerate(lines)
          if kind == "text" or (i + 1 < len(lines) and lines[i + 1][0] == "text")]
  return "\n".join(kept)


def _extract_enwiki(out: Path) -> None:
  from gensim.corpora.wikicorpus import extract_pages
  from gensim.test.utils import datapath

  dump = datapath(_ENWIKI_DUMP)
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".enwiki.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f, bz2.open(dump) as raw:
      # Namespace 0 holds the articles; talk, user and template pages are not prose.
      for title, wikitext, _ in extract_pages(raw, filter_namespaces=("0",)):
        if wikitext.lstrip()[:9].lower() == "#redirect" or "(disambiguation)" in title:
          continue
        text = clean_article(wikitext)
        if len(text.split()) >= _MIN_ARTICLE_WORDS:
          f.write(json.dumps({"title": title, "text": text}, ensure_ascii=False) + "\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the corpus is not a secret
    os.replace(tmp, out)  # atomic: a crash never leaves a half-written corpus behind
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def _numbers_en_es():
  from research.data.numbers_en_es import numbers_en_es

  return numbers_en_es()


_POLARITY_FILE = "pang_lee_polarity.cor"
_POLARITY_LABELS = ("neg", "pos")


def _polarity() -> list[dict]:
  """The 200 labelled sentences of gensim's `test_data/pang_lee_polarity.cor`, as {"text", "label"} rows.

  They are from Pang & Lee's sentence polarity dataset v1.0 (2005; Rotten Tomatoes snippets,
  lower-cased and tokenised): lines 1-100 are the first 100 of its negative file, lines
  101-200 the first 100 of its positive one. Each line is fastText's format,
  `__label__neg <text>` or `__label__pos <text>`; the label becomes "neg" / "pos". The file
  is Windows-1252, not UTF-8 (0x97 is an em dash, 0xe9 an e-acute), so it is decoded as such.
  """
  from gensim.test.utils import datapath

  path = Path(datapath(_POLARITY_FILE))
  rows = []
  for i, line in enumerate(path.read_bytes().decode("cp1252").splitlines(), 1):
    label, _, text = line.partition(" ")
    if label.removeprefix("__label__") not in _POLARITY_LABELS or not text.strip():
      raise DataError(f"{path} line {i}: expected '__label__neg <text>' or '__label__pos <text>'")
    rows.append({"text": text.strip(), "label": label.removeprefix("__label__")})
  return rows


def _enwiki_cloze(cache_dir: Path) -> dict[str, dict]:
  from research.data.enwiki_cloze import enwiki_cloze

  return enwiki_cloze(cache_dir)


# name -> (kind, builder): "documents" builders write a jsonl file of {"title", "text"};
# "pairs" builders return {"train", "valid", "test"} lists of (source, target);
# "classification" builders return a list of {"text", "label"} rows;
# "qa" builders take the cache directory and return {"train", "validation"} SQuAD v1.1 dicts.
BUNDLED = {
    "enwiki": ("documents", _extract_enwiki),
    "numbers_en_es": ("pairs", _numbers_en_es),
    "polarity": ("classification", _polarity),
    "enwiki_cloze": ("qa", _enwiki_cloze),
}
# Bump when the extraction changes, so caches made by an older extractor are not reused.
_EXTRACTOR_VERSION = 2


def _lookup(name: str, kind: str):
  found, builder = BUNDLED.get(name, (None, None))
  if found != kind:
    known = ", ".join(sorted(n for n, (k, _) in BUNDLED.items() if k == kind))
    what = {"documents": "corpus of documents", "pairs": "translation task", "classification": "classification set",
            "qa": "question-answering set"}[kind]
    raise DataError(f"data.bundled={name!r} is not a bundled {what}; known: {known}")
  return builder


def bundled_corpus(name: str, cache_dir: Path) -> Path:
  """Path of the bundled corpus `name` as jsonl, extracting it on first use."""
  builder = _lookup(name, "documents")
  out = Path(cache_dir) / "corpora" / f"{name}-v{_EXTRACTOR_VERSION}.jsonl"
  if not out.is_file():
    builder(out)
  return out


def bundled_pairs(name: str) -> dict[str, list[tuple[str, str]]]:
  """The splits of the bundled pair task `name`."""
  return _lookup(name, "pairs")()


def bundled_examples(name: str) -> list[dict]:
  """The rows of the bundled classification set `name`: {"text", "label"} dicts."""
  return _lookup(name, "classification")()


def bundled_qa(name: str, cache_dir: Path) -> dict[str, dict]:
  """The splits of the bundled question-answering set `name`: {"train", "validation"} in SQuAD v1.1 format."""
  return _lookup(name, "qa")(Path(cache_dir))
