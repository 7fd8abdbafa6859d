"""One live process per run directory: `run.lock` names the process that trains there.

Liveness comes from `fcntl.flock` on the lock file, which the kernel drops when its holder
dies however it dies (SIGKILL included), so a lock left by a dead process is recognised
without guessing from pids. The file's JSON (host, pid, start time, command) is only for
the message: who holds the directory, or whose stale lock was taken over. Where flock is
not supported (some network filesystems), a lock from this host whose pid is gone is stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = "run.lock"


class RunLockedError(RuntimeError):
  """Another live process trains in this run directory."""


class RunLock:
  """Holds `<run_dir>/run.lock` from `acquire` (or `with`) until `release`.

  `primary=False` makes it a no-op: in a multi-host run only process 0 takes the lock.
  """

  def __init__(self, run_dir: Path, *, primary: bool = True, log=print):
    self.run_dir, self.primary, self.log = Path(run_dir), primary, log
    self.path = self.run_dir / LOCK_FILE
    self.fd: int | None = None
    self.created = False

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    if not self.primary or self.fd is not None:
      return
    self.created = not self.run_dir.exists()
    self.run_dir.mkdir(parents=True, exist_ok=True)
    fd = self._open_locked()
    previous = _holder(fd)
    if previous:  # the kernel dropped its flock: that process is gone
      self.log(f"warning: taking over the stale lock {self.path} of pid {previous.get('pid')} on "
               f"{previous.get('host')} (started {previous.get('started')}); that process is gone")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me()).encode() + b"\n", 0)
    os.fsync(fd)
    self.fd = fd

  def release(self) -> None:
    if self.fd is None:
      return
    # Unlink while still holding the flock: a process that opened the old file meanwhile
    # sees that it no longer is the file at `path` and opens afresh (see _open_locked).
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(self.fd)
    self.fd = None
    if self.created:  # a run that failed before writing anything leaves no empty directory
      with contextlib.suppress(OSError):
        self.run_dir.rmdir()

  def _open_locked(self) -> int:
    """Opens and flocks the file now at `path`; raises RunLockedError if a live process holds it."""
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        holder = _holder(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or _maybe_alive(holder):
          os.close(fd)
          raise RunLockedError(self._refusal(holder)) from None
        # flock unsupported here and the holder named in the file is gone: take it over
      if _same_file(fd, self.path):
        return fd
      os.close(fd)  # released (unlinked) between our open and our flock: try the new file

  def _refusal(self, holder: dict) -> str:
    if not holder:
      return f"{self.run_dir} is in use by another process (it is starting: {self.path} is still empty)"
    return (f"{self.run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
            f"(started {holder.get('started')}); wait for it to finish or stop it, or use another train.run_name")


def _me() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "command": " ".join(sys.argv)}


def _holder(fd: int) -> dict:
  """The lock file's JSON, or {} if it is empty or unreadable (a holder that died mid-write)."""
  try:
    holder = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _maybe_alive(holder: dict) -> bool:
  """Without flock: a process on another host may be alive; one on this host is alive if its pid is."""
  if not holder:
    return False
  if holder.get("host") != socket.gethostname():
    return True
  try:
    os.kill(int(holder["pid"]), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, KeyError, ValueError, TypeError):
    return True
  return True


def _same_file(fd: int, path: Path) -> bool:
  try:
    return os.fstat(fd).st_ino == os.stat(path).st_ino
  except FileNotFoundError:
    return False
