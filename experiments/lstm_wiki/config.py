"""A 2-layer LSTM language model on the bundled Wikipedia excerpt: `gpt_wiki` with an LSTM.

    lineage train experiments/lstm_wiki

Same corpus, BPE vocabulary, block size, batch and schedule as experiments/gpt_wiki, and the
same objective (research/objectives/lm.py), so the two runs log the same metric names and
compare step for step. Quick local check: `lineage train experiments/lstm_wiki train.steps=50`.
"""

from research.config import Config, OptimConfig, TokenizerConfig, TrainConfig
from research.models import lstm


def get_config() -> Config:
  return Config(
      objective="lm",
      # 2 x 256 units: about the parameter count of gpt_wiki's 4 x 192 Transformer blocks.
      model=lstm.Config(block_size=128, n_layer=2, n_embd=256, n_hidden=256, dropout=0.0),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=4096),  # as gpt_wiki: one shared tokenizer cache
      optim=OptimConfig(lr=2e-3, warmup_steps=50, min_lr_ratio=0.1, beta2=0.99),
      # 16 x 128 = 2,048 tokens a step; 600 steps = 1.2M tokens, about two epochs (as gpt_wiki).
      train=TrainConfig(steps=600, batch_size=16, log_every=20, eval_every=200, eval_batches=16,
                        checkpoint_every=200),
  )
