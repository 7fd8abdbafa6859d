"""Hugging Face GPT-2 interop (research/interop/hf_gpt2.py): a random GPT2LMHeadModel copied into
lineage computes the same logits and greedy text; lineage's GPT exported and read back by
`from_pretrained` does too; `train.init_from` takes such a directory; what GPT-2 cannot express
is refused. Never downloads: every model is built from a config."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from launch.cli import main  # noqa: E402
from research import config as config_lib  # noqa: E402
from research.config import ConfigError, load_experiment  # noqa: E402
from research.decode import SamplingConfig, generate  # noqa: E402
from research.interop import hf_gpt2  # noqa: E402
from research.models import gpt  # noqa: E402
from research.train import loop  # noqa: E402
from research.train.finetune import init_from_run  # noqa: E402
from tests.test_train import corpus, tiny_config  # noqa: E402, F401 - the fixture and the tiny GPT

V, BLOCK = 61, 32


def random_hf_model(seed=0):
  """A GPT2LMHeadModel with every parameter random (HF initialises biases and LayerNorms to 0 and 1)."""
  config = transformers.GPT2Config(vocab_size=V, n_positions=BLOCK, n_embd=32, n_layer=2, n_head=4,
                                   activation_function="gelu", bos_token_id=3, eos_token_id=3, pad_token_id=0)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or "ln_f.weight" in name
                else 0.0, 0.2)
  return model


def hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def hf_greedy(model, prompt, n):
  with torch.no_grad():  # eos_token_id=None: run the n tokens, as lineage's generate does
    return model.generate(torch.tensor(prompt), do_sample=False, max_new_tokens=n, eos_token_id=None,
                          attention_mask=torch.ones(len(prompt), len(prompt[0]), dtype=torch.long)).numpy()


TOKENS = np.random.default_rng(0).integers(0, V, (3, BLOCK))
PROMPT = [[5, 9, 14, 2], [7, 7, 1, 30]]


def test_hf_gpt2_copied_into_lineage_gives_its_logits_and_greedy_text(tmp_path):
  hf = random_hf_model()
  hf.save_pretrained(tmp_path / "hf")
  ours = hf_gpt2.model_from_hf(tmp_path / "hf")
  assert ours.cfg == gpt.Config(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32, dropout=0.1, bias=True)
  theirs = hf_logits(hf, TOKENS)
  np.testing.assert_allclose(np.asarray(ours(jnp.asarray(TOKENS))), theirs, atol=1e-5, rtol=0)
  assert np.abs(theirs).max() > 1.0  # logits of a real size, so 1e-5 is a real tolerance
  n = BLOCK - len(PROMPT[0])
  ours_text = np.asarray(generate(ours, jnp.asarray(PROMPT), SamplingConfig(max_new_tokens=n, temperature=0.0)))
  np.testing.assert_array_equal(ours_text, hf_greedy(hf, PROMPT, n))


@pytest.mark.parametrize("bias", [False, True])
def test_lineage_gpt_exported_reads_back_in_transformers(bias, tmp_path):
  cfg = gpt.Config(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32, bias=bias)
  ours = gpt.build(cfg, rngs=nnx.Rngs(1))
  params = nnx.state(ours, nnx.Param)
  noisy = {k: v + np.random.default_rng(i).normal(0, 0.2, v.shape)  # away from the init's zeros and ones
           for i, (k, v) in enumerate(hf_gpt2.flat_params(params).items())}
  nnx.update(ours, hf_gpt2.load_params(params, noisy))
  hf_gpt2.export(cfg, nnx.state(ours, nnx.Param), tmp_path / "hf")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert (config["activation_function"], config["layer_norm_epsilon"], config["tie_word_embeddings"]) == ("gelu", 1e-5, True)
  hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
  np.testing.assert_allclose(hf_logits(hf, TOKENS), np.asarray(ours(jnp.asarray(TOKENS))), atol=1e-5, rtol=0)
  if not bias:  # the zeros written for the missing biases are exact, and come back as bias=False
    assert all(float(b.detach().abs().max()) == 0 for n, b in hf.named_parameters() if n.endswith(".bias"))
  assert hf_gpt2.model_from_hf(tmp_path / "hf").cfg.bias == bias
  n = 12
  ours_text = np.asarray(generate(ours, jnp.asarray(PROMPT), SamplingConfig(max_new_tokens=n, temperature=0.0)))
  np.testing.assert_array_equal(ours_text, hf_greedy(hf, PROMPT, n))


def test_export_command_and_init_from_an_hf_directory(corpus, tmp_path, capsys):  # noqa: F811
  run = tmp_path / "run"
  result = loop.train(tiny_config(corpus, tmp_path, steps=2, checkpoint_every=2), run_dir=run, log=lambda *_: None)
  out = tmp_path / "hf"
  assert main(["export", str(run), "--to", "hf", str(out)]) == 0
  assert str(out) in capsys.readouterr().out
  assert (out / "model.safetensors").is_file() and (out / "artifacts" / "tokenizer").is_dir()
  hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
  trained = nnx.merge(nnx.graphdef(gpt.build(config_of(run), rngs=nnx.Rngs(0))), result.state["params"])
  tokens = np.random.default_rng(1).integers(0, hf.config.vocab_size, (2, 16))
  np.testing.assert_allclose(hf_logits(hf, tokens), np.asarray(trained(jnp.asarray(tokens))), atol=1e-5, rtol=0)

  # train.init_from=HF_DIR: the model settings come from config.json, the parameters from the weights.
  cfg = load_experiment("experiments/gpt_wiki", [f"train.init_from={out}", f"data.path={corpus}",
                                                 "tokenizer.kind=char", f"data.cache_dir={tmp_path / 'cache'}"])
  assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size, cfg.model.bias) == (2, 32, 16, False)
  fresh = nnx.state(gpt.build(cfg.model, rngs=nnx.Rngs(7)), nnx.Param)
  logged = []
  loaded = hf_gpt2.flat_params(init_from_run(out, fresh, log=logged.append))
  source = hf_gpt2.flat_params(result.state["params"])
  assert loaded.keys() == source.keys() and all(np.array_equal(loaded[k], source[k]) for k in source)
  assert "GPT-2 directory" in logged[0]


def config_of(run):
  return config_lib.load(run / "config.json").model


def test_what_gpt2_or_lineage_cannot_express_is_refused(tmp_path, capsys):
  hf = random_hf_model()
  hf.config.activation_function = "gelu_new"
  hf.save_pretrained(tmp_path / "tanh")
  with pytest.raises(ConfigError, match=r"activation_function='gelu_new' is not exact-erf GELU"):
    hf_gpt2.read(tmp_path / "tanh")
  with pytest.raises(ConfigError, match=r"has no lineage tokenizer"):
    load_experiment("experiments/gpt_wiki", [f"train.init_from={tmp_path / 'tanh'}"])

  with pytest.raises(hf_gpt2.ExportError, match=r"model.rotary=True has no GPT-2 counterpart"):
    hf_gpt2.hf_config(dataclasses.make_dataclass("C", [("rotary", bool, True)], bases=(gpt.Config,))(vocab_size=V))

  run = tmp_path / "lstm_run"
  run.mkdir()
  config_lib.save(load_experiment("experiments/lstm_wiki"), run / "config.json")
  capsys.readouterr()
  assert main(["export", str(run), "--to", "hf", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "lineage export --to hf knows bert, gpt" in err
