"""LSTM Seq2Seq with Luong attention (dot score), trained with teacher forcing.

    lineage train experiments/seq2seq_attention

Default data: the bundled, generated EN->ES number-words task (research/data/translation.py),
which needs no network: valid BLEU 99.9 after these 1,000 steps, 47 s on 2 CPU cores (measured).
On the English-Spanish Bible (shared/data/bible_en_es.tsv, split by books; README there):

    lineage train experiments/seq2seq_attention data.path=../shared/data/bible_en_es.tsv \
        tokenizer.vocab_size=4000 model.max_src_len=48 model.max_tgt_len=48 train.steps=1800 \
        optim.lr=3e-3 optim.warmup_steps=100 train.eval_every=600 train.checkpoint_every=600 train.run_name=bible
    lineage bleu runs/seq2seq_attention/bible --split test --beam 4

Measured 2026-11-24 on 2 CPU cores (each run alone under the CPU lock), 1,800 steps of 32 pairs:
with dot attention test BLEU 11.6 greedy / 13.7 beam 4, 530 s of training;
without attention (seq2seq_plain) 0.8 greedy / 0.7 beam 4, 391 s.

experiments/seq2seq_plain is the same run without attention (Sutskever et al. 2014).
Other scores: model.attention=scaled_dot|additive; a bidirectional encoder:
model.bidirectional=true; scheduled sampling: objective.sampling_ratio=0.25.
"""

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import seq2seq


def get_config() -> Config:
  return Config(
      objective="translation",
      model=seq2seq.Config(attention="dot", n_layer=1, n_embd=256, n_hidden=256, dropout=0.1,
                           max_src_len=16, max_tgt_len=16),
      data=DataConfig(bundled="numbers_en_es"),
      # Number words have few distinct pieces; 512 leaves room past the 256 byte pieces.
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=512),
      optim=OptimConfig(lr=2e-3, warmup_steps=50, min_lr_ratio=0.1, beta2=0.99, weight_decay=0.0),
      train=TrainConfig(steps=1000, batch_size=32, log_every=20, eval_every=250, eval_batches=8,
                        checkpoint_every=250),
  )
