"""The trainer end to end on a tiny GPT: sharding, resume after SIGTERM, NaN, learning."""

import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from launch.cli import main
from research import config as config_lib
from research.config import Config, DataConfig, MeshConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.models import gpt
from research.objectives import lm
from research.train import loop
from research.train.checkpoint import Checkpointer
from research.train.sharding import make_mesh, put_batch

TEXT = "".join(f"the {a} {b} sat on the {c} mat.\n" for a in ("cat", "dog", "owl") for b in ("red", "big")
               for c in ("old", "new", "wet", "dry")) * 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
  path.write_text(TEXT)
  return path


def tiny_config(corpus, tmp_path, **train) -> Config:
  return Config(
      experiment="tiny", objective="lm",
      model=gpt.Config(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1),
      data=DataConfig(path=str(corpus), cache_dir=str(tmp_path / "cache")),
      tokenizer=TokenizerConfig(kind="char"),
      optim=OptimConfig(lr=3e-3, warmup_steps=2),
      train=TrainConfig(**{"steps": 12, "batch_size": 8, "log_every": 2, "eval_every": 6, "eval_batches": 2,
                           "checkpoint_every": 4, "runs_dir": str(tmp_path / "runs"), "progress": False, **train}),
  )


def params_of(result):
  return jax.tree.map(np.asarray, jax.device_get(result.state["params"]))


def test_sharded_step_matches_one_device(corpus, tmp_path):
  cfg = tiny_config(corpus, tmp_path)
  task = lm.Task(cfg, log=lambda *_: None)
  results = {}
  for name, mesh in {"one": make_mesh(MeshConfig(), jax.devices()[:1]),
                     "dft": make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))}.items():
    p = loop.prepare(cfg, task, mesh)
    state, losses = p.init(), []
    for k in range(3):
      state, metrics = p.step(state, put_batch(task.train_batch(k), p.data_sharding))
      losses.append(float(metrics["loss"]))
    results[name] = (losses, state)

  np.testing.assert_allclose(results["one"][0], results["dft"][0], rtol=1e-5)
  flat_one = jax.tree.leaves(jax.device_get(results["one"][1]["params"]))
  flat_dft = jax.tree.leaves(jax.device_get(results["dft"][1]["params"]))
  for a, b in zip(flat_one, flat_dft):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  params = results["dft"][1]["params"]
  qkv = params["blocks"][0]["attn"]["qkv"]["kernel"].get_value()  # (embed, heads) -> (fsdp, tensor)
  assert qkv.sharding.spec == P("fsdp", "tensor")
  assert qkv.addressable_shards[0].data.shape == (32 // 2, 96 // 2)
  fc = params["blocks"][1]["mlp"]["fc"]["kernel"].get_value()  # (embed, mlp)
  assert fc.sharding.spec == P("fsdp", "tensor")
  proj = params["blocks"][0]["mlp"]["proj"]["kernel"].get_value()  # stored (out, in) = (embed, mlp)
  assert proj.shape == (32, 128) and proj.sharding.spec == P("fsdp", "tensor")
  mu = results["dft"][1]["opt"][1][0].mu["blocks"][0]["attn"]["proj"]["kernel"].get_value()  # (heads, embed)
  assert mu.sharding.spec == P("tensor", "fsdp")  # an Adam moment is sharded as its parameter


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_sigterm_then_resume_is_bitwise_identical(corpus, tmp_path):
  straight = loop.train(tiny_config(corpus, tmp_path), run_dir=tmp_path / "straight", log=lambda *_: None)
  assert straight.status == "done" and straight.step == 12

  def preempt(step, state):
    if step == 6:
      os.kill(os.getpid(), signal.SIGTERM)

  cfg = tiny_config(corpus, tmp_path)
  first = loop.train(cfg, run_dir=tmp_path / "resumed", on_step=preempt, log=lambda *_: None)
  assert first.status == "preempted" and first.step == 6
  assert Checkpointer(tmp_path / "resumed" / "checkpoints", keep=3, every=4).latest_step() == 6
  second = loop.train(tiny_config(corpus, tmp_path), run_dir=tmp_path / "resumed", log=lambda *_: None)
  assert second.status == "done" and second.step == 12

  for a, b in zip(jax.tree.leaves(params_of(straight)), jax.tree.leaves(params_of(second))):
    assert np.array_equal(a, b)
  # The resumed run logged steps after 6 only once more, from where it stopped.
  steps = [row["step"] for row in map(json.loads, (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines())
           if "train/loss" in row]
  assert steps == [2, 4, 6, 8, 10, 12]


def test_loss_falls_and_run_directory_is_complete(corpus, tmp_path, capsys):
  cfg = tiny_config(corpus, tmp_path, steps=60, eval_every=60, log_every=10, checkpoint_every=60)
  cfg.model.dropout, cfg.optim.lr = 0.0, 1e-2
  result = loop.train(cfg, run_dir=tmp_path / "run", log=lambda *_: None)
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  train_losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert train_losses[-1] < 0.5 * train_losses[0]
  assert result.eval["loss"] < 1.2  # the tiny corpus is highly regular; ln(vocab) is ~3
  assert result.eval["perplexity"] == pytest.approx(np.exp(result.eval["loss"]), rel=1e-6)
  assert all(r["perf/tokens_per_second"] > 0 and 0 < r["perf/mfu"] < 1 for r in rows if "perf/mfu" in r)
  saved = config_lib.load(tmp_path / "run" / "config.json")
  assert saved.model.vocab_size == result.state["params"]["wte"]["embedding"].get_value().shape[0]
  assert (tmp_path / "run" / "artifacts" / "tokenizer").is_dir()
  assert json.loads((tmp_path / "run" / "run.json").read_text())["flops_per_step_per_device"] > 0
  assert any((tmp_path / "run" / "tb").iterdir())

  # `lineage sample` restores the run and continues a prompt, 5 characters, into the corpus's pattern.
  assert main(["sample", str(tmp_path / "run"), "--prompt", "the owl b", "--max-new-tokens", "5",
               "--temperature", "0"]) == 0
  first = capsys.readouterr().out.splitlines()[0]
  assert first.startswith("the owl b") and len(first) == len("the owl b") + 5 and "sa" in first
  # Streamed samples are the batched ones: batch j draws with seed + j either way.
  sample = ["sample", str(tmp_path / "run"), "--prompt", "the", "--max-new-tokens", "11", "--num-samples", "3",
            "--seed", "4"]
  assert main(sample + ["--batch", "1"]) == 0
  batched = capsys.readouterr().out
  assert main(sample + ["--stream", "--stream-chunk", "4"]) == 0
  assert capsys.readouterr().out == batched and batched.count("---") == 3
  assert main(sample + ["--batch", "2"]) == 0
  assert capsys.readouterr().out.count("---") == 3


class PoisonedTask(lm.Task):
  """Makes the loss NaN from step `bad` on, as a diverging run would."""

  bad = 7

  def train_batch(self, step):
    batch = super().train_batch(step)
    batch["poison"] = np.full((batch["inputs"].shape[0],), np.nan if step >= self.bad else 1.0, np.float32)
    return batch

  @staticmethod
  def loss_fn(model, batch, rng, train):
    loss, metrics = lm.loss_fn(model, batch, rng, train)
    return (loss * batch["poison"].mean() if "poison" in batch else loss), metrics


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
  cfg = tiny_config(corpus, tmp_path)
  task = PoisonedTask(cfg, log=lambda *_: None)
  with pytest.raises(loop.NonFiniteError, match=r"at step 8\b.*last good checkpoint is step 4"):
    loop.train(cfg, task=task, run_dir=tmp_path / "run", log=lambda *_: None)
  checkpointer = Checkpointer(tmp_path / "run" / "checkpoints", keep=3, every=4)
  assert checkpointer.manager.all_steps() == [4]
  p = loop.prepare(cfg, task, make_mesh(cfg.mesh))
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), p.abstract_state, p.shardings)
  state = checkpointer.restore(target)
  assert int(state["step"]) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state["params"])))


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_gradient_accumulation_matches_one_big_batch(corpus, tmp_path):
  cfg = tiny_config(corpus, tmp_path)
  cfg.model.dropout = 0.0  # accumulation splits the dropout rng; compare the deterministic model
  task = lm.Task(cfg, log=lambda *_: None)
  mesh = make_mesh(MeshConfig(), jax.devices()[:1])
  out = []
  for accum in (1, 4):
    cfg.train.grad_accum = accum
    p = loop.prepare(cfg, task, mesh)
    state, metrics = p.step(p.init(), put_batch(task.train_batch(0), p.data_sharding))
    out.append((float(metrics["loss"]), jax.tree.leaves(jax.device_get(state["params"]))))
  assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)
  for a, b in zip(out[0][1], out[1][1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_bfloat16_compute_keeps_float32_parameters(corpus, tmp_path):
  cfg = tiny_config(corpus, tmp_path, compute_dtype="bfloat16")
  task = lm.Task(cfg, log=lambda *_: None)
  p = loop.prepare(cfg, task, make_mesh(MeshConfig(), jax.devices()[:1]))
  state = p.init()
  batch = put_batch(task.train_batch(0), p.data_sharding)
  model = nnx.merge(p.graphdef, state["params"])
  assert model(batch["inputs"]).dtype == jnp.float32  # logits come back in float32 for the loss
  assert model.blocks[0].mlp.fc(jnp.ones((1, 32))).dtype == jnp.bfloat16  # matmuls run in bfloat16
  state, metrics = p.step(state, batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
  assert np.isfinite(float(metrics["loss"]))


class SlowTask(lm.Task):
  """Each batch takes 0.1 s to make and each evaluation 0.5 s: the throughput a log row reports is known."""

  def train_batch(self, step):
    time.sleep(0.1)
    return super().train_batch(step)

  def evaluate(self, model):
    time.sleep(0.5)
    return {}


def test_step_seconds_count_every_step_of_a_window_and_no_evaluation(corpus, tmp_path):
  # Evaluations at steps 3 and 9 fall inside the windows ending at 4 and 10: a window's time must
  # cover all its steps (once it covered only those after the evaluation) and leave the 0.5 s out.
  cfg = tiny_config(corpus, tmp_path, steps=12, log_every=4, eval_every=3, checkpoint_every=12)
  loop.train(cfg, task=SlowTask(cfg, log=lambda *_: None), run_dir=tmp_path / "run", log=lambda *_: None)
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  seconds = {r["step"]: r["perf/step_seconds"] for r in rows if "perf/step_seconds" in r}
  assert sorted(seconds) == [4, 8, 12]
  for step, s in seconds.items():
    assert 0.1 <= s < 0.1 + 0.15, (step, s)  # 0.15: the tiny step's own time, with room for a busy machine
