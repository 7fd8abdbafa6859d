"""BERT fine-tuned for extractive question answering on the bundled cloze questions (SQuAD format).

    lineage train experiments/bert_qa train.init_from=runs/bert_wiki/<run>

fine-tunes the encoder of a bert_wiki pretraining run (its tokenizer and model settings too)
with a fresh span head (`train.init_skip=span/*`, set below). The same from random
initialisation, at equal steps, for the comparison pretraining must win:

    lineage train experiments/bert_qa objective.tokenizer_from=runs/bert_wiki/<run>

(the pretraining run's tokenizer, no weights: only the initialisation differs), or with
neither setting, a BPE tokenizer trained on the training contexts and questions.

Data: the bundled "enwiki_cloze" set (research/data/enwiki_cloze.py), cloze questions in the
manner of Lewis et al. 2019 on paragraphs of the bundled Wikipedia articles: 1,462 training
questions on bert_wiki's training articles, 372 held-out ones on its 10 validation articles,
which pretraining never saw. Windows of 128 tokens, a new one every 64 context tokens: 3,768
training windows (32 a step: ~118 steps an epoch) and 1,141 held-out ones. Held-out exact match
and F1 (the official SQuAD v1.1 script's, in percent) are computed over all 372 questions at
each evaluation, and the predictions written to <run>/eval/predictions_step<N>.json;
`lineage eval runs/bert_qa/<run>` scores the last checkpoint again (`--task squad:FILE` on
another SQuAD file). SQuAD itself: `data.path=train-v1.1.json objective.eval_split=dev-v1.1.json`
(or `data.hub_name=squad`, with network), with a model bigger than this one.

Measured 2026-12-02 (2-core CPU shared with other jobs: 0.27 s a step, ~3 minutes a run), from
a bert_wiki run of `train.steps=600` (held-out MLM accuracy 0.117, NSP 0.502), held-out exact
match / F1 over the 372 questions at step 200 and at the end, step 600:
  fine-tuned from bert_wiki            7.3 / 12.7    6.7 / 12.4
  random init, bert_wiki's tokenizer   8.9 / 14.2    6.7 / 12.7
(random init with a tokenizer trained on the QA texts: 9.1 / 14.1 at step 600). So this short a
pretraining does NOT help yet: one question is 0.27 points of EM, and an EM near 7% over 372
questions has a standard error of ~1.3 points. Both runs overfit after step ~200 (held-out loss
1.77 -> 2.37 and 1.78 -> 2.02).

Again with bert_wiki's committed 1,500 steps (held-out MLM accuracy 0.133, NSP 0.556;
AMD EPYC, one core a run), EM / F1 at the best evaluation (step) and at step 600:
  lr 1e-3, fine-tuned          7.8 / 12.8 (200)   5.4 / 10.5
  lr 1e-3, random init         9.4 / 14.4 (100)   6.7 / 12.7
  lr 3e-4, fine-tuned          6.5 / 11.4 (300)   6.2 / 11.2
  lr 3e-4, random init         9.4 / 14.2 (200)   7.8 / 13.3
so the longer pretraining does not help either: the fine-tuned run starts from a worse
held-out loss (1.98 vs 1.87 at step 100, lr 3e-4). bert_wiki's MLM loss flattens near 6.4
nats from step ~700 on (the unigram entropy of its pieces is ~6.9; GPT on the same tokens
reaches 5.5), so the encoder holds little more than token frequencies. The train step itself
matches Hugging Face's BertForPreTraining over 21 steps (benchmarks/bert_step.py), so the
pretraining recipe and scale are what to change before tuning this fine-tuning.
"""

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import bert
from research.objectives import extractive_qa


def get_config() -> Config:
  return Config(
      objective=extractive_qa.Config(seq_len=128, doc_stride=64),  # the whole position table of bert_wiki's model
      model=bert.sized("tiny", max_len=128, dropout=0.0),  # as bert_wiki; replaced by init_from's
      data=DataConfig(bundled="enwiki_cloze"),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=4096),  # only without a run to take one from
      optim=OptimConfig(lr=1e-3, warmup_steps=30, min_lr_ratio=0.0, beta2=0.999, weight_decay=0.01),
      # 600 steps of 32 windows: ~5 epochs of the 3,768 training windows.
      train=TrainConfig(steps=600, batch_size=32, log_every=20, eval_every=200, checkpoint_every=600,
                        init_skip="span/*"),
  )
