"""`lineage export`: a run's model in another library's format.

    lineage export runs/bert_wiki/<run> --to hf OUT_DIR

`--to hf` writes a BERT run as a Hugging Face directory (config.json, model.safetensors)
that `transformers.BertForPreTraining.from_pretrained(OUT_DIR)` loads, with the run's
tokenizer under OUT_DIR/artifacts/tokenizer, so OUT_DIR also works as `train.init_from`.
Weights of the latest checkpoint; research/interop/hf_bert.py holds the name mapping.
"""

from __future__ import annotations

from pathlib import Path


def _export(args) -> int:
  from research.interop import hf_bert
  from research.run import RunError, load_run
  from research.tokenizers import load_tokenizer

  run = load_run(args.run_dir, command="lineage export")
  if run.cfg.model.name != "bert":
    raise RunError(f"{run.dir} holds a {run.cfg.model.name!r} model; --to hf exports BERT runs")
  out = hf_bert.save_pretrained(run.model, run.cfg.model, args.out_dir, load_tokenizer(run.artifacts / "tokenizer"))
  print(f"wrote {run.dir} at step {run.step} to {out} (config.json, model.safetensors, artifacts/tokenizer/); "
        f"load it with transformers.BertForPreTraining.from_pretrained({str(out)!r})")
  return 0


def register(commands) -> None:
  p = commands.add_parser("export", help="write a run's model in another library's format (BERT -> Hugging Face)",
                          description=__doc__.split("\n\n")[0])
  p.add_argument("run_dir", help="a run directory of a BERT experiment, e.g. runs/bert_wiki/<run>")
  p.add_argument("--to", required=True, choices=["hf"], help="the format: hf = Hugging Face transformers")
  p.add_argument("out_dir", type=Path, help="the directory to write (created if missing)")
  p.set_defaults(run=_export)
