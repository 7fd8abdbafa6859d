"""A 2-layer Elman RNN language model on the bundled Wikipedia excerpt: `gpt_wiki` with an RNN.

    lineage train experiments/rnn_wiki

The recurrent baseline below the LSTM (Elman 1990): same data, vocabulary, batch, schedule
and objective as experiments/gpt_wiki and experiments/lstm_wiki, so their metrics compare
directly. Quick local check: `lineage train experiments/rnn_wiki train.steps=50`.
"""

from research.config import Config, OptimConfig, TokenizerConfig, TrainConfig
from research.models import rnn


def get_config() -> Config:
  return Config(
      objective="lm",
      model=rnn.Config(cell="elman", block_size=128, n_layer=2, n_embd=256, n_hidden=256, dropout=0.0),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=4096),
      # A lower peak rate than the LSTM's: without gates, tanh recurrences blow up more easily.
      optim=OptimConfig(lr=1e-3, warmup_steps=50, min_lr_ratio=0.1, beta2=0.99),
      train=TrainConfig(steps=600, batch_size=16, log_every=20, eval_every=200, eval_batches=16,
                        checkpoint_every=200),
  )
