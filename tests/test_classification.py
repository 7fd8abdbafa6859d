"""Classification: data in each format and its one-line errors, the bundled polarity set, pair
encoding, F1, and fine-tuning from a tiny mlm_nsp run (encoder loaded, classifier fresh)."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from research import config as config_lib
from research.config import Config, ConfigError, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.data import classification as data
from research.data.errors import DataError
from research.evaluate.classification import classification_metrics, f1_score
from research.models import bert
from research.objectives import classification, mlm_nsp
from research.run import load_run
from research.tokenizers import CLS_ID, SEP_ID
from research.train import loop
from research.train.finetune import init_from_run

ROWS = [("a fine film", "pos"), ("dull, and long", "neg"), ("so \"good\"", "pos")]


def load(tmp_path, name, text, columns=data.Columns(), **cfg):
  (tmp_path / name).write_text(text, encoding="utf-8")
  return data.load_rows(DataConfig(path=str(tmp_path / name), **cfg), columns)[0]


# ------------------------------------------------------------------------------ formats


def test_tsv_csv_and_jsonl_give_the_same_rows(tmp_path):
  tsv = "label\ttext\n" + "".join(f"{l}\t{t}\n" for t, l in ROWS)
  csv = "text,label\n" + "".join(f'"{t.replace(chr(34), 2 * chr(34))}",{l}\n' for t, l in ROWS)
  jsonl = "".join(json.dumps({"text": t, "label": l, "extra": 1}) + "\n" for t, l in ROWS)
  for name, text in (("r.tsv", tsv), ("r.csv", csv), ("r.jsonl", jsonl)):
    rows = load(tmp_path, name, text)
    assert (rows.texts, rows.labels, rows.pairs) == ([t for t, _ in ROWS], [l for _, l in ROWS], None), name
  rows = load(tmp_path, "r.tsv", tsv)
  assert rows.where == [f"{tmp_path / 'r.tsv'} line {i}" for i in (2, 3, 4)]


def test_pairs_and_integer_labels(tmp_path):
  text = "sentence1\tsentence2\tlabel\nA cat.\tA dog.\t1\nRain.\tSnow fell.\t0\n"
  rows = load(tmp_path, "p.tsv", text, data.Columns("sentence1", "sentence2", "label"))
  assert rows.texts == ["A cat.", "Rain."] and rows.pairs == ["A dog.", "Snow fell."]
  names, ids, _ = data.label_ids(rows)
  assert names == ["0", "1"] and ids.tolist() == [1, 0]  # integer labels are their own ids


def test_string_labels_are_sorted_and_eval_labels_must_be_known(tmp_path):
  train = load(tmp_path, "t.jsonl", "".join(json.dumps({"text": "x", "label": l}) + "\n" for l in ("pos", "neg", "pos")))
  evals = load(tmp_path, "e.jsonl", '{"text": "y", "label": "neg"}\n{"text": "z", "label": "meh"}\n')
  with pytest.raises(DataError, match=r"e\.jsonl line 2: label 'meh' does not occur in the training rows \(neg, pos\)$"):
    data.label_ids(train, evals)
  names, ids, eval_ids = data.label_ids(train, evals.take([0]))
  assert names == ["neg", "pos"] and ids.tolist() == [1, 0, 1] and eval_ids.tolist() == [0]


@pytest.mark.parametrize("name, text, message", [
    ("a.tsv", "text\tlabel\nok\tpos\nno label\t\n", r"a\.tsv line 3: column 'label' is empty"),
    ("b.tsv", "text\tlabel\nok\tpos\ntab\tin\ttext\n", r"b\.tsv line 3: 3 fields, but the header has 2 \(a tab inside a text\?\)"),
    ("c.csv", "sentence,label\nok,pos\n", r"c\.csv has no column objective\.text_column='text'; columns: sentence, label"),
    ("d.jsonl", '{"text": "ok", "label": 1}\n{"text": "cut\n', r"d\.jsonl line 2: not JSON: Unterminated string"),
    ("e.jsonl", '{"text": "ok", "label": 1}\n{"text": "no label"}\n', r"e\.jsonl line 2 has no column 'label'; it has: text"),
    ("f.jsonl", '{"text": 3, "label": 1}\n', r"f\.jsonl line 1: column 'text' holds int, not text"),
    ("g.jsonl", '[1, 2]\n', r"g\.jsonl line 1: a JSON list, not an object of columns"),
    ("h.txt", "text\n", r"h\.txt: unknown file type '\.txt' for classification; use one of \.tsv, \.csv, \.jsonl"),
    ("i.tsv", "", r"i\.tsv is empty"),
    ("j.csv", "text,label\n", r"j\.csv holds no rows"),
])
def test_bad_input_is_one_line_naming_file_line_and_column(tmp_path, name, text, message):
  with pytest.raises(DataError, match=message) as info:
    load(tmp_path, name, text)
  assert "\n" not in str(info.value)


def test_hub_split_with_class_label_names(monkeypatch):
  import datasets

  def fake(name, config=None, split=None, cache_dir=None):
    assert (name, config) == ("glue", "sst2")
    labels = [0, 1, 1] if split == "train" else [1, -1]
    return datasets.Dataset.from_dict(
        {"sentence": [f"s{i}" for i in range(len(labels))], "label": labels, "idx": list(range(len(labels)))},
        features=datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                                    "label": datasets.ClassLabel(names=["negative", "positive"])
                                    if split == "train" else datasets.Value("int64")}))

  monkeypatch.setattr(datasets, "load_dataset", fake)
  cfg = DataConfig(hub_name="glue", hub_config="sst2")
  train, evals, names = data.load_rows(cfg, data.Columns("sentence"))
  assert (train.texts, train.labels, names, evals) == (["s0", "s1", "s2"], [0, 1, 1], ["negative", "positive"], None)
  assert data.label_ids(train, names=names)[0] == ["negative", "positive"]
  with pytest.raises(DataError, match=r"split 'test' row 1: label -1 \(withheld\)"):
    data.load_rows(cfg, data.Columns("sentence"), eval_split="test")
  with pytest.raises(DataError, match=r"glue.*has no column objective\.pair_column='sentence2'; columns: sentence, label, idx"):
    data.load_rows(cfg, data.Columns("sentence", "sentence2"))


def test_hub_without_network_is_one_line(monkeypatch):
  import datasets

  def offline(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)")

  monkeypatch.setattr(datasets, "load_dataset", offline)
  with pytest.raises(DataError, match=r"data\.hub_name='glue' \(config 'sst2'\): no network\? .*data\.path$"):
    data.load_rows(DataConfig(hub_name="glue", hub_config="sst2"), data.Columns("sentence"))


# ------------------------------------------------------------------------------ bundled set


def test_bundled_polarity_counts_labels_and_split():
  rows, evals, _ = data.load_rows(DataConfig(bundled="polarity"), data.Columns())
  assert len(rows) == 200 and evals is None
  assert rows.labels == ["neg"] * 100 + ["pos"] * 100  # the file's first 100 lines are negative
  assert rows.texts[0] == "simplistic , silly and tedious ."
  assert rows.texts[100].startswith("the rock is destined to be the 21st century's new")
  assert any("ladrón de orquídeas" in t for t in rows.texts)  # Windows-1252 bytes decoded
  names, ids, _ = data.label_ids(rows)
  assert names == ["neg", "pos"]
  train, held = data.stratified_holdout(ids, 0.25, seed=0)
  assert len(held) == 50 and np.bincount(ids[held]).tolist() == [25, 25]
  assert not set(train) & set(held) and len(train) + len(held) == 200
  assert np.array_equal(held, data.stratified_holdout(ids, 0.25, seed=0)[1])
  assert not np.array_equal(held, data.stratified_holdout(ids, 0.25, seed=1)[1])
  with pytest.raises(DataError, match=r"data\.bundled='enwiki' is not a bundled classification set; known: polarity"):
    data.load_rows(DataConfig(), data.Columns())


# ------------------------------------------------------------------------------ encoding, metrics


def test_pair_encoding_segments_and_longest_first_truncation():
  a, b = [[10, 11, 12], [10, 11, 12, 13, 14, 15]], [[20, 21], [20, 21, 22]]
  enc = data.encode(a, b, seq_len=10)
  assert enc["input_ids"][0].tolist() == [CLS_ID, 10, 11, 12, SEP_ID, 20, 21, SEP_ID, 0, 0]
  assert enc["segment_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
  # 6 + 3 tokens into 10 - 3 = 7: the longer side loses its end until it is no longer longer.
  assert enc["input_ids"][1].tolist() == [CLS_ID, 10, 11, 12, 13, SEP_ID, 20, 21, 22, SEP_ID]
  assert enc["segment_ids"][1].tolist() == [0] * 6 + [1] * 4
  assert data.truncate_pair(4, 4, 6) == (3, 3) and data.truncate_pair(1, 9, 6) == (1, 5)
  single = data.encode([[10, 11, 12, 13]], None, seq_len=5)
  assert single["input_ids"][0].tolist() == [CLS_ID, 10, 11, 12, SEP_ID] and not single["segment_ids"].any()
  assert data.example_lengths(a, b).tolist() == [8, 12]


def test_f1_against_a_hand_count_and_sklearn():
  labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
  preds = np.array([1, 0, 1, 1, 0, 0, 1, 1])  # TP 3, FP 2, FN 1: P 3/5, R 3/4, F1 6/9
  assert f1_score(preds, labels) == pytest.approx(2 / 3)
  assert f1_score(np.zeros(4), np.array([0, 1, 0, 1])) == 0.0
  logits = np.stack([-preds, preds], -1).astype(float)
  m = classification_metrics(logits, labels)
  assert m["accuracy"] == pytest.approx(5 / 8) and m["f1"] == pytest.approx(2 / 3)
  sklearn = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(0)
  y, p = rng.integers(0, 2, 101), rng.integers(0, 2, 101)
  assert f1_score(p, y) == pytest.approx(sklearn.f1_score(y, p))
  assert "f1" not in classification_metrics(rng.normal(size=(5, 3)), np.array([0, 1, 2, 0, 1]))


# ------------------------------------------------------------------------------ fine-tuning

TOPICS = [("cat", "dog", "owl", "fox"), ("ship", "boat", "sail", "sea")]


def sentence(rng, topic):
  w = TOPICS[topic]
  return f"The {rng.choice(w)} saw the {rng.choice(w)} near the {rng.choice(w)}."


def tiny_files(tmp_path):
  rng = np.random.default_rng(0)
  docs = [json.dumps({"text": " ".join(sentence(rng, d % 2) for _ in range(10))}) for d in range(12)]
  (tmp_path / "docs.jsonl").write_text("\n".join(docs) + "\n")
  rows = ["sentence1\tsentence2\tlabel"]
  for i in range(48):  # label: both sentences about the same topic
    t1, t2 = i % 2, (i // 2) % 2
    rows.append(f"{sentence(rng, t1)}\t{sentence(rng, t2)}\t{'same' if t1 == t2 else 'different'}")
  (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")


def small(**train) -> TrainConfig:
  return TrainConfig(**{"batch_size": 8, "log_every": 5, "eval_every": 10, "eval_batches": 2,
                        "checkpoint_every": 10, "progress": False, **train})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A tiny mlm_nsp run: BERT 2 layers, width 32, 10 steps."""
  tmp = tmp_path_factory.mktemp("cls")
  tiny_files(tmp)
  cfg = Config(experiment="bert_tiny", objective=mlm_nsp.Config(seq_len=32, max_predictions=5),
               model=bert.Config(max_len=48, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
               data=DataConfig(path=str(tmp / "docs.jsonl"), cache_dir=str(tmp / "cache"), val_fraction=0.25),
               tokenizer=TokenizerConfig(kind="bpe", vocab_size=300), optim=OptimConfig(lr=3e-3, warmup_steps=2),
               train=small(steps=10))
  config_lib.validate(cfg)
  loop.train(cfg, run_dir=tmp / "pre", log=lambda *_: None)
  return tmp


def finetune_config(tmp, *overrides) -> Config:
  cfg = Config(experiment="cls_tiny", objective=classification.Config(text_column="sentence1", pair_column="sentence2"),
               model=bert.Config(max_len=16, n_layer=1, n_head=1, n_embd=8),  # replaced by the source's
               data=DataConfig(path=str(tmp / "pairs.tsv"), cache_dir=str(tmp / "cache")),
               optim=OptimConfig(lr=1e-3, warmup_steps=2), train=small(steps=10))
  return config_lib.apply_overrides(cfg, [f"train.init_from={tmp / 'pre'}", "train.init_skip=classifier/*", *overrides])


def flat(state) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): np.asarray(v.get_value())
          for p, v in leaves}


def test_fine_tuning_loads_the_encoder_and_keeps_the_classifier_fresh(source):
  cfg = finetune_config(source)
  assert (cfg.model.n_embd, cfg.model.max_len) == (32, 48)  # the source's model settings
  task = classification.Task(cfg, log=lambda *_: None)
  assert cfg.objective.num_labels == 2 and task.label_names == ["different", "same"]
  T = cfg.objective.seq_len  # derived: the longest pair, rounded up to a multiple of 8
  assert T % 8 == 0 and T <= cfg.model.max_len and task.facts["truncated"] == 0
  assert task.tokenizer.vocab_size == cfg.model.vocab_size == 300  # the source's tokenizer
  assert len(task.train_split) == 36 and len(task.eval_split) == 12  # 25% of each label held out
  batch = task.train_batch(7)
  assert batch["input_ids"].shape == (8, T) and batch["segment_ids"].shape == (8, T)
  assert np.array_equal(batch["input_ids"], task.train_batch(7)["input_ids"])  # a function of the step

  fresh = flat(nnx.state(classification.Task.build_model(cfg, nnx.Rngs(params=0)), nnx.Param))
  messages = []
  loaded = flat(init_from_run(cfg.train.init_from, nnx.state(classification.Task.build_model(cfg, nnx.Rngs(params=0)),
                                                             nnx.Param), cfg.train.init_skip, messages.append))
  pretrained = flat(nnx.state(load_run(source / "pre").model, nnx.Param))
  assert {k for k in loaded if not k.startswith("encoder/")} == {"classifier/kernel", "classifier/bias"}
  for name, value in loaded.items():
    if name.startswith("encoder/"):
      np.testing.assert_array_equal(value, pretrained[name], err_msg=name)
    else:
      np.testing.assert_array_equal(value, fresh[name], err_msg=name)
  assert not np.array_equal(loaded["encoder/layers/0/attn/qkv/kernel"], fresh["encoder/layers/0/attn/qkv/kernel"])
  assert "2 fresh (classifier/bias, classifier/kernel)" in messages[0] and "not used" in messages[0]


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_fine_tuning_run_logs_accuracy_and_f1(source):
  cfg = finetune_config(source)
  result = loop.train(cfg, run_dir=source / "ft", log=lambda *_: None)
  rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if "eval/accuracy" in r]
  assert [r["step"] for r in evals] == [10] and {"eval/loss", "eval/f1"} <= set(evals[0])
  assert np.isfinite([r["train/loss"] for r in rows if "train/loss" in r]).all()
  facts = json.loads((result.run_dir / "run.json").read_text())
  assert facts["examples"] == {"train": {"different": 18, "same": 18}, "eval": {"different": 6, "same": 6}}
  assert facts["baselines"] == {"accuracy": 0.5}
  assert json.loads((result.run_dir / "artifacts" / "labels.json").read_text()) == ["different", "same"]
  saved = config_lib.load(result.run_dir / "config.json")  # derived settings saved: the model rebuilds from it
  assert (saved.objective.num_labels, saved.objective.seq_len > 0, saved.model.vocab_size) == (2, True, 300)
  assert load_run(result.run_dir).model.classifier.kernel.shape == (32, 2)


def test_settings_that_conflict_with_the_data_are_named(source):
  with pytest.raises(ConfigError, match=r"objective\.num_labels=3 conflicts with 2 the labels in the data"):
    classification.Task(finetune_config(source, "objective.num_labels=3"), log=lambda *_: None)
  with pytest.raises(ConfigError, match=r"objective\.seq_len=64 exceeds model\.max_len=48"):
    classification.Task(finetune_config(source, "objective.seq_len=64"), log=lambda *_: None)
  with pytest.raises(ConfigError, match=r"data\.text_column='sentence' is not read by classification"):
    classification.Task(finetune_config(source, "data.text_column=sentence"), log=lambda *_: None)


def test_bert_polarity_from_random_init_trains_its_own_tokenizer(tmp_path):
  cfg = config_lib.load_experiment("experiments/bert_polarity", [f"data.cache_dir={tmp_path}"])
  assert not cfg.train.init_from and cfg.train.init_skip == "classifier/*"
  task = classification.Task(cfg, log=lambda *_: None)
  assert (cfg.model.vocab_size, cfg.objective.num_labels) == (2000, 2) and cfg.objective.seq_len <= cfg.model.max_len
  assert task.facts["examples"] == {"train": {"neg": 75, "pos": 75}, "eval": {"neg": 25, "pos": 25}}
