"""`lineage runs [DIR]`: the runs under a directory, with their status, steps and last evaluation.

    lineage runs               # runs/<experiment>/<run>
    lineage runs runs/gpt_wiki

A status is read from the run directory alone:
  running    <run>/lock names a live process on this host, or any host other than this one
             (a process elsewhere cannot be checked from here)
  done       metrics.jsonl reached the config's train.steps
  preempted  stopped short with a checkpoint at or past its last logged step: the loop saves one
             when it stops on SIGTERM/SIGINT, so the same command resumes it
  failed     stopped short having trained past its latest checkpoint, or with none (a crash, a
             NaN, a kill -9). One that died right at a checkpoint step reads as preempted.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path


def find_runs(root: Path) -> list[Path]:
  """Run directories (holding config.json) at `root`, or one or two levels below it."""
  found = {p.parent for pattern in ("config.json", "*/config.json", "*/*/config.json") for p in root.glob(pattern)}
  return sorted(found)


def checkpoint_steps(run_dir: Path) -> list[int]:
  """Steps of the finished checkpoints: orbax renames a step's directory to the bare step number
  once it is written, so temporary directories of an unfinished save are not counted."""
  directory = run_dir / "checkpoints"
  return sorted(int(d.name) for d in directory.iterdir() if d.name.isdigit()) if directory.is_dir() else []


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by someone else
    return True
  return True


def lock_holder(run_dir: Path) -> str | None:
  """The host:pid training this run, if its lock names a live one (see the module docstring)."""
  try:
    held = json.loads((run_dir / "lock").read_text())
  except (OSError, ValueError):  # no lock, or one being written
    return None
  host, pid = held.get("host"), held.get("pid")
  if not host or not isinstance(pid, int) or (host == socket.gethostname() and not _alive(pid)):
    return None  # a stale lock: its process has gone
  return f"{host}:{pid}"


def status(run_dir: Path) -> dict:
  """{"status", "step", "steps", "checkpoint", "eval", "eval_step", "holder"} of one run."""
  from research.train.metrics import read_metrics

  config = json.loads((run_dir / "config.json").read_text())
  rows = read_metrics(run_dir)
  step = max((r["step"] for r in rows), default=0)
  last_eval = next((r for r in reversed(rows) if any(k.startswith("eval/") for k in r)), {})
  checkpoints = checkpoint_steps(run_dir)
  checkpoint = checkpoints[-1] if checkpoints else None
  holder = lock_holder(run_dir)
  total = config["train"]["steps"]
  if holder:
    state = "running"
  elif step >= total:
    state = "done"
  elif checkpoint is not None and checkpoint >= step:
    state = "preempted"
  else:
    state = "failed"
  return {"status": state, "step": max(step, checkpoint or 0), "steps": total, "checkpoint": checkpoint,
          "eval": {k: v for k, v in last_eval.items() if k.startswith("eval/")}, "eval_step": last_eval.get("step"),
          "holder": holder}


def _eval_cell(s: dict) -> str:
  if not s["eval"]:
    return "-"
  key = "eval/loss" if "eval/loss" in s["eval"] else sorted(s["eval"])[0]
  return f"{key} {s['eval'][key]:.4g} @{s['eval_step']}"


def _run(args) -> int:
  from launch.compare import table

  root = Path(args.dir)
  if not root.is_dir():
    print(f"lineage runs: error: {root} is not a directory (give the runs directory, e.g. runs/)", file=sys.stderr)
    return 2
  run_dirs = find_runs(root)
  if not run_dirs:
    print(f"no runs under {root} (a run directory holds config.json)")
    return 0
  rows = []
  for run_dir in run_dirs:
    s = status(run_dir)
    name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    rows.append([name, s["status"], f"{s['step']}/{s['steps']}", s["checkpoint"], _eval_cell(s), s["holder"]])
  print(table(rows, ["run", "status", "step", "checkpoint", "last eval", "lock"]))
  return 0


def register(commands) -> None:
  import argparse

  p = commands.add_parser("runs", help="list runs with status (done / preempted / running / failed), steps, last eval",
                          description="List the runs under a directory.", epilog=__doc__.split("\n\n", 1)[1],
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("dir", nargs="?", default="runs", help="a runs directory (default runs/)")
  p.set_defaults(run=_run)
