"""nanoGPT's CPU "baby GPT" on characters: 4 layers, 4 heads, 128 wide, context 64.

    lineage train experiments/gpt_shakespeare_char data.path=../shared/data/tinyshakespeare.txt

The settings of nanoGPT's README for a laptop CPU (`train_shakespeare_char.py` with
--device=cpu --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0), where it reports a validation loss
of 1.88. Without data.path it trains on the bundled Wikipedia excerpt instead.
The text is split 90/10 by characters, as nanoGPT does.
"""

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import gpt


def get_config() -> Config:
  return Config(
      objective="lm",
      model=gpt.Config(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
      data=DataConfig(txt_unit="document"),  # the whole file is one text, newlines and all
      tokenizer=TokenizerConfig(kind="char"),
      # nanoGPT: learning_rate 1e-3, min_lr 1e-4 (lr / 10), beta2 0.99, warmup 100, decay over all 2000 iters.
      optim=OptimConfig(lr=1e-3, warmup_steps=100, min_lr_ratio=0.1, beta2=0.99, weight_decay=0.1, grad_clip=1.0),
      train=TrainConfig(steps=2000, batch_size=12, log_every=50, eval_every=250, eval_batches=20,
                        checkpoint_every=500),
  )
