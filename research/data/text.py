"""Loading a corpus as a list of document strings, and splitting it into train and validation.

`load_documents(cfg)` reads `cfg.path` (local files), else `cfg.hub_name` (a `datasets` hub
dataset), else the bundled corpus. Every problem a user can cause (a missing or empty
file, bytes that are not UTF-8, a missing column, no network) is a `DataError` with a
one-line message naming the file or key, never a traceback from deep inside `datasets`.
"""

from __future__ import annotations

import codecs
import glob
import os
from pathlib import Path

from research.config import DataConfig
from research.data.bundled import bundled_corpus
from research.data.errors import DataError  # noqa: F401 - re-exported: callers catch it from here

_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_CHECK_CHUNK = 1 << 20  # bytes read at a time when checking that a file is UTF-8


def cache_dir(cfg: DataConfig) -> Path:
  """The lineage cache: extracted corpora, tokenizers and the `datasets` cache live here."""
  return Path(cfg.cache_dir or "~/.cache/lineage").expanduser()


def _datasets_cache(cfg: DataConfig) -> str:
  return str(cache_dir(cfg) / "datasets")


# ------------------------------------------------------------------------------ files


def resolve_paths(spec: str) -> list[Path]:
  """The files named by a comma list of paths and/or globs, in the order given."""
  files = []
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    part = os.path.expanduser(part)
    if glob.has_magic(part):
      matches = sorted(glob.glob(part, recursive=True))
      if not matches:
        raise DataError(f"data.path glob {part!r} matches no files")
      files += [Path(m) for m in matches if not os.path.isdir(m)]
    elif os.path.isdir(part):
      raise DataError(f"data.path {part!r} is a directory; name files or a glob such as {part}/*.txt")
    elif not os.path.exists(part):
      raise DataError(f"data.path file {part!r} does not exist")
    else:
      files.append(Path(part))
  if not files:
    raise DataError(f"data.path={spec!r} names no files")
  return files


def check_utf8(path: Path) -> None:
  """Raises DataError at the first byte that is not UTF-8; `datasets` would fail obscurely."""
  decoder = codecs.getincrementaldecoder("utf-8")()
  offset = 0
  with open(path, "rb") as f:
    while True:
      chunk = f.read(_CHECK_CHUNK)
      try:
        decoder.decode(chunk, final=not chunk)
      except UnicodeDecodeError as e:
        # e.object is the tail the decoder held back from the previous chunk, then this chunk.
        bad = offset - (len(e.object) - len(chunk)) + e.start
        raise DataError(f"{path} is not UTF-8 text: invalid byte 0x{e.object[e.start]:02x} at offset {bad}") from None
      if not chunk:
        return
      offset += len(chunk)


def _check_file(path: Path) -> str:
  """Checks one data file and returns the `datasets` builder that reads it."""
  builder = _BUILDERS.get(path.suffix.lower())
  if builder is None:
    raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(_BUILDERS)}")
  if path.stat().st_size == 0:
    raise DataError(f"{path} is empty")
  if builder != "parquet":
    check_utf8(path)
  return builder


def _load(builder: str, file: Path, cfg: DataConfig):
  import datasets

  kwargs = {"sample_by": cfg.txt_unit} if builder == "text" else {}
  try:
    return datasets.load_dataset(builder, data_files=[str(file)], split="train",
                                 cache_dir=_datasets_cache(cfg), **kwargs)
  except Exception as e:  # datasets wraps parser errors in several types; show one line
    cause = e.__cause__ or e
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    raise DataError(f"cannot read {file} as {builder}: {first}") from None


def _texts(ds, column: str, what: str, max_docs: int, paragraphs: bool = False) -> list[str]:
  """The non-empty strings of the text column, at most max_docs of them (0 = all)."""
  if column not in ds.column_names:
    raise DataError(f"{what} has no column data.text_column={column!r}; columns: {', '.join(ds.column_names)}")
  docs = []
  for value in ds[column]:
    if value is None:
      continue
    if not isinstance(value, str):
      raise DataError(f"{what} column {column!r} holds {type(value).__name__}, not text")
    if paragraphs:  # "a\n\n\nb" splits into "a", "\nb": the newlines were separators
      value = value.strip("\n")
    if value.strip():
      docs.append(value)
      if len(docs) == max_docs:
        break
  return docs


def _local_documents(cfg: DataConfig) -> list[str]:
  files = resolve_paths(cfg.path)
  builders = [_check_file(f) for f in files]  # every file is checked before any is loaded
  docs = []
  # One file at a time: shards whose other columns differ cannot be loaded as one table,
  # and an error then names the very file.
  for file, builder in zip(files, builders):
    column = "text" if builder == "text" else cfg.text_column  # the text builder's only column
    wanted = cfg.max_docs - len(docs) if cfg.max_docs > 0 else 0
    file_docs = _texts(_load(builder, file, cfg), column, str(file), wanted,
                       paragraphs=builder == "text" and cfg.txt_unit == "paragraph")
    if not file_docs:
      raise DataError(f"{file} holds no non-empty documents")
    docs += file_docs
    if 0 < cfg.max_docs <= len(docs):
      break
  return docs


# ------------------------------------------------------------------------ hub, bundled


def looks_offline(e: BaseException) -> bool:
  text = f"{type(e).__name__} {e}".lower()
  return any(word in text for word in (
      "connection", "offline", "resolve", "network", "timed out", "timeout", "unreachable",
      "max retries", "couldn't reach", "name or service"))


def hub_split(cfg: DataConfig, split: str):
  """(split `split` of the hub dataset `cfg` names, how to name it in a message); no network is a DataError."""
  import datasets

  what = f"data.hub_name={cfg.hub_name!r}" + (f" (config {cfg.hub_config!r})" if cfg.hub_config else "")
  try:
    ds = datasets.load_dataset(cfg.hub_name, cfg.hub_config or None, split=split,
                               cache_dir=_datasets_cache(cfg))
  except Exception as e:
    chain, cause = [], e
    while cause is not None and len(chain) < 10:
      chain.append(cause)
      cause = cause.__cause__ or cause.__context__
    if any(looks_offline(c) for c in chain):
      raise DataError(f"cannot download {what}: no network? Put the text in local files and set data.path") from None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(f"cannot load {what}: {first}") from None
  if isinstance(ds, datasets.DatasetDict):  # only when split is None; keep the message clear
    raise DataError(f"{what}: set data.hub_split to one of {', '.join(ds)}")
  return ds, what


def _hub_documents(cfg: DataConfig) -> list[str]:
  ds, what = hub_split(cfg, cfg.hub_split)
  return _texts(ds, cfg.text_column, what, cfg.max_docs)


def _bundled_documents(cfg: DataConfig) -> list[str]:
  path = bundled_corpus(cfg.bundled, cache_dir(cfg))
  return _texts(_load("json", path, cfg), "text", str(path), cfg.max_docs)


def load_documents(cfg: DataConfig) -> list[str]:
  """The corpus as non-empty document strings, from the first source `cfg` names."""
  if cfg.path:
    docs = _local_documents(cfg)
  elif cfg.hub_name:
    docs = _hub_documents(cfg)
  else:
    docs = _bundled_documents(cfg)
  if not docs:
    raise DataError("the corpus holds no non-empty documents")
  return docs[:cfg.max_docs] if cfg.max_docs > 0 else docs


# ----------------------------------------------------------------------------- split


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
  """Deterministic train/validation split with no document in both.

  With 10 or more documents the last `val_fraction` of them (in order) are validation.
  With fewer (one Shakespeare file, say) the concatenated text is cut at character
  (1 - val_fraction) * length, moved forward to just after a newline if one lies within 1%
  of the length, as nanoGPT does; the document holding the cut is split there.
  """
  if not 0.0 < val_fraction < 1.0:
    raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
  docs = [d for d in docs if d.strip()]
  if len(docs) >= 10:
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    return docs[:-n_val], docs[-n_val:]
  total = sum(len(d) for d in docs)
  cut = int(total * (1.0 - val_fraction))
  train, val, start = [], [], 0
  for d in docs:
    end = start + len(d)
    if end <= cut:
      train.append(d)
    elif start >= cut:
      val.append(d)
    else:
      local = cut - start
      newline = d.find("\n", local, local + max(1, total // 100))
      if newline >= 0:
        local = newline + 1
      train.append(d[:local])
      val.append(d[local:])
    start = end
  train = [d for d in train if d.strip()]
  val = [d for d in val if d.strip()]
  if not train or not val:
    raise DataError(f"cannot split {total} characters with data.val_fraction={val_fraction}: "
                    "one side would be empty; use more text")
  return train, val
