"""LSTM Seq2Seq without attention (Sutskever et al. 2014): one fixed context vector.

    lineage train experiments/seq2seq_plain

Default data: the bundled, generated EN->ES number-words task (research/data/translation.py),
which needs no network.
On the English-Spanish Bible (shared/data/bible_en_es.tsv, split by books; README there):

    lineage train experiments/seq2seq_plain data.path=../shared/data/bible_en_es.tsv \
        tokenizer.vocab_size=4000 model.max_src_len=48 model.max_tgt_len=48 train.steps=1800 \
        optim.lr=3e-3 optim.warmup_steps=100 train.eval_every=600 train.checkpoint_every=600 train.run_name=bible
    lineage bleu runs/seq2seq_plain/bible --split test --beam 4

Measured 2026-11-24 on 2 CPU cores (each run alone under the CPU lock), 1,800 steps of 32 pairs:
with dot attention test BLEU 11.6 greedy / 13.7 beam 4, 530 s of training;
without attention (seq2seq_plain) 0.8 greedy / 0.7 beam 4, 391 s.

experiments/seq2seq_attention is the same run with Luong attention; they differ only in model.attention.
"""

from pathlib import Path

from research.config import Config, load_experiment

HERE = Path(__file__).parent


def get_config() -> Config:
  # seq2seq_attention's run, with no attention: the two differ in this one setting.
  cfg = load_experiment(HERE.parent / "seq2seq_attention")
  cfg.experiment = HERE.name
  cfg.model.attention = "none"
  return cfg
