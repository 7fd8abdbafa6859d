"""A/B of two Python environments, XLA settings or source trees on lineage's GPT step.

    python benchmarks/python_ab.py --b /path/to/other/venv/bin/python [--configs baby,big] [--rounds 7]
    python benchmarks/python_ab.py --b-xla-flags=--xla_cpu_prefer_vector_width=512 [--dtype bfloat16]

The second form runs this interpreter on both sides, B with XLA_FLAGS extended by the given
flags: an A/B of an XLA setting against the default under the same conditions.

    python benchmarks/python_ab.py --b-tree /path/to/other/checkout

times B from another source tree (e.g. `git worktree add /tmp/base HEAD`): an A/B of a code
change. B's tree needs this file (copy it in if its own is older).

One worker process per interpreter (this one is A, --b is B) builds the GPT train step of
benchmarks/synthetic_gpt.py from this source tree, as `lineage train` would run it (its
malloc settings, research.train.loop.prepare, one device), compiles it and waits. The
parent then asks them in turn, A B A B ... with the order swapped every round, to time a
block of steps, so both see the same machine; only one works at a time. Blocks during which
other processes took more than 5% of a core are retried (benchmarks/harness.py). Ends with
one JSON line: each side's versions, median step seconds, compile seconds, loss after the
timed steps, and `ratio_b_over_a` (A's median time over B's: > 1 means B is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))


def worker(name: str, dtype: str) -> None:
  """Reads "N" lines from stdin, times N steps, writes one JSON line per request."""
  from research.train.host_memory import reuse_freed_memory

  malloc = reuse_freed_memory()
  import jax
  import jaxlib

  import harness
  import synthetic_gpt
  from research.config import MeshConfig
  from research.train.loop import prepare
  from research.train.sharding import make_mesh, put_batch

  cfg, batches = synthetic_gpt.config(name, compute_dtype=dtype), synthetic_gpt.batches(name)
  p = prepare(cfg, synthetic_gpt.SyntheticTask(cfg, batches), make_mesh(MeshConfig(), jax.devices()[:1]))
  state = jax.device_put(p.init(), p.shardings)
  device_batches = [put_batch(b, p.data_sharding) for b in batches]
  t = time.perf_counter()
  compiled = p.step.lower(state, device_batches[0]).compile()
  compile_s = time.perf_counter() - t
  holder = {"state": state, "k": 0, "loss": None}

  def step():
    holder["k"] += 1
    holder["state"], metrics = compiled(holder["state"], device_batches[holder["k"] % len(device_batches)])
    holder["loss"] = metrics["loss"].block_until_ready()

  for _ in range(3):
    step()
  print(json.dumps({"ready": True, "python": sys.version.split()[0], "jax": jax.__version__,
                    "jaxlib": jaxlib.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""), "compile_s": round(compile_s, 2), "malloc_reuse": malloc}),
        flush=True)
  for line in sys.stdin:
    block = harness.time_block_retrying(step, int(line))
    print(json.dumps({"seconds_per_step": block.seconds_per_iter, "other_cpu_frac": block.other_cpu_s / block.wall_s,
                      "retries": block.retries, "loss": float(holder["loss"])}), flush=True)


class Worker:
  def __init__(self, python: str, name: str, dtype: str, extra_xla_flags: str = "", tree: Path = ROOT.parent):
    env = dict(os.environ)
    if extra_xla_flags:
      env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {extra_xla_flags}".strip()
    self.proc = subprocess.Popen([python, str(tree / "benchmarks" / "python_ab.py"), "--worker", name, "--dtype", dtype],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tree, env=env)
    self.info = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise SystemExit(f"python_ab: the worker {self.proc.args[0]} exited (code {self.proc.wait()}); see its stderr")
    return json.loads(line)

  def block(self, steps: int) -> dict:
    self.proc.stdin.write(f"{steps}\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def compare(name: str, pythons: dict[str, str], rounds: int, dtype: str, b_xla_flags: str, b_tree: Path) -> dict:
  workers = {}
  for side, python in pythons.items():  # one at a time: compiling is not what is timed, but it is loud
    workers[side] = Worker(python, name, dtype, *((b_xla_flags, b_tree) if side == "b" else ()))
  try:
    probe = workers["a"].block(3)
    steps = max(1, int(0.5 / probe["seconds_per_step"]))  # blocks of ~0.5 s at least
    for w in workers.values():
      w.block(steps)  # warm-up block
    blocks = {side: [] for side in workers}
    for r in range(rounds):
      for side in (("a", "b") if r % 2 == 0 else ("b", "a")):
        blocks[side].append(workers[side].block(steps))
  finally:
    for w in workers.values():
      w.close()
  median = {side: statistics.median(b["seconds_per_step"] for b in bl) for side, bl in blocks.items()}
  result = {side: {**workers[side].info, "median_step_s": round(median[side], 5),
                   "min_step_s": round(min(b["seconds_per_step"] for b in blocks[side]), 5),
                   "loss_after": blocks[side][-1]["loss"],
                   "others_max_core_fraction": round(max(b["other_cpu_frac"] for b in blocks[side]), 3),
                   "retries": sum(b["retries"] for b in blocks[side])} for side in blocks}
  result["ratio_b_over_a"] = round(median["a"] / median["b"], 4)
  result["steps_per_block"], result["rounds"] = steps, rounds
  label = lambda side: f"{result[side]['python']}/jax {result[side]['jax']}" + (
      f" XLA_FLAGS={result[side]['xla_flags']!r}" if result[side]["xla_flags"] else "")
  print(f"[{name} {dtype}] A {label('a')}: {median['a'] * 1e3:.2f} ms/step; B {label('b')}: {median['b'] * 1e3:.2f} ms/step; "
        f"B is x{result['ratio_b_over_a']:.3f} A's speed", flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--b", help="the other environment's python (default: this one)")
  parser.add_argument("--b-xla-flags", default="", help="XLA flags added to B's XLA_FLAGS")
  parser.add_argument("--b-tree", type=Path, default=ROOT.parent, help="the source tree B runs (default: this one)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="train.compute_dtype")
  parser.add_argument("--configs", default="baby,big")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args.worker, args.dtype)
  args.b_tree = args.b_tree.resolve()
  if not (args.b or args.b_xla_flags or args.b_tree != ROOT.parent):
    parser.error("--b, --b-xla-flags or --b-tree: what B differs in from this environment")
  if not (args.b_tree / "benchmarks" / "python_ab.py").is_file():
    parser.error(f"--b-tree {args.b_tree}: no benchmarks/python_ab.py there")
  args.b = args.b or sys.executable
  if not (Path(args.b).is_file() and os.access(args.b, os.X_OK)):
    parser.error(f"--b {args.b}: not an executable python")
  import harness

  figures = {"benchmark": "python_ab", "dtype": args.dtype, "b_xla_flags": args.b_xla_flags, "b_tree": str(args.b_tree),
             **harness.cpu_info()}
  for name in args.configs.split(","):
    figures[name] = compare(name, {"a": sys.executable, "b": args.b}, args.rounds, args.dtype, args.b_xla_flags,
                            args.b_tree)
  print(json.dumps(figures))


if __name__ == "__main__":
  main()
