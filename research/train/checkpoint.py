"""Checkpoints of the whole train state with orbax: periodic, final, on preemption; resume from the latest.

Saves are asynchronous (training goes on while the previous state is written) and atomic:
orbax writes to a temporary directory and renames it, so a crash mid-save leaves the
previous checkpoint as the latest. Restores verify: a checkpoint that does not read back
(damaged or missing files) is moved aside and the next older one is used. A save that
fails for lack of space (or any storage error) stops the run with a CheckpointError
naming the directory; the checkpoints already written stay as they were.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No checkpoint of a run can be read, or one cannot be written; the message names the directory."""


class Checkpointer:
  def __init__(self, directory: Path, *, keep: int, every: int):
    self.every = every
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, abstract_state, step: int | None = None):
    """Restores into the shardings and dtypes of `abstract_state` (ShapeDtypeStructs)."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def restore_newest_readable(self, abstract_state, log=print):
    """Restores the newest checkpoint that reads back; returns (state, step).

    The manager lists only committed checkpoints (orbax's own check: a step directory
    renamed from its temporary name, plus commit_success.txt on object stores). Each
    newer one that then fails to read is moved aside, once an older one has read, to
    `<step>.corrupt-<time>`: a name orbax never takes for a step, so it is not restored,
    overwritten or garbage-collected, and a person can inspect it. If none reads, nothing
    is moved (every checkpoint failing points at this program rather than the files) and
    a CheckpointError names the directory.
    """
    _hide_closed_loop_callbacks()
    failed = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state = self.restore(abstract_state, step)
      except Exception as e:  # TensorStore reports damage as ValueError; orbax adds its own types
        log(f"warning: the checkpoint at step {step} in {self.directory} cannot be read: {_first_line(e)}")
        failed.append(step)
        continue
      for bad in failed:
        log(f"warning: moved the unreadable checkpoint to {self._move_aside(bad)}; resuming from step {step}")
      if failed:
        self.manager.reload()  # forget the moved steps, or a later save of the same step is skipped
      return state, step
    raise CheckpointError(f"no checkpoint in {self.directory} can be read (steps {', '.join(map(str, failed))}, "
                          "see the warnings above); restore a good copy, or move the directory aside to start over")

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started."""
    if not force and step % self.every:
      return False
    if step == self.latest_step():
      return False
    with self._storage_errors():  # the previous save's error (asynchronous) surfaces here too
      return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def reached_preemption(self, step: int) -> bool:
    """True on every host once any host of a multi-host job got a preemption notice."""
    return jax.process_count() > 1 and self.manager.reached_preemption(step)

  def close(self) -> None:
    try:
      with self._storage_errors():
        self.manager.wait_until_finished()
    finally:
      self.manager.close()

  def _move_aside(self, step: int) -> Path:
    aside = self.directory / f"{step}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    if jax.process_index() == 0:
      os.rename(self.directory / str(step), aside)
    return aside

  @contextlib.contextmanager
  def _storage_errors(self):
    """Turns a full disk (or another storage error) into one line naming the directory."""
    try:
      yield
    except Exception as e:
      reason = _storage_problem(e)
      if reason is None:
        raise
      self.manager.reload()
      good = self.latest_step()
      kept = f"the checkpoint at step {good} is intact" if good is not None else "no checkpoint was written yet"
      raise CheckpointError(f"cannot write a checkpoint in {self.directory}: {reason}; {kept} "
                            "(free space or fix the directory, then run the same command again to resume)") from e


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


def _storage_problem(e: Exception) -> str | None:
  """"No space left on device" and its kind, from an OSError or from the errno in TensorStore's message."""
  if isinstance(e, OSError) and e.errno:
    return os.strerror(e.errno)
  code = re.search(r"os_error_code='?(\d+)", str(e))
  return os.strerror(int(code.group(1))) if code else None


def _hide_closed_loop_callbacks() -> None:
  """Silences the tracebacks a failed restore leaves behind, one per array still being read.

  Orbax closes its event loop as soon as one read fails; the reads still in flight then
  finish in TensorStore's threads, and each completion callback raises "Event loop is
  closed", which TensorStore prints (via sys.excepthook or sys.unraisablehook), burying the
  one-line error under pages of tracebacks. Only that exact error is dropped.
  """
  if getattr(sys.excepthook, "hides_closed_loop", False):
    return
  closed = lambda e: isinstance(e, RuntimeError) and str(e) == "Event loop is closed"
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def on_exception(kind, value, tb):
    if not closed(value):
      excepthook(kind, value, tb)

  def on_unraisable(unraisable):
    if not closed(unraisable.exc_value):
      unraisablehook(unraisable)

  on_exception.hides_closed_loop = True
  sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


def _first_line(e: Exception, limit: int = 300) -> str:
  line = (str(e).strip().splitlines() or [type(e).__name__])[0]
  return line if len(line) <= limit else line[:limit] + "..."
