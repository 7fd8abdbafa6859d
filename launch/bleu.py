"""`lineage bleu`: BLEU of a trained translation run on one of its splits.

    lineage bleu runs/seq2seq_attention/<run> --split test --beam 4

Translates the whole split (greedy, or beam search with GNMT's length penalty) and prints its
BLEU (sacrebleu), saving the score as JSON and the translations as text in the run's artifacts.
Works for any model of the translation objective (research.decode.EncoderDecoder). `--step N`
scores an earlier checkpoint, `--average K` the mean of the K kept up to it (Vaswani et al.
2017 average the last 5).
"""

from __future__ import annotations

import json
from pathlib import Path

from launch.args import nonnegative_int, positive_int

DEFAULT_ALPHA = 0.6  # GNMT's length penalty exponent, as Vaswani et al. 2017 use it


def load_run(run_dir: Path, command: str = "lineage bleu", step: int | None = None, average: int = 1):
  """(config, model with the latest checkpoint's (or `step`'s, or the mean of `average` up to it) parameters,
  source and target tokenizers, step)."""
  from research.objectives.translation import load_tokenizers
  from research.run import load_run as load

  run = load(run_dir, ("translation",), command, step, average)
  src_tok, tgt_tok = load_tokenizers(run.dir)
  return run.cfg, run.model, src_tok, tgt_tok, run.step


def _bleu(args) -> int:
  from research.data.pairs import load_pairs
  from research.evaluate.bleu import corpus_bleu, translate_texts

  cfg, model, src_tok, tgt_tok, step = load_run(Path(args.run_dir), step=args.step, average=args.average)
  pairs = load_pairs(cfg.data)[args.split]
  hypotheses = translate_texts(model, [s for s, _ in pairs], src_tok, tgt_tok, batch_size=args.batch_size,
                               beam_size=args.beam, alpha=args.alpha)
  score = corpus_bleu(hypotheses, [t for _, t in pairs])
  result = {"split": args.split, "pairs": len(pairs), "beam": args.beam, "alpha": args.alpha, "step": step,
            "average": args.average, "bleu": score}
  suffix = ((f"_alpha{args.alpha:g}" if args.beam > 1 and args.alpha != DEFAULT_ALPHA else "")
            + (f"_step{step}" if args.step is not None else "") + (f"_avg{args.average}" if args.average > 1 else ""))
  out = Path(args.run_dir) / "artifacts" / f"bleu_{args.split}_beam{args.beam}{suffix}.json"
  out.write_text(json.dumps(result) + "\n")
  (out.with_suffix(".txt")).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
  print(json.dumps(result))
  print(f"translations: {out.with_suffix('.txt')}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("bleu", help="BLEU of a translation run on its valid or test split")
  p.add_argument("run_dir", help="a translation run directory made by `lineage train`")
  p.add_argument("--split", default="test", choices=("train", "valid", "test"))
  p.add_argument("--beam", type=positive_int, default=1, help="beam size (1 = greedy)")
  p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="length penalty exponent (Wu et al. 2016)")
  p.add_argument("--batch-size", type=positive_int, default=32)
  p.add_argument("--step", type=nonnegative_int, default=None,
                 help="translate with this step's checkpoint (default: the latest); e.g. to compare at equal wall time")
  p.add_argument("--average", type=positive_int, default=1,
                 help="average the parameters of this many checkpoints up to the step (the paper averages 5)")
  p.set_defaults(run=_bleu)
