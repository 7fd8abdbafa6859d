"""Tokenizers behind one interface: sentencepiece BPE and unigram, and characters.

Every kind numbers its special tokens the same way, so objectives and models can rely on
the ids: pad=0, unk=1, bos=2, eos=3, cls=4, sep=5, mask=6. `train_or_load` caches a
trained tokenizer under `<cache_dir>/tokenizers/<sha256 of texts and settings>/`, so the
same corpus and settings never train twice; `save` / `load_tokenizer` move one into a run's
`artifacts/tokenizer/` and back.

Sentencepiece is set up for exact round trips: no normalization, whitespace kept as is,
"\\n" a piece of its own, and byte fallback so any text encodes without <unk>. The one
exception: the character U+2581 ("▁"), which sentencepiece uses for spaces, decodes to a
space. Decoding drops pad, bos, eos, cls, sep and mask (they have no text); the char
tokenizer decodes unk as "\u2047", like sentencepiece.

`encode_with_offsets` also gives each token's span of characters [start, end) in the text
(Python string indices), so a span of tokens maps back to the exact original characters
(extractive QA, research/data/qa.py). A character that byte fallback spells in several byte
pieces belongs to the last of them; the others have empty spans. A sentencepiece piece's
span includes the space its "▁" stands for.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from research.config import TokenizerConfig

PAD_ID, UNK_ID, BOS_ID, EOS_ID, CLS_ID, SEP_ID, MASK_ID = range(7)
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>", "<cls>", "<sep>", "<mask>")
UNK_TEXT = "\u2047"  # what an unknown id decodes to ("⁇", as in sentencepiece)
_SETTINGS_FILE = "tokenizer.json"
_SP_MODEL_FILE = "sentencepiece.model"
_FORMAT = 1  # part of the cache key: bump when training changes so old caches are not reused
_SP_LINE_CHARS = 4096  # sentencepiece skips "sentences" longer than max_sentence_length bytes


class TokenizerError(ValueError):
  """A tokenizer that cannot be trained or loaded; the message is one line naming the key or file."""


class Tokenizer(Protocol):
  kind: str
  vocab_size: int
  pad_id: int
  unk_id: int
  bos_id: int
  eos_id: int
  cls_id: int
  sep_id: int
  mask_id: int

  def encode(self, text: str) -> list[int]: ...
  def encode_batch(self, texts: list[str]) -> list[list[int]]: ...
  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]: ...
  def decode(self, ids) -> str: ...
  def id_to_piece(self, i: int) -> str: ...
  def save(self, directory: str | Path) -> None: ...


class _Specials:
  """The fixed special ids, shared by every kind."""
  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
  cls_id, sep_id, mask_id = CLS_ID, SEP_ID, MASK_ID


# ----------------------------------------------------------------------- sentencepiece


class SentencePieceTokenizer(_Specials):
  def __init__(self, model_proto: bytes, kind: str):
    import sentencepiece as spm

    self.kind = kind
    self._model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.vocab_size()
    self._threads = os.cpu_count() or 1

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return self._sp.encode(list(texts), num_threads=self._threads)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    # Sentencepiece counts these offsets in characters (code points) of the unnormalized
    # input; with the identity normalization every piece's surface is a slice of the text.
    out = self._sp.encode(text, return_type="offset_mapping")
    return list(out["ids"]), [tuple(o) for o in out["offsets"]]

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def save(self, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _SP_MODEL_FILE).write_bytes(self._model_proto)
    _write_settings(directory, {"kind": self.kind, "vocab_size": self.vocab_size})


def _sentences(texts: list[str]):
  """Lines of the texts, long ones cut, since sentencepiece trains on one "sentence" at a time."""
  for text in texts:
    for line in text.split("\n"):
      for start in range(0, len(line), _SP_LINE_CHARS):
        yield line[start:start + _SP_LINE_CHARS]


def _train_sentencepiece(cfg: TokenizerConfig, texts: list[str]) -> SentencePieceTokenizer:
  import sentencepiece as spm

  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(texts), model_writer=model,
        model_type=cfg.kind, vocab_size=cfg.vocab_size, character_coverage=cfg.character_coverage,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        # Control symbols (not user-defined ones) so the text "<mask>" is never read as the
        # mask token; they take ids 4, 5, 6 in this order. "\n" is a user symbol: id 7.
        control_symbols=list(SPECIAL_PIECES[4:]), user_defined_symbols=["\n"],
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        # No "▁" added at the start of a text, so a word at the start of a document gets
        # the same pieces as after "\n" (training sees lines, which start without one).
        add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        max_sentence_length=4 * _SP_LINE_CHARS, num_threads=os.cpu_count() or 1, minloglevel=2)
  except RuntimeError as e:
    message = str(e)
    # We raise rather than retry with a smaller size: a silently different vocabulary would
    # change the model's size and make runs incomparable.
    if (m := re.search(r"value <= (\d+)", message)):
      raise TokenizerError(f"tokenizer.vocab_size={cfg.vocab_size} is too large for this corpus; "
                           f"sentencepiece {cfg.kind} allows at most {m.group(1)} here (or use more text)") from None
    if (m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)):
      raise TokenizerError(f"tokenizer.vocab_size={cfg.vocab_size} is too small: this corpus needs at least "
                           f"{m.group(2)} (256 bytes, the specials and its characters)") from None
    raise TokenizerError(f"sentencepiece training failed: {message.splitlines()[0]}") from None
  return SentencePieceTokenizer(model.getvalue(), cfg.kind)


# -------------------------------------------------------------------------- characters


class CharTokenizer(_Specials):
  """One id per character: the specials, then the training text's characters in sorted order."""

  kind = "char"

  def __init__(self, chars: str):
    self.chars = "".join(sorted(set(chars)))
    self.vocab_size = len(SPECIAL_PIECES) + len(self.chars)
    # Code points in sorted order, for a vectorized lookup (searchsorted) in encode.
    self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
    self._pieces = list(SPECIAL_PIECES) + list(self.chars)

  def encode(self, text: str) -> list[int]:
    if not text:
      return []
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    pos = np.minimum(np.searchsorted(self._codes, codes), max(len(self._codes) - 1, 0))
    known = self._codes[pos] == codes if len(self._codes) else np.zeros(len(codes), bool)
    return np.where(known, pos + len(SPECIAL_PIECES), UNK_ID).tolist()

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    return self.encode(text), [(i, i + 1) for i in range(len(text))]

  def decode(self, ids) -> str:
    n = len(SPECIAL_PIECES)
    return "".join(self.chars[i - n] if i >= n else UNK_TEXT if i == UNK_ID else ""
                   for i in (int(i) for i in ids))

  def id_to_piece(self, i: int) -> str:
    return self._pieces[int(i)]

  def save(self, directory: str | Path) -> None:
    _write_settings(Path(directory), {"kind": "char", "vocab_size": self.vocab_size, "chars": self.chars})


# ------------------------------------------------------------------------ save and load


def _write_settings(directory: Path, settings: dict) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  text = json.dumps({"format": _FORMAT, **settings}, ensure_ascii=False, indent=1)
  (directory / _SETTINGS_FILE).write_text(text + "\n", encoding="utf-8")


def load_tokenizer(directory: str | Path) -> Tokenizer:
  """The tokenizer that `save(directory)` wrote."""
  directory = Path(directory)
  try:
    settings = json.loads((directory / _SETTINGS_FILE).read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise TokenizerError(f"no tokenizer in {directory}: {_SETTINGS_FILE} is missing") from None
  kind = settings.get("kind")
  if kind == "char":
    return CharTokenizer(settings["chars"])
  if kind in ("bpe", "unigram"):
    return SentencePieceTokenizer((directory / _SP_MODEL_FILE).read_bytes(), kind)
  raise TokenizerError(f"{directory / _SETTINGS_FILE} names unknown tokenizer kind {kind!r}")


# ----------------------------------------------------------------------- train or load


def _training_texts(cfg: TokenizerConfig, texts: list[str]) -> list[str]:
  """The texts a tokenizer learns from: for sentencepiece the first max_train_chars characters."""
  if cfg.kind == "char":
    return texts  # every character of the corpus must be in the vocabulary
  kept, budget = [], cfg.max_train_chars
  for text in texts:
    if budget <= 0:
      break
    kept.append(text[:budget])
    budget -= len(kept[-1])
  return kept


def cache_key(cfg: TokenizerConfig, texts: list[str]) -> str:
  """sha256 of the tokenizer settings and the texts it is trained on."""
  settings = {"format": _FORMAT, "kind": cfg.kind}
  if cfg.kind != "char":  # the char tokenizer ignores these; they must not split its cache
    settings.update(vocab_size=cfg.vocab_size, character_coverage=cfg.character_coverage,
                    max_train_chars=cfg.max_train_chars)
  h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for text in _training_texts(cfg, texts):
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "little"))  # length prefix: ["ab", "c"] != ["a", "bc"]
    h.update(data)
  return h.hexdigest()


def train(cfg: TokenizerConfig, texts: list[str]) -> Tokenizer:
  """A new tokenizer of kind cfg.kind learned from `texts` (no cache)."""
  texts = _training_texts(cfg, texts)
  if not any(t.strip() for t in texts):
    raise TokenizerError("cannot train a tokenizer on empty text")
  if cfg.kind == "char":
    return CharTokenizer("".join(set().union(*map(set, texts))))
  if cfg.kind in ("bpe", "unigram"):
    return _train_sentencepiece(cfg, texts)
  raise TokenizerError(f"tokenizer.kind must be 'bpe', 'unigram' or 'char', got {cfg.kind!r}")


def train_or_load(cfg: TokenizerConfig, texts: list[str], cache_dir: str | Path) -> Tokenizer:
  """The tokenizer for these texts and settings, trained once and then loaded from the cache."""
  root = Path(cache_dir) / "tokenizers"
  final = root / cache_key(cfg, texts)
  if (final / _SETTINGS_FILE).is_file():
    return load_tokenizer(final)
  tokenizer = train(cfg, texts)
  root.mkdir(parents=True, exist_ok=True)
  # Written to a temporary directory and renamed, so a crash never leaves half a tokenizer
  # where the next run would load it.
  tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name[:16]}."))
  try:
    tmp.chmod(0o755)  # mkdtemp makes it private
    tokenizer.save(tmp)
    try:
      os.rename(tmp, final)
    except OSError:  # another process finished the same tokenizer first; theirs is identical
      if not (final / _SETTINGS_FILE).is_file():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return tokenizer
