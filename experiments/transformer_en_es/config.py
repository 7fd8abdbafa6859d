"""A small Transformer (Vaswani et al. 2017) for EN->ES, trained with teacher forcing.

    lineage train experiments/transformer_en_es

The paper's recipe at a CPU's size: post-LN, sinusoidal positions, one shared BPE
vocabulary with tied sqrt(d)-scaled embeddings, dropout 0.1, label smoothing 0.1, Adam
(0.9, 0.98, 1e-9) on the inverse square root schedule (optim.lr is its scale: 0.3, as the
warmup is shortened to fit these short runs), no weight decay, no clipping. Tests decode
with beam 4, alpha 0.6, up to source length + 50 tokens (sec 6.1).

Default data: the bundled, generated EN->ES number-words task (research/data/translation.py),
which needs no network.
On the English-Spanish Bible (shared/data/bible_en_es.tsv, split by books; README there), with
seq2seq_attention's tokenizer, lengths and batch, one encoder and one decoder layer at equal
training FLOPs to seq2seq_attention's 1,800 steps:

    lineage train experiments/transformer_en_es data.path=../shared/data/bible_en_es.tsv \
        tokenizer.vocab_size=4000 model.max_src_len=48 model.max_tgt_len=48 model.n_layer=1 \
        model.norm=pre model.dropout=0.0 objective.label_smoothing=0.0 optim.schedule=cosine \
        optim.lr=3e-3 optim.min_lr_ratio=0.1 optim.warmup_steps=200 train.steps=3900 \
        train.eval_every=1300 train.checkpoint_every=100 train.run_name=l1
    lineage bleu runs/transformer_en_es/l1 --split test --beam 4

Measured 2026-12-03 on a 2-core AMD EPYC, each run pinned to one core with one other training
run on the other core; test BLEU (sacrebleu, 170 verses of Ruth, Jonah, Philemon, 3 John)
greedy / beam 4 (alpha 0.6), valid nll; seeds 0, 1, 2 (train.seed):

    run                              FLOPs    train s  valid nll         test greedy        test beam 4
    LSTM + attention, 1,800 steps    3.70e13  285-321  3.26 3.19 3.23    11.0 12.1 12.4     13.5 13.7 14.1  (mean 13.8)
    Transformer 1+1, 3,900 steps     3.67e13  366-385  2.81 2.86 2.90    14.5 13.4 13.6     15.0 13.7 14.2  (mean 14.3)
    Transformer 1+1, 3,100 steps     2.92e13  266      2.90              13.0               14.3

so the Transformer leads at equal FLOPs (3,900 steps) and at equal training seconds (3,100
steps, 266 s against the LSTM's 285 s measured alongside it): valid nll by 0.37 nats, test
greedy by 2.0 BLEU, test beam 4 by 0.5 on the seed means (seed 1: a tie). Curves by FLOPs:
docs/translation_by_flops.png, from

    lineage compare runs/seq2seq_attention/bible runs/transformer_en_es/l1 \
        runs/transformer_en_es/l1_3100 --x flops --plot eval/loss,train/loss,eval/bleu --at max

What got it there, each at equal FLOPs (seed 0; test beam 4 / valid nll):
- Depth: 3+3 layers (1,900 steps) 12.1 / 3.07, 2+2 (2,600 steps) 13.6 / 2.89, 1+1 (3,900)
  15.0 / 2.81. At ~2 epochs of this corpus, steps are worth more than layers; the 3+3 model
  loses to the LSTM on all three seeds (mean 12.0 vs 13.8) though its valid nll is better,
  mostly by short beam outputs (length ratio 0.88 against the LSTM's 0.96).
- The LSTM's cosine schedule instead of the paper's inverse square root: it anneals, where
  inverse_sqrt (lr 0.8, warmup 200) ends at valid nll 3.24, test beam 9.7 (11.5 with the
  last 5 checkpoints averaged).
- No dropout, no label smoothing: dropout 0.1 gave valid nll 3.20 vs 3.07 (3+3 layers);
  label smoothing 0.1 3.10 (test beam 11.7 vs 12.1). Pre-LN: post-LN at lr 0.3-0.5 learned
  slower (valid nll 4.62 at step 600 vs 4.20).
- Batch 16 for twice the steps (3+3 layers): valid nll 3.06, test beam 12.4: no better.

The base-size model of the paper: experiments/transformer_base.
"""

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import transformer
from research.objectives.translation import Config as Translation


def get_config() -> Config:
  return Config(
      objective=Translation(label_smoothing=0.1),  # sec 5.4
      # 3 + 3 layers of width 128: per step, fewer FLOPs than seq2seq_attention's LSTM on the
      # same batches (the output layer over the 4,000-piece vocabulary is most of both).
      model=transformer.Config(n_layer=3, n_head=4, n_embd=128, d_ff=512, dropout=0.1,
                               max_src_len=16, max_tgt_len=16),
      data=DataConfig(bundled="numbers_en_es"),
      # Number words have few distinct pieces; 512 leaves room past the 256 byte pieces.
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=512),
      # lr is the schedule's scale: the paper's 1.0, with this short warmup and d_model 128, peaks
      # at 4.4e-3, where training diverged after step 400 on the numbers task (measured); 0.3 peaks at 1.3e-3.
      optim=OptimConfig(schedule="inverse_sqrt", lr=0.3, warmup_steps=400, beta1=0.9, beta2=0.98, eps=1e-9,
                        weight_decay=0.0, grad_clip=0.0),
      train=TrainConfig(steps=1000, batch_size=32, log_every=20, eval_every=250, eval_batches=8,
                        checkpoint_every=250),
  )
