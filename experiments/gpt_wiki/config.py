"""A small GPT on the bundled Wikipedia excerpt, with a BPE vocabulary: the README's main job.

    lineage train experiments/gpt_wiki

Trains in a few minutes on a 2-core CPU. ~0.55M BPE tokens of article text (the gensim
wheel's enwiki excerpt); the validation loss should end far below the unigram entropy
printed at the start (the loss of a model that ignores context).
Bigger: `lineage train experiments/gpt_wiki model.n_layer=6 model.n_embd=384 train.steps=5000`.
"""

from research.config import Config, OptimConfig, TokenizerConfig, TrainConfig
from research.models import gpt


def get_config() -> Config:
  return Config(
      objective="lm",
      model=gpt.Config(block_size=128, n_layer=4, n_head=4, n_embd=192, dropout=0.0),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=4096),  # small corpus: a small vocabulary
      optim=OptimConfig(lr=2e-3, warmup_steps=50, min_lr_ratio=0.1, beta2=0.99),
      # 16 x 128 = 2,048 tokens a step; 600 steps = 1.2M tokens, about two epochs.
      train=TrainConfig(steps=600, batch_size=16, log_every=20, eval_every=200, eval_batches=16,
                        checkpoint_every=200),
  )
