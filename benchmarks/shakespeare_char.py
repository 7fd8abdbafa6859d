"""nanoGPT's CPU "baby GPT" on tiny Shakespeare, 2000 iterations: final validation loss and wall time.

    python benchmarks/shakespeare_char.py [--data ../shared/data/tinyshakespeare.txt]

nanoGPT's README reports a validation loss of 1.88 for this setup (4 layers, 4 heads,
128 wide, context 64, batch 12, 2000 iterations, lr 1e-3 decaying to 1e-4, no dropout),
estimated there on 20 random batches; here the final number is the mean over the whole
validation split (the last 10% of characters), and every 250 steps over 20 batches spread
through it. Ends with one line of JSON holding the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import thread_settings  # noqa: E402
from research.config import load_experiment  # noqa: E402
from research.train.loop import train  # noqa: E402
from research.train.metrics import read_metrics  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", default=str(ROOT.parent / "shared/data/tinyshakespeare.txt"))
  parser.add_argument("--steps", type=int, default=2000)
  args = parser.parse_args()
  if not Path(args.data).is_file():
    sys.exit(f"shakespeare_char: no text at {args.data}; pass --data PATH (tiny Shakespeare)")

  with tempfile.TemporaryDirectory() as runs:
    cfg = load_experiment(ROOT / "experiments/gpt_shakespeare_char",
                          [f"data.path={args.data}", f"train.steps={args.steps}", f"train.runs_dir={runs}",
                           "train.progress=false", f"train.checkpoint_every={args.steps}"])
    t = time.perf_counter()
    result = train(cfg, log=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - t
    rows = read_metrics(result.run_dir)

    # The final figure over the whole validation split, not a sample of it.
    from research.objectives.lm import Task
    from research.train.loop import prepare
    from research.train.sharding import make_mesh, put_batch
    import jax
    import numpy as np
    cfg.train.eval_batches = 0
    task = Task(cfg, log=lambda *_: None)
    p = prepare(cfg, task, make_mesh(cfg.mesh))
    losses = [float(p.eval(result.state["params"], put_batch(b, p.data_sharding))["loss"]) for b in task.eval_batches()]
    full_val = float(np.mean(losses))

  speeds = [r["perf/tokens_per_second"] for r in rows if "perf/tokens_per_second" in r]
  mfus = [r["perf/mfu"] for r in rows if "perf/mfu" in r]
  evals = {r["step"]: r["eval/loss"] for r in rows if "eval/loss" in r}
  figures = {
      "benchmark": "shakespeare_char", "steps": args.steps, "val_loss": round(full_val, 4),
      "val_loss_sampled_final": round(evals[max(evals)], 4), "val_batches": len(losses),
      "nanogpt_reported_val_loss": 1.88, "wall_seconds": round(wall, 1),
      "tokens_per_second_median": round(statistics.median(speeds), 1), "mfu_median": round(statistics.median(mfus), 4),
      "eval_curve": {str(k): round(v, 4) for k, v in sorted(evals.items())}, **thread_settings(),
  }
  print(f"final validation loss {full_val:.4f} over {len(losses)} batches (nanoGPT reports 1.88); "
        f"wall {wall:.0f}s; median {figures['tokens_per_second_median']:,.0f} tokens/s")
  print(json.dumps(figures))


if __name__ == "__main__":
  main()
