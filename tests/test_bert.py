"""BERT: Hugging Face parity both ways (weights copied in; `lineage export` read by from_pretrained),
shared encoder paths, an HF directory as `train.init_from`, and a tiny mlm_nsp run whose loss falls."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from launch.cli import main
from research import config as config_lib
from research.config import Config, DataConfig, OptimConfig, TokenizerConfig, TrainConfig
from research.interop import hf_bert
from research.models import bert
from research.objectives import mlm_nsp
from research.run import load_run
from research.train import loop
from research.train.finetune import init_from_run
from research.train.sharding import make_mesh

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = dict(atol=1e-5, rtol=1e-5)


def padded_batch(vocab, B=3, T=20, seed=0):
  """Token ids with trailing padding of different lengths, and segment ids (0 for A and pad, 1 for B)."""
  rng = np.random.default_rng(seed)
  lengths = np.array([T, 13, 6][:B])
  ids = rng.integers(7, vocab, (B, T))
  ids[np.arange(T)[None] >= lengths[:, None]] = 0
  seg = ((np.arange(T)[None] >= (lengths // 2)[:, None]) & (ids != 0)).astype(np.int64)
  return ids, seg


def hf_logits(model, ids, seg):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0).long(), token_type_ids=torch.tensor(seg))
  return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def test_logits_equal_hugging_face_with_its_weights():
  torch.manual_seed(0)
  hcfg = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=80, max_position_embeddings=24, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
  hf = transformers.BertForPreTraining(hcfg).eval()  # random weights from a config: no download
  with torch.no_grad():  # every weight random, so LayerNorms and biases are checked too
    for p in hf.parameters():
      p.normal_(0.0, 0.2)
  cfg = bert.Config(**hf_bert.model_settings(hcfg.to_dict()))
  assert (cfg.n_mlp, cfg.ln_eps, cfg.max_len) == (80, 1e-12, 24)
  model = bert.Pretraining(cfg, rngs=nnx.Rngs(0))
  hf_bert.load_params(model, hf_bert.from_hf({k: v.numpy() for k, v in hf.state_dict().items()}, cfg.n_layer))
  ids, seg = padded_batch(97)
  mlm, nsp = model(jnp.asarray(ids), jnp.asarray(seg))
  hf_mlm, hf_nsp = hf_logits(hf, ids, seg)
  np.testing.assert_allclose(np.asarray(mlm), hf_mlm, **TOL)
  np.testing.assert_allclose(np.asarray(nsp), hf_nsp, **TOL)
  # At chosen positions (what pretraining computes) the logits are those rows.
  positions = np.array([[1, 4, 0], [2, 3, 12], [5, 0, 0]])
  picked, _ = model(jnp.asarray(ids), jnp.asarray(seg), jnp.asarray(positions))
  np.testing.assert_allclose(np.asarray(picked), np.take_along_axis(hf_mlm, positions[..., None], 1), **TOL)


def test_heads_sit_around_one_encoder_at_the_same_paths():
  cfg = bert.sized("tiny", vocab_size=50, max_len=16)
  assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (2, 128, 2)
  pre = hf_bert.flat_params(bert.Pretraining(cfg, rngs=nnx.Rngs(0)))
  enc = hf_bert.flat_params(bert.build(cfg, rngs=nnx.Rngs(0)))
  assert {"encoder/" + k for k in enc} == {k for k in pre if k.startswith("encoder/")}
  assert {k.split("/")[0] for k in pre} == {"encoder", "mlm", "nsp"}
  # The MLM output matrix is the token embedding: the head has a bias of its own, no matrix.
  assert [k for k, v in pre.items() if v.shape == (50, 128)] == ["encoder/embed/tok/embedding"]
  no_nsp = hf_bert.flat_params(bert.Pretraining(cfg, nsp=False, rngs=nnx.Rngs(0)))
  assert not any(k.startswith("nsp/") for k in no_nsp)


# ------------------------------------------------------------------------------ a tiny run

TOPICS = [("cat", "dog", "owl", "fox"), ("ship", "boat", "sail", "sea"), ("red", "blue", "green", "gold"),
          ("king", "queen", "crown", "throne"), ("rain", "snow", "wind", "storm"), ("one", "two", "three", "four")]


def tiny_corpus(path):
  """Documents of short sentences about one topic each: NSP can tell a random next by its words."""
  rng = np.random.default_rng(0)
  rows = []
  for d in range(24):
    words = TOPICS[d % len(TOPICS)]
    text = " ".join(f"The {rng.choice(words)} saw the {rng.choice(words)} near the {rng.choice(words)}."
                    for _ in range(12))
    rows.append(json.dumps({"text": text}))
  path.write_text("\n".join(rows) + "\n")
  return path


def tiny_config(tmp_path, **train) -> Config:
  return Config(
      experiment="bert_tiny", objective=mlm_nsp.Config(seq_len=32, max_predictions=5),
      model=bert.Config(max_len=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
      data=DataConfig(path=str(tiny_corpus(tmp_path / "docs.jsonl")), cache_dir=str(tmp_path / "cache"),
                      val_fraction=0.25),
      tokenizer=TokenizerConfig(kind="bpe", vocab_size=300),
      optim=OptimConfig(lr=3e-3, warmup_steps=3),
      train=TrainConfig(**{"steps": 40, "batch_size": 8, "log_every": 10, "eval_every": 40, "eval_batches": 2,
                           "checkpoint_every": 40, "progress": False, **train}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("bert")
  cfg = tiny_config(tmp)
  config_lib.validate(cfg)
  result = loop.train(cfg, run_dir=tmp / "run", log=lambda *_: None)
  return tmp, result


def test_mlm_nsp_training_loss_falls(run):
  tmp, result = run
  rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if "train/loss" in r]
  assert train[-1]["train/loss"] < 0.8 * train[0]["train/loss"]
  assert train[-1]["train/mlm_loss"] < train[0]["train/mlm_loss"]
  for key in ("eval/mlm_loss", "eval/mlm_accuracy", "eval/nsp_loss", "eval/nsp_accuracy"):
    assert key in rows[-1] or any(key in r for r in rows)
  facts = json.loads((result.run_dir / "run.json").read_text())
  assert set(facts["baselines"]) == {"mlm_accuracy", "nsp_accuracy"}


def test_export_is_read_by_from_pretrained_with_the_same_logits(run, capsys):
  tmp, result = run
  out = tmp / "hf"
  assert main(["export", str(result.run_dir), "--to", "hf", str(out)]) == 0
  assert str(out) in capsys.readouterr().out
  hf, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  hf.eval()
  model = load_run(result.run_dir).model
  ids, seg = padded_batch(model.encoder.cfg.vocab_size, T=32)
  mlm, nsp = model(jnp.asarray(ids), jnp.asarray(seg))
  hf_mlm, hf_nsp = hf_logits(hf, ids, seg)
  np.testing.assert_allclose(np.asarray(mlm), hf_mlm, **TOL)
  np.testing.assert_allclose(np.asarray(nsp), hf_nsp, **TOL)

  # The directory as train.init_from: the model settings and every parameter come from it.
  cfg = tiny_config(tmp, steps=2, init_from=str(out))
  cfg.model = bert.Config()  # the experiment's own settings, replaced by the directory's
  config_lib.inherit_model(cfg)
  assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.vocab_size) == (2, 32, model.encoder.cfg.vocab_size)
  task = mlm_nsp.Task(cfg, log=lambda *_: None)
  p = loop.prepare(cfg, task, make_mesh(cfg.mesh))
  logged = []
  params = init_from_run(out, p.init()["params"], log=logged.append)
  assert "Hugging Face" in logged[0] and "parameters loaded" in logged[0]
  loaded, source = hf_bert.flat_params(nnx.merge(p.graphdef, params)), hf_bert.flat_params(model)
  assert loaded.keys() == source.keys()
  for k in source:
    np.testing.assert_array_equal(loaded[k], source[k])


def test_word_starts_of_a_sentencepiece_vocabulary(run):
  from research.data.bert import encode_documents, word_starts
  from research.tokenizers import load_tokenizer

  tokenizer = load_tokenizer(run[1].run_dir / "artifacts" / "tokenizer")
  starts = word_starts(tokenizer)
  (sentence,), = encode_documents(["The snow saw the storm."], tokenizer)
  pieces = [tokenizer.id_to_piece(i) for i in sentence]
  assert pieces[0].startswith("▁") and starts[sentence[0]]  # encoded with a leading space
  assert [bool(starts[i]) for i in sentence] == [p.startswith("▁") or p == "." for p in pieces]
  assert starts[:7].all()  # the specials are words of their own
