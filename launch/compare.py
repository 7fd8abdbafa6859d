"""`lineage compare RUN_DIR ...`: runs side by side — compute, eval metrics, config differences, curves.

    lineage compare runs/gpt_wiki/* runs/lstm_wiki/*
    lineage compare runs/*_wiki/* --x flops --plot eval/loss,train/loss --out by_flops.png
    lineage compare runs/*_wiki/* --x flops --at max,1e12        # eval/loss at equal FLOPs

The x axis of the curves and of `--at`:
  step     the optimizer step
  tokens   step * tokens_per_step (run.json)
  flops    step * flops_per_step_per_device * devices (run.json): training FLOPs over all devices
  seconds  training wall time: the running sum, over train rows, of perf/step_seconds times the
           steps the row covers. Compilation, evaluation and the pause between a preemption and
           its resume are left out (the loop restarts its timer after each); steps trained after
           the last row before a preemption are counted at the rate of the row after it.
Runs of different architectures are read at a common x by linear interpolation between logged
points, never extrapolated: a run that did not reach x shows "-".
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.config import flat_dict

AXES = {
    "step": "step",
    "tokens": "training tokens",
    "flops": "training FLOPs (all devices)",
    "seconds": "training seconds (no compile, no eval)",
}
LOWER_IS_BETTER = ("loss", "perplexity")  # any other metric (accuracy, BLEU) is best at its maximum


@dataclass
class Run:
  dir: Path
  name: str  # <experiment>/<run>, as the table and legends show it
  facts: dict  # run.json: params, devices, FLOPs and tokens per step, peak FLOP/s
  series: dict[str, dict[int, float]]  # metric -> {step: value}, steps ascending


def read_run(run_dir: Path) -> Run:
  from research.train.metrics import read_metrics

  series: dict[str, dict[int, float]] = {}
  for row in read_metrics(run_dir):
    for key, value in row.items():
      if key not in ("step", "time") and isinstance(value, (int, float)):
        # A step logged twice (rerun after a crash, before its checkpoint) keeps the later value.
        series.setdefault(key, {})[row["step"]] = value
  facts_file = run_dir / "run.json"
  facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
  return Run(run_dir, f"{run_dir.parent.name}/{run_dir.name}", facts,
             {k: dict(sorted(s.items())) for k, s in series.items()})


def last_step(run: Run) -> int:
  return max((max(s) for s in run.series.values() if s), default=0)


def flops_per_step(run: Run) -> float | None:
  per_device, devices = run.facts.get("flops_per_step_per_device"), run.facts.get("devices")
  return per_device * devices if per_device is not None and devices else None


def train_seconds(run: Run) -> dict[int, float]:
  """Training wall time (see the module docstring) at the step of each train row."""
  out, total, previous = {}, 0.0, 0
  for step, seconds in run.series.get("perf/step_seconds", {}).items():
    total += seconds * (step - previous)
    out[step], previous = total, step
  return out


def to_x(run: Run, steps, axis: str) -> np.ndarray | None:
  """The x values of `steps` on `axis`, or None if the run did not record what it needs."""
  steps = np.asarray(steps, np.float64)
  if axis == "step":
    return steps
  if axis == "tokens":
    per = run.facts.get("tokens_per_step")
    return None if per is None else steps * per
  if axis == "flops":
    per = flops_per_step(run)
    return None if per is None else steps * per
  seconds = train_seconds(run)
  if not seconds:
    return None
  # An eval row between two train rows (eval_every not a multiple of log_every) is placed by step.
  return np.interp(steps, [0, *seconds], [0.0, *seconds.values()])


def curve(run: Run, metric: str, axis: str) -> tuple[np.ndarray, np.ndarray] | None:
  """(x, values) of one metric on one axis: exactly what `plot` draws for this run."""
  points = run.series.get(metric)
  x = to_x(run, list(points), axis) if points else None
  return None if x is None else (x, np.asarray(list(points.values()), np.float64))


def value_at(run: Run, metric: str, axis: str, x: float) -> float | None:
  c = curve(run, metric, axis)
  if c is None or not c[0][0] <= x <= c[0][-1]:
    return None
  return float(np.interp(x, *c))


def common_max(runs: list[Run], metric: str, axis: str) -> float | None:
  """The furthest x every run reached: where the cheapest run stopped."""
  ends = [c[0][-1] for c in (curve(r, metric, axis) for r in runs) if c is not None]
  return min(ends) if ends else None


def totals(run: Run) -> dict:
  """Steps and the compute they cost. MFU is per device against run.json's peak, as the loop logs it."""
  steps = last_step(run)
  seconds = train_seconds(run)
  seconds = seconds[max(seconds)] if seconds else None
  tokens_per_step, per_step, peak = (run.facts.get("tokens_per_step"), flops_per_step(run),
                                     run.facts.get("peak_flops_per_device"))
  tokens = steps * tokens_per_step if tokens_per_step is not None else None
  flops = steps * per_step if per_step is not None else None
  return {
      "params": run.facts.get("params"), "steps": steps, "tokens": tokens, "FLOPs": flops,
      "train s": seconds,
      "tokens/s": tokens / seconds if tokens is not None and seconds else None,
      "MFU": flops / run.facts["devices"] / seconds / peak if flops is not None and seconds and peak else None,
  }


def final_and_best(run: Run, metric: str) -> tuple[float | None, float | None]:
  values = list(run.series.get(metric, {}).values())
  if not values:
    return None, None
  best = min if any(word in metric for word in LOWER_IS_BETTER) else max
  return values[-1], best(values)


def config_differences(run_dirs: list[Path]) -> dict[str, list]:
  """Config keys whose values differ between the runs, with each run's value."""
  configs = [flat_dict(json.loads((r / "config.json").read_text())) for r in run_dirs]
  keys = sorted(set().union(*configs))
  return {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}


def _format(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return "-" if v is None else str(v)


def table(rows: list[list], header: list[str]) -> str:
  cells = [header] + [[_format(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def plot(runs: list[Run], metrics: list[str], axis: str, out: Path):
  """One panel per metric, one curve per run, placed on `axis`; saves a PNG and returns the Figure."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7, 1 + 3 * len(metrics)))
  panels = fig.subplots(len(metrics), 1, squeeze=False, sharex=True)[:, 0]
  for ax, metric in zip(panels, metrics):
    for run in runs:
      c = curve(run, metric, axis)
      if c is not None:
        ax.plot(*c, marker=".", label=run.name)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  panels[-1].set_xlabel(AXES[axis])
  panels[0].legend()
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  return fig


def _at_values(spec: str, runs: list[Run], metric: str, axis: str) -> list[float]:
  values = []
  for item in spec.split(","):
    value = common_max(runs, metric, axis) if item.strip() == "max" else float(item)
    if value is not None:
      values.append(value)
  return values


def _missing_facts(runs: list[Run], axis: str) -> list[str]:
  return [r.name for r in runs if axis != "step" and to_x(r, [1], axis) is None]


def _run(args) -> int:
  run_dirs = [Path(r) for r in args.runs]
  missing = [str(r) for r in run_dirs if not (r / "config.json").exists()]
  if missing:
    print(f"lineage compare: error: not run directories (no config.json): {', '.join(missing)}", file=sys.stderr)
    return 2
  runs = [read_run(r) for r in run_dirs]
  problem = unlogged_metric(args, runs)
  if problem:
    print(f"lineage compare: error: {problem}", file=sys.stderr)
    return 2
  for name in _missing_facts(runs, args.x):
    print(f"lineage compare: note: {name} has no run.json (or no perf/step_seconds) to place it by {args.x}; "
          "it is left out of the plot and --at", file=sys.stderr)

  metrics = (args.metrics.split(",") if args.metrics else
             sorted({k for r in runs for k in r.series if k.startswith("eval/")}))
  header = ["run", *totals(runs[0])] + [h for m in metrics for h in (m, f"best {m}")]
  print(table([[r.name, *totals(r).values(), *(v for m in metrics for v in final_and_best(r, m))] for r in runs],
              header))

  if args.at:
    at = _at_values(args.at, runs, args.at_metric, args.x)
    print(f"\n{args.at_metric} at equal {args.x} (interpolated; '-' = the run did not get there):")
    print(table([[r.name, *(value_at(r, args.at_metric, args.x, x) for x in at)] for r in runs],
                ["run", *(_format(x) for x in at)]))

  diffs = config_differences(run_dirs)
  if diffs:
    print("\nconfig differences:")
    print(table([[k] + v for k, v in diffs.items()], ["key"] + [r.name for r in runs]))
  if args.plot:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot(runs, args.plot.split(","), args.x, Path(args.out))
    print(f"\n{args.plot} against {AXES[args.x]}: {args.out}")
  return 0


def unlogged_metric(args, runs) -> str | None:
  """A metric named in --plot, --metrics or --at-metric that no run logged, or None."""
  logged = {"step"} | {k for r in runs for k in r.series}
  asked = [("--plot", m) for m in (args.plot or "").split(",") if m]
  asked += [("--metrics", m) for m in (args.metrics or "").split(",") if m]
  if args.at:
    asked.append(("--at-metric", args.at_metric))
  for flag, metric in asked:
    if metric not in logged:
      return f"{flag}: no run logged {metric!r}; they logged {', '.join(sorted(logged)) or 'nothing yet'}"
  return None


def register(commands) -> None:
  p = commands.add_parser("compare", help="compare runs: compute, eval metrics, config differences, plots",
                          description="Runs side by side: compute, eval metrics, config differences, curves.",
                          epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("runs", nargs="+", help="run directories")
  p.add_argument("--x", default="step", choices=list(AXES), help="x axis of plots and --at (default step)")
  p.add_argument("--metrics", help="comma list of metrics whose final and best values the table shows "
                                   "(default: every eval/ metric the runs logged)")
  p.add_argument("--plot", help="comma list of metrics to plot against --x, one panel each, e.g. eval/loss,train/loss")
  p.add_argument("--out", default="compare.png", help="where the plot goes (one PNG)")
  p.add_argument("--at", help="comma list of --x values at which to read --at-metric, or 'max' (the furthest "
                              "every run got), e.g. --x flops --at max,1e12: the runs at equal compute")
  p.add_argument("--at-metric", default="eval/loss", help="the metric --at reads (default eval/loss)")
  p.set_defaults(run=_run)
