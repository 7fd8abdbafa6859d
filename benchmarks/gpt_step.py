"""GPT train step: lineage's trainer step vs a PyTorch nanoGPT-style GPT (eager and torch.compile).

    python benchmarks/gpt_step.py [--configs baby,big] [--rounds 5]

Both sides train the same model (token + learned position embeddings, pre-LN blocks,
causal attention, exact-erf GELU MLP, tied head, no bias, no dropout) with AdamW
(lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices) after global-norm clipping at 1.0.
Lineage's side is the jitted, donated step that `lineage train` runs (research.train.loop
.prepare), not a hand-tuned copy. Sameness first: torch's initial weights are copied
into lineage, and the losses of both are compared at step 0 and after 20 steps on the
same batches. Then the three are timed in interleaved rounds (benchmarks/harness.py),
medians reported with the CPU time other processes took during the blocks. MFU is
against the f32 2048^3 matmul peak measured in this run, with FLOPs from XLA's cost
analysis of lineage's compiled step (the same count for every side). Ends with one JSON line.

    python benchmarks/gpt_step.py --dtype bfloat16

is the mixed-precision row: lineage with `train.compute_dtype=bfloat16` (float32 master
weights, bfloat16 matmuls) against the same torch model under `torch.autocast("cpu",
bfloat16)`, as nanoGPT trains; MFU against the bfloat16 matmul peak (float32 accumulation).
Worth running where the CPU has AVX512-BF16 or AMX (the JSON's cpu_extensions say).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from research.train.host_memory import reuse_freed_memory  # noqa: E402

# As `lineage train` does, before any thread starts (research/train/host_memory.py); one process, so both sides share it.
MALLOC_REUSE = "--default-malloc" not in sys.argv and reuse_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness  # noqa: E402
from peers import torch_gpt  # noqa: E402
import synthetic_gpt  # noqa: E402
from research.config import MeshConfig  # noqa: E402
from research.train.flops import compiled_flops  # noqa: E402
from research.train.loop import prepare  # noqa: E402
from research.train.sharding import make_mesh, put_batch  # noqa: E402

def lineage_params_from_torch(weights: dict[str, np.ndarray], params, n_layer: int):
  """Copies torch_gpt.export_weights (Flax (in, out) layout) into lineage's parameter tree."""
  def put(variable, value):
    assert variable.get_value().shape == value.shape, (variable.get_value().shape, value.shape)
    variable.set_value(jnp.asarray(value))

  put(params["wte"]["embedding"], weights["wte"])
  put(params["wpe"]["embedding"], weights["wpe"])
  put(params["ln_f"]["scale"], weights["ln_f"])
  for i in range(n_layer):
    block, h = params["blocks"][i], f"h.{i}."
    put(block["ln_1"]["scale"], weights[h + "ln_1"])
    put(block["ln_2"]["scale"], weights[h + "ln_2"])
    put(block["attn"]["qkv"]["kernel"], weights[h + "attn.c_attn"])
    put(block["attn"]["proj"]["kernel"], weights[h + "attn.c_proj"])
    put(block["mlp"]["fc"]["kernel"], weights[h + "mlp.c_fc"])
    put(block["mlp"]["proj"]["kernel"], weights[h + "mlp.c_proj"].T)  # lineage stores it (out, in)
  return params


def bench_config(name: str, spec: dict, rounds: int, peak: float, dtype: str, max_other_frac: float) -> dict:
  B, T = spec["batch"], spec["block_size"]
  cfg, batches = synthetic_gpt.config(name, compute_dtype=dtype), synthetic_gpt.batches(name)
  task = synthetic_gpt.SyntheticTask(cfg, batches)
  p = prepare(cfg, task, make_mesh(MeshConfig(), jax.devices()[:1]))

  torch.manual_seed(0)
  tcfg = torch_gpt.GPTConfig(vocab_size=synthetic_gpt.VOCAB, block_size=T, n_layer=spec["n_layer"],
                             n_head=spec["n_head"], n_embd=spec["n_embd"])
  models = {"torch_eager": torch_gpt.GPT(tcfg, seed=0), "torch_compile": torch_gpt.GPT(tcfg, seed=0)}
  weights = torch_gpt.export_weights(models["torch_eager"])
  torch_gpt.load_weights(models["torch_compile"], weights)
  state = p.init()
  state["params"] = lineage_params_from_torch(weights, state["params"], spec["n_layer"])
  state = jax.device_put(state, p.shardings)
  device_batches = [put_batch(b, p.data_sharding) for b in batches]
  torch_batches = [(torch.from_numpy(b["inputs"]).long(), torch.from_numpy(b["targets"]).long()) for b in batches]

  t = time.perf_counter()
  compiled = p.step.lower(state, device_batches[0]).compile()
  jax_compile_s = time.perf_counter() - t
  step_flops = compiled_flops(compiled)

  autocast = torch.bfloat16 if dtype == "bfloat16" else None
  steps = {k: torch_gpt.make_train_step(m, torch_gpt.make_optimizer(m), compile=(k == "torch_compile"), autocast=autocast)
           for k, m in models.items()}
  t = time.perf_counter()
  steps["torch_compile"](*torch_batches[0])  # compile (and take step 0; replayed below)
  torch_compile_s = time.perf_counter() - t
  # Undo that step: fresh weights and optimizer for the compiled model.
  torch_gpt.load_weights(models["torch_compile"], weights)
  steps["torch_compile"] = torch_gpt.make_train_step(
      models["torch_compile"], torch_gpt.make_optimizer(models["torch_compile"]), compile=True, autocast=autocast)

  # ------------------------------------------------------------ sameness: 21 steps on the same batches
  peers = {side: (lambda k, side=side: steps[side](*torch_batches[k % 4])) for side in ("torch_eager", "torch_compile")}
  state, same = harness.same_training(compiled, state, device_batches, peers)
  losses, diff = same.losses, same.diff
  print(same.summary(f"[{name}] "), flush=True)

  # ------------------------------------------------------------ speed, interleaved
  iters = 10 if name == "baby" else 1
  comparison = harness.interleaved(harness.step_callables(compiled, state, device_batches, peers),
                                   rounds=rounds, iters=iters, warmup=2,
                                   max_other_frac=max_other_frac)
  tokens = B * T
  print(comparison.table(baseline="torch_eager", units_per_call=tokens), flush=True)
  result = {
      "tokens_per_step": tokens, "flops_per_step": step_flops,
      **{f"{side}_tok_s": round(tokens / comparison.median(side), 1) for side in comparison.blocks},
      "ratio_vs_torch_eager": round(comparison.ratio("lineage", "torch_eager"), 4),
      "ratio_vs_torch_compile": round(comparison.ratio("lineage", "torch_compile"), 4),
      "paired_ratio_vs_torch_eager": round(comparison.paired_ratio("lineage", "torch_eager"), 4),
      "paired_ratio_vs_torch_compile": round(comparison.paired_ratio("lineage", "torch_compile"), 4),
      "mfu": round(step_flops / comparison.median("lineage") / peak, 4),
      "mfu_torch_eager": round(step_flops / comparison.median("torch_eager") / peak, 4),
      "mfu_torch_compile": round(step_flops / comparison.median("torch_compile") / peak, 4),
      "compile_seconds": {"lineage": round(jax_compile_s, 2), "torch_compile": round(torch_compile_s, 2)},
      "loss_step0": {k: round(v[0], 6) for k, v in losses.items()},
      "loss_step20": {k: round(v[20], 6) for k, v in losses.items()},
      "max_loss_diff_21_steps": {k: float(f"{max(v):.3g}") for k, v in diff.items()},
      "others_max_core_fraction": round(comparison.max_other_cpu_frac(), 3),
      "rounds": rounds, "iters_per_block": iters,
  }
  print(f"[{name}] lineage {result['lineage_tok_s']:,.0f} tok/s; x{result['ratio_vs_torch_eager']:.3f} vs torch eager, "
        f"x{result['ratio_vs_torch_compile']:.3f} vs torch.compile (round by round: x{result['paired_ratio_vs_torch_eager']:.3f}, "
        f"x{result['paired_ratio_vs_torch_compile']:.3f}); MFU {result['mfu']:.1%}", flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="baby,big")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--default-malloc", action="store_true",
                      help="leave glibc's malloc settings alone (lineage train changes them; see host_memory.py)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype: bfloat16 is lineage's train.compute_dtype against torch bf16 autocast")
  parser.add_argument("--max-other-frac", type=float, default=0.05,
                      help="retry a block when other processes took more than this share of a core (1.0 or more: "
                           "never, for the rows measured under a deliberate background load)")
  args = parser.parse_args()
  peak = harness.matmul_peak_gflops(dtype=args.dtype) * 1e9
  print(f"{args.dtype} 2048^3 matmul peak: {peak / 1e9:.0f} GFLOP/s; threads: {harness.thread_settings()}", flush=True)
  figures = {"benchmark": "gpt_step", "dtype": args.dtype, **harness.cpu_info(), "matmul_peak_gflops": round(peak / 1e9, 1),
             "threads": harness.thread_settings(), "torch": torch.__version__, "malloc_reuse": MALLOC_REUSE,
             "max_other_frac": args.max_other_frac}
  for name in args.configs.split(","):
    figures[name] = bench_config(name, synthetic_gpt.CONFIGS[name], args.rounds, peak, args.dtype, args.max_other_frac)
  print(json.dumps(figures))


if __name__ == "__main__":
  main()
