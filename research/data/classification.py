"""Labelled sentences and sentence pairs for classification: loading, label ids, a held-out split, batches.

Rows come from the first source the data config names, with the columns the objective names
(`objective.text_column`, `objective.pair_column` ("" = single sentences), `objective.label_column`):
- `data.path`: local file(s), by suffix: .tsv (tab-separated, no quoting, as GLUE's files),
  .csv (quoted as the csv module writes) or .jsonl (one JSON object a line). A TSV/CSV file's
  first line is the header naming the columns.
- `data.hub_name` (+ `data.hub_config`, `data.hub_split`): a `datasets` hub dataset, e.g.
  glue / sst2 (columns sentence, label) or glue / mrpc (sentence1, sentence2, label). Needs network.
- `data.bundled`: a bundled set (research/data/bundled.py): "polarity", 100 negative and 100
  positive movie-review sentences that ship with gensim.
Every problem in the data (a missing column, an empty text or label, a malformed line) is one
`DataError` line naming the file and line (or hub row) and the column. `data.max_docs` keeps
the first N training rows.

Evaluation rows (`objective.eval_split`): "" holds out `objective.eval_fraction` of the rows,
stratified by label (each class keeps its share, rounded) and drawn with `objective.split_seed`,
so every `train.seed` is evaluated on the same rows. Otherwise `eval_split` is a file of the
same columns (with data.path) or a hub split such as "validation" (with data.hub_name).

Labels: when every label is a non-negative integer (or its text, "0", "1") it is the label id
and there are max + 1 classes; otherwise the distinct labels of the training rows are sorted
and numbered, so the polarity set's "neg" is 0 and "pos" 1 (the class F1 is computed for).

Encoding, as google-research/bert's run_classifier.py: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`,
segment ids 0 up to the first [SEP] and 1 after it (padding 0); a pair too long loses tokens
from the end of the longer side, one at a time (`_truncate_seq_pair`), a single text its end.
Training batches are a pure function of (seed, step): step k takes examples kB ... kB + B - 1 of
a sequence of epochs, epoch e a permutation from `default_rng([seed, e])` (EpochCache).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.config import DataConfig
from research.data.bundled import bundled_examples
from research.data.epochs import EpochCache
from research.data.errors import DataError
from research.data.text import resolve_paths, check_utf8, hub_split
from research.tokenizers import CLS_ID, PAD_ID, SEP_ID

_SUFFIXES = (".tsv", ".csv", ".jsonl")
_INTEGER = re.compile(r"\s*\d+\s*")


@dataclass
class Columns:
  text: str = "text"
  pair: str = ""  # "" = single sentences
  label: str = "label"

  @property
  def names(self) -> list[str]:
    return [c for c in (self.text, self.pair, self.label) if c]


@dataclass
class Rows:
  """Examples as read: texts, second texts (pairs) or None, raw labels, and where each came from."""
  texts: list[str] = field(default_factory=list)
  pairs: list[str] | None = None
  labels: list = field(default_factory=list)
  where: list[str] = field(default_factory=list)  # "data.tsv line 7", for messages

  def take(self, index) -> Rows:
    pick = lambda xs: [xs[i] for i in index]
    return Rows(pick(self.texts), None if self.pairs is None else pick(self.pairs), pick(self.labels), pick(self.where))

  def __len__(self) -> int:
    return len(self.texts)


# ------------------------------------------------------------------------------ reading


def _add(rows: Rows, record: dict, columns: Columns, where: str) -> None:
  """Appends one record (a dict of column -> value), or a DataError naming the line and column."""
  for column in columns.names:
    value = record.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
      raise DataError(f"{where}: column {column!r} is {'missing' if value is None else 'empty'}")
  for column in filter(None, (columns.text, columns.pair)):
    if not isinstance(record[column], str):
      raise DataError(f"{where}: column {column!r} holds {type(record[column]).__name__}, not text")
  rows.texts.append(record[columns.text])
  if columns.pair:
    rows.pairs.append(record[columns.pair])
  rows.labels.append(record[columns.label])
  rows.where.append(where)


def _check_header(path: Path, header: list[str], columns: Columns) -> None:
  for key, column in (("text_column", columns.text), ("pair_column", columns.pair), ("label_column", columns.label)):
    if column and column not in header:
      raise DataError(f"{path} has no column objective.{key}={column!r}; columns: {', '.join(header)}")


def _read_table(path: Path, columns: Columns, rows: Rows) -> None:
  tsv = path.suffix.lower() == ".tsv"
  with path.open(encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    try:
      header = next(reader, None)
      if header is None:
        raise DataError(f"{path} is empty")
      _check_header(path, header, columns)
      for row in reader:
        if not any(cell.strip() for cell in row):
          continue  # a blank line
        if len(row) != len(header):
          raise DataError(f"{path} line {reader.line_num}: {len(row)} fields, but the header has {len(header)}"
                          + (" (a tab inside a text?)" if tsv else ""))
        _add(rows, dict(zip(header, row)), columns, f"{path} line {reader.line_num}")
    except csv.Error as e:
      raise DataError(f"{path} line {reader.line_num}: not CSV: {e}") from None


def _read_jsonl(path: Path, columns: Columns, rows: Rows) -> None:
  with path.open(encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line.rstrip("\r\n"))
      except json.JSONDecodeError as e:
        raise DataError(f"{path} line {i}: not JSON: {e.msg} at column {e.colno}") from None
      if not isinstance(record, dict):
        raise DataError(f"{path} line {i}: a JSON {type(record).__name__}, not an object of columns")
      if columns.label not in record or columns.text not in record or (columns.pair and columns.pair not in record):
        missing = [c for c in columns.names if c not in record]
        raise DataError(f"{path} line {i} has no column {missing[0]!r}; it has: {', '.join(record)}")
      _add(rows, record, columns, f"{path} line {i}")


def _local_rows(paths: list[Path], columns: Columns) -> Rows:
  rows = Rows(pairs=[] if columns.pair else None)
  for path in paths:
    if path.suffix.lower() not in _SUFFIXES:
      raise DataError(f"{path}: unknown file type {path.suffix!r} for classification; use one of {', '.join(_SUFFIXES)}")
    if path.stat().st_size == 0:
      raise DataError(f"{path} is empty")
    check_utf8(path)
    before = len(rows)
    (_read_jsonl if path.suffix.lower() == ".jsonl" else _read_table)(path, columns, rows)
    if len(rows) == before:
      raise DataError(f"{path} holds no rows")
  return rows


def _hub_rows(cfg: DataConfig, split: str, columns: Columns) -> tuple[Rows, list[str] | None]:
  """The rows of a hub split, and the label names when the label column is a ClassLabel."""
  ds, what = hub_split(cfg, split)
  for key, column in (("text_column", columns.text), ("pair_column", columns.pair), ("label_column", columns.label)):
    if column and column not in ds.column_names:
      raise DataError(f"{what} split {split!r} has no column objective.{key}={column!r}; "
                      f"columns: {', '.join(ds.column_names)}")
  rows = Rows(pairs=[] if columns.pair else None)
  for i, record in enumerate(ds.select_columns(columns.names)):
    if record[columns.label] == -1:  # GLUE's test splits: labels withheld
      raise DataError(f"{what} split {split!r} row {i}: label -1 (withheld); evaluate on a labelled split")
    _add(rows, record, columns, f"{what} split {split!r} row {i}")
  names = getattr(ds.features[columns.label], "names", None)
  return rows, names


def load_rows(cfg: DataConfig, columns: Columns, eval_split: str = "") -> tuple[Rows, Rows | None, list[str] | None]:
  """(training rows, evaluation rows or None when they are to be held out, label names if the source has them)."""
  names = None
  if cfg.path:
    train, evals = _local_rows(resolve_paths(cfg.path), columns), None
    if eval_split:
      if not Path(eval_split).is_file():
        raise DataError(f"objective.eval_split={eval_split!r} is not a file (with data.path it names the evaluation file)")
      evals = _local_rows([Path(eval_split)], columns)
  elif cfg.hub_name:
    train, names = _hub_rows(cfg, cfg.hub_split, columns)
    evals = _hub_rows(cfg, eval_split, columns)[0] if eval_split else None
  else:
    if eval_split:
      raise DataError(f"objective.eval_split={eval_split!r} needs data.path or data.hub_name; "
                      f"a bundled set is split by objective.eval_fraction")
    if columns.pair or (columns.text, columns.label) != ("text", "label"):
      raise DataError(f"data.bundled={cfg.bundled!r} has the columns text and label, single sentences; "
                      f"leave objective.text_column, pair_column and label_column at their defaults")
    train = Rows()
    for i, record in enumerate(bundled_examples(cfg.bundled)):
      _add(train, record, columns, f"data.bundled={cfg.bundled!r} row {i}")
    evals = None
  if cfg.max_docs > 0:
    train = train.take(range(min(cfg.max_docs, len(train))))
  return train, evals, names


# ------------------------------------------------------------------------------ labels, split


def label_ids(train: Rows, evals: Rows | None = None,
              names: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(label names, int32 label ids of the training rows, of the evaluation rows); see the module docstring.

  `names`: the source's own label names (a hub ClassLabel), used for integer labels.
  """
  evals = evals or Rows()
  def as_int(x):
    if isinstance(x, bool):
      return None
    if isinstance(x, int):
      return x
    return int(x) if isinstance(x, str) and _INTEGER.fullmatch(x) else None

  ints = [as_int(x) for x in train.labels + evals.labels]
  if all(i is not None for i in ints):
    n = max(ints) + 1
    names = names if names and len(names) >= n else [str(i) for i in range(n)]
    ids = np.asarray(ints, np.int32)
    return names, ids[:len(train)], ids[len(train):]
  names = sorted({str(x) for x in train.labels})
  index = {name: i for i, name in enumerate(names)}
  for label, where in zip(evals.labels, evals.where):
    if str(label) not in index:
      raise DataError(f"{where}: label {label!r} does not occur in the training rows ({', '.join(names)})")
  return (names, np.asarray([index[str(x)] for x in train.labels], np.int32),
          np.asarray([index[str(x)] for x in evals.labels], np.int32))


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, held-out indices), both in file order: `fraction` of each class (rounded), drawn with `seed`."""
  rng = np.random.default_rng([seed, 0x686F6C64])  # "hold": apart from the epoch orders' streams
  held = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    k = int(round(len(members) * fraction)) if len(members) > 1 else 0
    held.append(rng.permutation(members)[:k])
  held = np.sort(np.concatenate(held))
  train = np.setdiff1d(np.arange(len(labels)), held)
  if not len(held) or not len(train):
    raise DataError(f"{len(labels)} rows are too few to hold out objective.eval_fraction={fraction} of each label")
  return train, held


# ------------------------------------------------------------------------------ encoding


def truncate_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
  """Lengths after cutting the longer side one token at a time (ties: B) until they fit `budget`."""
  while len_a + len_b > budget:
    if len_a > len_b:
      len_a -= 1
    else:
      len_b -= 1
  return len_a, len_b


def example_lengths(a: list[list[int]], b: list[list[int]] | None) -> np.ndarray:
  """Untruncated lengths with [CLS] and the [SEP]s."""
  if b is None:
    return np.asarray([len(x) + 2 for x in a])
  return np.asarray([len(x) + len(y) + 3 for x, y in zip(a, b)])


def encode(a: list[list[int]], b: list[list[int]] | None, seq_len: int) -> dict[str, np.ndarray]:
  """input_ids and segment_ids [N, seq_len] int32 of `[CLS] A [SEP] (B [SEP])`, padded with 0."""
  n = len(a)
  ids, seg = np.full((n, seq_len), PAD_ID, np.int32), np.zeros((n, seq_len), np.int32)
  for i in range(n):
    if b is None:
      x, y = a[i][:seq_len - 2], None
    else:
      la, lb = truncate_pair(len(a[i]), len(b[i]), seq_len - 3)
      x, y = a[i][:la], b[i][:lb]
    row = [CLS_ID, *x, SEP_ID]
    if y is not None:
      seg[i, len(row):len(row) + len(y) + 1] = 1
      row += [*y, SEP_ID]
    ids[i, :len(row)] = row
  return {"input_ids": ids, "segment_ids": seg}


@dataclass
class Split:
  """One split, encoded: input_ids, segment_ids [N, T] and label [N], int32."""
  input_ids: np.ndarray
  segment_ids: np.ndarray
  label: np.ndarray

  def take(self, index) -> dict[str, np.ndarray]:
    return {"input_ids": self.input_ids[index], "segment_ids": self.segment_ids[index], "label": self.label[index]}

  def __len__(self) -> int:
    return len(self.label)


class Batches:
  """Training batches of `train`, a pure function of (seed, step)."""

  def __init__(self, train: Split, seed: int):
    self.train = train
    self._epochs = EpochCache(seed, lambda rng: rng.permutation(len(train)))

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    samples = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, positions = np.divmod(samples, len(self.train))
    index = np.concatenate([self._epochs[int(e)][positions[epochs == e]] for e in np.unique(epochs)])
    return self.train.take(index)
