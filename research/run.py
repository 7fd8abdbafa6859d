"""A finished (or checkpointed) run, loaded back for inference: config, model, step.

Every command that reads a run (`lineage sample`, `neighbors`, `attention`, `bleu`,
`eval`, `export`) opens it here, so a missing directory, a run of the wrong objective or
a run with no checkpoint yet is the same one-line `RunError` everywhere.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from research import config as config_lib


class RunError(ValueError):
  """A run directory that cannot serve the command; the message says which and why."""


@dataclass
class Run:
  dir: Path
  cfg: config_lib.Config
  model: nnx.Module  # with the parameters of checkpoint `step`
  step: int

  @property
  def artifacts(self) -> Path:
    return self.dir / "artifacts"


def load_config(run_dir: str | Path, objectives: tuple[str, ...] = (), command: str = "this command") -> config_lib.Config:
  run_dir = Path(run_dir)
  if not (run_dir / "config.json").is_file():
    what = "does not exist" if not run_dir.exists() else "is not a run directory (no config.json)"
    raise RunError(f"{run_dir} {what}")
  try:
    cfg = config_lib.load(run_dir / "config.json")
  except (ValueError, TypeError, KeyError) as e:  # not JSON, or not a lineage config (ConfigError)
    raise RunError(f"{run_dir} is not a lineage run directory: its config.json does not load ({e})") from None
  if objectives and cfg.objective.name not in objectives:
    raise RunError(f"{run_dir} is a {cfg.objective.name!r} run; {command} needs a {' or '.join(objectives)} run")
  return cfg


def load_run(run_dir: str | Path, objectives: tuple[str, ...] = (), command: str = "this command",
             step: int | None = None) -> Run:
  """The run's model at its latest checkpoint (or `step`), on this process's first device."""
  from research.train.checkpoint import restore_params

  run_dir = Path(run_dir)
  cfg = load_config(run_dir, objectives, command)
  if not any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*")):
    raise RunError(f"{run_dir} has no checkpoint yet: the run has not saved one (still starting, or it failed)")
  task = importlib.import_module(f"research.objectives.{cfg.objective.name}").Task
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: task.build_model(cfg, nnx.Rngs(0))), nnx.Param)
  if step is not None and not (run_dir / "checkpoints" / str(step)).is_dir():
    kept = sorted(int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit())
    raise RunError(f"{run_dir} has no checkpoint of step {step}; it keeps steps {', '.join(map(str, kept))}")
  params, step = restore_params(run_dir, abstract, step)
  return Run(dir=run_dir, cfg=cfg, model=nnx.merge(graphdef, params), step=step)
