"""BERT fine-tuned to tell positive from negative movie-review sentences (the bundled polarity set).

    lineage train experiments/bert_polarity train.init_from=runs/bert_wiki/<run>

fine-tunes the encoder and pooler of a bert_wiki pretraining run (its tokenizer and model
settings too) with a fresh classifier (`train.init_skip=classifier/*`, set below). The same
from random initialisation, for the comparison pretraining must win:

    lineage train experiments/bert_polarity objective.tokenizer_from=runs/bert_wiki/<run>

(the pretraining run's tokenizer, no weights: only the initialisation differs), or with
neither setting, a BPE tokenizer trained on the 150 training sentences (`tokenizer` below).

Data: gensim's 200 sentences of Pang & Lee's sentence polarity set, 100 negative and 100
positive; a fixed 25% of each label (50 sentences) held out (objective.split_seed picks
which). Held-out accuracy and F1 of "pos" are computed over all 50 at each evaluation; the
majority label scores 0.5. The model below is bert_wiki's (BERT-Tiny, 128 positions), so
the random-init run is the same network.
"""

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import bert
from research.objectives import classification


def get_config() -> Config:
  return Config(
      objective=classification.Config(dropout=0.1),  # on the pooled [CLS], as BERT fine-tuning
      model=bert.sized("tiny", max_len=128, dropout=0.0),  # as bert_wiki; replaced by init_from's
      data=DataConfig(bundled="polarity"),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=2000),  # only without a run to take one from
      optim=OptimConfig(lr=1e-4, warmup_steps=10, min_lr_ratio=0.0, beta2=0.999, weight_decay=0.01),
      # 150 training sentences, 16 a step: ~9 steps an epoch, 100 steps ~ 11 epochs.
      train=TrainConfig(steps=100, batch_size=16, log_every=10, eval_every=20, checkpoint_every=100,
                        init_skip="classifier/*"),
  )
