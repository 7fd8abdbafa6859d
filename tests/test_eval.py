"""`lineage eval`: the log-likelihood scorer against the full forward pass, few-shot prompts as
documented, the metrics, and every bundled task end to end on a tiny run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from launch.cli import main
from research.evaluate import lm_scoring, tasks
from research.evaluate.tasks import Doc, EvalTask
from research.models import gpt
from research.tokenizers import CharTokenizer
from research.train import loop
from tests.test_train import corpus, tiny_config  # noqa: F401 - the fixture and the tiny GPT

TOKENIZER = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,")
CFG = gpt.Config(vocab_size=TOKENIZER.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)


@pytest.fixture(scope="module")
def model():
  return gpt.build(CFG, rngs=nnx.Rngs(0))


def log_softmax(x):
  x = x.astype(np.float64)
  return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


FORWARD = nnx.jit(lambda model, tokens: model(tokens))


def full_forward(model, ids):
  """Logits [len(ids), V] of one row, computed on the whole block (causal: the padding is unseen)."""
  padded = jnp.asarray([ids + [0] * (CFG.block_size - len(ids))])
  return np.asarray(FORWARD(model, padded))[0, :len(ids)]


def by_hand(model, context_ids, continuation_ids, block):
  """Sum of the continuation's log-probs and greedy-match, from one full forward in numpy."""
  window = (context_ids + continuation_ids)[-(block + 1):]
  logp = log_softmax(full_forward(model, window[:-1]))
  n = len(continuation_ids)
  positions = range(len(window) - 1 - n, len(window) - 1)
  total = sum(logp[t, window[t + 1]] for t in positions)
  return total, all(logp[t].argmax() == window[t + 1] for t in positions)


def test_scorer_equals_log_probs_by_hand(model):
  pairs = [("the cat", " sat"), ("a", " b"), ("on the mat and the cat sat on the", " hat."), ("", "x y")]
  scores = lm_scoring.score_texts(model, TOKENIZER, pairs, CFG.block_size, batch_size=3)
  for (context, continuation), score in zip(pairs, scores):
    ids = [TOKENIZER.eos_id] + TOKENIZER.encode(context), TOKENIZER.encode(continuation)
    total, greedy = by_hand(model, *ids, CFG.block_size)
    assert score.logprob == pytest.approx(total, abs=1e-4)
    assert score.greedy == greedy and score.n_tokens == len(ids[1])
  # The third context is longer than the block: its left was cut, as lm-eval cuts it.
  assert len(TOKENIZER.encode(pairs[2][0])) + 5 > CFG.block_size + 1

  # A continuation that is the model's own greedy choice is greedy; another is not.
  context = [TOKENIZER.eos_id] + TOKENIZER.encode("the ")
  chosen = []
  for _ in range(3):
    chosen.append(int(full_forward(model, context + chosen)[-1].argmax()))
  other = [(chosen[0] + 1) % CFG.vocab_size] + chosen[1:]
  a, b = lm_scoring.score_tokens(model, [(context, chosen), (context, other)], CFG.block_size)
  assert a.greedy and not b.greedy and a.logprob > b.logprob


class MergingTokenizer:
  """Characters, except that "ab" is one token: a subword across the context's end."""
  eos_id = 0

  def encode(self, text):
    out, i = [], 0
    while i < len(text):
      n = 2 if text[i:i + 2] == "ab" else 1
      out.append(text[i:i + n])
      i += n
    return out


def test_pairs_are_split_as_lm_eval_splits_them():
  tok = MergingTokenizer()
  # The continuation's tokens are those of the whole text past the context's own tokens.
  assert lm_scoring.encode_pair(tok, "xa", "bc") == ([0, "x", "a"], ["c"])
  assert lm_scoring.encode_pair(tok, "x", "abc") == ([0, "x"], ["ab", "c"])
  # Trailing whitespace of the context moves to the continuation.
  assert lm_scoring.encode_pair(tok, "x  ", "y") == ([0, "x"], [" ", " ", "y"])
  # Left truncation and the mask of a packed row.
  inputs, targets, mask = lm_scoring.pack_row(list(range(1, 30)), [40, 41], 8)
  assert inputs.tolist() == [23, 24, 25, 26, 27, 28, 29, 40] and targets.tolist() == [24, 25, 26, 27, 28, 29, 40, 41]
  assert mask.tolist() == [False] * 6 + [True, True]
  inputs, targets, mask = lm_scoring.pack_row([1, 2], [3], 5)  # short: right-padded
  assert (inputs.tolist(), targets.tolist(), mask.tolist()) == ([1, 2, 0, 0, 0], [2, 3, 0, 0, 0], [0, 1, 0, 0, 0])


def test_few_shot_prompts_are_built_as_documented():
  task = tasks.load_task("polarity", None, shots=3)
  assert len(task.docs) == 160 and len(task.pool) == 40
  assert not set(task.docs) & set(task.pool)  # the pool is never evaluated
  assert task.docs == tasks.load_task("polarity", None).docs  # zero- and few-shot score the same documents
  for i in (0, 7):
    picks = np.random.default_rng([5, i]).choice(40, 3, replace=False)
    solved = [f"{task.pool[j].context} {task.pool[j].choices[task.pool[j].gold]}" for j in picks]
    assert task.prompt(i, 3, seed=5) == "\n\n".join(solved + [task.docs[i].context])
  assert task.prompt(0, 3, seed=5) != task.prompt(0, 3, seed=6)
  assert task.prompt(2, 0) == task.docs[2].context
  first = task.prompt(0, 1, seed=0)
  assert first.count("Review: ") == 2 and first.endswith("\nSentiment:")
  assert first.split("\n\n")[0].rsplit("\nSentiment: ", 1)[1] in ("negative", "positive")


def test_polarity_file_is_100_negative_then_100_positive_sentences():
  from gensim.test.utils import datapath

  lines = open(datapath("pang_lee_polarity.cor"), "rb").read().decode("cp1252").splitlines()
  assert [line.split()[0] for line in lines] == ["__label__neg"] * 100 + ["__label__pos"] * 100
  task = tasks.load_task("polarity", None)
  assert sorted(d.gold for d in task.docs + task.pool) == [0] * 100 + [1] * 100
  assert "\u2014" in "".join(d.context for d in task.docs + task.pool)  # cp1252's 0x97 dash read as such


def test_metrics_acc_acc_norm_and_perplexity():
  docs = [Doc("q", ("a", "bbbb"), 1), Doc("q", ("a", "bbbb"), 0)]
  choice = EvalTask("t", "choice", docs)
  # Doc 0: "a" -2 beats "bbbb" -3 in sum, but per character -0.75 beats -2; doc 1 the same.
  m = choice.metrics([-2.0, -3.0, -2.0, -3.0], [False] * 4)
  assert (m["acc"], m["acc_norm"], m["n"]) == (0.5, 0.5, 2)
  m = EvalTask("t", "completion", docs[:2]).metrics([-1.0, -3.0], [True, False])
  assert m["acc"] == 0.5 and m["perplexity"] == pytest.approx(np.exp(2.0))


def test_lastword_takes_the_last_word_of_lines_with_their_document_before_them():
  text = "one two three four five six seven.\nshort line here.\nuno dos tres cuatro cinco seis siete ocho!\n"
  docs = tasks.lastword_docs([text, "a b c d e f 1999."])
  assert [d.choices for d in docs] == [("seven",), ("ocho",)]  # short lines and numbers give none
  assert docs[0].context == "one two three four five six "
  assert docs[1].context == "one two three four five six seven.\nshort line here.\nuno dos tres cuatro cinco seis siete "


def test_every_task_runs_on_a_tiny_run(corpus, tmp_path, capsys):  # noqa: F811
  run = tmp_path / "run"
  loop.train(tiny_config(corpus, tmp_path, steps=2, checkpoint_every=2), run_dir=run, log=lambda *_: None)
  questions = tmp_path / "questions.jsonl"
  questions.write_text("".join(json.dumps({"context": f"the {a}", "choices": ["cat sat", "dog"], "gold": g}) + "\n"
                               for a, g in (("red", 0), ("big", 1), ("old", 0), ("new", 1))))
  specs = f"lastword,polarity,analogy,jsonl:{questions}"
  assert main(["eval", str(run), "--task", specs, "--limit", "3", "--batch-size", "4"]) == 0
  out = capsys.readouterr().out
  for key in ("lastword", "polarity", "analogy", "jsonl_questions"):
    result = json.loads((run / "eval" / f"{key}.json").read_text())
    assert result["metrics"]["n"] == 3 and result["step"] == 2 and key in out
    assert 0.0 <= result["metrics"]["acc"] <= 1.0
  assert main(["eval", str(run), "--task", "polarity", "--shots", "2", "--limit", "2"]) == 0
  assert json.loads((run / "eval" / "polarity_2shot.json").read_text())["first_prompt"].count("Review:") == 3
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert {"eval/polarity/acc", "eval/polarity/acc_norm"} <= set(rows[-4]) and rows[-1]["step"] == 2
  capsys.readouterr()
  assert main(["compare", str(run)]) == 0  # the eval accuracies show up as columns
  assert "eval/polarity_2shot/acc" in capsys.readouterr().out

  assert main(["eval", str(run), "--task", "lastword", "--shots", "1"]) == 2
  assert "zero-shot" in capsys.readouterr().err
  assert main(["eval", str(run), "--task", "nothing"]) == 2
  assert "known: lastword, polarity, analogy, jsonl:PATH" in capsys.readouterr().err
