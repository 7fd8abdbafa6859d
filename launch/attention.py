"""`lineage attention`: look at where a trained translation model attends.

    lineage attention runs/seq2seq_attention/<run> --src "three hundred twelve"

Translates one sentence and writes a PNG heat map of the attention weights a_t(s) (source
tokens across, target tokens down; Bahdanau et al. 2015, fig. 3), one panel per layer and
head. A model offers its weights through `cross_attention(src, tgt_in)` -> [B, layers,
heads, T, S] (None if it has no attention over the source): the LSTM Seq2Seq has one layer
and one head, a Transformer one panel per decoder layer and head.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from launch.args import positive_int
from launch.bleu import load_run


def attention_map(model, src_ids: list[int], tgt_ids: list[int]):
  """Weights [layers, heads, target tokens + eos, source tokens] of the model reading src and
  producing tgt, or None if the model does not attend over the source."""
  import jax.numpy as jnp
  import numpy as np

  from research.tokenizers import BOS_ID

  if not hasattr(model, "cross_attention"):
    return None
  weights = model.cross_attention(jnp.asarray([src_ids], jnp.int32), jnp.asarray([[BOS_ID] + tgt_ids], jnp.int32))
  return None if weights is None else np.asarray(weights[0])


def plot_attention(weights, src_pieces: list[str], tgt_pieces: list[str], path: Path, title: str) -> None:
  """weights [layers, heads, T, S] -> one grey heat map per (layer, head), a row per layer."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  layers, heads = weights.shape[:2]
  # Wrap many heads onto several rows so a 16-head layer stays readable.
  cols = min(heads, 4)
  rows = layers * math.ceil(heads / cols)
  panel = (1 + 0.45 * len(src_pieces), 1 + 0.4 * len(tgt_pieces))
  fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows + 0.4), squeeze=False)
  for ax in axes.flat:
    ax.set_visible(False)
  for layer in range(layers):
    for head in range(heads):
      ax = axes[layer * math.ceil(heads / cols) + head // cols, head % cols]
      ax.set_visible(True)
      ax.imshow(weights[layer, head], cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
      ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=90)
      ax.set_yticks(range(len(tgt_pieces)), tgt_pieces)
      ax.set_xlabel("source")
      ax.set_ylabel("target")
      if layers * heads > 1:
        ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _attention(args) -> int:
  import numpy as np

  from research.decode import translate
  from research.evaluate.bleu import until_eos

  if not args.src.strip():
    print(f"lineage attention: error: --src {args.src!r} is blank: give a sentence to translate", file=sys.stderr)
    return 2
  cfg, model, src_tok, tgt_tok, step = load_run(Path(args.run_dir), "lineage attention")
  src_ids = src_tok.encode(args.src)
  if len(src_ids) > model.max_src_len:
    print(f"lineage attention: --src is {len(src_ids)} tokens; the model reads the first {model.max_src_len} "
          f"(model.max_src_len)", file=sys.stderr)
    src_ids = src_ids[:model.max_src_len]
  tokens = np.asarray(translate(model, np.asarray([src_ids]), beam_size=args.beam))[0].tolist()
  tgt_ids = until_eos(tokens, tgt_tok.eos_id)
  weights = attention_map(model, src_ids, tgt_ids)
  if weights is None:
    kind = getattr(cfg.model, "attention", None)
    print(f"lineage attention: error: this run's model has no attention over the source"
          f"{f' (model.attention={kind!r})' if kind else ''}", file=sys.stderr)
    return 2
  out = Path(args.out) if args.out else Path(args.run_dir) / "artifacts" / "attention.png"
  translation = tgt_tok.decode(tgt_ids)
  kind = getattr(cfg.model, "attention", cfg.model.name)
  plot_attention(weights, [src_tok.id_to_piece(i) for i in src_ids],
                 [tgt_tok.id_to_piece(i) for i in tgt_ids] + ["</s>"], out,
                 f"{kind} attention, step {step}\n{translation}")
  print(translation)
  print(f"attention heat map: {out}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("attention", help="translate a sentence and plot the attention weights as a PNG")
  p.add_argument("run_dir", help="a translation run directory made by `lineage train`")
  p.add_argument("--src", required=True, help="the source sentence")
  p.add_argument("--out", help="the PNG file (default RUN_DIR/artifacts/attention.png)")
  p.add_argument("--beam", type=positive_int, default=1, help="beam size (1 = greedy)")
  p.set_defaults(run=_attention)
