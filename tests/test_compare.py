"""`lineage compare`: reads runs back into a table, their config differences and a plot."""

import json

from launch.cli import main
from research import config as config_lib
from research.config import load_experiment


def make_run(root, name, lr, losses):
  run = root / "gpt_wiki" / name
  run.mkdir(parents=True)
  config_lib.save(load_experiment("experiments/gpt_wiki", [f"optim.lr={lr}"]), run / "config.json")
  rows = [{"step": 10 * (i + 1), "time": 0.0, "train/loss": l + 0.1, "eval/loss": l} for i, l in enumerate(losses)]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (run / "run.json").write_text(json.dumps({"params": 1234}))
  return run


def test_compare_table_differences_and_plot(tmp_path, capsys):
  a = make_run(tmp_path, "a", 1e-3, [5.0, 4.0, 3.5])
  b = make_run(tmp_path, "b", 3e-3, [5.0, 3.0])
  out = tmp_path / "plot.png"
  assert main(["compare", str(a), str(b), "--plot", "eval/loss", "--out", str(out)]) == 0
  text = capsys.readouterr().out
  lines = text.splitlines()
  row_a = next(l for l in lines if l.startswith("gpt_wiki/a"))
  row_b = next(l for l in lines if l.startswith("gpt_wiki/b"))
  assert row_a.split()[1:5] == ["30", "1234", "3.6", "3.5"]  # step, params, train/loss, eval/loss
  assert row_b.split()[1:5] == ["20", "1234", "3.1", "3"]
  assert any(l.split() == ["optim.lr", "0.001", "0.003"] for l in lines)
  assert "model.n_layer" not in text  # equal keys are not differences
  assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_a_non_run(tmp_path, capsys):
  assert main(["compare", str(tmp_path)]) == 2
  assert "no config.json" in capsys.readouterr().err
