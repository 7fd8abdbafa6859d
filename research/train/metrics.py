"""Where metrics go: `metrics.jsonl` (one JSON object per line, flushed each write so a crash
loses nothing), TensorBoard event files, and a progress bar.

A resumed run holds one value per step in both: rows and events a killed process logged
after its last checkpoint are dropped when the writer opens, since the resumed run logs
those steps again. A line cut short by a crash mid-write is skipped by `read_metrics`
with a warning, and removed by the next writer.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

from tqdm import tqdm


class MetricWriter:
  def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, progress: bool, primary: bool = True):
    """`start_step`: the step the run starts from (0, or the step of the restored checkpoint).
    On a multi-host run only the primary process (process 0) writes; the others keep quiet."""
    repaired = _keep_rows_up_to(run_dir / "metrics.jsonl", start_step) if primary else None
    self.jsonl, self.tb = (open(run_dir / "metrics.jsonl", "a") if primary else None), None
    try:
      from tensorboardX import SummaryWriter
      # A new event file starting with a purge marker: TensorBoard hides the events of
      # earlier files at steps >= start_step + 1, the ones this run logs again.
      if primary:
        self.tb = SummaryWriter(str(run_dir / "tb"), flush_secs=10, purge_step=start_step + 1)
    except ImportError:  # TensorBoard is optional; metrics.jsonl is the record
      pass
    self.bar = tqdm(total=total_steps, initial=start_step, disable=not (progress and primary), file=sys.stderr,
                    dynamic_ncols=True, unit="step", mininterval=1.0)
    if repaired:
      self.print(f"{run_dir / 'metrics.jsonl'}: {repaired}")

  def write(self, step: int, metrics: dict) -> None:
    if self.jsonl is None:
      return
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
    if self.jsonl is not None:
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


def _parse(line: str):
  """The row on one line, or None if it is not a JSON object (a write cut short)."""
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row if isinstance(row, dict) else None


def _keep_rows_up_to(path: Path, step: int) -> str:
  """Drops rows logged after `step` and unreadable lines; says what it dropped ("" if nothing).

  Rewrites to a temporary file renamed over the old one, so a crash here leaves one of
  the two whole. Also rewrites a file whose last line lacks its newline, or the next
  row would be glued to it.
  """
  if not path.exists():
    return ""
  text = path.read_text()
  kept, later, broken = [], 0, []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    row = _parse(line)
    if row is None:
      broken.append(number)
    elif row.get("step", 0) > step:
      later += 1
    else:
      kept.append(line + "\n")
  if not (later or broken or (text and not text.endswith("\n"))):
    return ""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  said = []
  if later:
    said.append(f"dropped {later} rows logged after step {step}, where this run resumes")
  if broken:
    said.append(f"dropped unreadable line(s) {', '.join(map(str, broken))} (cut short by a crash)")
  return "; ".join(said) or "added the missing newline at the end"


def read_metrics(run_dir: Path) -> list[dict]:
  """The rows of a run's metrics.jsonl; a line that does not parse is skipped with a warning."""
  path = Path(run_dir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    row = _parse(line)
    if row is None:
      warnings.warn(f"{path}:{number}: skipped a line that is not a JSON object (cut short by a crash?)",
                    stacklevel=2)
    else:
      rows.append(row)
  return rows


def append_metrics(run_dir: Path, step: int, metrics: dict) -> None:
  """One row appended to a run's metrics.jsonl from outside its trainer (`lineage eval`).

  At a checkpoint's step, so a run resumed from that checkpoint keeps the row.
  """
  path = Path(run_dir) / "metrics.jsonl"
  glue = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
  row = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
  with open(path, "a") as f:
    f.write(("\n" if glue else "") + json.dumps(row) + "\n")
