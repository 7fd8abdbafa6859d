"""Extractive QA: tokenizer offsets, windows and the way back to characters, the official SQuAD
metrics by hand, the best-span search, the bundled cloze set, bad input, the span head's place
beside the pretrained encoder, and a tiny `lineage train experiments/bert_qa`, then `lineage eval`."""

import json

import numpy as np
import pytest
from flax import nnx

from launch.cli import main
from research import config as config_lib
from research.config import DataConfig, TokenizerConfig
from research.data import qa
from research.data.errors import DataError
from research.evaluate.squad import exact_match_score, f1_score, normalize_answer, squad_metrics
from research.models import bert
from research.objectives import extractive_qa
from research.tokenizers import CLS_ID, SEP_ID, CharTokenizer, train
from research.train.finetune import select_parameters

CONTEXT = ("Kurt Gödel's  incompleteness theorems (1931) shook Vienna's café—society; naïve readers, «puzzled», "
           "asked: why? São Paulo's 3,000 residents saw Ærø and 東京 in 2024.\nA new line follows, with the end.")
# Whitespace-delimited, so they start and end at token boundaries of either tokenizer.
ANSWERS = ["Kurt", "Gödel's", "incompleteness", "(1931)", "café—society;", "naïve readers,", "«puzzled»,",
           "São Paulo's 3,000", "Ærø", "東京", "2024.", "A", "follows,", "end."]


@pytest.fixture(scope="module")
def bpe():
  """A small BPE vocabulary that has no piece for 東, 京, Æ or ø: byte fallback spells them."""
  filler = ["The theorems of logic shook the readers of Vienna and Paris, in the year 1931.",
            "A new line follows the old line; residents asked why, and the society answered."] * 40
  return train(TokenizerConfig(kind="bpe", vocab_size=320, character_coverage=0.98), filler)


def questions(answers=ANSWERS, context=CONTEXT) -> list[qa.Question]:
  starts = [context.index(a if a != "A" else "\nA") + (a == "A") for a in answers]
  return [qa.Question(str(i), "what is it?", context, [a], [s]) for i, (a, s) in enumerate(zip(answers, starts))]


# ------------------------------------------------------------------------------ offsets, windows


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_offsets_cover_the_text_in_order(kind, bpe):
  tok = bpe if kind == "bpe" else CharTokenizer(CONTEXT)
  ids, offsets = tok.encode_with_offsets(CONTEXT)
  assert ids == tok.encode(CONTEXT) and len(offsets) == len(ids)
  assert offsets[0][0] == 0 and offsets[-1][1] == len(CONTEXT)
  assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:])) and all(s <= e for s, e in offsets)
  if kind == "bpe":  # 東 is three byte pieces: the first two have no characters, the last has 東
    at = CONTEXT.index("東")
    pieces = [(tok.id_to_piece(i), o) for i, o in zip(ids, offsets) if o[0] == at]
    assert [p for p, _ in pieces] == ["<0xE6>", "<0x9D>", "<0xB1>"]
    assert [o for _, o in pieces] == [(at, at), (at, at), (at, at + 1)]


def test_windows_follow_run_squad():
  assert qa.windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
  assert qa.windows(9, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 3)]
  assert qa.windows(3, 4, 2) == [(0, 3)]
  assert qa.windows(8, 4, 9) == [(0, 4), (4, 4)]  # a stride longer than a window: no token is skipped


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_every_answer_that_fits_a_window_is_at_its_tokens_and_maps_back_to_its_characters(kind, bpe):
  tok = bpe if kind == "bpe" else CharTokenizer(CONTEXT + "what is it?")
  seq_len, stride = (48, 6) if kind == "bpe" else (40, 9)
  qs = questions() + questions([CONTEXT[:CONTEXT.index(" café")]])  # the last is longer than any window
  windows, counts = qa.encode(qs, tok, seq_len, stride, max_query_len=64)
  ids, offsets = tok.encode_with_offsets(CONTEXT)
  spans = qa.trimmed_spans(CONTEXT, offsets)
  query = tok.encode("what is it?")
  room, offset = seq_len - len(query) - 3, len(query) + 2
  assert counts == {"questions": len(qs), "windows": len(windows), "answer_in_no_window": 1}
  for i, q in enumerate(qs):
    first_token, last_token = qa.answer_tokens(spans, q.starts[0], q.starts[0] + len(q.answers[0]))
    assert CONTEXT[spans[first_token][0]:spans[last_token][1]] == q.answers[0]
    rows = np.flatnonzero(windows.question == i)
    spans_of_windows = qa.windows(len(ids), room, stride)
    assert len(rows) == len(spans_of_windows) > 3
    found = 0
    for row, (first, length) in zip(rows, spans_of_windows):
      assert windows.input_ids[row, :offset + length + 1].tolist() == [CLS_ID, *query, SEP_ID, *ids[first:first + length], SEP_ID]
      assert windows.segment_ids[row].tolist() == [0] * offset + [1] * (length + 1) + [0] * (seq_len - offset - length - 1)
      fits = first <= first_token and last_token < first + length
      start, end = windows.start[row], windows.end[row]
      if not fits:
        assert (start, end) == (0, 0)  # [CLS]: not in this window
        continue
      found += 1
      assert (start, end) == (first_token - first + offset, last_token - first + offset)
      assert qa.answer_text(windows, row, start, end, CONTEXT) == q.answers[0]  # the exact characters
      assert windows.candidate[row, start] and windows.candidate[row, end]
    assert found > 0 or i == len(qs) - 1
  assert not windows.candidate[:, :offset].any()  # [CLS] and the question are never candidates


def test_question_tokens_are_cut_to_max_query_len():
  tok = CharTokenizer(CONTEXT + "what is it?")
  windows, _ = qa.encode(questions()[:1], tok, 32, 8, max_query_len=4)
  assert windows.input_ids[0, :6].tolist() == [CLS_ID, *tok.encode("what"), SEP_ID]


# ------------------------------------------------------------------------------ metrics


def test_squad_metrics_give_the_official_scripts_values():
  assert normalize_answer("The  Quick, brown-fox!") == "quick brownfox"  # hyphens go, words join
  assert normalize_answer("an anarchy of the U.S.") == "anarchy of us"  # "an" only as a word
  assert normalize_answer("«Paris»") == "«paris»"  # only ASCII punctuation is removed
  assert exact_match_score("the Eiffel Tower", "Eiffel tower.") == 1.0
  assert f1_score("a cat sat", "the cat sat down") == pytest.approx(0.8)  # P 2/2, R 2/3
  assert f1_score("cat cat cat", "cat") == pytest.approx(0.5)  # shared tokens as multisets: P 1/3, R 1
  assert exact_match_score("the", "a") == 1.0 and f1_score("the", "a") == 0.0  # both empty: EM, no F1
  assert exact_match_score("«Paris»", "Paris") == 0.0 and f1_score("«Paris»", "Paris") == 0.0
  gold = {"q1": ["Broncos", "Denver Broncos", "the Denver Broncos."], "q2": ["Denver Broncos", "Broncos"],
          "q3": ["Santa Clara"]}
  # q1 exact; q2 "Broncos team": F1 2/3 against "Broncos" (P 1/2, R 1), 1/2 against "Denver Broncos";
  # q3 unanswered: 0, still counted.
  scores = squad_metrics({"q1": "Denver Broncos", "q2": "Broncos team"}, gold)
  assert scores["exact_match"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


# ------------------------------------------------------------------------------ best span


def brute_force(start, end, candidate, max_len):
  pairs = [(start[s] + end[e], s, e) for s in np.flatnonzero(candidate) for e in np.flatnonzero(candidate)
           if s <= e < s + max_len]
  return max(pairs, key=lambda p: p[0]) if pairs else None


def test_best_span_never_ends_before_it_starts_nor_leaves_the_context():
  rng = np.random.default_rng(0)
  for trial in range(300):
    T = int(rng.integers(2, 24))
    start, end = rng.normal(size=T), rng.normal(size=T)
    candidate = rng.random(T) < 0.6
    candidate[:int(rng.integers(1, T))] = False  # [CLS] and the question
    start[~candidate] += 10.0  # question tokens score highest: they must still never be chosen
    end[~candidate] += 10.0
    got = extractive_qa.best_span(start, end, candidate, n_best=T, max_answer_len=5)
    want = brute_force(start, end, candidate, 5)
    if want is None:
      assert got is None
      continue
    score, s, e = got
    assert candidate[s] and candidate[e] and s <= e < s + 5 and score == pytest.approx(want[0]), trial
    few = extractive_qa.best_span(start, end, candidate, n_best=2, max_answer_len=5)
    assert few is None or (candidate[few[1]] and candidate[few[2]] and few[1] <= few[2] < few[1] + 5)
  # The best start lies after the best end: the answer is a valid pair, not (6, 5).
  start, end, candidate = np.array([0, 0, 0, 0, 0, 1, 9.0]), np.array([0, 0, 0, 0, 0, 9, 1.0]), np.arange(7) >= 5
  assert extractive_qa.best_span(start, end, candidate, 20, 30)[1:] in [(5, 5), (5, 6), (6, 6)]
  assert extractive_qa.best_span(start, end, np.zeros(7, bool), 20, 30) is None


def test_predictions_take_each_questions_best_window_and_its_characters():
  tok = CharTokenizer(CONTEXT + "what is it?")
  qs = questions()
  windows, _ = qa.encode(qs, tok, 40, 9, max_query_len=64)
  logits = np.full((len(windows), 40, 2), -5.0)
  logits[:, :len(tok.encode("what is it?")) + 2, :] = 50.0  # [CLS] and the question: the highest, never an answer
  rows = np.flatnonzero(windows.start > 0)
  logits[rows, windows.start[rows], 0] = 5.0 + rows % 3  # windows holding the answer prefer it
  logits[rows, windows.end[rows], 1] = 5.0
  predictions = extractive_qa.predict_answers(qs, windows, logits, n_best=20, max_answer_len=30)
  assert predictions == {q.id: q.answers[0] for q in qs}
  # All exact; the answer "A" is an article, empty once normalised: F1 0, as the official script scores it.
  scores = squad_metrics(predictions, {q.id: q.answers for q in qs})
  assert scores == {"exact_match": 100.0, "f1": pytest.approx(100 * 13 / 14)}
  nothing = extractive_qa.predict_answers(qs, windows, logits, n_best=20, max_answer_len=0)
  assert set(nothing.values()) == {""}


# ------------------------------------------------------------------------------ sources


def squad(articles) -> dict:
  """SQuAD JSON from [(title, [(context, [(id, question, answer), ...]), ...]), ...]."""
  return {"version": "1.1", "data": [
      {"title": title, "paragraphs": [
          {"context": c, "qas": [{"id": i, "question": q, "answers": [{"text": a, "answer_start": c.index(a)}]}
                                 for i, q, a in qas]} for c, qas in paragraphs]} for title, paragraphs in articles]}


def test_a_file_holds_out_its_last_articles_and_keeps_every_gold_answer(tmp_path):
  data = squad([(f"T{t}", [(f"Alice met Bob in Paris in 19{t}0.", [(f"{t}a", "Who met Bob?", "Alice"),
                                                                     (f"{t}b", "When?", f"19{t}0")])])
                for t in range(5)])
  data["data"][0]["paragraphs"][0]["qas"][0]["answers"].append({"text": "Alice met", "answer_start": 0})
  (tmp_path / "s.json").write_text(json.dumps(data))
  train, held, rule = qa.load_questions(DataConfig(path=str(tmp_path / "s.json"), val_fraction=0.2))
  assert [q.id for q in held] == ["4a", "4b"] and len(train) == 8 and "last 1 of 5 articles" in rule
  assert train[0].answers == ["Alice", "Alice met"] and train[0].starts == [0, 0]
  (tmp_path / "dev.json").write_text(json.dumps(squad([("D", [("Carol sang.", [("d1", "Who sang?", "Carol")])])])))
  train, held, _ = qa.load_questions(DataConfig(path=str(tmp_path / "s.json")), eval_split=str(tmp_path / "dev.json"))
  assert len(train) == 10 and [q.id for q in held] == ["d1"]


def test_hub_squad_rows(monkeypatch):
  import datasets

  rows = {"train": [("t1", "Bob ran home.", "Who ran?", "Bob", 0)],
          "validation": [("v1", "Eve swam.", "Who swam?", "Eve", 0), ("v2", "Eve swam.", "What?", "swam", 2)]}

  def fake(name, config=None, split=None, cache_dir=None):
    assert name == "squad"
    r = rows[split]
    return datasets.Dataset.from_dict({"id": [x[0] for x in r], "title": ["x"] * len(r), "context": [x[1] for x in r],
                                       "question": [x[2] for x in r],
                                       "answers": [{"text": [x[3]], "answer_start": [x[4]]} for x in r]})

  monkeypatch.setattr(datasets, "load_dataset", fake)
  rows["validation"][1] = ("v2", "Eve swam.", "What?", "swam", 4)  # "swam" is at 4
  train, held, _ = qa.load_questions(DataConfig(hub_name="squad"))
  assert [q.id for q in train] == ["t1"] and [(q.id, q.answers, q.starts) for q in held][1] == ("v2", ["swam"], [4])
  rows["validation"][1] = ("v2", "Eve swam.", "What?", "swam", 2)
  with pytest.raises(DataError, match=r"^data\.hub_name='squad' split 'validation': question 'v2': answer 'swam' is not "
                                      r"in its context at answer_start=2 \(the context there reads 'e sw'\)$"):
    qa.load_questions(DataConfig(hub_name="squad"))


def test_bundled_cloze_set_is_fixed_split_by_article_and_answers_sit_at_their_starts(tmp_path_factory):
  cache = tmp_path_factory.getbasetemp() / "qa_cache"
  train, held, rule = qa.load_questions(DataConfig(bundled="enwiki_cloze", cache_dir=str(cache)))
  assert (len(train), len(held)) == (1462, 372) and "validation split" in rule
  title = lambda q: q.id.rsplit("/", 1)[0]
  assert not {title(q) for q in train} & {title(q) for q in held} and len({title(q) for q in held}) == 10
  assert all(q.context[q.starts[0]:q.starts[0] + len(q.answers[0])] == q.answers[0] for q in train + held)
  assert all(q.answers[0] not in q.question.split() for q in held[:50])  # the answer was replaced ...
  wh = [next(w for w in ("when", "how many", "where", "what") if w in q.question) for q in held]
  assert {"when", "how many", "where", "what"} == set(wh)  # ... by a wh-word of its kind
  again, _, _ = qa.load_questions(DataConfig(bundled="enwiki_cloze", cache_dir=str(cache)))
  assert [(q.id, q.question, q.starts) for q in again] == [(q.id, q.question, q.starts) for q in train]
  with pytest.raises(DataError, match=r"data\.bundled='polarity' is not a bundled question-answering set; known: enwiki_cloze"):
    qa.load_questions(DataConfig(bundled="polarity", cache_dir=str(cache)))


# ------------------------------------------------------------------------------ bad input

GOOD_QA = {"id": "q1", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]}


def paragraphs(*qas, context="Ada wrote."):
  return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


BAD_FILES = [
    ("not json", '{"data": [', r"not json\.json is not JSON: Expecting value at line 1 column 11$"),
    ("a list", "[1, 2]", r"a list\.json is not SQuAD v1\.1 JSON: expected an object with a list \"data\" of articles$"),
    ("no paragraphs", {"data": [{"title": "t"}]},
     r"no paragraphs\.json: data\[0\] has no list 'paragraphs' \(not SQuAD v1\.1 format\)$"),
    ("no context", {"data": [{"paragraphs": [{"qas": []}]}]}, r"data\[0\]\.paragraphs\[0\] has no str 'context'"),
    ("no id", paragraphs({"question": "Who?", "answers": []}), r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'id'"),
    ("no text", paragraphs({**GOOD_QA, "question": " "}), r"no text\.json: question 'q1' has no question text$"),
    ("no answers", paragraphs({**GOOD_QA, "answers": []}), r"question 'q1' has no answers \(SQuAD v2's unanswerable"),
    ("moved answer", paragraphs({**GOOD_QA, "answers": [{"text": "wrote", "answer_start": 3}]}),
     r"moved answer\.json: question 'q1': answer 'wrote' is not in its context at answer_start=3 "
     r"\(the context there reads ' wrot'\)$"),
    ("answer elsewhere", paragraphs({**GOOD_QA, "answers": [{"text": "Bob", "answer_start": 0}]}),
     r"question 'q1': answer 'Bob' is not in its context at answer_start=0"),
    ("string start", paragraphs({**GOOD_QA, "answers": [{"text": "Ada", "answer_start": "0"}]}),
     r"question 'q1': an answer needs a non-empty 'text' and an integer 'answer_start', got 'Ada', '0'$"),
    ("twice", paragraphs(GOOD_QA, GOOD_QA), r"twice\.json: question 'q1' appears twice$"),
    ("empty", {"data": []}, r"empty\.json holds no questions$"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_squad_files_are_one_line_naming_the_file_and_question(tmp_path, name, content, message):
  path = tmp_path / f"{name}.json"
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  with pytest.raises(DataError, match=message) as info:
    qa.read_squad_file(path)
  assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_bad_file_through_the_cli_exits_2_with_one_line(tmp_path, capsys):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps(paragraphs({**GOOD_QA, "answers": [{"text": "wrote", "answer_start": 1}]})))
  assert main(["train", "experiments/bert_qa", f"data.path={bad}", f"data.cache_dir={tmp_path}",
               f"train.runs_dir={tmp_path / 'runs'}"]) == 2
  err = capsys.readouterr().err
  assert err == (f"lineage train: error: {bad}: question 'q1': answer 'wrote' is not in its context at "
                 f"answer_start=1 (the context there reads 'da wr')\n")
  assert not list((tmp_path / "runs").rglob("config.json"))  # refused before the run was written


# ------------------------------------------------------------------------------ a run


def tiny_squad(path):
  """5 articles of 4 short paragraphs, a question on each: who did what when."""
  rng = np.random.default_rng(0)
  names, verbs = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"], ["painted", "sold", "found", "built"]
  articles = []
  for t in range(5):
    paragraphs = []
    for p in range(4):
      who, verb, year = rng.choice(names), rng.choice(verbs), int(rng.integers(1900, 2000))
      context = f"In the town of T{t}, {who} {verb} a house in {year}. Nobody else {verb} anything that year."
      ask = (f"Who {verb} a house in {year}?", who) if p % 2 else (f"When did {who} {verb} a house?", str(year))
      paragraphs.append((context, [(f"{t}-{p}", *ask)]))
    articles.append((f"T{t}", paragraphs))
  path.write_text(json.dumps(squad(articles)))
  return path


def test_the_span_head_sits_beside_the_pretraining_encoder_so_init_from_loads_it():
  """The paths `train.init_from` matches: every encoder parameter of a pretraining model, the span head fresh."""
  cfg = bert.Config(vocab_size=50, max_len=16, n_layer=1, n_head=2, n_embd=32)
  params = lambda build: nnx.state(nnx.eval_shape(lambda: build(cfg, rngs=nnx.Rngs(0))), nnx.Param)
  pretraining = {"/".join(map(str, k)): v.get_value().shape for k, v in nnx.to_flat_state(params(bert.Pretraining))}
  load, fresh = select_parameters("runs/bert_wiki/x", params(bert.SpanQA), pretraining, "span/*")
  assert set(load) == {k for k in pretraining if k.startswith("encoder/")} and sorted(fresh) == ["span/bias", "span/kernel"]
  assert params(bert.SpanQA)["span"]["kernel"].get_value().shape == (32, 2)  # start and end


def test_lineage_train_bert_qa_writes_predictions_and_scores_and_lineage_eval_repeats_them(tmp_path, capsys,
                                                                                         monkeypatch):
  source = tmp_path
  tiny_squad(source / "squad.json")
  args = ["train", "experiments/bert_qa", f"data.path={source / 'squad.json'}", f"data.cache_dir={source / 'cache'}",
          "data.val_fraction=0.2", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.max_len=64",
          "tokenizer.vocab_size=330", "objective.seq_len=48",
          "objective.doc_stride=8", "objective.max_query_len=16", "train.steps=4", "train.batch_size=8",
          "train.log_every=2", "train.eval_every=2", "train.checkpoint_every=4", "train.progress=false",
          f"train.runs_dir={source / 'runs'}", "train.run_name=qa"]
  assert main(args) == 0
  run = source / "runs" / "bert_qa" / "qa"
  assert f"run directory: {run}" in capsys.readouterr().out
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if "eval/f1" in r]
  assert [r["step"] for r in evals] == [2, 4] and all({"eval/exact_match", "eval/loss"} <= set(r) for r in evals)
  assert all(0.0 <= r[f"eval/{k}"] <= 100.0 for r in evals for k in ("exact_match", "f1"))
  assert {"train/start_accuracy", "train/end_loss"} <= {k for r in rows for k in r}
  predictions = json.loads((run / "eval" / "predictions_step4.json").read_text())
  assert sorted(predictions) == ["4-0", "4-1", "4-2", "4-3"]  # the held-out article's questions
  held = qa.load_questions(DataConfig(path=str(source / "squad.json"), val_fraction=0.2))[1]
  gold = {q.id: q.answers for q in held}
  assert squad_metrics(predictions, gold) == {"exact_match": evals[-1]["eval/exact_match"], "f1": evals[-1]["eval/f1"]}
  assert all(p in q.context for q, p in zip(held, predictions.values()))
  facts = json.loads((run / "run.json").read_text())
  assert facts["examples"]["eval"]["questions"] == 4 and facts["examples"]["eval"]["answer_in_no_window"] == 0

  # lineage eval: the same checkpoint, the same questions, the same answers and scores.
  assert main(["eval", str(run)]) == 0
  assert "heldout" in capsys.readouterr().out
  result = json.loads((run / "eval" / "heldout.json").read_text())
  assert result["step"] == 4 and result["metrics"]["f1"] == pytest.approx(evals[-1]["eval/f1"])
  assert json.loads((run / "eval" / "heldout_predictions.json").read_text()) == predictions
  assert "eval/heldout/exact_match" in (run / "metrics.jsonl").read_text().splitlines()[-1]
  monkeypatch.chdir(source)  # a relative path names the key too
  assert main(["eval", str(run), "--task", "squad:squad.json", "--limit", "3"]) == 0
  assert json.loads((run / "eval" / "squad_squad.json").read_text())["questions"] == 3
  monkeypatch.undo()
  capsys.readouterr()

  assert main(["eval", str(run), "--task", "lastword"]) == 2
  assert capsys.readouterr().err == ("lineage eval: error: --task 'lastword': an extractive_qa run takes "
                                     "--task heldout or --task squad:PATH\n")
  (source / "cls").mkdir()
  config_lib.save(config_lib.load_experiment("experiments/bert_polarity"), source / "cls" / "config.json")
  assert main(["eval", str(source / "cls")]) == 2
  assert "is a 'classification' run; lineage eval needs a lm or extractive_qa run" in capsys.readouterr().err
