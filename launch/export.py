"""`lineage export RUN --to hf OUT_DIR`: a run's model as a Hugging Face `transformers` directory.

    lineage export runs/bert_wiki/<run> --to hf exported/bert_wiki   # BertForPreTraining.from_pretrained
    lineage export runs/gpt_wiki/<run> --to hf exported/gpt_wiki     # GPT2LMHeadModel.from_pretrained

One exporter per architecture, found by the run's `model.name` in EXPORTERS; each takes the
loaded run (weights of its latest checkpoint) and the output directory, writes config.json,
model.safetensors and the run's tokenizer under OUT_DIR/artifacts/tokenizer (so OUT_DIR also
works as `train.init_from`), and returns what it wrote. The name mappings live in
research/interop/hf_bert.py and hf_gpt2.py.
"""

from __future__ import annotations

from pathlib import Path


def export_bert(run, out_dir: Path) -> str:
  from research.interop import hf_bert
  from research.tokenizers import load_tokenizer

  hf_bert.save_pretrained(run.model, run.cfg.model, out_dir, load_tokenizer(run.artifacts / "tokenizer"))
  return "a transformers BertForPreTraining (config.json, model.safetensors) and the tokenizer in artifacts/tokenizer"


def export_gpt2(run, out_dir: Path) -> str:
  from flax import nnx

  from research.interop import hf_gpt2

  hf_gpt2.export(run.cfg.model, nnx.state(run.model, nnx.Param), out_dir, run.artifacts / "tokenizer")
  return "a transformers GPT2LMHeadModel (config.json, model.safetensors) and the tokenizer in artifacts/tokenizer"


EXPORTERS = {"bert": export_bert, "gpt": export_gpt2}


def _export(args) -> int:
  from research.run import RunError, load_config, load_run

  cfg = load_config(args.run_dir, command="lineage export")
  exporter = EXPORTERS.get(cfg.model.name)
  if exporter is None:
    raise RunError(f"{args.run_dir} holds a {cfg.model.name!r} model; lineage export --to hf knows "
                   f"{', '.join(EXPORTERS)}")
  run = load_run(args.run_dir, command="lineage export")
  what = exporter(run, Path(args.out_dir))
  print(f"{args.out_dir}: {what}, from {run.dir} at step {run.step}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("export", help="write a run's model as a Hugging Face transformers directory")
  p.add_argument("run_dir", help="a run directory made by `lineage train` (a BERT or GPT run)")
  p.add_argument("--to", required=True, choices=("hf",), help="the format (hf: transformers save_pretrained layout)")
  p.add_argument("out_dir", help="the directory to write (created; files in it are replaced)")
  p.set_defaults(run=_export)
