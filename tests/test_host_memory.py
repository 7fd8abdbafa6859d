"""research/train/host_memory.py: after it, a large buffer freed and allocated again costs no page faults."""

import platform
import subprocess
import sys

import pytest

# In a fresh process (the settings are process-wide): allocate, touch, free and re-allocate a
# 200 MB buffer, as XLA:CPU does with a step's scratch memory, and count the page faults.
PROBE = """
import ctypes, resource, sys
if sys.argv[1] == "on":
  from research.train.host_memory import reuse_freed_memory
  assert reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(3):
  before = faults()
  buffer = libc.malloc(200 << 20)
  ctypes.memset(buffer, 1, 200 << 20)
  libc.free(buffer)
print(faults() - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_freed_large_buffer_is_reused_without_page_faults():
  def third_step_faults(setting: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    return int(out.stdout)

  assert third_step_faults("off") > 40_000  # 200 MB of fresh 4 KB pages
  assert third_step_faults("on") < 1_000
