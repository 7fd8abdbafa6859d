"""Tokenizers: exact round trips, fixed special ids, the content-hash cache, save and load."""

import random

import pytest

from research import tokenizers
from research.config import TokenizerConfig
from research.tokenizers import CharTokenizer, TokenizerError, load_tokenizer, train_or_load

WORDS = ("the a of river city king queen stone water fire light night day old new great small "
         "walked saw built found carried under over near through beside quickly slowly again").split()
UNSEEN = "Zürich ß 日本語 😀 \t tab  double  spaces\n\nnew paragraph ~|{}"


def corpus(n=300, seed=0):
  rng = random.Random(seed)
  docs = []
  for _ in range(n):
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                 for _ in range(rng.randint(1, 4))]
    docs.append("\n".join(sentences))
  return docs


@pytest.fixture(scope="module")
def docs():
  return corpus()


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_round_trip_and_specials(kind, docs, tmp_path):
  tok = train_or_load(TokenizerConfig(kind=kind, vocab_size=360), docs, tmp_path)
  assert tok.vocab_size == 360
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.cls_id, tok.sep_id, tok.mask_id) == tuple(range(7))
  assert [tok.id_to_piece(i) for i in range(7)] == ["<pad>", "<unk>", "<s>", "</s>", "<cls>", "<sep>", "<mask>"]
  for text in docs[:50] + [UNSEEN, "  leading and trailing  ", "\n", "<mask> is text here"]:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids  # byte fallback: nothing is unknown
  # A line's first word is split the same at the start of a text and after a newline.
  assert tok.encode("river. The king walked\nThe king walked") == (
      tok.encode("river. The king walked") + [tok.encode("\n")[0]] + tok.encode("The king walked"))
  # "<mask>" in text is ordinary text, never the mask token.
  assert tok.mask_id not in tok.encode("<mask>")
  # Specials with no text vanish on decode.
  assert tok.decode([tok.bos_id] + tok.encode("the king") + [tok.eos_id, tok.pad_id, tok.mask_id]) == "the king"
  # A trained vocabulary compresses the text it was trained on: fewer tokens than bytes.
  text = "\n".join(docs)
  assert len(tok.encode(text)) < 0.6 * len(text.encode())
  assert tok.encode_batch(docs[:20]) == [tok.encode(d) for d in docs[:20]]


def test_cache_reuses_and_setting_change_retrains(docs, tmp_path, monkeypatch):
  calls = []
  real = tokenizers._train_sentencepiece

  def counting(cfg, texts):
    calls.append(cfg.vocab_size)
    return real(cfg, texts)

  monkeypatch.setattr(tokenizers, "_train_sentencepiece", counting)
  cfg = TokenizerConfig(kind="bpe", vocab_size=360)
  first = train_or_load(cfg, docs, tmp_path)
  second = train_or_load(cfg, list(docs), tmp_path)
  assert calls == [360]
  assert second.encode(UNSEEN) == first.encode(UNSEEN)
  assert len(list((tmp_path / "tokenizers").iterdir())) == 1  # no temporary directory left over
  train_or_load(TokenizerConfig(kind="bpe", vocab_size=370), docs, tmp_path)
  assert calls == [360, 370]
  train_or_load(cfg, docs[:-1], tmp_path)  # different texts: a different tokenizer
  assert calls == [360, 370, 360]
  assert len(list((tmp_path / "tokenizers").iterdir())) == 3


def test_vocab_too_large_is_a_clear_error(docs, tmp_path):
  with pytest.raises(TokenizerError, match=r"vocab_size=100000 .*at most \d+"):
    train_or_load(TokenizerConfig(kind="unigram", vocab_size=100000), docs[:20], tmp_path)
  with pytest.raises(TokenizerError, match=r"vocab_size=50 is too small"):
    train_or_load(TokenizerConfig(kind="bpe", vocab_size=50), docs[:20], tmp_path)


def test_char_tokenizer(tmp_path):
  tok = train_or_load(TokenizerConfig(kind="char"), ["hello world", "cab\n"], tmp_path)
  chars = sorted(set("hello worldcab\n"))
  assert tok.vocab_size == 7 + len(chars)
  assert [tok.id_to_piece(i) for i in range(7, tok.vocab_size)] == chars
  assert tok.encode("abc") == [7 + chars.index(c) for c in "abc"]
  assert tok.decode(tok.encode("hello\nworld")) == "hello\nworld"
  assert tok.encode("hZ😀") == [7 + chars.index("h"), tok.unk_id, tok.unk_id]
  assert tok.decode(tok.encode("hZo")) == "h\u2047o"
  assert tok.decode([tok.bos_id, 7, tok.eos_id, tok.pad_id]) == chars[0]
  assert tok.encode_batch(["ab", "", "zz"]) == [tok.encode("ab"), [], [tok.unk_id] * 2]


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char"])
def test_save_and_load_give_identical_encodings(kind, docs, tmp_path):
  tok = train_or_load(TokenizerConfig(kind=kind, vocab_size=360), docs, tmp_path / "cache")
  tok.save(tmp_path / "artifacts" / "tokenizer")
  loaded = load_tokenizer(tmp_path / "artifacts" / "tokenizer")
  assert loaded.kind == kind and loaded.vocab_size == tok.vocab_size
  for text in docs[:20] + [UNSEEN]:
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_char_tokenizer_ignores_sentencepiece_settings(tmp_path):
  a = train_or_load(TokenizerConfig(kind="char", vocab_size=100), ["abc"], tmp_path)
  b = train_or_load(TokenizerConfig(kind="char", vocab_size=200), ["abc"], tmp_path)
  assert isinstance(a, CharTokenizer) and a.chars == b.chars == "abc"
  assert len(list((tmp_path / "tokenizers").iterdir())) == 1


def test_load_tokenizer_missing_directory_is_clear(tmp_path):
  with pytest.raises(TokenizerError, match="no tokenizer in"):
    load_tokenizer(tmp_path / "nothing")
