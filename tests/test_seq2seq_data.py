"""Translation data and the end-to-end run: splits, batches, training, BLEU, the attention map."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from launch.cli import main
from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.data import numbers_en_es as numbers
from research.data import pairs
from research.data import translation as data
from research.data.text import DataError
from research.evaluate.bleu import corpus_bleu
from research.models import seq2seq
from research.tokenizers import BOS_ID, EOS_ID, PAD_ID
from research.train import loop


def test_number_words():
  assert numbers.english_number(321005) == "three hundred twenty-one thousand five"
  assert numbers.spanish_number(321005) == "trescientos veintiún mil cinco"
  assert numbers.spanish_number(100) == "cien" and numbers.spanish_number(101) == "ciento uno"
  assert numbers.spanish_number(1000) == "mil" and numbers.spanish_number(31000) == "treinta y un mil"
  assert numbers.english_number(0) == "zero" and numbers.spanish_number(0) == "cero"
  splits = numbers.numbers_en_es(n_train=200, n_eval=50)
  assert [len(splits[k]) for k in ("train", "valid", "test")] == [200, 50, 50]
  assert not set(splits["train"]) & set(splits["test"])


def test_tsv_with_verse_references_splits_by_book(tmp_path):
  path = tmp_path / "pairs.tsv"
  rows = ["ref\ten\tes"] + [f"{book}.1.{v}\tword {v}\tpalabra {v}" for book in ("Gen", "Ruth", "Jude", "Matt")
                            for v in range(1, 4)]
  path.write_text("\n".join(rows) + "\n")
  splits = pairs.load_pairs(DataConfig(path=str(path)))
  assert splits["test"] == [(f"word {v}", f"palabra {v}") for v in range(1, 4)]  # Ruth
  assert len(splits["valid"]) == 3 and len(splits["train"]) == 6  # Jude; Gen + Matt
  reversed_ = pairs.load_pairs(DataConfig(path=str(path), source_column="es", target_column="en"))
  assert reversed_["test"][0] == ("palabra 1", "word 1")
  with pytest.raises(DataError, match=r"data.target_column='fr' is not a column of the header \(ref, en, es\)"):
    pairs.load_pairs(DataConfig(path=str(path), source_column="en", target_column="fr"))


def test_batches_are_a_pure_function_of_seed_and_step():
  src = [[7 + n % 10] * (1 + n // 10) for n in range(40)]  # 40 distinct sources of 4 lengths
  tgt = [[8] * (n % 5 + 1) for n in range(40)]
  make = lambda: data.TranslationData(src, tgt, 8, 8, seed=3, batch_size=4)
  a, b = make(), make()
  for step in (0, 5, 12, 31):  # 10 batches an epoch: steps in four epochs
    for key in ("src", "tgt_in", "tgt_out"):
      np.testing.assert_array_equal(a.batch(step)[key], b.batch(step)[key])
  batch = a.batch(0)
  assert batch["src"].shape == (4, 8) and batch["tgt_in"].shape == (4, 8)
  np.testing.assert_array_equal(batch["tgt_in"][:, 0], BOS_ID)
  for row_in, row_out in zip(batch["tgt_in"], batch["tgt_out"]):  # tgt_out is tgt_in shifted, eos last
    n = int((row_out != PAD_ID).sum())
    np.testing.assert_array_equal(row_in[1:n], row_out[:n - 1])
    assert row_out[n - 1] == EOS_ID
  epoch = {tuple(r) for s in range(10) for r in a.batch(s)["src"].tolist()}
  assert len(epoch) == 40  # one epoch visits every pair once


def test_bleu_is_100_for_identical_text_and_low_for_unrelated():
  refs = ["el principio crió Dios los cielos", "nada me faltará"]
  assert corpus_bleu(refs, refs) == pytest.approx(100.0)
  assert corpus_bleu(["x y z", "q"], refs) < 5


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_translation_run_end_to_end(tmp_path, capsys):
  path = tmp_path / "numbers.tsv"  # no header: source, target; the last 2 x 10% are valid and test
  splits = numbers.numbers_en_es(n_train=200, n_eval=20)
  path.write_text("".join(f"{s}\t{t}\n" for k in ("train", "valid", "test") for s, t in splits[k]))
  cfg = Config(
      experiment="tiny_s2s", objective="translation",
      model=seq2seq.Config(attention="additive", bidirectional=True, n_embd=32, n_hidden=32,
                           max_src_len=16, max_tgt_len=16),
      data=DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), val_fraction=0.1),
      tokenizer=TokenizerConfig(kind="char"),
      optim=OptimConfig(lr=3e-3, warmup_steps=2),
      train=TrainConfig(steps=6, batch_size=16, log_every=3, eval_every=6, eval_batches=1, checkpoint_every=3,
                        runs_dir=str(tmp_path / "runs"), progress=False))
  cfg.model.max_src_len = cfg.model.max_tgt_len = 64  # characters
  run_dir = tmp_path / "run"
  result = loop.train(cfg, run_dir=run_dir, log=lambda *_: None)
  assert result.step == 6 and 0.0 <= result.eval["bleu"] <= 100.0 and np.isfinite(result.eval["loss"])
  facts = json.loads((run_dir / "run.json").read_text())
  assert facts["flops_per_step_per_device"] > 0 and facts["pairs"] == {"train": 192, "valid": 24, "test": 24}

  assert main(["attention", str(run_dir), "--src", "two hundred five", "--out", str(tmp_path / "a.png")]) == 0
  assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  capsys.readouterr()
  assert main(["bleu", str(run_dir), "--split", "valid"]) == 0
  out = json.loads(capsys.readouterr().out.splitlines()[0])
  assert out["split"] == "valid" and out["pairs"] == 24 and out["beam"] == 1
  # An earlier checkpoint by --step (to compare runs at equal wall time); a step not kept is one line.
  assert main(["bleu", str(run_dir), "--split", "valid", "--step", "6"]) == 0
  assert json.loads(capsys.readouterr().out.splitlines()[0])["step"] == 6
  assert (run_dir / "artifacts" / "bleu_valid_beam1_step6.json").exists()
  # Another length penalty is saved beside the default's, not over it.
  assert main(["bleu", str(run_dir), "--split", "valid", "--beam", "2", "--alpha", "1.0"]) == 0
  assert main(["bleu", str(run_dir), "--split", "valid", "--beam", "2"]) == 0
  capsys.readouterr()
  alphas = {json.loads((run_dir / "artifacts" / f).read_text())["alpha"]
            for f in ("bleu_valid_beam2_alpha1.json", "bleu_valid_beam2.json")}
  assert alphas == {1.0, 0.6}
  assert main(["bleu", str(run_dir), "--step", "5"]) == 2
  assert "has no checkpoint of step 5; it keeps steps 3, 6" in capsys.readouterr().err
  assert main(["bleu", str(run_dir), "--average", "3"]) == 2
  assert "keeps 2 checkpoint(s) up to step 6, fewer than the 3 to average" in capsys.readouterr().err
  # --average 2: the parameters are the mean of steps 3 and 6 (sec. 6.1 of the Transformer paper).
  from research.run import load_run
  p3, p6, mean = (nnx.state(load_run(run_dir, step=s, average=a).model, nnx.Param) for s, a in ((3, 1), (6, 1), (6, 2)))
  for a, b, m in zip(jax.tree.leaves(p3), jax.tree.leaves(p6), jax.tree.leaves(mean)):
    np.testing.assert_allclose(m, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(p3), jax.tree.leaves(p6)))
