"""FLOPs of a compiled step and the peak FLOP/s of a device, for MFU.

FLOPs come from XLA's cost analysis of the compiled program. XLA counts the body of a loop
(`lax.scan`, `fori_loop`, scanned layers, recurrent cells) once, not once per iteration:
callers that loop must add the missing iterations (see `research/train/loop.py` for
gradient accumulation) or use an analytic count checked against XLA on an unrolled config.
With a sharded program the count is per device.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per device (one chip; one GPU), from the vendors' data sheets.
PEAK_FLOPS = {
    # TPU: https://cloud.google.com/tpu/docs/system-architecture-tpu-vm (bf16)
    ("TPU v2", "bfloat16"): 45e12,
    ("TPU v3", "bfloat16"): 123e12,
    ("TPU v4", "bfloat16"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12,  # v5e
    ("TPU v5", "bfloat16"): 459e12,  # v5p
    ("TPU v6 lite", "bfloat16"): 918e12,  # v6e (Trillium)
    # NVIDIA dense tensor-core figures; float32 rows are TF32 where matmuls use it by default in XLA.
    ("NVIDIA A100-SXM4-40GB", "bfloat16"): 312e12,
    ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312e12,
    ("NVIDIA A100-SXM4-40GB", "float32"): 19.5e12,
    ("NVIDIA A100-SXM4-80GB", "float32"): 19.5e12,
    ("NVIDIA H100 80GB HBM3", "bfloat16"): 989e12,
    ("NVIDIA H100 80GB HBM3", "float32"): 67e12,
}


def compiled_flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returns one dict per program
    analysis = analysis[0]
  return float((analysis or {}).get("flops", 0.0))


def measure_matmul_peak(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """The best FLOP/s of an n^3 matmul on the default device: the practical ceiling on a CPU.

  Accumulated in float32: for bfloat16 operands that is XLA:CPU's fast path (AVX512-BF16 dot
  products; a bfloat16 result runs at under half the speed on an AMD Zen 5), so a bfloat16
  MFU is not flattered by a slow ceiling.
  """
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


def device_peak_flops(dtype: str, cache_file: Path | None = None) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the number came from)."""
  device = jax.devices()[0]
  kind = device.device_kind
  if (kind, dtype) in PEAK_FLOPS:
    return PEAK_FLOPS[(kind, dtype)], f"data sheet: {kind} {dtype}"
  if device.platform != "cpu":
    return 0.0, f"unknown device {kind!r}: add it to PEAK_FLOPS in research/train/flops.py"
  # A CPU has no data-sheet number that XLA reaches; measure the matmul ceiling once per machine.
  # The cores this process may use are part of the key: a run pinned to one core (taskset)
  # must not leave its one-core peak behind for runs that have the whole machine.
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  key = f"{kind}|{dtype}|{jax.device_count()}|{cores} cores"
  cached = json.loads(cache_file.read_text()) if cache_file and cache_file.exists() else {}
  if key not in cached:
    # With simulated devices the threads are shared, so one device's share of the peak.
    cached[key] = measure_matmul_peak(dtype=jnp.dtype(dtype)) / jax.device_count()
    if cache_file:
      cache_file.parent.mkdir(parents=True, exist_ok=True)
      cache_file.write_text(json.dumps(cached))
  return cached[key], f"measured {dtype} 2048^3 matmul on this machine ({cache_file or 'not cached'})"


def train_step_flops(cfg, loss_fn, graphdef, compiled, example: dict, state: dict) -> float:
  """FLOPs of one train step per device: the default of `Task.step_flops`.

  XLA counts a loop body once, not once per iteration. A model whose forward scans (over
  time, over layers) gives an analytic count for the whole batch as its module's
  `train_flops(model_cfg, batch)` (its tests check it against XLA on an unrolled config);
  otherwise XLA's count, with gradient accumulation's scan corrected here by the FLOPs of
  the other micro-batches' gradients. A task whose own step scans overrides `step_flops`.
  """
  from flax import nnx

  from research.models import model_module

  module = model_module(cfg.model.name)
  if hasattr(module, "train_flops"):
    return module.train_flops(cfg.model, example) / jax.device_count()
  flops = compiled_flops(compiled)
  accum = cfg.train.grad_accum
  if accum > 1:
    micro = jax.tree.map(lambda x: x[: x.shape[0] // accum], example)
    grad_of = jax.value_and_grad(
        lambda params, b: loss_fn(nnx.merge(graphdef, params), b, jax.random.key(0), True), has_aux=True)
    flops += (accum - 1) * compiled_flops(jax.jit(grad_of).lower(state["params"], micro).compile())
  return flops
