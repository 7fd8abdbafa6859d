"""The multi-host path for real: two processes on localhost, 4 CPU devices each, one mesh.

`jax.distributed` connects them (gloo CPU collectives, jax's default on CPU), each feeds its
own rows of every batch (sharding.put_batch), orbax writes one sharded checkpoint from both.
The pair must train exactly as one process with 8 devices does, stop together when one of
them is sent SIGTERM, and resume from that checkpoint to the uninterrupted run's end.

This file is also the worker: `python tests/test_multiprocess.py ID PORT RUN_DIR CORPUS OUT SIGTERM_AT`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# jax's preemption sync point comes ~1 s after the signal; steps after it are slowed to 0.2 s
# so that it falls well inside the run.
STEPS, SIGTERM_AT, SLOW_STEP_SECONDS = 20, 3, 0.2
REPO = Path(__file__).resolve().parents[1]
TEXT = "".join(f"the {a} {b} sat on the {c} mat.\n" for a in ("cat", "dog", "owl") for b in ("red", "big")
               for c in ("old", "new", "wet", "dry")) * 40


def tiny_config(corpus: Path, cache: Path):
  from research.config import Config, DataConfig, MeshConfig, OptimConfig, TokenizerConfig, TrainConfig
  from research.models import gpt

  return Config(
      experiment="tiny", objective="lm",
      model=gpt.Config(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1),
      # fsdp spans the two processes (each holds half of every embed-sharded parameter and feeds
      # half the batch); tensor spans each one's 4 devices.
      mesh=MeshConfig(data=1, fsdp=2, tensor=4),
      data=DataConfig(path=str(corpus), cache_dir=str(cache)),
      tokenizer=TokenizerConfig(kind="char"),
      optim=OptimConfig(lr=3e-3, warmup_steps=2),
      # checkpoint_every > STEPS: the only checkpoints are the preemption's and the final one.
      train=TrainConfig(steps=STEPS, batch_size=8, log_every=1, eval_every=STEPS, eval_batches=2,
                        checkpoint_every=100, progress=False),
  )


def worker(process_id: int, port: int, run_dir: Path, corpus: Path, out: Path, sigterm_at: int) -> None:
  import jax

  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
  import numpy as np
  from jax.experimental import multihost_utils

  from research.train import loop

  assert jax.device_count() == 8 and jax.local_device_count() == 4

  def preempt(step, state):
    if step == sigterm_at and process_id == 1:  # one host is preempted
      os.kill(os.getpid(), signal.SIGTERM)
    if step >= sigterm_at:
      time.sleep(SLOW_STEP_SECONDS)

  cfg = tiny_config(corpus, run_dir.parent / "cache")
  result = loop.train(cfg, run_dir=run_dir, on_step=preempt if sigterm_at >= 0 else None, log=lambda *_: None)
  held = min(held_fraction(x) for x in jax.tree.leaves(result.state["params"]))
  params = multihost_utils.process_allgather(result.state["params"], tiled=True)
  leaves = {str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
  np.savez(out / f"params{process_id}.npz", **leaves)
  (out / f"result{process_id}.json").write_text(json.dumps({"status": result.status, "step": result.step,
                                                            "held": held}))


def held_fraction(x) -> float:
  """The fraction of a global array's elements on this process's devices: < 1 when it is split."""
  blocks = {tuple((s.start or 0, dim if s.stop is None else s.stop) for s, dim in zip(shard.index, x.shape))
            for shard in x.addressable_shards}
  return sum(math.prod(b - a for a, b in block) for block in blocks) / x.size


if __name__ == "__main__":
  pid, port, run_dir, corpus, out, sigterm_at = sys.argv[1:]
  worker(int(pid), int(port), Path(run_dir), Path(corpus), Path(out), int(sigterm_at))
  sys.exit(0)


# ------------------------------------------------------------------------------------- the test
import jax  # noqa: E402  (after the worker: a worker must call jax.distributed.initialize first)
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_pair(run_dir: Path, corpus: Path, out: Path, sigterm_at: int = -1, timeout: float = 120) -> list[dict]:
  """Starts both processes (process 1 is sent SIGTERM at step `sigterm_at`, if >= 0), waits for
  both; returns each one's {"status", "step"}."""
  out.mkdir(parents=True, exist_ok=True)
  port = free_port()
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         # The resumed pair compiles what the first pair did: reuse it (the machine is small).
         "JAX_COMPILATION_CACHE_DIR": str(run_dir.parent / "jax_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(run_dir), str(corpus), str(out),
                             str(sigterm_at)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  deadline = time.monotonic() + timeout
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(f"the 2-process run did not finish in {timeout:.0f}s (a process waits in a collective)")
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{log[-4000:]}"
  return [json.loads((out / f"result{i}.json").read_text()) for i in range(2)]


def losses(run_dir: Path) -> dict[int, float]:
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


# 80-125 s on this 2-core machine under load (three compiles of two processes each): run with -m slow.
@pytest.mark.slow
def test_two_processes_train_stop_and_resume_as_one(tmp_path):
  from research.train import loop

  corpus = tmp_path / "tiny.txt"
  corpus.write_text(TEXT)
  # The 1-process reference on this process's 8 simulated devices (it also fills the data cache).
  assert jax.device_count() == 8
  reference = loop.train(tiny_config(corpus, tmp_path / "cache"), run_dir=tmp_path / "reference",
                         log=lambda *_: None)
  expected = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(reference.state["params"]))]

  run_dir = tmp_path / "pair"
  first = run_pair(run_dir, corpus, tmp_path / "first", sigterm_at=SIGTERM_AT)
  assert first[0] == first[1] and first[0]["status"] == "preempted"  # both stopped, at the same step
  assert first[0]["held"] == 0.5  # some parameters are split between the processes, and so is their checkpoint
  assert SIGTERM_AT <= first[0]["step"] < STEPS
  second = run_pair(run_dir, corpus, tmp_path / "second")
  assert [(r["status"], r["step"]) for r in second] == [("done", STEPS)] * 2

  stopped = first[0]["step"]
  # One sharded checkpoint per save, written by both: the preemption's and the final one.
  assert sorted(int(d.name) for d in (run_dir / "checkpoints").iterdir() if d.name.isdigit()) == [stopped, STEPS]
  # The resumed pair went on from the checkpoint: no step was trained (and logged) twice.
  logged = Counter(r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                   if "train/loss" in r)
  assert sorted(logged) == list(range(1, STEPS + 1)) and len(set(logged.values())) == 1
  assert losses(run_dir) == pytest.approx(losses(tmp_path / "reference"), rel=1e-5)
  for i in range(2):
    got = np.load(tmp_path / "second" / f"params{i}.npz")
    for k, want in enumerate(expected):
      np.testing.assert_allclose(got[str(k)], want, rtol=1e-5, atol=1e-6)
