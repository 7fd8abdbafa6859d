"""The Task contract: everything an objective gives the trainer, written down once.

An objective is a module `research/objectives/<name>.py` with two names:
- `Config`: a dataclass of its own settings (`name` first, then masking rate, label
  smoothing, negatives, ...) with an optional `validate(self)` raising `ConfigError`;
  `research.config` finds it by `objective.name` and checks it when the config loads.
- `Task`: a subclass of `Task` below, built once per run as `Task(cfg, log)`.

The trainer (`research/train/loop.py`) calls exactly these members, and nothing else:

    Task.build_model(cfg, rngs, dtype)  -> nnx.Module     (a classmethod, so `lineage sample` & co.
                                         rebuild a run's model without its data; default: model.name's `build`)
    task.loss_fn(model, batch, rng, train) -> (loss, metrics)   pure; jitted by the trainer
    task.train_batch(step)              -> dict of fixed-shape numpy arrays, a pure function of step
    task.eval_batches()                 -> list of such dicts (default: none)
    task.derived_metrics(means)         -> metrics computed from averaged ones (default: none)
    task.evaluate(model)                -> task-level evaluation, e.g. BLEU (default: none)
    task.save_evaluation(run_dir, step) -> files of that evaluation, e.g. QA's predictions (default: nothing)
    task.save_artifacts(directory)      -> tokenizer, vocabulary (default: nothing)
    task.optimizer(total_steps)         -> optax transformation (default: AdamW of cfg.optim)
    task.make_train_step(graphdef, tx)  -> pure train_step(state, batch) (default: gradient of loss_fn)
    task.step_flops(graphdef, compiled, example, state) -> FLOPs of a step per device (flops.py)
    task.tokens_per_step, task.facts    -> for throughput and run.json

`loss_fn` receives the merged model (graph and parameters), a batch of device arrays, a
PRNG key that is `fold_in(seed, step)` and whether this is training; it returns a scalar
loss and a dict of scalar metrics (means over the batch). Metrics the trainer adds:
`loss`, `grad_norm`, `lr`. A custom `make_train_step` must keep the state
`{"step", "params", "opt"}` and return metrics holding "loss" and "grad_norm" (the NaN
check reads them).

Derived settings: a task may fill a setting the user left at 0 from the data (a
vocabulary size from the tokenizer) with `derive`, which logs it; a user's conflicting
value is a `ConfigError`, never silently replaced.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research import config as config_lib
from research.config import ConfigError


class Task:
  """Defaults for every optional member; subclasses set `tokens_per_step` and override the rest."""

  tokens_per_step: int = 0
  facts: dict = {}

  def __init__(self, cfg: config_lib.Config, log=print):
    self.cfg, self.log = cfg, log
    self.derived: dict[str, object] = {}  # settings this task filled in, for run.json
    if cfg.optim.schedule == "inverse_sqrt" and not cfg.optim.d_model and hasattr(cfg.model, "n_embd"):
      # The Transformer's learning rate scales with the model's width (Vaswani et al. 2017, eq. 3).
      self.derive(cfg.optim, "d_model", cfg.model.n_embd, "the model's width, model.n_embd")

  # ------------------------------------------------------------------ required

  def loss_fn(self, model, batch: dict, rng: jax.Array, train: bool):
    raise NotImplementedError(f"{type(self).__module__}.Task defines no loss_fn")

  def train_batch(self, step: int) -> dict:
    raise NotImplementedError(f"{type(self).__module__}.Task defines no train_batch")

  # ------------------------------------------------------------------ optional

  @classmethod
  def build_model(cls, cfg: config_lib.Config, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Module:
    from research.models import build_model

    return build_model(cfg, rngs, dtype)

  def eval_batches(self) -> list[dict]:
    return []

  def derived_metrics(self, metrics: dict) -> dict:
    return {}

  def evaluate(self, model) -> dict:
    return {}

  def save_evaluation(self, run_dir: Path, step: int) -> None:
    """Called on the primary host after each `evaluate`, for what it produced besides metrics."""

  def save_artifacts(self, directory: Path) -> None:
    pass

  def optimizer(self, total_steps: int) -> optax.GradientTransformation:
    from research.train.optimizer import make_optimizer

    return make_optimizer(self.cfg.optim, total_steps)

  def make_train_step(self, graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
    from research.train.optimizer import schedule
    from research.train.step import make_train_step

    tc = self.cfg.train
    return make_train_step(graphdef, self.loss_fn, tx, seed=tc.seed, grad_accum=tc.grad_accum,
                           lr_schedule=schedule(self.cfg.optim, tc.steps))

  def step_flops(self, graphdef: nnx.GraphDef, compiled, example: dict, state: dict) -> float:
    from research.train.flops import train_step_flops

    return train_step_flops(self.cfg, self.loss_fn, graphdef, compiled, example, state)

  # ------------------------------------------------------------------ helpers

  @property
  def init_run(self) -> Path | None:
    """The run this one fine-tunes from (`train.init_from`): reuse its tokenizer, not a new one."""
    return Path(self.cfg.train.init_from) if self.cfg.train.init_from else None

  def derive(self, section, key: str, value, why: str) -> None:
    """Fills `section.key` (0 = "derive it") with `value`, logged; a different user value is an error."""
    current = getattr(section, key)
    prefix = next(name for name in ("model", "objective", "optim", "train") if getattr(self.cfg, name) is section)
    if current and current != value:
      raise ConfigError(f"{prefix}.{key}={current} conflicts with {value} {why}; "
                        f"leave it at 0 to take it from there")
    if not current:
      setattr(section, key, value)
      self.log(f"derived {prefix}.{key}={value} ({why})")
    self.derived[f"{prefix}.{key}"] = value
