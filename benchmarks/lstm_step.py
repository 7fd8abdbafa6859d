"""LSTM language-model train step: lineage (JAX, lax.scan) vs PyTorch nn.LSTM, interleaved.

    flock -x /tmp/lineage.cpu python benchmarks/lstm_step.py [--rounds 7] [--default-malloc]

The model on both sides: token embedding (V x 256) -> 2-layer LSTM, 256 units -> linear head
(256 x V), T=64, B=32, V=4096 (lstm_wiki's vocabulary), float32, no dropout; the step is
mean next-token cross-entropy, backward, global-norm clip 1.0 and AdamW (weight decay on
matrices only). lineage's step is the trainer's own (`research/train/step.py`, jitted with
donated state, with its malloc settings and its loss fetched a step late, as `lineage train`
runs it); PyTorch's is eager `nn.LSTM` (its fused CPU
kernel). Before timing, weights are copied from lineage to PyTorch and the losses compared
at step 0 and after 10 steps on the same batches. Timing follows shared/BENCHMARKING.md:
interleaved blocks, blocks disturbed by other processes retried, medians and their ratio,
MFU against a matmul measured in the same run. Ends with one line of JSON holding every
figure; `ratio_vs_torch` > 1 means lineage is faster.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from research.train.host_memory import reuse_freed_memory  # noqa: E402

# As `lineage train` does, before any thread starts (research/train/host_memory.py); one process, so both sides share it.
MALLOC_REUSE = "--default-malloc" not in sys.argv and reuse_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import harness  # noqa: E402
from research.config import OptimConfig  # noqa: E402
from research.models import lstm, rnn  # noqa: E402
from research.objectives import lm  # noqa: E402
from research.train.optimizer import make_optimizer  # noqa: E402
from research.train.step import init_state, make_train_step  # noqa: E402

CFG = lstm.Config(vocab_size=4096, block_size=64, n_layer=2, n_embd=256, n_hidden=256)
BATCH = 32
OPTIM = OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant", weight_decay=0.1, beta1=0.9, beta2=0.99)


def batches(n: int, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  # Tokens drawn from the first 64 ids, so the loss falls visibly in the 10-step sameness check.
  rows = rng.integers(0, 64, (n, BATCH, CFG.block_size + 1))
  return [{"inputs": r[:, :-1].astype(np.int32), "targets": r[:, 1:].astype(np.int32)} for r in rows]


# --------------------------------------------------------------------------------- lineage


def lineage_step():
  model = lstm.build(CFG, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = make_optimizer(OPTIM, 10_000)
  step = jax.jit(make_train_step(graphdef, lm.loss_fn, tx, seed=0), donate_argnums=0)
  return model, step, init_state(params, tx)


# --------------------------------------------------------------------------------- PyTorch


def torch_model(model):
  import torch

  class LSTMLM(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = torch.nn.Embedding(CFG.vocab_size, CFG.n_embd)
      self.lstm = torch.nn.LSTM(CFG.n_embd, CFG.n_hidden, CFG.n_layer, batch_first=True)
      self.head = torch.nn.Linear(CFG.n_hidden, CFG.vocab_size)

    def forward(self, x):
      return self.head(self.lstm(self.embed(x))[0])

  net = LSTMLM()
  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  with torch.no_grad():
    net.embed.weight.copy_(t(model.embed.embedding[...]))
    for layer, cell in enumerate(model.rnn.forward):
      getattr(net.lstm, f"weight_ih_l{layer}").copy_(t(cell.w_ih[...]).T)
      getattr(net.lstm, f"weight_hh_l{layer}").copy_(t(cell.w_hh[...]).T)
      getattr(net.lstm, f"bias_ih_l{layer}").copy_(t(cell.bias[...]))
      # lineage has one bias per gate; PyTorch's second copy is held at zero so both train alike.
      getattr(net.lstm, f"bias_hh_l{layer}").zero_()
      getattr(net.lstm, f"bias_hh_l{layer}").requires_grad_(False)
    net.head.weight.copy_(t(model.head.kernel[...]).T)
    net.head.bias.copy_(t(model.head.bias[...]))
  decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
  other = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM.weight_decay},
                           {"params": other, "weight_decay": 0.0}],
                          lr=OPTIM.lr, betas=(OPTIM.beta1, OPTIM.beta2), eps=OPTIM.eps)

  def step(batch):
    x, y = torch.from_numpy(batch["inputs"]).long(), torch.from_numpy(batch["targets"]).long()
    logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CFG.vocab_size), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], OPTIM.grad_clip)
    opt.step()
    return loss.item()

  return step


# ------------------------------------------------------------------------------------ main


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--iters", type=int, default=5, help="steps per timed block")
  parser.add_argument("--default-malloc", action="store_true",
                      help="leave glibc's malloc settings alone (lineage train changes them; see host_memory.py)")
  args = parser.parse_args()
  import torch

  torch.manual_seed(0)
  data = batches(12)
  model, jstep, state = lineage_step()
  tstep = torch_model(model)

  # Sameness first: the same function, trained the same way.
  jax_losses, torch_losses = [], []
  t = time.perf_counter()
  for k, b in enumerate(data[:11]):
    state, metrics = jstep(state, {n: jnp.asarray(v) for n, v in b.items()})
    jax_losses.append(float(metrics["loss"]))
    if k == 0:
      compile_seconds = time.perf_counter() - t
    torch_losses.append(tstep(b))
  print(f"loss step 0: lineage {jax_losses[0]:.6f} torch {torch_losses[0]:.6f}; "
        f"step 10: lineage {jax_losses[10]:.6f} torch {torch_losses[10]:.6f}")
  assert abs(jax_losses[0] - torch_losses[0]) < 1e-4 and abs(jax_losses[10] - torch_losses[10]) < 1e-3, \
      "lineage and PyTorch do not compute the same step"

  # Timed on the same four batches, lineage's step as `lineage train` runs it (the loss fetched a step late).
  device_batches = [{n: jnp.asarray(v) for n, v in b.items()} for b in data[:4]]
  steps = harness.step_callables(jstep, state, device_batches, {"torch": lambda k: tstep(data[k % 4])})

  peak = harness.matmul_peak_gflops()
  result = harness.interleaved(steps, rounds=args.rounds, iters=args.iters)
  tokens = BATCH * CFG.block_size
  print(result.table(baseline="torch", units_per_call=tokens))
  flops = rnn.train_flops(CFG, data[0])
  figures = {
      "benchmark": "lstm_lm_train_step", "layers": CFG.n_layer, "hidden": CFG.n_hidden, "embed": CFG.n_embd,
      "vocab": CFG.vocab_size, "seq_len": CFG.block_size, "batch": BATCH,
      "lineage_ms": 1e3 * result.median("lineage"), "torch_ms": 1e3 * result.median("torch"),
      "lineage_tokens_per_s": tokens / result.median("lineage"), "torch_tokens_per_s": tokens / result.median("torch"),
      "ratio_vs_torch": result.ratio("lineage", "torch"), "paired_ratio_vs_torch": result.paired_ratio("lineage", "torch"),
      "flops_per_step": flops, "matmul_peak_gflops": peak,
      "lineage_mfu": flops / result.median("lineage") / (peak * 1e9),
      "torch_mfu": flops / result.median("torch") / (peak * 1e9),
      "lineage_compile_seconds": compile_seconds,
      "loss_step0": {"lineage": jax_losses[0], "torch": torch_losses[0]},
      "loss_step10": {"lineage": jax_losses[10], "torch": torch_losses[10]},
      "max_other_cpu_frac": result.max_other_cpu_frac(), "malloc_reuse": MALLOC_REUSE, **harness.thread_settings(),
  }
  print(json.dumps({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in figures.items()}))


if __name__ == "__main__":
  main()
