"""Corpus loading, its errors, the train/validation split, the bundled corpus and LM batches."""

import json
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from research.config import DataConfig, TokenizerConfig
from research.data import text as text_module
from research.data.bundled import bundled_corpus
from research.data.lm import LMData, build_lm_data
from research.data.text import DataError, load_documents, split_documents
from research.tokenizers import train_or_load


def load(tmp_path, **kwargs):
  return load_documents(DataConfig(cache_dir=str(tmp_path / "cache"), **kwargs))


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


# ---------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match=r"nope\.txt.*does not exist"):
    load(tmp_path, path=str(tmp_path / "nope.txt"))


def test_empty_file(tmp_path):
  (tmp_path / "empty.txt").write_bytes(b"")
  with pytest.raises(DataError, match=r"empty\.txt is empty"):
    load(tmp_path, path=str(tmp_path / "empty.txt"))


@pytest.mark.parametrize("unit", ["document", "paragraph", "line"])
def test_whitespace_only_file(tmp_path, unit):
  (tmp_path / "blank.txt").write_text("  \n\n \t\n\n\n")
  with pytest.raises(DataError, match=r"blank\.txt holds no non-empty documents"):
    load(tmp_path, path=str(tmp_path / "blank.txt"), txt_unit=unit)


def test_non_utf8_file_names_file_and_offset(tmp_path):
  (tmp_path / "latin1.txt").write_bytes("héllo wörld".encode("latin-1"))
  with pytest.raises(DataError, match=r"latin1\.txt is not UTF-8.*0xe9 at offset 1$"):
    load(tmp_path, path=str(tmp_path / "latin1.txt"))


def test_non_utf8_offset_across_read_chunks(tmp_path, monkeypatch):
  monkeypatch.setattr(text_module, "_CHECK_CHUNK", 4)
  # "ab" + "é" (2 bytes) straddles the first chunk boundary; the bad byte is at offset 9.
  data = "abé€xy".encode() + b"\xff" + b"tail"
  assert data.index(b"\xff") == 9
  (tmp_path / "bad.jsonl").write_bytes(data)
  with pytest.raises(DataError, match=r"bad\.jsonl is not UTF-8.*0xff at offset 9$"):
    load(tmp_path, path=str(tmp_path / "bad.jsonl"))


def test_unknown_extension(tmp_path):
  (tmp_path / "data.csv").write_text("text\nhello\n")
  with pytest.raises(DataError, match=r"data\.csv: unknown file type '\.csv'"):
    load(tmp_path, path=str(tmp_path / "data.csv"))


def test_glob_without_match(tmp_path):
  with pytest.raises(DataError, match=r"glob .*shard-\*\.jsonl.* matches no files"):
    load(tmp_path, path=str(tmp_path / "shard-*.jsonl"))


def test_jsonl_without_text_column_names_columns(tmp_path):
  path = write_jsonl(tmp_path / "rows.jsonl", [{"title": "a", "body": "x"}, {"title": "b", "body": "y"}])
  with pytest.raises(DataError, match=r"rows\.jsonl has no column data\.text_column='text'; columns: title, body"):
    load(tmp_path, path=str(path))


def test_malformed_jsonl_is_one_line_error(tmp_path):
  (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": oops\n')
  with pytest.raises(DataError, match=r"cannot read .*broken\.jsonl as json") as info:
    load(tmp_path, path=str(tmp_path / "broken.jsonl"))
  assert "\n" not in str(info.value)


def test_hub_without_network_suggests_local_files(tmp_path, monkeypatch):
  import datasets

  def offline(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

  monkeypatch.setattr(datasets, "load_dataset", offline)
  with pytest.raises(DataError, match=r"data\.hub_name='wikitext'.*no network.*data\.path"):
    load(tmp_path, hub_name="wikitext", hub_config="wikitext-2-raw-v1")


def test_unknown_bundled_corpus_lists_known(tmp_path):
  with pytest.raises(DataError, match=r"data\.bundled='nope'.*known: enwiki"):
    load(tmp_path, bundled="nope")


# ---------------------------------------------------------------------------- loading


def test_txt_units(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("First para\nstill first.\n\nSecond para.\n\n\n\nThird.\n   \n")
  assert load(tmp_path, path=str(path)) == [path.read_text()]
  assert load(tmp_path, path=str(path), txt_unit="paragraph") == ["First para\nstill first.", "Second para.", "Third.\n   "]
  assert load(tmp_path, path=str(path), txt_unit="line") == ["First para", "still first.", "Second para.", "Third."]


def test_jsonl_parquet_comma_list_glob_and_max_docs(tmp_path):
  write_jsonl(tmp_path / "a-1.jsonl", [{"text": "one", "n": 1}, {"text": "  "}, {"text": "two"}])
  write_jsonl(tmp_path / "a-2.jsonl", [{"text": "three"}])
  pq.write_table(pa.table({"content": ["four", "", "five"], "id": [4, 0, 5]}), tmp_path / "b.parquet")
  (tmp_path / "c.txt").write_text("six\n")
  assert load(tmp_path, path=str(tmp_path / "a-*.jsonl")) == ["one", "two", "three"]
  assert load(tmp_path, path=str(tmp_path / "b.parquet"), text_column="content") == ["four", "five"]
  # A comma list keeps its order, whatever the file types; .txt always reads column "text".
  both = f"{tmp_path / 'c.txt'}, {tmp_path / 'a-2.jsonl'},{tmp_path / 'a-1.jsonl'}"
  assert load(tmp_path, path=both) == ["six\n", "three", "one", "two"]
  assert load(tmp_path, path=both, max_docs=3) == ["six\n", "three", "one"]
  (tmp_path / "d.json").write_text(json.dumps([{"text": "seven"}, {"text": "eight"}]))
  assert load(tmp_path, path=str(tmp_path / "d.json")) == ["seven", "eight"]
  # The datasets cache lives under the lineage cache, not in ~/.cache/huggingface.
  assert (tmp_path / "cache" / "datasets").is_dir()


# ---------------------------------------------------------------------------- split


def test_split_many_documents_holds_out_the_last(tmp_path):
  docs = [f"document number {i}" for i in range(30)]
  train, val = split_documents(docs, 0.1)
  assert train == docs[:27] and val == docs[27:]
  assert not set(train) & set(val)
  train, val = split_documents(docs[:10], 0.01)  # rounds to zero: still one validation document
  assert train == docs[:9] and val == [docs[9]]


def test_split_one_document_cuts_at_a_newline():
  lines = [f"line {i:03d} " + "x" * (i % 7) for i in range(400)]
  text = "\n".join(lines) + "\n"
  train, val = split_documents([text], 0.1)
  assert "".join(train + val) == text
  assert train[0].endswith("\n") and text.startswith(train[0])
  cut = len(train[0])
  target = int(len(text) * 0.9)
  assert target <= cut <= target + len(text) // 100 + 1
  # The cut is just after the first newline at or past the 90% point.
  assert cut == text.index("\n", target) + 1


def test_split_without_nearby_newline_cuts_exactly():
  text = "a" * 1000 + "\n" + "b" * 50
  train, val = split_documents([text], 0.5)
  assert train == [text[:525]] and val == [text[525:]]


def test_split_few_documents_keeps_boundaries():
  docs = ["a" * 40, "b" * 40, "c" * 20]
  train, val = split_documents(docs, 0.3)  # cut at character 70, inside "b..."
  assert train == ["a" * 40, "b" * 30] and val == ["b" * 10, "c" * 20]


def test_split_too_short_is_an_error():
  with pytest.raises(DataError, match="one side would be empty"):
    split_documents(["hello\n\n"], 0.1)  # the last 10% is only a newline


# ---------------------------------------------------------------------------- bundled


def test_bundled_enwiki_is_clean_prose(tmp_path):
  path = bundled_corpus("enwiki", tmp_path)
  assert path.parent == tmp_path / "corpora" and path.name.startswith("enwiki")
  rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
  text = "\n".join(r["text"] for r in rows)
  assert len(rows) > 80 and len(text.split()) >= 300_000
  assert {"Anarchism", "Albert Einstein", "Algorithm"} <= {r["title"] for r in rows}
  for markup in ("[[", "]]", "{{", "}}", "'''", "''", "<ref", "</", "Category:", "thumb|", "|-", "{|", "==",
                 "http://", "https://", "&nbsp;", "&amp;"):
    assert markup not in text, markup
  lines = text.splitlines()
  assert not [line for line in lines if re.match(r"\s*[|!*#:;]", line)]  # table rows, bullets
  assert not [line for line in lines if line.lower() in ("references", "external links", "see also")]
  assert sum(len(line.split()) >= 20 for line in lines) > 0.5 * len(lines)  # mostly paragraphs
  # Later calls reuse the file, and load_documents reads it by default.
  mtime = path.stat().st_mtime_ns
  docs = load_documents(DataConfig(cache_dir=str(tmp_path), max_docs=5))
  assert path.stat().st_mtime_ns == mtime
  assert docs == [r["text"] for r in rows[:5]]
  assert not list((tmp_path / "corpora").glob(".*"))  # no temporary file left behind


# ---------------------------------------------------------------------------- LM batches

TRAIN = [f"train doc {i}: " + "abcdefghij"[i % 10] * (20 + i) for i in range(40)]
VAL = [f"VAL DOC {i}: " + "KLMNOPQRST"[i % 10] * (25 + i) for i in range(12)]
T = 8


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
  tok = train_or_load(TokenizerConfig(kind="char"), TRAIN + VAL, tmp_path_factory.mktemp("tok"))
  return tok, build_lm_data(TRAIN, VAL, tok, block_size=T, seed=7)


def expected_stream(tok, docs):
  out = []
  for d in docs:
    out += tok.encode(d) + [tok.eos_id]
  return np.array(out)


def test_streams_join_documents_with_eos(lm):
  tok, data = lm
  np.testing.assert_array_equal(data.train_tokens, expected_stream(tok, TRAIN))
  np.testing.assert_array_equal(data.val_tokens, expected_stream(tok, VAL))
  assert data.n_train_tokens == len(expected_stream(tok, TRAIN)) and data.n_val_tokens == len(data.val_tokens)
  assert data.train_tokens.dtype == np.uint16


def test_batches_are_shifted_train_blocks(lm):
  tok, data = lm
  stream = expected_stream(tok, TRAIN)
  # Windows of T+1 tokens starting every T tokens: consecutive windows share one token.
  blocks = {tuple(stream[b * T:b * T + T + 1]) for b in range((len(stream) - 1) // T)}
  for step in (0, 1, 17):
    batch = data.batch(step, 6)
    assert batch["inputs"].shape == batch["targets"].shape == (6, T)
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    for x, y in zip(batch["inputs"], batch["targets"]):
      assert tuple(x) + (y[-1],) in blocks  # a whole train block, never val text
      assert "VAL" not in tok.decode(x)


def test_batches_are_resumable(lm, tmp_path):
  tok, data = lm
  fresh = build_lm_data(TRAIN, VAL, tok, block_size=T, seed=7)
  for step in (5, 0, 123, 5):  # any order, any object: the same batch for the same step
    a, b = data.batch(step, 4), fresh.batch(step, 4)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])
  other = build_lm_data(TRAIN, VAL, tok, block_size=T, seed=8)
  assert not np.array_equal(other.batch(0, 4)["inputs"], data.batch(0, 4)["inputs"])


def test_each_epoch_visits_every_block_once():
  n, B = 23, 7  # batches straddle epoch boundaries
  # Token t of the stream is t, so a row's first token names its block.
  data = LMData(np.arange(n * T + 5), np.arange(2 * (T + 1)), block_size=T, seed=3, vocab_size=n * T + 5)
  assert data.n_blocks == n
  rows = np.concatenate([data.batch(k, B)["inputs"] for k in range(-(-3 * n // B))])[:3 * n]
  np.testing.assert_array_equal(rows, rows[:, :1] + np.arange(T))  # whole blocks
  order = rows[:, 0] // T
  for e in range(3):
    assert sorted(order[e * n:(e + 1) * n]) == list(range(n))
    np.testing.assert_array_equal(order[e * n:(e + 1) * n], np.random.default_rng([3, e]).permutation(n))
  assert list(order[:n]) != list(order[n:2 * n])  # a fresh permutation each epoch


def test_eval_batches_read_the_val_stream_in_order(lm):
  tok, data = lm
  stream = expected_stream(tok, VAL)
  batches = data.eval_batches(batch_size=3, max_batches=1000)
  assert len(batches) == (len(stream) - 1) // T // 3
  flat = np.concatenate([b["inputs"].ravel() for b in batches])  # inputs tile the stream in order
  np.testing.assert_array_equal(flat, stream[:len(flat)])
  np.testing.assert_array_equal(batches[-1]["targets"][-1, -1], stream[len(flat)])
  for b in batches:
    np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
  assert len(data.eval_batches(batch_size=3, max_batches=2)) == 2
  spread = data.eval_batches(batch_size=3, max_batches=3)  # first, middle and last batch of the split
  np.testing.assert_array_equal(spread[0]["inputs"], batches[0]["inputs"])
  np.testing.assert_array_equal(spread[-1]["inputs"], batches[-1]["inputs"])
  with pytest.raises(DataError, match=rf"validation split has {len(stream)} tokens.*needs {1000 * T + 1}"):
    data.eval_batches(batch_size=1000, max_batches=1)


def test_too_little_train_text_is_an_error(lm):
  tok, _ = lm
  with pytest.raises(DataError, match=r"train split has 4 tokens.*block_size\+1=9"):
    build_lm_data(["abc"], VAL, tok, block_size=T, seed=0)


def test_unigram_entropy(lm):
  tok, data = lm
  counts = Counter(expected_stream(tok, TRAIN).tolist())
  total = sum(counts.values())
  expected = -sum(c / total * np.log(c / total) for c in counts.values())
  assert data.unigram_entropy() == pytest.approx(expected, rel=1e-9)
  assert 0 < data.unigram_entropy() < np.log(tok.vocab_size)
