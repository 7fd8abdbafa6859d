"""Sentence pairs for translation: loading and splitting into train / valid / test.

Pairs come from the first source the data config names:
- `data.path`: a TSV file. With a header line, `data.source_column` / `data.target_column`
  name the columns (default: the first two columns, or the last two when the first is
  `ref`). If the header has a `ref` column of OSIS verse references (`Gen.1.1`), the split
  is by whole books, as `shared/data/README.md` prescribes for `bible_en_es.tsv`: test =
  Ruth, Jonah, Phlm, 3John; valid = Obad, Jude, Titus; train = the rest. Otherwise the last
  2 x `data.val_fraction` of the rows are cut into valid and test.
- `data.hub_name` (+ `hub_config`): a `datasets` hub dataset (needs network), e.g.
  `opus_books` / `en-es`, with a `translation` column of {lang: text} or flat columns named
  by `data.source_column` / `data.target_column`; its `validation`/`test` splits are used
  when it has them.
- `data.bundled`: a bundled pair task (research/data/bundled.py), e.g. "numbers_en_es".
"""

from __future__ import annotations

import csv
from pathlib import Path

from research.config import DataConfig
from research.data.errors import DataError
from research.data.bundled import bundled_pairs
from research.data.text import check_utf8, looks_offline

Pair = tuple[str, str]
BIBLE_TEST_BOOKS = {"Ruth", "Jonah", "Phlm", "3John"}
BIBLE_VALID_BOOKS = {"Obad", "Jude", "Titus"}


def _named(cfg: DataConfig) -> bool:
  return bool(cfg.source_column or cfg.target_column)


def _columns(cfg: DataConfig, header: list[str]) -> tuple[int, int]:
  if _named(cfg):
    for key in ("source_column", "target_column"):
      if getattr(cfg, key) not in header:
        raise DataError(f"data.{key}={getattr(cfg, key)!r} is not a column of the header ({', '.join(header)})")
    return header.index(cfg.source_column), header.index(cfg.target_column)
  return (1, 2) if header[0] == "ref" and len(header) >= 3 else (0, 1)


def _split_by_fraction(pairs: list[Pair], fraction: float) -> dict[str, list[Pair]]:
  n = max(1, round(len(pairs) * fraction))
  if len(pairs) < 3 * n:
    raise DataError(f"{len(pairs)} pairs are too few to split with data.val_fraction={fraction}")
  return {"train": pairs[:-2 * n], "valid": pairs[-2 * n:-n], "test": pairs[-n:]}


def _tsv_pairs(cfg: DataConfig) -> dict[str, list[Pair]]:
  path = Path(cfg.path)
  if not path.is_file():
    raise DataError(f"data.path={cfg.path!r}: no such file (expected a TSV of sentence pairs)")
  check_utf8(path)
  with path.open(encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if not rows:
    raise DataError(f"{path} is empty")
  header = rows[0]
  has_header = _named(cfg) or header[0] == "ref" or any(h in ("src", "tgt", "source", "target") for h in header)
  src_col, tgt_col = _columns(cfg, header)
  body = rows[1:] if has_header else rows
  bad = next((i for i, r in enumerate(body) if len(r) <= max(src_col, tgt_col)), None)
  if bad is not None:
    raise DataError(f"{path}: line {bad + 1 + has_header} has {len(body[bad])} columns; expected at least "
                    f"{max(src_col, tgt_col) + 1} tab-separated columns")
  if has_header and header[0] == "ref":
    splits = {"train": [], "valid": [], "test": []}
    for r in body:
      book = r[0].split(".")[0]
      split = "test" if book in BIBLE_TEST_BOOKS else "valid" if book in BIBLE_VALID_BOOKS else "train"
      splits[split].append((r[src_col], r[tgt_col]))
    return splits
  return _split_by_fraction([(r[src_col], r[tgt_col]) for r in body], cfg.val_fraction)


def _hub_pairs(cfg: DataConfig) -> dict[str, list[Pair]]:
  import datasets

  try:
    ds = datasets.load_dataset(cfg.hub_name, cfg.hub_config or None)
  except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
    hint = " (no network? set HF_DATASETS_OFFLINE=0 and check the connection)" if looks_offline(e) else ""
    raise DataError(f"data.hub_name={cfg.hub_name!r} hub_config={cfg.hub_config!r} could not be loaded: "
                    f"{str(e).splitlines()[0]}{hint}") from None
  langs = [cfg.source_column, cfg.target_column] if _named(cfg) else \
      (cfg.hub_config.split("-") if "-" in cfg.hub_config else [])
  if len(langs) != 2 or not all(langs):
    raise DataError("data.source_column and data.target_column must name the languages, e.g. en and es")

  def pairs(split) -> list[Pair]:
    rows = ds[split]
    if "translation" in rows.column_names:
      return [(t[langs[0]], t[langs[1]]) for t in rows["translation"]]
    return list(zip(rows[langs[0]], rows[langs[1]]))

  out = {"train": pairs(cfg.hub_split)}
  if "validation" in ds and "test" in ds:
    return {**out, "valid": pairs("validation"), "test": pairs("test")}
  return _split_by_fraction(out["train"], cfg.val_fraction)


def load_pairs(cfg: DataConfig) -> dict[str, list[Pair]]:
  """{"train", "valid", "test"} lists of (source, target) strings, from the source `cfg` names."""
  if cfg.path:
    splits = _tsv_pairs(cfg)
  elif cfg.hub_name:
    splits = _hub_pairs(cfg)
  else:
    splits = bundled_pairs(cfg.bundled)
  splits = {k: [p for p in v if p[0].strip() and p[1].strip()] for k, v in splits.items()}
  if cfg.max_docs > 0:
    splits["train"] = splits["train"][:cfg.max_docs]
  for name, pairs in splits.items():
    if not pairs:
      raise DataError(f"the {name} split holds no sentence pairs")
  return splits
