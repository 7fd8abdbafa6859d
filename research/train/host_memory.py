"""Host malloc settings for training on a CPU: reuse XLA:CPU's scratch memory step after step.

XLA:CPU allocates one temporary buffer for each run of a compiled program and frees it
when the run ends. It is large (171 MB for the Transformer step of benchmarks/
transformer_step.py), and glibc serves a request that large with a fresh mmap and gives it
back with munmap, so every training step touches its scratch memory as new pages: ~42,000
page faults a step there, a third of the process's samples in the kernel (perf), and a step
~1.4x slower on 2 shared cores. Asking malloc to serve large requests from its heap
(M_MMAP_MAX 0), never to shrink the heap (M_TRIM_THRESHOLD), and to use one arena
(M_ARENA_MAX 1; another thread's arena is a 64 MB heap, too small, so its large requests
would go to mmap anyway) lets each step reuse the pages of the one before: 0 faults a step
after ~30 steps of warm-up.

The price is host memory: freed memory stays with the process, and the one heap fragments
(resident memory 0.9 -> 1.8 GB in that benchmark). M_ARENA_MAX applies only to threads that
have not allocated yet, so call this first thing, before jax or torch start their threads.
Only for glibc; elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# From glibc's malloc.h.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory() -> bool:
  """Applies the settings above; returns whether malloc took them (False off glibc)."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return False
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))  # mallopt's value is an int
  return all(libc.mallopt(option, value) == 1 for option, value in settings)
