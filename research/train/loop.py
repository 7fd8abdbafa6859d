"""The trainer: one loop for every objective. It knows no architecture.

Reads top to bottom: run directory, task (data, tokenizer, model), mesh, parameters
initialised into their shardings, the jitted step, checkpoint restore, FLOPs, then the
loop with its periodic logging, evaluation and checkpointing, and preemption.
"""

from __future__ import annotations

import importlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research import config as config_lib
from research.config import Config, ConfigError
from research.models import vjp
from research.train import flops as flops_lib
from research.train.checkpoint import Checkpointer
from research.train.finetune import init_from_run
from research.train.lock import RunLock
from research.train.metrics import MetricWriter
from research.train.sharding import batch_sharding, make_mesh, put_batch, state_shardings
from research.train.step import init_state, make_eval_step

# Keys that may change when a run is resumed; any other difference is an error.
RESUMABLE_CHANGES = {"train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.progress"}


class NonFiniteError(RuntimeError):
  """The loss or gradient norm became NaN or Inf; the run stopped before saving it."""


@dataclass
class Result:
  run_dir: Path
  step: int
  status: str  # "done" | "preempted"
  state: dict  # the final train state (on device)
  eval: dict  # the last evaluation's metrics


def load_task(cfg: Config, log=print):
  """The objective's Task (research/objectives/<objective.name>.py; contract in base.py)."""
  return importlib.import_module(f"research.objectives.{cfg.objective.name}").Task(cfg, log=log)


def run_dir_for(cfg: Config) -> Path:
  name = cfg.train.run_name or time.strftime("%Y-%m-%d_%H-%M-%S")
  return Path(cfg.train.runs_dir) / cfg.experiment / name


def _check_resume(saved: Config, cfg: Config) -> None:
  old, new = config_lib.flat_dict(config_lib.to_dict(saved)), config_lib.flat_dict(config_lib.to_dict(cfg))
  changed = sorted(k for k in old.keys() | new.keys()
                   if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
  if changed:
    diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
    raise ConfigError(f"this run directory holds a run with a different config ({diffs}); "
                      "use another train.run_name, or resume with the same settings")


class _StopSignal:
  """Turns SIGTERM (a preempted VM) and SIGINT (Ctrl-C) into a flag the loop checks each step."""

  def __init__(self):
    self.received = None

  def __enter__(self):
    # On many hosts SIGTERM stays with jax's preemption notifier, which a Python handler would
    # replace: the host that got it would stop alone and the others wait in the next collective.
    # Checkpointer.reached_preemption then stops every host at the same step.
    signals = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGTERM, signal.SIGINT)
    self.previous = {s: signal.signal(s, self._handle) for s in signals}
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)


@dataclass
class Prepared:
  """What the loop needs, built from a config, a task and a mesh (tests build it directly)."""
  graphdef: nnx.GraphDef
  abstract_state: dict  # ShapeDtypeStructs of {"step", "params", "opt"}
  shardings: dict  # NamedShardings of the same tree
  data_sharding: jax.sharding.NamedSharding
  init: Callable[[], dict]  # jitted; returns the initial state, already sharded
  step: Callable  # jitted train step (state, batch) -> (state, metrics); donates state
  eval: Callable  # jitted (params, batch) -> metrics
  n_params: int


def prepare(cfg: Config, task, mesh: jax.sharding.Mesh) -> Prepared:
  """Initialises nothing yet: shapes, shardings and the jitted functions.

  The task supplies the optimizer and the pure train step (research/objectives/base.py:
  by default AdamW and the gradient of its loss_fn; Word2Vec's sparse SGD overrides both).
  Building the model here (abstractly) is also where a model that cannot be built fails,
  before the run directory is written.
  """
  tc = cfg.train
  dtype = jnp.dtype(tc.compute_dtype)
  tx = task.optimizer(tc.steps)
  build = lambda: task.build_model(cfg, nnx.Rngs(params=tc.seed), dtype)
  try:
    graphdef, abstract_params = nnx.split(nnx.eval_shape(build), nnx.Param)
  except (ValueError, AssertionError) as e:  # a model setting no validate() caught
    raise ConfigError(f"cannot build model {cfg.model.name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
  abstract_state = jax.eval_shape(lambda p: init_state(p, tx), abstract_params)
  shardings = state_shardings(abstract_state, mesh)
  data_sharding = batch_sharding(mesh)
  train_step = task.make_train_step(graphdef, tx)
  step = jax.jit(
      train_step,
      in_shardings=(shardings, data_sharding), out_shardings=(shardings, None), donate_argnums=0)
  return Prepared(
      graphdef=graphdef, abstract_state=abstract_state, shardings=shardings, data_sharding=data_sharding,
      init=jax.jit(lambda: init_state(nnx.state(build(), nnx.Param), tx), out_shardings=shardings),
      step=step,
      eval=jax.jit(make_eval_step(graphdef, task.loss_fn), in_shardings=(shardings["params"], data_sharding)),
      n_params=sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params)))


def _close_all(*closers) -> None:
  """Calls every closer, whatever one raises. The first error is raised unless one is already on
  its way out: on a full disk the checkpointer's (which names the checkpoint still intact) must
  not be masked by TensorBoard's flush failing on the same disk."""
  errors = []
  for close in closers:
    try:
      close()
    except Exception as e:  # noqa: BLE001 - re-raised below
      errors.append(e)
  if errors and sys.exc_info()[1] is None:
    raise errors[0]


def train(cfg: Config, *, task=None, run_dir: Path | None = None, devices=None, on_step=None,
          log=print) -> Result:
  """Trains `cfg` to `train.steps`, resuming from the run directory's latest checkpoint.

  One live process per run directory: its lock (lock.py) is taken before anything is
  written there and released however training ends (done, preempted, an exception).
  """
  run_dir = Path(run_dir or run_dir_for(cfg))
  with RunLock(run_dir, primary=jax.process_index() == 0, log=log):
    return _train(cfg, task=task, run_dir=run_dir, devices=devices, on_step=on_step, log=log)


def _train(cfg: Config, *, task=None, run_dir: Path | None = None, devices=None, on_step=None,
           log=print) -> Result:
  tc = cfg.train
  # ---------------------------------------------------------------- task, mesh, model, step
  # Everything that can fail on a bad setting (data, tokenizer, building the model) runs
  # before the run directory is written, so a corrected command can reuse the run name.
  run_dir = Path(run_dir or run_dir_for(cfg))
  saved_config = run_dir / "config.json"
  task = task or load_task(cfg, log)
  if tc.steps <= 0:
    raise ConfigError(f"train.steps must be positive, got {tc.steps} (only an objective that derives it accepts 0)")
  if saved_config.exists():
    _check_resume(config_lib.load(saved_config), cfg)
  vjp.set_cpu_tricks({"auto": None, "on": True, "off": False}[tc.cpu_tricks])
  mesh = make_mesh(cfg.mesh, devices)
  p = prepare(cfg, task, mesh)
  graphdef, data_sharding = p.graphdef, p.data_sharding

  primary = jax.process_index() == 0  # on many hosts, one writes the run directory's files
  run_dir.mkdir(parents=True, exist_ok=True)
  if primary:
    config_lib.save(cfg, saved_config)  # after the task has filled in derived fields (vocab_size)
    task.save_artifacts(run_dir / "artifacts")

  # ---------------------------------------------------------------- init, fine-tune or restore
  checkpointer = Checkpointer(run_dir / "checkpoints", keep=tc.keep_checkpoints, every=tc.checkpoint_every)
  start = checkpointer.latest_step()
  if start is None:
    state, start = p.init(), 0
    if tc.init_from:
      state = dict(state, params=init_from_run(tc.init_from, state["params"], tc.init_skip, log))
  else:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          p.abstract_state, p.shardings)
    state, start = checkpointer.restore_newest_readable(target, log=log)  # falls back past damaged ones
    log(f"resumed from the checkpoint at step {start}")

  # ---------------------------------------------------------------- compile, count FLOPs
  t = time.perf_counter()
  example = put_batch(task.train_batch(start), data_sharding)
  compiled = p.step.lower(state, example).compile()
  compile_seconds = time.perf_counter() - t
  step_flops = task.step_flops(graphdef, compiled, example, state)
  peak, peak_source = flops_lib.device_peak_flops(tc.compute_dtype, Path.home() / ".cache/lineage/peak_flops.json")
  facts = {
      "experiment": cfg.experiment, "params": p.n_params, "devices": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind, "mesh": dict(mesh.shape),
      "flops_per_step_per_device": step_flops, "peak_flops_per_device": peak, "peak_source": peak_source,
      "compile_seconds": round(compile_seconds, 2), "tokens_per_step": task.tokens_per_step,
      "jax": jax.__version__, "derived": task.derived, **task.facts,
  }
  if primary:
    (run_dir / "run.json").write_text(json.dumps(facts, indent=2) + "\n")
  log(f"model: {p.n_params:,} parameters; mesh {dict(mesh.shape)}; step compiled in {compile_seconds:.1f}s, "
      f"{step_flops / 1e9:.2f} GFLOP per device; peak {peak / 1e9:.0f} GFLOP/s ({peak_source})")

  # ---------------------------------------------------------------- evaluation
  eval_data = [put_batch(b, data_sharding) for b in task.eval_batches()]

  def evaluate(params) -> dict:
    """Mean of the loss metrics over the validation batches, plus the task's own evaluation
    (`task.evaluate(model) -> dict`, e.g. BLEU or analogy accuracy)."""
    out = {}
    if eval_data:
      rows = [jax.device_get(p.eval(params, b)) for b in eval_data]
      mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
      out.update(mean, **task.derived_metrics(mean))
    out.update(task.evaluate(nnx.merge(graphdef, params)))
    return out

  # ---------------------------------------------------------------- the loop
  writer = MetricWriter(run_dir, total_steps=tc.steps, start_step=start, progress=tc.progress, primary=primary)
  log = writer.print if tc.progress else log
  window: list[dict] = []  # fetched train metrics since the last log line
  last_eval: dict = {}
  pending = None  # (step, metrics on device): fetched one step late, so dispatch runs ahead
  t_window, data_seconds, eval_seconds, step = time.perf_counter(), 0.0, 0.0, start
  status = "done"

  def fetch_pending():
    nonlocal pending
    if pending is None:
      return
    k, metrics = pending
    pending = None
    metrics = {key: float(v) for key, v in jax.device_get(metrics).items()}
    if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
      last = checkpointer.latest_step()
      raise NonFiniteError(
          f"loss={metrics['loss']} grad_norm={metrics['grad_norm']} at step {k}: training stopped; "
          f"the last good checkpoint is step {last} in {run_dir / 'checkpoints'}" if last is not None else
          f"loss={metrics['loss']} grad_norm={metrics['grad_norm']} at step {k}: training stopped; no checkpoint was saved yet")
    window.append(metrics)

  try:
    with _StopSignal() as stop:
      while step < tc.steps:
        t = time.perf_counter()
        batch = put_batch(task.train_batch(step), data_sharding)
        data_seconds += time.perf_counter() - t
        state, metrics = compiled(state, batch)
        fetch_pending()
        step += 1
        pending = (step, metrics)

        if step % tc.log_every == 0 or step == tc.steps:
          fetch_pending()
          jax.block_until_ready(state)
          elapsed = time.perf_counter() - t_window - eval_seconds  # evaluation time is not training throughput
          mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
          n = len(window)
          row = {f"train/{k}": v for k, v in {**mean, **task.derived_metrics(mean)}.items()}
          row.update({
              "perf/step_seconds": elapsed / n, "perf/data_seconds": data_seconds / n,
              "perf/tokens_per_second": task.tokens_per_step * n / elapsed,
              "perf/flops_per_second": step_flops * n / elapsed,
              "perf/mfu": step_flops * n / elapsed / peak if peak else 0.0,
          })
          writer.write(step, row)
          writer.progress(step, loss=mean["loss"], tok_s=row["perf/tokens_per_second"], mfu=row["perf/mfu"])
          window, t_window, data_seconds, eval_seconds = [], time.perf_counter(), 0.0, 0.0

        if step % tc.eval_every == 0 or step == tc.steps:
          fetch_pending()
          jax.block_until_ready(state)
          t_eval = time.perf_counter()
          last_eval = evaluate(state["params"])
          writer.write(step, {f"eval/{k}": v for k, v in last_eval.items()})
          if primary:
            task.save_evaluation(run_dir, step)
          log(f"step {step}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in last_eval.items()))
          eval_seconds += time.perf_counter() - t_eval

        if step % tc.checkpoint_every == 0 or step == tc.steps:
          fetch_pending()  # never save a state whose step went non-finite
          checkpointer.save(step, state, force=True)

        if on_step is not None:
          on_step(step, state)
        if stop.received or checkpointer.reached_preemption(step):
          fetch_pending()
          checkpointer.save(step, state, force=True)
          status = "preempted"
          log(f"{stop.received or 'preemption notice'} at step {step}: checkpoint saved; "
              f"run the same command again to resume")
          break
      fetch_pending()
  finally:
    _close_all(checkpointer.close, writer.close)
  return Result(run_dir=run_dir, step=step, status=status, state=state, eval=last_eval)
