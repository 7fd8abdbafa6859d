"""`lineage attention` and `lineage bleu`: look inside a trained translation run.

    lineage attention runs/seq2seq_attention/<run> --src "three hundred twelve"
    lineage bleu runs/seq2seq_attention/<run> --split test --beam 4

`attention` translates one sentence and writes a PNG heat map of the attention weights
a_t(s) (source tokens across, target tokens down; Bahdanau et al. 2015, fig. 3).
`bleu` translates a whole split and prints its BLEU (sacrebleu), saving it as JSON in the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_run(run_dir: Path):
  """(config, model with the latest checkpoint's parameters, source and target tokenizers, step)."""
  from flax import nnx

  from research import config as config_lib
  from research.objectives.translation import build_model, load_tokenizers
  from research.train.checkpoint import restore_params

  run_dir = Path(run_dir)
  if not (run_dir / "config.json").exists():
    raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
  cfg = config_lib.load(run_dir / "config.json")
  if cfg.objective != "translation":
    raise FileNotFoundError(f"{run_dir} is a {cfg.objective!r} run; these commands need a translation run")
  src_tok, tgt_tok = load_tokenizers(run_dir)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0))), nnx.Param)
  params, step = restore_params(run_dir, abstract)
  return cfg, nnx.merge(graphdef, params), src_tok, tgt_tok, step


def attention_map(model, src_ids: list[int], tgt_ids: list[int]):
  """Weights [target tokens + eos, source tokens] of the model reading src and producing tgt."""
  import jax.numpy as jnp
  import numpy as np

  from research.tokenizers import BOS_ID

  src = jnp.asarray([src_ids], jnp.int32)
  tgt_in = jnp.asarray([[BOS_ID] + tgt_ids], jnp.int32)
  _, weights = model(src, tgt_in, return_attention=True)
  return np.asarray(weights[0])


def plot_attention(weights, src_pieces: list[str], tgt_pieces: list[str], path: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(1 + 0.45 * len(src_pieces), 1 + 0.4 * len(tgt_pieces)))
  ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=90)
  ax.set_yticks(range(len(tgt_pieces)), tgt_pieces)
  ax.set_xlabel("source")
  ax.set_ylabel("target")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _attention(args) -> int:
  import numpy as np

  from research.decode import translate
  from research.evaluate.bleu import until_eos

  cfg, model, src_tok, tgt_tok, step = load_run(Path(args.run_dir))
  if getattr(model, "attention", None) is None:
    print(f"lineage attention: error: this run has no attention (model.attention={cfg.model.attention!r})",
          file=sys.stderr)
    return 2
  src_ids = src_tok.encode(args.src)[:cfg.model.max_src_len]
  tokens = np.asarray(translate(model, np.asarray([src_ids]), beam_size=args.beam))[0].tolist()
  tgt_ids = until_eos(tokens, tgt_tok.eos_id)
  weights = attention_map(model, src_ids, tgt_ids)
  out = Path(args.out) if args.out else Path(args.run_dir) / "artifacts" / "attention.png"
  translation = tgt_tok.decode(tgt_ids)
  plot_attention(weights, [src_tok.id_to_piece(i) for i in src_ids],
                 [tgt_tok.id_to_piece(i) for i in tgt_ids] + ["</s>"], out,
                 f"{cfg.model.attention} attention, step {step}\n{translation}")
  print(translation)
  print(f"attention heat map: {out}")
  return 0


def _bleu(args) -> int:
  from research.data.translation import load_pairs
  from research.evaluate.bleu import corpus_bleu, translate_texts

  cfg, model, src_tok, tgt_tok, step = load_run(Path(args.run_dir))
  pairs = load_pairs(cfg.data)[args.split]
  hypotheses = translate_texts(model, [s for s, _ in pairs], src_tok, tgt_tok, batch_size=args.batch_size,
                               beam_size=args.beam, alpha=args.alpha)
  score = corpus_bleu(hypotheses, [t for _, t in pairs])
  result = {"split": args.split, "pairs": len(pairs), "beam": args.beam, "alpha": args.alpha, "step": step,
            "bleu": score}
  out = Path(args.run_dir) / "artifacts" / f"bleu_{args.split}_beam{args.beam}.json"
  out.write_text(json.dumps(result) + "\n")
  (out.with_suffix(".txt")).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
  print(json.dumps(result))
  print(f"translations: {out.with_suffix('.txt')}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("attention", help="translate a sentence and plot the attention weights as a PNG")
  p.add_argument("run_dir", help="a translation run directory made by `lineage train`")
  p.add_argument("--src", required=True, help="the source sentence")
  p.add_argument("--out", help="the PNG file (default RUN_DIR/artifacts/attention.png)")
  p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
  p.set_defaults(run=_attention)

  p = commands.add_parser("bleu", help="BLEU of a translation run on its valid or test split")
  p.add_argument("run_dir", help="a translation run directory made by `lineage train`")
  p.add_argument("--split", default="test", choices=("train", "valid", "test"))
  p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
  p.add_argument("--alpha", type=float, default=0.6, help="length penalty exponent (Wu et al. 2016)")
  p.add_argument("--batch-size", type=int, default=32)
  p.set_defaults(run=_bleu)
