"""Where metrics go: `metrics.jsonl` (one JSON object per line, flushed each write so a crash
loses nothing), TensorBoard event files, and a progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm


class MetricWriter:
  def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, progress: bool):
    self.jsonl = open(run_dir / "metrics.jsonl", "a")
    try:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(run_dir / "tb"), flush_secs=10)
    except ImportError:  # TensorBoard is optional; metrics.jsonl is the record
      self.tb = None
    self.bar = tqdm(total=total_steps, initial=start_step, disable=not progress, file=sys.stderr,
                    dynamic_ncols=True, unit="step", mininterval=1.0)

  def write(self, step: int, metrics: dict) -> None:
    row = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(row) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      for key, value in metrics.items():
        if isinstance(value, (int, float)):
          self.tb.add_scalar(key, value, step)

  def progress(self, step: int, **shown) -> None:
    self.bar.update(step - self.bar.n)
    if shown:
      self.bar.set_postfix({k: _short(v) for k, v in shown.items()}, refresh=False)

  def print(self, message: str) -> None:
    self.bar.write(message, file=sys.stderr) if not self.bar.disable else print(message, file=sys.stderr)

  def close(self) -> None:
    self.bar.close()
    self.jsonl.close()
    if self.tb is not None:
      self.tb.close()


def _plain(v):
  try:
    return float(v) if not isinstance(v, (int, str, bool)) else v
  except (TypeError, ValueError):
    return str(v)


def _short(v):
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
  return v


def read_metrics(run_dir: Path) -> list[dict]:
  path = Path(run_dir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
