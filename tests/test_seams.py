"""The seams the Transformer family builds on: config validation before anything is written,
the Task contract's defaults, shared losses, and fine-tuning from a run (`train.init_from`)."""

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from launch.cli import main
from research import config as config_lib
from research.config import ConfigError, load_experiment
from research.objectives import base, lm
from research.objectives.losses import perplexity, token_cross_entropy
from research.train import loop
from research.train.finetune import init_from_run
from research.train.sharding import make_mesh
from tests.test_train import corpus, params_of, tiny_config  # noqa: F401 - the fixture and the tiny GPT


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_bad_model_value_exits_2_with_one_line_and_leaves_no_run_directory(tmp_path, capsys):
  runs = tmp_path / "runs"
  args = ["train", "experiments/seq2seq_attention", "model.attention=bahdanau", "train.run_name=x",
          f"train.runs_dir={runs}", "train.progress=false"]
  assert main(args) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "model.attention" in err
  assert all(choice in err for choice in ("'none'", "'dot'", "'scaled_dot'", "'additive'"))
  assert not runs.exists()
  # The corrected command with the same run name then runs (tiny, two steps).
  tiny = ["model.n_embd=16", "model.n_hidden=16", "model.max_src_len=12", "model.max_tgt_len=12",
          "tokenizer.vocab_size=400", "train.steps=2", "train.batch_size=8", "train.eval_every=2",
          "train.eval_batches=1", f"data.cache_dir={tmp_path / 'cache'}"]
  assert main([a.replace("bahdanau", "additive") for a in args] + tiny) == 0
  assert (runs / "seq2seq_attention" / "x" / "config.json").is_file()


@pytest.mark.parametrize("override, pattern", [
    ("model.n_head=5", r"model.n_embd=192 must be a multiple of model.n_head=5"),
    ("model.dropout=1.5", r"model.dropout must be in \[0, 1\), got 1.5"),
    ("objective.label_smoothing=-0.1", r"objective.label_smoothing must be in \[0, 1\), got -0.1"),
    ("objective.name=translation", r"objective.name cannot be overridden"),
    ("objective.smoothing=0.1", r"unknown config key 'objective.smoothing'.*valid keys under 'objective': label_smoothing"),
    ("train.cpu_tricks=maybe", r"train.cpu_tricks must be one of 'auto', 'on', 'off', got 'maybe'"),
])
def test_model_and_objective_configs_check_their_values_at_load(override, pattern):
  with pytest.raises(ConfigError, match=pattern) as e:
    load_experiment("experiments/gpt_wiki", [override])
  assert "\n" not in str(e.value)


def test_word2vec_settings_live_in_the_objective_and_a_conflicting_step_count_is_an_error(tmp_path):
  cfg = load_experiment("experiments/skipgram_wiki", ["objective.negative=0"][:0])
  assert cfg.objective.name == "word2vec" and cfg.objective.architecture == "skipgram"
  assert not hasattr(cfg.model, "window") and cfg.model.vector_size == 100
  with pytest.raises(ConfigError, match=r"objective.negative must be positive, got 0"):
    load_experiment("experiments/cbow_wiki", ["objective.negative=0"])
  (tmp_path / "t.txt").write_text("the cat sat on the mat and the dog sat on the log\n" * 50)
  cfg = load_experiment("experiments/cbow_wiki", [f"data.path={tmp_path / 't.txt'}", "objective.min_count=1",
                                                  f"data.cache_dir={tmp_path}", "train.steps=7"])
  from research.objectives import word2vec
  with pytest.raises(ConfigError, match=r"train.steps=7 conflicts with \d+ objective.epochs=5 over the corpus"):
    word2vec.Task(cfg, log=lambda *_: None)


def test_config_round_trip_keeps_the_objective_section(tmp_path):
  cfg = load_experiment("experiments/seq2seq_attention", ["objective.label_smoothing=0.1"])
  config_lib.save(cfg, tmp_path / "config.json")
  again = config_lib.load(tmp_path / "config.json")
  assert again == cfg and again.objective.label_smoothing == 0.1
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["objective"]["name"] == "translation"


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_task_defaults_and_derived_settings_are_logged(corpus, tmp_path):  # noqa: F811
  logged = []
  cfg = tiny_config(corpus, tmp_path)
  task = lm.Task(cfg, log=logged.append)
  assert any("derived model.vocab_size=" in line for line in logged)
  assert task.derived == {"model.vocab_size": cfg.model.vocab_size}
  cfg2 = tiny_config(corpus, tmp_path)
  cfg2.model.vocab_size = 3
  with pytest.raises(ConfigError, match=r"model.vocab_size=3 conflicts with \d+ the tokenizer's vocabulary"):
    lm.Task(cfg2, log=lambda *_: None)

  class Minimal(base.Task):  # the two required members; every other one has a default
    def loss_fn(self, model, batch, rng, train):
      return lm.loss_fn(model, batch, rng, train)

    def train_batch(self, step):
      return task.train_batch(step)

  minimal = Minimal(cfg)
  assert minimal.eval_batches() == [] and minimal.evaluate(None) == {} and minimal.derived_metrics({"loss": 1}) == {}
  p = loop.prepare(cfg, minimal, make_mesh(cfg.mesh, jax.devices()[:1]))
  state, metrics = p.step(p.init(), jax.tree.map(jax.numpy.asarray, task.train_batch(0)))
  assert np.isfinite(float(metrics["loss"])) and "lr" in metrics and "grad_norm" in metrics


def test_token_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(3, 5))
  mask = rng.random((3, 5)) > 0.3
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  eps = 0.1
  smoothed = (1 - eps) * nll - eps * logp.mean(-1)
  loss, metrics = token_cross_entropy(jax.numpy.asarray(logits), jax.numpy.asarray(targets), jax.numpy.asarray(mask),
                                      label_smoothing=eps)
  np.testing.assert_allclose(float(loss), smoothed[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["nll"]), nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["accuracy"]), (logits.argmax(-1) == targets)[mask].mean(), rtol=1e-6)
  assert perplexity({"loss": 9.0, "nll": 1.0})["perplexity"] == pytest.approx(np.e)
  plain, _ = token_cross_entropy(jax.numpy.asarray(logits), jax.numpy.asarray(targets))
  np.testing.assert_allclose(float(plain), nll.mean(), rtol=1e-5)


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_fine_tuning_loads_the_source_parameters_keeps_skipped_ones_fresh_and_starts_at_step_0(corpus, tmp_path):  # noqa: F811
  source = loop.train(tiny_config(corpus, tmp_path, steps=4), run_dir=tmp_path / "source", log=lambda *_: None)
  src_params = params_of(source)

  cfg = tiny_config(corpus, tmp_path, steps=2, init_from=str(tmp_path / "source"), init_skip="ln_f/*,blocks/1/mlp/*")
  config_lib.inherit_model(cfg)
  task = lm.Task(cfg, log=lambda *_: None)
  p = loop.prepare(cfg, task, make_mesh(cfg.mesh))
  fresh = p.init()["params"]
  logged = []
  loaded = init_from_run(tmp_path / "source", p.init()["params"], cfg.train.init_skip, log=logged.append)
  assert "parameters loaded" in logged[0] and "2 fresh" not in logged[0]
  flat = lambda tree: {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                       for path, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}
  src, new, init = flat(src_params), flat(loaded), flat(fresh)
  skipped = [k for k in new if k.startswith("ln_f/") or k.startswith("blocks/1/mlp/")]
  assert len(skipped) == 3  # ln_f scale, blocks.1 fc and proj kernels (no biases in this GPT)
  for k in new:
    if k in skipped:
      assert np.array_equal(new[k], init[k]) and not np.array_equal(new[k], src[k])
    else:
      assert np.array_equal(new[k], src[k])
  # Each loaded parameter lands in the sharding its fresh initialisation had.
  assert [x.sharding for x in jax.tree.leaves(loaded)] == [x.sharding for x in jax.tree.leaves(fresh)]

  # Through the trainer: a new run from step 0 with a fresh optimizer (Adam's count is 2, not 6).
  result = loop.train(cfg, task=task, run_dir=tmp_path / "tuned", log=lambda *_: None)
  assert result.step == 2
  counts = [int(np.asarray(x)) for x in jax.tree.leaves(jax.device_get(result.state["opt"]))
            if np.asarray(x).dtype == np.int32 and np.asarray(x).shape == ()]
  assert counts and all(c == 2 for c in counts)
  rows = [json.loads(line) for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train/loss" in r] == [2]


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_fine_tuning_errors_name_the_parameter(corpus, tmp_path):  # noqa: F811
  loop.train(tiny_config(corpus, tmp_path, steps=2), run_dir=tmp_path / "source", log=lambda *_: None)
  cfg = tiny_config(corpus, tmp_path, steps=2, init_from=str(tmp_path / "source"))
  cfg.model.n_layer = 3  # one block more than the source: a parameter it does not have
  task = lm.Task(cfg, log=lambda *_: None)
  p = loop.prepare(cfg, task, make_mesh(cfg.mesh, jax.devices()[:1]))
  with pytest.raises(ConfigError, match=r"has no parameter 'blocks/2/.*add it to train.init_skip"):
    init_from_run(tmp_path / "source", p.init()["params"])
  with pytest.raises(ConfigError, match=r"pattern\(s\) 'head/\*' match no parameter"):
    init_from_run(tmp_path / "source", p.init()["params"], "blocks/2/*,head/*")
  cfg.model.n_layer, cfg.model.n_embd = 2, 64
  p = loop.prepare(cfg, lm.Task(cfg, log=lambda *_: None), make_mesh(cfg.mesh, jax.devices()[:1]))
  with pytest.raises(ConfigError, match=r"parameter '[^']+' has shape \(\d+, 32\) there but \(\d+, 64\) here"):
    init_from_run(tmp_path / "source", p.init()["params"])


@pytest.mark.slow  # end to end, 12-50 s on a 2-core AVX2 CPU: kept out of CI's 15 minutes
def test_init_from_inherits_the_source_model_settings(corpus, tmp_path):  # noqa: F811
  loop.train(tiny_config(corpus, tmp_path, steps=2), run_dir=tmp_path / "source", log=lambda *_: None)
  cfg = load_experiment("experiments/gpt_wiki", [f"train.init_from={tmp_path / 'source'}", "model.dropout=0.2"])
  source = config_lib.load(tmp_path / "source" / "config.json")
  assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (2, 32, 16)
  assert cfg.model.vocab_size == source.model.vocab_size and cfg.model.dropout == 0.2
  with pytest.raises(ConfigError, match=r"train.init_from='[^']*nowhere' is not a run directory"):
    load_experiment("experiments/gpt_wiki", [f"train.init_from={tmp_path / 'nowhere'}"])
