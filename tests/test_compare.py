"""`lineage compare`: reads runs back into a table of compute and eval metrics, config
differences, curves on a step / tokens / FLOPs / seconds axis, and values at equal compute."""

import json

import numpy as np
import pytest

from launch import compare
from launch.cli import main
from research import config as config_lib
from research.config import load_experiment


def make_run(root, name, lr, losses, *, every=10, step_seconds=0.5, flops_per_device=1e9, devices=2,
             experiment="gpt_wiki"):
  """A run directory as the loop writes it: a train row and an eval row every `every` steps."""
  run = root / experiment / name
  run.mkdir(parents=True)
  config_lib.save(load_experiment(f"experiments/{experiment}", [f"optim.lr={lr}"]), run / "config.json")
  rows = []
  for i, loss in enumerate(losses):
    step = every * (i + 1)
    rows.append({"step": step, "time": 0.0, "train/loss": loss + 0.1, "perf/step_seconds": step_seconds})
    rows.append({"step": step, "time": 0.0, "eval/loss": loss, "eval/accuracy": 1 / loss})
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (run / "run.json").write_text(json.dumps({
      "params": 1234, "tokens_per_step": 100, "flops_per_step_per_device": flops_per_device,
      "devices": devices, "peak_flops_per_device": 1e10}))
  return run


def test_compare_table_differences_and_plot(tmp_path, capsys):
  a = make_run(tmp_path, "a", 1e-3, [5.0, 3.5, 4.0])
  b = make_run(tmp_path, "b", 3e-3, [5.0, 3.0])
  out = tmp_path / "plot.png"
  assert main(["compare", str(a), str(b), "--plot", "eval/loss,train/loss", "--out", str(out)]) == 0
  lines = capsys.readouterr().out.splitlines()
  header = lines[0].split()
  assert header == ["run", "params", "steps", "tokens", "FLOPs", "train", "s", "tokens/s", "MFU",
                    "eval/accuracy", "best", "eval/accuracy", "eval/loss", "best", "eval/loss"]
  row_a = next(l for l in lines if l.startswith("gpt_wiki/a")).split()
  # 30 steps of 100 tokens and 2e9 FLOPs, 0.5 s each: 15 s; MFU = 1e9 / 0.5 / 1e10 per device.
  assert row_a[1:8] == ["1234", "30", "3000", "6e+10", "15", "200", "0.2"]
  assert row_a[8:] == ["0.25", "0.2857", "4", "3.5"]  # final and best: the best loss is the lowest
  assert next(l for l in lines if l.startswith("gpt_wiki/b")).split()[2] == "20"
  assert any(l.split() == ["optim.lr", "0.001", "0.003"] for l in lines)
  assert not any(l.startswith("model.n_layer") for l in lines)  # equal keys are not differences
  assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_axes_place_points_by_tokens_flops_and_training_seconds(tmp_path):
  run = compare.read_run(make_run(tmp_path, "a", 1e-3, [5.0, 4.0, 3.0], step_seconds=0.5))
  steps = np.array([10, 20, 30])
  np.testing.assert_array_equal(compare.curve(run, "eval/loss", "tokens")[0], steps * 100)
  np.testing.assert_array_equal(compare.curve(run, "eval/loss", "flops")[0], steps * 2e9)
  np.testing.assert_array_equal(compare.curve(run, "eval/loss", "seconds")[0], steps * 0.5)

  # Resumed after a preemption at step 15: the row at 20 covers the 5 steps since the resume, and
  # the unlogged steps 11-15 count at that rate; the pause before the resume does not count.
  rows = [{"step": 10, "time": 0.0, "perf/step_seconds": 1.0}, {"step": 20, "time": 900.0, "perf/step_seconds": 2.0},
          {"step": 20, "time": 900.0, "eval/loss": 2.0}]
  (run.dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert compare.train_seconds(compare.read_run(run.dir)) == {10: 10.0, 20: 30.0}


def test_values_at_equal_flops_are_interpolated_never_extrapolated(tmp_path, capsys):
  # b costs 4x the FLOPs per step of a: at equal FLOPs a has taken 4x the steps.
  a = make_run(tmp_path, "a", 1e-3, [5.0, 4.0, 3.0, 2.0], flops_per_device=1e9)
  b = make_run(tmp_path, "b", 3e-3, [5.0, 3.0], flops_per_device=4e9)
  runs = [compare.read_run(a), compare.read_run(b)]
  assert compare.common_max(runs, "eval/loss", "flops") == 8e10  # a's 40 steps; b got to 1.6e11
  assert compare.value_at(runs[0], "eval/loss", "flops", 5e10) == pytest.approx(3.5)  # between steps 20 and 30
  assert compare.value_at(runs[1], "eval/loss", "flops", 1.2e11) == pytest.approx(4.0)
  assert compare.value_at(runs[1], "eval/loss", "flops", 5e10) is None  # before b's first eval

  assert main(["compare", str(a), str(b), "--x", "flops", "--at", "max,1.2e11"]) == 0
  lines = capsys.readouterr().out.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith("eval/loss at equal flops"))
  assert lines[start + 1].split() == ["run", "8e+10", "1.2e+11"]
  assert lines[start + 2].split() == ["gpt_wiki/a", "2", "-"]
  assert lines[start + 3].split() == ["gpt_wiki/b", "5", "4"]


def test_compare_rejects_a_non_run(tmp_path, capsys):
  assert main(["compare", str(tmp_path)]) == 2
  assert "no config.json" in capsys.readouterr().err


def test_compare_by_flops_places_an_lstm_and_a_gpt_run_by_their_flops(tmp_path, monkeypatch, capsys):
  """Acceptance: real tiny runs; the curves read back from the plotted figure sit at FLOPs."""
  from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
  from research.models import gpt, lstm
  from research.train import loop

  corpus = tmp_path / "tiny.txt"
  corpus.write_text("".join(f"the {a} sat on the {b} mat.\n" for a in ("cat", "dog", "owl")
                            for b in ("old", "new", "wet")) * 40)
  runs = []
  for name, model in {"lstm": lstm.Config(block_size=16, n_layer=1, n_embd=16, n_hidden=16),
                      "gpt": gpt.Config(block_size=16, n_layer=1, n_head=2, n_embd=16)}.items():
    cfg = Config(experiment=name, objective="lm", model=model,
                 data=DataConfig(path=str(corpus), cache_dir=str(tmp_path / "cache")),
                 tokenizer=TokenizerConfig(kind="char"), optim=OptimConfig(lr=1e-2, warmup_steps=1),
                 train=TrainConfig(steps=4, batch_size=8, log_every=2, eval_every=2, eval_batches=1,
                                   checkpoint_every=4, progress=False))
    runs.append(loop.train(cfg, run_dir=tmp_path / name / "run", log=lambda *_: None).run_dir)

  figures = []
  real_plot = compare.plot
  monkeypatch.setattr(compare, "plot", lambda *a, **k: figures.append(real_plot(*a, **k)) or figures[-1])
  out = tmp_path / "by_flops.png"
  assert main(["compare", *map(str, runs), "--x", "flops", "--plot", "eval/loss,train/loss", "--out", str(out)]) == 0
  assert out.read_bytes()[:4] == b"\x89PNG" and f"by_flops.png" in capsys.readouterr().out

  (figure,) = figures
  assert [ax.get_ylabel() for ax in figure.axes] == ["eval/loss", "train/loss"]
  per_step = []
  for ax in figure.axes:
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["lstm/run", "gpt/run"]
    for line, run in zip(lines, runs):
      facts = json.loads((run / "run.json").read_text())
      flops = facts["flops_per_step_per_device"] * facts["devices"]
      np.testing.assert_allclose(line.get_xdata(), np.array([2, 4]) * flops)
      per_step.append(flops)
  assert per_step[0] != per_step[1]  # the two architectures cost differently per step


def test_runs_lists_status_steps_and_last_eval(tmp_path, capsys):
  import os
  import socket
  import subprocess

  def run(name, logged, checkpoints, lock=None):
    directory = make_run(tmp_path, name, 1e-3, [4.0 - i / 10 for i in range(logged // 10)])
    config_lib.save(load_experiment("experiments/gpt_wiki", ["train.steps=30"]), directory / "config.json")
    for step in checkpoints:
      (directory / "checkpoints" / step).mkdir(parents=True)
    if lock:
      (directory / "lock").write_text(json.dumps(lock))

  gone = subprocess.Popen(["true"])
  gone.wait()  # a pid that no longer runs: its lock is stale
  here = socket.gethostname()
  run("done", 30, ["20", "30"])
  run("preempted", 20, ["20", "25"])  # stopped at 25 on SIGTERM: saved past its last row
  run("failed", 20, ["10", "20.orbax-checkpoint-tmp-1"])  # trained past its last finished checkpoint
  run("running", 10, ["10"], lock={"host": here, "pid": os.getpid(), "start": 0})
  run("stale", 20, ["20"], lock={"host": here, "pid": gone.pid, "start": 0})
  run("elsewhere", 10, [], lock={"host": "tpu-worker-0", "pid": 1, "start": 0})

  assert main(["runs", str(tmp_path)]) == 0
  rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
  assert rows["gpt_wiki/done"][1:5] == ["done", "30/30", "30", "eval/loss"] and rows["gpt_wiki/done"][5:7] == ["3.8", "@30"]
  assert rows["gpt_wiki/preempted"][1:4] == ["preempted", "25/30", "25"]
  assert rows["gpt_wiki/failed"][1:4] == ["failed", "20/30", "10"]
  assert rows["gpt_wiki/running"][1] == "running" and rows["gpt_wiki/running"][-1] == f"{here}:{os.getpid()}"
  assert rows["gpt_wiki/stale"][1] == "preempted"
  assert rows["gpt_wiki/elsewhere"][1:3] == ["running", "10/30"]  # cannot be checked from here
  assert main(["runs", str(tmp_path / "nothing")]) == 2
