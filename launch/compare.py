"""`lineage compare RUN_DIR ...`: runs side by side — final metrics, config differences, curves.

    lineage compare runs/gpt_wiki/* --plot eval/loss --out compare.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_METRICS = "step,params,train/loss,eval/loss,eval/perplexity,perf/tokens_per_second,perf/mfu"


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def summarize(run_dir: Path) -> dict:
  """The last value of every logged metric, the step it was logged at, and run facts."""
  from research.train.metrics import read_metrics

  last: dict = {}
  for row in read_metrics(run_dir):
    last.update({k: v for k, v in row.items() if k != "time"})
  facts_file = run_dir / "run.json"
  facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
  return {"params": facts.get("params"), **last}


def config_differences(run_dirs: list[Path]) -> dict[str, list]:
  """Config keys whose values differ between the runs, with each run's value."""
  configs = [_flat(json.loads((r / "config.json").read_text())) for r in run_dirs]
  keys = sorted(set().union(*configs))
  return {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}


def _format(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return "-" if v is None else str(v)


def table(rows: list[list], header: list[str]) -> str:
  cells = [header] + [[_format(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells)


def plot(run_dirs: list[Path], metric: str, out: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from research.train.metrics import read_metrics

  fig, ax = plt.subplots(figsize=(7, 4))
  for run in run_dirs:
    points = [(r["step"], r[metric]) for r in read_metrics(run) if metric in r]
    if points:
      ax.plot(*zip(*points), marker=".", label=f"{run.parent.name}/{run.name}")
  ax.set_xlabel("step")
  ax.set_ylabel(metric)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def _run(args) -> int:
  run_dirs = [Path(r) for r in args.runs]
  missing = [str(r) for r in run_dirs if not (r / "config.json").exists()]
  if missing:
    print(f"lineage compare: error: not run directories (no config.json): {', '.join(missing)}", file=sys.stderr)
    return 2
  summaries = [summarize(r) for r in run_dirs]
  metrics = args.metrics.split(",")
  if args.metrics == DEFAULT_METRICS:  # and the accuracies `lineage eval` logged, task by task
    metrics += sorted({k for s in summaries for k in s if k.startswith("eval/") and k.endswith("/acc")})
  print(table([[f"{r.parent.name}/{r.name}"] + [s.get(m) for m in metrics] for r, s in zip(run_dirs, summaries)],
              ["run"] + metrics))
  diffs = config_differences(run_dirs)
  if diffs:
    print("\nconfig differences:")
    print(table([[k] + v for k, v in diffs.items()], ["key"] + [r.name for r in run_dirs]))
  if args.plot:
    plot(run_dirs, args.plot, Path(args.out))
    print(f"\n{args.plot} against step: {args.out}")
  return 0


def register(commands) -> None:
  p = commands.add_parser("compare", help="compare runs: final metrics, config differences, a plot")
  p.add_argument("runs", nargs="+", help="run directories")
  p.add_argument("--metrics", default=DEFAULT_METRICS,
                 help="comma list of metric names for the table (last logged value of each); "
                      "by default also every eval/<task>/acc of `lineage eval`")
  p.add_argument("--plot", help="a metric to plot against step, e.g. eval/loss")
  p.add_argument("--out", default="compare.png", help="where the plot goes")
  p.set_defaults(run=_run)
