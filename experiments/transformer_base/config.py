"""The paper's base Transformer (Vaswani et al. 2017, table 3 "base") on WMT14 EN->DE, for a TPU slice.

    lineage tpu run --name mt --zone us-central2-b --runs-dir gs://<bucket>/runs \
        experiments/transformer_base --run-name base
    lineage bleu gs://<bucket>/runs/transformer_base/base --split test --beam 4

Not run here (documented for a TPU run; it needs the network for the hub dataset). What
is the paper's: N=6, d_model 512, d_ff 2048, 8 heads, P_drop 0.1, label smoothing 0.1
(sec 5.4), Adam (0.9, 0.98, 1e-9) on lr = d_model^-0.5 * min(step^-0.5, step * 4000^-1.5)
(sec 5.3), 100,000 steps (sec 5.2), a shared BPE vocabulary of about 37,000 pieces (sec 5.1),
beam 4 with length penalty 0.6 up to source length + 50 (sec 6.1). What differs:
- Batches are fixed-shape (one compiled step): 768 pairs padded to 100 + 100 pieces. At
  WMT's ~30 pieces a sentence that is ~23k source and ~23k target tokens, the paper's ~25k;
  longer training pairs are dropped, longer test sources cut.
- bfloat16 compute, float32 parameters; no checkpoint averaging (the paper averages the last 5).
Its size: about 63M parameters; ~30 TFLOP a step (3x the forward's matmuls over the padded
batch), i.e. ~3 EFLOP for the 100k steps.

A smoke test of the config on a CPU, on the bundled numbers task:

    lineage train experiments/transformer_base data.hub_name= data.bundled=numbers_en_es \
        tokenizer.vocab_size=512 model.n_layer=1 model.n_embd=64 model.d_ff=256 model.n_head=2 \
        model.max_src_len=16 model.max_tgt_len=16 train.batch_size=8 train.steps=20 train.compute_dtype=float32
"""

from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import transformer
from research.objectives.translation import Config as Translation


def get_config() -> Config:
  return Config(
      objective=Translation(label_smoothing=0.1),
      model=transformer.Config(n_layer=6, n_head=8, n_embd=512, d_ff=2048, dropout=0.1, max_src_len=100,
                               max_tgt_len=100, norm="post", positions="sinusoidal"),
      data=DataConfig(hub_name="wmt14", hub_config="de-en", source_column="en", target_column="de"),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=37_000, max_train_chars=100_000_000),
      optim=OptimConfig(schedule="inverse_sqrt", lr=1.0, warmup_steps=4000, beta1=0.9, beta2=0.98, eps=1e-9,
                        weight_decay=0.0, grad_clip=0.0),
      train=TrainConfig(steps=100_000, batch_size=768, compute_dtype="bfloat16", log_every=100, eval_every=5000,
                        eval_batches=4, checkpoint_every=2000),
  )
