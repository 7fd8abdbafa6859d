"""The `lineage` command: train an experiment, sample from a run.

    lineage train experiments/gpt_wiki model.n_layer=6 train.steps=2000
    lineage sample runs/gpt_wiki/<run> --prompt "The history of"

Errors a user can fix (a bad config key, a missing data file, a diverged run) are printed
as one line naming what to change, with exit status 2 (usage) or 1 (the run failed).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from launch.args import nonnegative_float, nonnegative_int, positive_int, probability

EXTRA_COMMANDS: tuple[str, ...] = ("launch.compare", "launch.runs", "launch.neighbors", "launch.attention", "launch.bleu",
                                  "launch.eval", "launch.export", "launch.tpu")


def _train(args) -> int:
  from research.train.host_memory import reuse_freed_memory

  reuse_freed_memory()  # before jax starts its threads: XLA:CPU's per-step scratch without page faults
  import jax

  if args.distributed:  # every host of a TPU pod slice runs the same command
    jax.distributed.initialize()
  from research.config import load_experiment
  from research.train.loop import train

  cfg = load_experiment(args.experiment, args.overrides)
  result = train(cfg, run_dir=Path(args.run_dir) if args.run_dir else None)
  final = ", ".join(f"{k} {v:.4f}" for k, v in result.eval.items())
  print(f"{result.status} at step {result.step}: {final}")
  print(f"run directory: {result.run_dir}  (metrics.jsonl, tb/, checkpoints/, config.json)")
  return 0 if result.status == "done" else 3


def _print_stream(chunks, tokenizer, first: list[int]) -> None:
  """Prints each chunk's text as it arrives; an incomplete UTF-8 character waits for its bytes."""
  ids, shown = list(first), ""
  for chunk in chunks:
    ids += chunk[0].tolist()
    text = tokenizer.decode(ids[1:]).rstrip("\ufffd")
    print(text[len(shown):], end="", flush=True)
    shown = text
  print(tokenizer.decode(ids[1:])[len(shown):])


def _sample(args) -> int:
  import jax.numpy as jnp
  import numpy as np

  from research.decode import SamplingConfig, generate, generate_stream
  from research.run import load_run
  from research.tokenizers import load_tokenizer

  run = load_run(args.run_dir, ("lm",), "lineage sample")
  run_dir, cfg, model, step = run.dir, run.cfg, run.model, run.step
  tokenizer = load_tokenizer(run.artifacts / "tokenizer")
  # Start after eos, the document boundary the model saw in training (research/data/lm.py puts
  # eos after every document; it never saw bos). An empty prompt samples a document from scratch.
  ids = [tokenizer.eos_id] + tokenizer.encode(args.prompt)
  block = cfg.model.block_size
  problem = prompt_problem(args.prompt, len(ids), block)
  if problem:
    print(f"lineage sample: error: {problem}", file=sys.stderr)
    return 2
  new = min(args.max_new_tokens, block - len(ids))
  sampling = SamplingConfig(max_new_tokens=new, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
  batch = 1 if args.stream else min(args.batch or args.num_samples, args.num_samples)
  if args.stream and args.batch > 1:
    print("lineage sample: error: --stream prints one sample as it is drawn; use --batch 1", file=sys.stderr)
    return 2
  print(f"# {run_dir} at step {step}; {sampling}; seed {args.seed}"
        + (f" (+1 per batch of {batch})" if batch < args.num_samples else ""), file=sys.stderr)
  prompt = jnp.asarray([ids] * batch, jnp.int32)
  # Batch j draws with seed + j; every batch has the same shape, so one program serves them all.
  for j in range(-(-args.num_samples // batch)):
    if args.stream:
      _print_stream(generate_stream(model, prompt, sampling, seed=args.seed + j, chunk=args.stream_chunk),
                    tokenizer, ids)
      print("---")
      continue
    rows = np.asarray(generate(model, prompt, sampling, seed=args.seed + j)).tolist()
    for row in rows[:args.num_samples - j * batch]:
      print(tokenizer.decode(row[1:]))
      print("---")
  return 0


def prompt_problem(prompt: str, n_ids: int, block: int) -> str | None:
  """What is wrong with a prompt of `n_ids` tokens (the start token included), or None."""
  if prompt and n_ids == 1:
    return f"--prompt {prompt!r} encodes to no token: give some text, or leave --prompt out to sample from scratch"
  if n_ids >= block:
    return (f"--prompt is {n_ids - 1} tokens, too long for the model's context of {block} "
            f"(model.block_size): give at most {block - 2}, to leave room for a new token")
  return None


class _Parser(argparse.ArgumentParser):
  """argparse with one-line errors: `lineage CMD: error: ...` and exit 2, no usage block
  (`--help` still prints it), like every other error of the commands."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog="lineage", description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

  p = commands.add_parser("train", help="train an experiment (resumes if the run directory has checkpoints)")
  p.add_argument("experiment", help="an experiment directory holding config.py, e.g. experiments/gpt_wiki")
  p.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. train.steps=100")
  p.add_argument("--run-dir", help="the run directory (default runs/<experiment>/<train.run_name or time>)")
  p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host TPU)")
  p.set_defaults(run=_train)

  p = commands.add_parser("sample", help="generate text from a trained language model")
  p.add_argument("run_dir", help="a run directory made by `lineage train`")
  p.add_argument("--prompt", default="",
                 help='text to continue, as the start of a document; "" (the default) samples a document from scratch')
  p.add_argument("--max-new-tokens", type=positive_int, default=200,
                 help="tokens to generate (fewer if the model's context fills up first)")
  p.add_argument("--temperature", type=nonnegative_float, default=0.8, help="0 = greedy")
  p.add_argument("--top-k", type=nonnegative_int, default=0, help="sample from the k most likely tokens (0 = all)")
  p.add_argument("--top-p", type=probability, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
  p.add_argument("--num-samples", type=positive_int, default=1)
  p.add_argument("--batch", type=nonnegative_int, default=0, help="samples drawn per call (default: all at once)")
  p.add_argument("--stream", action="store_true", help="print each sample's tokens as they are drawn")
  p.add_argument("--stream-chunk", type=positive_int, default=8, help="tokens per decoding call when streaming")
  p.add_argument("--seed", type=int, default=0)
  p.set_defaults(run=_sample)

  # Commands of later objectives live in their own modules, each with `register(commands)`.
  for name in EXTRA_COMMANDS:
    importlib.import_module(name).register(commands)

  args = parser.parse_args(argv)
  from research.config import ConfigError
  from research.data.text import DataError
  from research.run import RunError
  from research.tokenizers import TokenizerError
  from research.train.checkpoint import CheckpointError
  from research.train.lock import RunLockedError
  from research.train.loop import NonFiniteError

  try:
    return args.run(args)
  except (ConfigError, DataError, TokenizerError, RunError, RunLockedError) as e:
    print(f"lineage {args.command}: error: {e}", file=sys.stderr)
    return 2
  except (NonFiniteError, FileNotFoundError, CheckpointError) as e:
    print(f"lineage {args.command}: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
