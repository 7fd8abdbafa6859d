"""Sentence pairs for translation: loading, splits, tokenization, length filtering, batches.

Pairs come from the first source the data config names:
- `data.path`: a TSV file. With a header line, `data.text_column="en,es"` names the source
  and target columns (default: the first two columns, or the last two when the first is
  `ref`). If the header has a `ref` column of OSIS verse references (`Gen.1.1`), the split
  is by whole books, as `shared/data/README.md` prescribes for `bible_en_es.tsv`: test =
  Ruth, Jonah, Phlm, 3John; valid = Obad, Jude, Titus; train = the rest. Otherwise the last
  2 x `data.val_fraction` of the rows are cut into valid and test.
- `data.hub_name` (+ `hub_config`): a `datasets` hub dataset (needs network), e.g.
  `opus_books` / `en-es`, with a `translation` column of {lang: text} or flat columns named
  by `data.text_column`; its `validation`/`test` splits are used when it has them.
- `data.bundled="numbers_en_es"` (the default of the translation experiments): a generated,
  offline task. English number words -> Spanish number words for integers below a million,
  e.g. "three hundred twenty-one thousand five" -> "trescientos veintiún mil cinco". It needs
  reordering-free but non-trivial mapping (apocope "veintiún", "ciento"/"cien", irregular
  hundreds "quinientos"), and has disjoint train/valid/test numbers.

Batches are fixed-shape (one compiled step): `src` [B, max_src_len], `tgt_in` = bos + target
and `tgt_out` = target + eos, both [B, max_tgt_len], padded with pad=0. Training pairs longer
than that are dropped (counted in the log); valid/test pairs are never dropped for BLEU: a
source longer than max_src_len is cut. Batch k of training is the k-th slice of B pairs from
an epoch permutation seeded by (seed, epoch), a pure function of (seed, step), so resumed
runs see the same data. Pairs are drawn from length buckets: each epoch's permutation is
sorted by source length within windows of `BUCKET_WINDOW` batches, and the batches shuffled,
so a batch holds pairs of similar length (less padding the loss has to mask).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.config import DataConfig
from research.data.text import DataError, _check_utf8, _looks_offline
from research.tokenizers import BOS_ID, EOS_ID, PAD_ID

Pair = tuple[str, str]
BIBLE_TEST_BOOKS = {"Ruth", "Jonah", "Phlm", "3John"}
BIBLE_VALID_BOOKS = {"Obad", "Jude", "Titus"}
BUCKET_WINDOW = 50  # batches per sorting window: similar lengths together, still well shuffled


# --------------------------------------------------------------------------- generated task

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ES_ONES = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince "
            "dieciséis diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro "
            "veinticinco veintiséis veintisiete veintiocho veintinueve").split()
_ES_TENS = "_ _ _ treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_ES_HUNDREDS = ("_ ciento doscientos trescientos cuatrocientos quinientos seiscientos setecientos "
                "ochocientos novecientos").split()


def _en_below_1000(n: int) -> list[str]:
  words = []
  if n >= 100:
    words += [_EN_ONES[n // 100], "hundred"]
    n %= 100
  if n >= 20:
    words.append(_EN_TENS[n // 10] + (f"-{_EN_ONES[n % 10]}" if n % 10 else ""))
  elif n or not words:
    words.append(_EN_ONES[n])
  return words


def english_number(n: int) -> str:
  """American English words, no "and": 321005 -> "three hundred twenty-one thousand five"."""
  thousands, rest = divmod(n, 1000)
  words = (_en_below_1000(thousands) + ["thousand"]) if thousands else []
  if rest or not words:
    words += _en_below_1000(rest)
  return " ".join(words)


def _es_below_1000(n: int, before_noun: bool = False) -> list[str]:
  words = []
  if n == 100:
    return ["cien"]
  if n >= 100:
    words.append(_ES_HUNDREDS[n // 100])
    n %= 100
  if n < 30 and (n or not words):
    word = _ES_ONES[n]
    if before_noun and n in (1, 21):  # apocope before "mil": "un mil" -> "un", "veintiún mil"
      word = {1: "un", 21: "veintiún"}[n]
    words.append(word)
  elif n >= 30:
    words.append(_ES_TENS[n // 10])
    if n % 10:
      words += ["y", "un" if before_noun and n % 10 == 1 else _ES_ONES[n % 10]]
  return words


def spanish_number(n: int) -> str:
  """Spanish words: 1000 -> "mil", 21000 -> "veintiún mil", 321005 -> "trescientos veintiún mil cinco"."""
  thousands, rest = divmod(n, 1000)
  words = []
  if thousands:
    words += (["mil"] if thousands == 1 else _es_below_1000(thousands, before_noun=True) + ["mil"])
  if rest or not words:
    words += _es_below_1000(rest)
  return " ".join(words)


def numbers_en_es(n_train: int = 20_000, n_eval: int = 1_000, seed: int = 1234) -> dict[str, list[Pair]]:
  """The bundled task: distinct random integers below 10^6, disjoint between the splits."""
  rng = np.random.default_rng(seed)
  numbers = rng.choice(1_000_000, size=n_train + 2 * n_eval, replace=False)
  pairs = [(english_number(int(n)), spanish_number(int(n))) for n in numbers]
  return {"train": pairs[:n_train], "valid": pairs[n_train:n_train + n_eval], "test": pairs[n_train + n_eval:]}


_BUNDLED = {"numbers_en_es": numbers_en_es}


# ------------------------------------------------------------------------------- loading


def _columns(cfg: DataConfig, header: list[str]) -> tuple[int, int]:
  if "," in cfg.text_column:
    names = [c.strip() for c in cfg.text_column.split(",")]
    missing = [c for c in names if c not in header]
    if len(names) != 2 or missing:
      raise DataError(f"data.text_column={cfg.text_column!r} must name a source and a target column "
                      f"of the header ({', '.join(header)})")
    return header.index(names[0]), header.index(names[1])
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
  _check_utf8(path)
  with path.open(encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if not rows:
    raise DataError(f"{path} is empty")
  header = rows[0]
  has_header = "," in cfg.text_column or header[0] == "ref" or any(h in ("src", "tgt", "source", "target") for h in header)
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
    hint = " (no network? set HF_DATASETS_OFFLINE=0 and check the connection)" if _looks_offline(e) else ""
    raise DataError(f"data.hub_name={cfg.hub_name!r} hub_config={cfg.hub_config!r} could not be loaded: "
                    f"{str(e).splitlines()[0]}{hint}") from None
  langs = [c.strip() for c in cfg.text_column.split(",")] if "," in cfg.text_column else \
      (cfg.hub_config.split("-") if "-" in cfg.hub_config else [])
  if len(langs) != 2:
    raise DataError("data.text_column must name the source and target, e.g. text_column=en,es")

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
  elif cfg.bundled in _BUNDLED:
    splits = _BUNDLED[cfg.bundled]()
  else:
    raise DataError(f"data.bundled={cfg.bundled!r} is not a bundled translation task; known: "
                    f"{', '.join(sorted(_BUNDLED))} (or give data.path=pairs.tsv)")
  splits = {k: [p for p in v if p[0].strip() and p[1].strip()] for k, v in splits.items()}
  if cfg.max_docs > 0:
    splits["train"] = splits["train"][:cfg.max_docs]
  for name, pairs in splits.items():
    if not pairs:
      raise DataError(f"the {name} split holds no sentence pairs")
  return splits


# ------------------------------------------------------------------------------- batches


def encode_pairs(pairs: list[Pair], src_tok, tgt_tok) -> tuple[list[list[int]], list[list[int]]]:
  return src_tok.encode_batch([s for s, _ in pairs]), tgt_tok.encode_batch([t for _, t in pairs])


def pad_rows(rows: list[list[int]], length: int) -> np.ndarray:
  out = np.full((len(rows), length), PAD_ID, np.int32)
  for i, r in enumerate(rows):
    r = r[:length]
    out[i, :len(r)] = r
  return out


def make_batch(src: list[list[int]], tgt: list[list[int]], max_src_len: int, max_tgt_len: int) -> dict:
  return {"src": pad_rows(src, max_src_len),
          "tgt_in": pad_rows([[BOS_ID] + t for t in tgt], max_tgt_len),
          "tgt_out": pad_rows([t + [EOS_ID] for t in tgt], max_tgt_len)}


@dataclass
class TranslationData:
  src: list[list[int]]  # training pairs that fit, token ids
  tgt: list[list[int]]
  max_src_len: int
  max_tgt_len: int
  seed: int
  batch_size: int
  _epochs: dict = field(default_factory=dict, repr=False)

  def __post_init__(self):
    self.batches_per_epoch = len(self.src) // self.batch_size
    if self.batches_per_epoch < 1:
      raise DataError(f"{len(self.src)} training pairs fit the length limits: fewer than one batch of "
                      f"{self.batch_size}; raise model.max_src_len / max_tgt_len or lower train.batch_size")
    self._lengths = np.array([len(s) for s in self.src])

  def _epoch(self, epoch: int) -> np.ndarray:
    """[batches_per_epoch, batch_size] pair indices: shuffled, length-bucketed, batches shuffled."""
    if epoch not in self._epochs:
      if len(self._epochs) >= 2:
        self._epochs.pop(min(self._epochs))
      rng = np.random.default_rng([self.seed, epoch])
      order = rng.permutation(len(self.src))[: self.batches_per_epoch * self.batch_size]
      window = BUCKET_WINDOW * self.batch_size
      for start in range(0, len(order), window):
        chunk = order[start:start + window]
        order[start:start + window] = chunk[np.argsort(self._lengths[chunk], kind="stable")]
      batches = order.reshape(self.batches_per_epoch, self.batch_size)
      self._epochs[epoch] = batches[rng.permutation(self.batches_per_epoch)]
    return self._epochs[epoch]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    epoch, k = divmod(step, self.batches_per_epoch)
    rows = self._epoch(epoch)[k]
    return make_batch([self.src[i] for i in rows], [self.tgt[i] for i in rows], self.max_src_len, self.max_tgt_len)


def fits(src: list[int], tgt: list[int], max_src_len: int, max_tgt_len: int) -> bool:
  return 0 < len(src) <= max_src_len and len(tgt) + 1 <= max_tgt_len


def eval_batches(src, tgt, batch_size: int, max_src_len: int, max_tgt_len: int, max_batches: int = 0) -> list[dict]:
  """Batches of the pairs that fit, in order; the last one filled with empty rows (masked out)."""
  keep = [i for i in range(len(src)) if fits(src[i], tgt[i], max_src_len, max_tgt_len)]
  out = []
  for start in range(0, len(keep), batch_size):
    rows = keep[start:start + batch_size]
    filler = batch_size - len(rows)
    out.append(make_batch([src[i] for i in rows] + [[]] * filler, [tgt[i] for i in rows] + [[]] * filler,
                          max_src_len, max_tgt_len))
    if filler:  # an empty target still has eos in tgt_out: blank it so the row weighs nothing
      out[-1]["tgt_out"][-filler:] = PAD_ID
      out[-1]["tgt_in"][-filler:] = PAD_ID
  return out[:max_batches] if max_batches > 0 else out
