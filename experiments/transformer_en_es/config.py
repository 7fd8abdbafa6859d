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
seq2seq_attention's tokenizer, lengths, batch and steps:

    lineage train experiments/transformer_en_es data.path=../shared/data/bible_en_es.tsv \
        tokenizer.vocab_size=4000 model.max_src_len=48 model.max_tgt_len=48 train.steps=1800 \
        train.eval_every=600 train.checkpoint_every=600 train.run_name=bible
    lineage bleu runs/transformer_en_es/bible --split test --beam 4

Measured 2026-12-02 against seq2seq_attention's Bible run (1,800 steps, 3.70e13 FLOPs; test
BLEU 11.0 greedy / 13.5 beam 4, valid nll 3.26), 2-core AMD EPYC shared with other jobs, with
`model.norm=pre optim.lr=0.8 optim.warmup_steps=200 model.dropout=0.0 train.steps=1900
train.checkpoint_every=100 train.keep_checkpoints=25` (1,900 steps = 3.55e13 FLOPs, fewer
than the LSTM's): valid nll 3.24, valid BLEU 13.3 (LSTM 11.6), but test BLEU 9.8 greedy /
9.7 beam 4, and with the last 5 checkpoints averaged (`lineage bleu --average 5`, sec 6.1)
10.9 greedy / 11.5 beam 4: the Transformer does NOT beat the LSTM on test at equal FLOPs yet.
Its beam outputs are short (brevity penalty 0.81 unaveraged). With dropout 0.1 and lr 0.6:
valid BLEU 12.9, test 9.4 / 10.4 (10.7 averaged). Post-LN at lr 0.3-0.5 learned slower (valid
nll 4.62 at step 600 vs 4.20 pre-LN). Beam alpha on valid: 0.6 14.4, 1.0 14.6, 1.4 13.5 (LSTM
14.5 / 14.6 / 13.9). Curves by FLOPs: `lineage compare runs/seq2seq_attention/bible
runs/transformer_en_es/bible_nodrop --x flops --plot eval/bleu,eval/accuracy --at max`.

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
