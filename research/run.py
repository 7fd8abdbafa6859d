"""A finished (or checkpointed) run, loaded back for inference: config, model, step.

Every command that reads a run (`lineage sample`, `neighbors`, `attention`, `bleu`,
`eval`, `export`) opens it here, so a missing directory, a run of the wrong objective or
a run with no checkpoint yet is the same one-line `RunError` everywhere.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import jax
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
             step: int | None = None, average: int = 1) -> Run:
  """The run's model at its latest checkpoint (or `step`), on this process's first device.

  `average=k` averages the parameters of the k checkpoints kept up to that step, as Vaswani
  et al. 2017 (sec. 6.1) average the last 5 (an annealed model for free: no training FLOPs).
  """
  from research.train.checkpoint import restore_params

  run_dir = Path(run_dir)
  cfg = load_config(run_dir, objectives, command)
  if not any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*")):
    raise RunError(f"{run_dir} has no checkpoint yet: the run has not saved one (still starting, or it failed)")
  task = importlib.import_module(f"research.objectives.{cfg.objective.name}").Task
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: task.build_model(cfg, nnx.Rngs(0))), nnx.Param)
  kept = sorted(int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit())
  if step is not None and step not in kept:
    raise RunError(f"{run_dir} has no checkpoint of step {step}; it keeps steps {', '.join(map(str, kept))}")
  steps = [s for s in kept if s <= (kept[-1] if step is None else step)][-average:]
  if len(steps) < average:
    raise RunError(f"{run_dir} keeps {len(steps)} checkpoint(s) up to step {steps[-1]}, fewer than the {average} "
                   f"to average (train.keep_checkpoints sets how many a run keeps)")
  params = [restore_params(run_dir, abstract, s)[0] for s in steps]
  params = jax.tree.map(lambda *p: sum(p) / len(p), *params) if len(params) > 1 else params[0]
  return Run(dir=run_dir, cfg=cfg, model=nnx.merge(graphdef, params), step=steps[-1])
