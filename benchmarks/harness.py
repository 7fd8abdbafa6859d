"""Measuring helpers for benchmarks on small, shared CPU machines.

The rules these helpers encode (see shared/BENCHMARKING.md):

* Interleave, don't sequence: callables under comparison are timed in
  alternation (A B C A B C ...) in the same process, and we report per-callable
  medians and ratios. A lone absolute time means little on a 2-core machine.
* Neighbours distort everything: during every timed block we read how much CPU
  time *other* processes used (machine-wide busy jiffies from /proc/stat minus
  this process's utime+stime from /proc/self/stat). A block during which others
  used more than a threshold is retried, and what was seen is reported.
* Measure the ceiling in the same run: a 2048^3 f32 matmul in JAX gives the
  GFLOP/s figure that MFU is computed against.
* Record thread settings, so numbers can be compared across runs.

Every callable passed to the timing functions must be synchronous, i.e. return
only when its work is done (call ``jax.block_until_ready`` / ``.item()`` inside), or
carry a ``drain()`` that finishes what it left in flight (see `step_callables`).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------


def _machine_busy_jiffies() -> int:
  """Busy jiffies of all CPUs since boot (everything except idle and iowait)."""
  with open("/proc/stat") as f:
    fields = f.readline().split()  # "cpu user nice system idle iowait irq softirq steal ..."
  user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
  # guest/guest_nice are already included in user/nice, so they are not added.
  return user + nice + system + irq + softirq + steal


def _self_jiffies() -> int:
  """utime + stime of this process (all its threads)."""
  with open("/proc/self/stat") as f:
    data = f.read()
  # The command name (field 2) may contain spaces; it is closed by the last ')'.
  rest = data[data.rindex(")") + 2:].split()
  utime, stime = int(rest[11]), int(rest[12])  # fields 14 and 15 of proc(5)
  return utime + stime


def cpu_snapshot() -> tuple[float, int, int]:
  """(wall time, machine busy jiffies, own jiffies); diff two with `other_cpu_seconds`."""
  return time.perf_counter(), _machine_busy_jiffies(), _self_jiffies()


def other_cpu_seconds(start: tuple[float, int, int], end: tuple[float, int, int]) -> float:
  """CPU seconds used by other processes between two `cpu_snapshot`s.

    Jiffies are coarse (10 ms), so the value is only meaningful for blocks of
    at least ~100 ms; it can be slightly negative from rounding.
    """
  machine = end[1] - start[1]
  own = end[2] - start[2]
  return (machine - own) / _CLK_TCK


def wait_for_quiet(max_other_frac: float = 0.05, window_s: float = 0.5, timeout_s: float = 60.0) -> float:
  """Wait until other processes use < max_other_frac of one core over a window.

    Returns the fraction seen last (so callers can report it if the timeout hit).
    """
  deadline = time.perf_counter() + timeout_s
  while True:
    s = cpu_snapshot()
    time.sleep(window_s)
    frac = other_cpu_seconds(s, cpu_snapshot()) / window_s
    if frac < max_other_frac or time.perf_counter() > deadline:
      return frac


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


@dataclass
class Block:
  """One timed block: `iters` calls of one callable."""
  seconds_per_iter: float
  other_cpu_s: float  # CPU seconds used by other processes during the block
  wall_s: float
  retries: int = 0  # how many disturbed attempts were thrown away first


def _drain(fn: Callable[[], object]) -> None:
  """Finishes the work a callable left in flight, if it says how (`fn.drain`)."""
  getattr(fn, "drain", lambda: None)()


def time_block(fn: Callable[[], object], iters: int) -> Block:
  """Time `iters` back-to-back calls of a callable; its `drain()`, if it has one, ends the block
  (a callable that leaves its last call's work in flight, as lineage's train step does)."""
  s = cpu_snapshot()
  for _ in range(iters):
    fn()
  _drain(fn)
  e = cpu_snapshot()
  wall = e[0] - s[0]
  return Block(wall / iters, other_cpu_seconds(s, e), wall)


def time_block_retrying(fn: Callable[[], object],
                        iters: int,
                        max_other_frac: float = 0.05,
                        max_retries: int = 5) -> Block:
  """Like `time_block`, but retry (after waiting for quiet) when others were busy.

    A block is disturbed when other processes used more than `max_other_frac`
    of one core during it. After `max_retries` the least disturbed attempt is kept.
    """
  best = None
  for attempt in range(max_retries + 1):
    b = time_block(fn, iters)
    b.retries = attempt
    if best is None or b.other_cpu_s < best.other_cpu_s:
      best = b
    if b.other_cpu_s <= max_other_frac * b.wall_s:
      return b
    wait_for_quiet(max_other_frac, timeout_s=10.0)
  return best


@dataclass
class Comparison:
  """Result of `interleaved`: the blocks of each callable, in round order."""
  blocks: dict[str, list[Block]] = field(default_factory=dict)

  def median(self, name: str) -> float:
    """Median seconds per call."""
    return statistics.median(b.seconds_per_iter for b in self.blocks[name])

  def ratio(self, name: str, baseline: str) -> float:
    """Speed of `name` relative to `baseline` (> 1 means `name` is faster)."""
    return self.median(baseline) / self.median(name)

  def paired_ratio(self, name: str, baseline: str) -> float:
    """Median over rounds of the speed of `name` relative to `baseline` in the same round.

    A round's blocks run back to back, so a slow phase of the host (a neighbour VM on the
    same cores, invisible to this one's /proc/stat) slows both; the ratio of medians can
    swing when such phases fall unevenly on the two sides, this one much less."""
    return statistics.median(b.seconds_per_iter / a.seconds_per_iter
                             for a, b in zip(self.blocks[name], self.blocks[baseline]))

  def max_other_cpu_frac(self) -> float:
    """Worst fraction of a core used by others during any kept block."""
    return max(b.other_cpu_s / b.wall_s for bl in self.blocks.values() for b in bl)

  def table(self,
            baseline: str | None = None,
            units_per_call: float | None = None,
            unit: str = "tok/s") -> str:
    """Plain-text table: median ms/call, spread, throughput, ratio, disturbance."""
    lines = []
    for name, bl in self.blocks.items():
      times = sorted(b.seconds_per_iter for b in bl)
      med = self.median(name)
      row = (f"{name:28s} median {med * 1e3:9.3f} ms  "
             f"[min {times[0] * 1e3:8.3f}, max {times[-1] * 1e3:8.3f}]")
      if units_per_call:
        row += f"  {units_per_call / med:10.1f} {unit}"
      if baseline:
        row += f"  x{self.ratio(name, baseline):.3f} vs {baseline}"
      other = max(b.other_cpu_s / b.wall_s for b in bl)
      retries = sum(b.retries for b in bl)
      row += f"  (others <= {other:.1%} core, {retries} retries)"
      lines.append(row)
    return "\n".join(lines)


def interleaved(fns: Mapping[str, Callable[[], object]],
                rounds: int = 7,
                iters: int | Mapping[str, int] = 10,
                warmup: int = 2,
                max_other_frac: float = 0.05,
                max_retries: int = 5,
                shuffle: bool = True) -> Comparison:
  """Time several callables in alternation, `rounds` blocks each.

    `iters` is the number of calls per block (one number or one per name); pick
    it so a block lasts >= ~0.3 s, the resolution of the CPU accounting. The
    order within a round is rotated each round (when `shuffle`) so that no
    callable always runs right after the same neighbour.
    """
  names = list(fns)
  per = iters if isinstance(iters, Mapping) else {n: iters for n in names}
  for n in names:  # warm caches, JIT, allocator
    for _ in range(warmup):
      fns[n]()
    _drain(fns[n])
  out = Comparison({n: [] for n in names})
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)] if shuffle else names
    for n in order:
      out.blocks[n].append(time_block_retrying(fns[n], per[n], max_other_frac, max_retries))
  return out


# --------------------------------------------------------------------------
# Train steps, lineage's and a peer's, on the same batches
# --------------------------------------------------------------------------


@dataclass
class SameTraining:
  """Losses of `steps` train steps on every side; `diff` is |lineage - peer| per step."""
  losses: dict[str, list[float]]
  diff: dict[str, list[float]]

  def summary(self, label: str = "") -> str:
    peers = [k for k in self.losses if k != "lineage"]
    last = len(self.losses["lineage"]) - 1
    return (f"{label}loss step 0: " + ", ".join(f"{k} {v[0]:.6f}" for k, v in self.losses.items())
            + f"; step {last}: " + ", ".join(f"{k} {v[-1]:.6f}" for k, v in self.losses.items())
            + "; max |diff| " + " / ".join(f"{max(self.diff[k]):.2e}" for k in peers))


def same_training(compiled, state, batches: list, peers: Mapping[str, Callable[[int], float]],
                  steps: int = 21) -> tuple[object, SameTraining]:
  """Takes `steps` steps of lineage's compiled train step `(state, batch) -> (state, metrics)` and of
  each peer's `step(k) -> loss` on batch k % len(batches); returns lineage's state after them."""
  losses = {"lineage": [], **{k: [] for k in peers}}
  for k in range(steps):
    state, metrics = compiled(state, batches[k % len(batches)])
    losses["lineage"].append(float(metrics["loss"]))
    for side, step in peers.items():
      losses[side].append(float(step(k)))
  diff = {side: [abs(a - b) for a, b in zip(losses["lineage"], losses[side])] for side in peers}
  return state, SameTraining(losses, diff)


def step_callables(compiled, state, batches: list, peers: Mapping[str, Callable[[int], object]]
                   ) -> dict[str, Callable[[], None]]:
  """Zero-argument callables for `interleaved`: lineage's compiled step, carrying its state from
  call to call, and each peer's `step(k)` (synchronous itself), over the same batches.

  Lineage's step runs as `lineage train`'s loop runs it (research/train/loop.py): each call
  dispatches a step, then fetches the loss of the one before, so the host prepares step k + 1
  while step k computes. Its `drain()` fetches the last one, and `time_block` calls it before
  a block's clock stops: every block holds whole steps and none spills into a peer's block.
  """
  holder = {"state": state, "k": 0, "pending": None}

  def drain():
    if holder["pending"] is not None:
      float(holder["pending"]["loss"])  # a device-to-host fetch, as the loop's fetch_pending
      holder["pending"] = None

  def lineage():
    holder["k"] += 1
    holder["state"], metrics = compiled(holder["state"], batches[holder["k"] % len(batches)])
    drain()
    holder["pending"] = metrics

  lineage.drain = drain

  def peer(step):
    def run():
      holder["k"] += 1
      step(holder["k"])
    return run

  return {"lineage": lineage, **{side: peer(step) for side, step in peers.items()}}


# --------------------------------------------------------------------------
# Ceiling and settings
# --------------------------------------------------------------------------


def matmul_peak_gflops(n: int = 2048, reps: int = 5, rounds: int = 3, dtype: str = "float32") -> float:
  """Measured matmul throughput of JAX/XLA on this machine, GFLOP/s (best of rounds).

    An n^3 matmul is compute-bound, so this is the practical ceiling for MFU. Accumulated in
    float32, which for bfloat16 operands is XLA:CPU's fastest path (see research/train/flops.py).
    """
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  mm(a, b).block_until_ready()
  best = float("inf")
  for _ in range(rounds):
    blk = time_block_retrying(lambda: mm(a, b).block_until_ready(), reps)
    best = min(best, blk.seconds_per_iter)
  return 2 * n**3 / best / 1e9


# AMD's microarchitecture from /proc/cpuinfo's family and model: family 23 (0x17) is Zen to
# Zen 2, 25 (0x19) Zen 3 or Zen 4 by model range, 26 (0x1a) Zen 5. Other vendors: "unknown".
def _microarchitecture(vendor: str, family: int, model: int) -> str:
  if vendor == "AuthenticAMD":
    if family == 26:
      return "Zen 5"
    if family == 25:
      return "Zen 3" if model < 0x10 or 0x20 <= model < 0x60 else "Zen 4"
    if family == 23:
      return "Zen 2" if model >= 0x30 else "Zen/Zen+"
  return "unknown"


def cpu_info() -> dict[str, object]:
  """The CPU a benchmark ran on: its model, family/model/stepping (cloud VMs often name
  just "AMD EPYC", which hides Zen 4 against Zen 5) and the vector/matrix extensions that
  decide which kernels oneDNN, XLA and gensim's C loops can use. A ratio holds only on this CPU."""
  fields, flags = {}, set()
  try:
    for line in open("/proc/cpuinfo"):
      key, _, value = line.partition(":")
      key = key.strip()
      if key in ("model name", "vendor_id", "cpu family", "model", "stepping") and key not in fields:
        fields[key] = value.strip()
      elif key == "flags" and not flags:
        flags = set(value.split())
  except OSError:
    pass
  wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
  number = lambda key: int(fields[key]) if fields.get(key, "").isdigit() else -1
  family, model = number("cpu family"), number("model")
  return {"cpu_model": fields.get("model name", "unknown"),
          "cpu_family_model_stepping": [family, model, number("stepping")],
          "cpu_microarchitecture": _microarchitecture(fields.get("vendor_id", ""), family, model),
          "cpu_extensions": [f for f in wanted if f in flags]}


def thread_settings() -> dict[str, object]:
  """Thread-related settings in force and the CPU, for the record of a benchmark run."""
  rec: dict[str, object] = {
      **cpu_info(),
      "cpus": os.cpu_count(),
      "affinity": len(os.sched_getaffinity(0)),
  }
  for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "JAX_PLATFORMS"):
    rec[var] = os.environ.get(var)
  try:
    import torch
    rec["torch_threads"] = torch.get_num_threads()
    rec["torch_interop_threads"] = torch.get_num_interop_threads()
  except ImportError:
    pass
  try:
    import jax
    rec["jax"] = jax.__version__
  except ImportError:
    pass
  return rec


def gpt_train_flops(n_layer: int, n_embd: int, block: int, vocab: int, batch: int) -> float:
  """Approximate FLOPs of one GPT train step (forward + backward = 3x forward).

    Counts matmuls only: 12*L*C^2 per token for the blocks' weights, the
    attention scores and values (2*L*T*C per token for the causal-free count),
    and the tied output head V*C, each at 2 FLOPs per multiply-add.
    """
  per_token = 2 * (12 * n_layer * n_embd**2 + 2 * n_layer * block * n_embd + vocab * n_embd)
  return 3 * per_token * block * batch
