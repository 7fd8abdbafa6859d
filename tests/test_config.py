"""Config overrides: unknown keys and wrong types are one-line errors naming the key."""

import pytest

from launch.cli import main
from research import config as config_lib
from research.config import ConfigError, load_experiment

GPT_WIKI = "experiments/gpt_wiki"


def test_overrides_set_typed_values():
  cfg = load_experiment(GPT_WIKI, ["model.n_layer=2", "optim.lr=3e-4", "train.progress=false", "data.path=a.txt"])
  assert (cfg.model.n_layer, cfg.optim.lr, cfg.train.progress, cfg.data.path) == (2, 3e-4, False, "a.txt")
  assert cfg.experiment == "gpt_wiki"


@pytest.mark.parametrize("override, pattern", [
    ("model.n_layr=2", r"unknown config key 'model.n_layr' \(did you mean 'model.n_layer'\?\); valid keys under 'model': .*n_head"),
    ("trian.steps=2", r"unknown config key 'trian.steps' \(did you mean 'train'\?\)"),
    ("train.steps=abc", r"config key 'train.steps' expects int, got 'abc'"),
    ("optim.lr=fast", r"config key 'optim.lr' expects float, got 'fast'"),
    ("train.progress=maybe", r"config key 'train.progress' expects bool, got 'maybe'"),
    ("train=3", r"config key 'train' is a section, not a value; valid keys under 'train': "),
    ("train.steps", r"override 'train.steps' is not of the form key=value"),
    ("tokenizer.kind=wordpiece", r"tokenizer.kind must be 'bpe', 'unigram' or 'char', got 'wordpiece'"),
    ("train.batch_size=10", r"train.batch_size=10 must be a multiple of train.grad_accum=4"),
])
def test_bad_overrides_are_one_line_errors(override, pattern):
  extra = ["train.grad_accum=4"] if "batch_size" in override else []
  with pytest.raises(ConfigError, match=pattern) as e:
    load_experiment(GPT_WIKI, extra + [override])
  assert "\n" not in str(e.value)


def test_cli_prints_one_line_and_exits_2(capsys):
  assert main(["train", GPT_WIKI, "model.n_layr=2"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "model.n_layr" in err and err.startswith("lineage train: error:")
  assert main(["train", "experiments/no_such_thing"]) == 2
  assert "no experiment at 'experiments/no_such_thing'" in capsys.readouterr().err


def test_missing_data_file_through_the_cli(capsys, tmp_path):
  assert main(["train", GPT_WIKI, f"data.path={tmp_path}/absent.txt", f"train.runs_dir={tmp_path}"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "absent.txt" in err and "does not exist" in err


def test_save_and_load_round_trip(tmp_path):
  cfg = load_experiment(GPT_WIKI, ["model.n_embd=64", "mesh.fsdp=2"])
  config_lib.save(cfg, tmp_path / "config.json")
  assert config_lib.load(tmp_path / "config.json") == cfg
  bad = (tmp_path / "config.json").read_text().replace('"n_embd"', '"n_embed"')
  (tmp_path / "bad.json").write_text(bad)
  with pytest.raises(ConfigError, match="n_embed"):
    config_lib.load(tmp_path / "bad.json")
