"""Checkpoints of the whole train state with orbax: periodic, final, on preemption; resume from the latest.

Saves are asynchronous (training goes on while the previous state is written) and atomic:
orbax writes to a temporary directory and renames it, so a crash mid-save leaves the
previous checkpoint as the latest.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, directory: Path, *, keep: int, every: int):
    self.every = every
    self.manager = ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, abstract_state, step: int | None = None):
    """Restores into the shardings and dtypes of `abstract_state` (ShapeDtypeStructs)."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started."""
    if not force and step % self.every:
      return False
    if step == self.latest_step():
      return False
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def reached_preemption(self, step: int) -> bool:
    """True on every host once any host of a multi-host job got a preemption notice."""
    return jax.process_count() > 1 and self.manager.reached_preemption(step)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(run_dir: Path, abstract_params, step: int | None = None):
  """Only the parameters of a run's checkpoint (for sampling and evaluation)."""
  manager = ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {run_dir}/checkpoints")
  # Onto this process's first device unless the caller gave shardings: sampling and
  # evaluation may run on a different topology than training did.
  local = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, "sharding", None) or local),
                              {"params": abstract_params})
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item={"params": abstract_params}, restore_args=restore_args, partial_restore=True))
  manager.close()
  return restored["params"], step
