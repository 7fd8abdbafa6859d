"""BERT weights to and from Hugging Face `transformers` (BertForPreTraining's names and layout).

Lineage's BERT is the same function as Hugging Face's (tests/test_bert.py checks the logits
to 1e-5), so moving weights is renaming plus three layout facts: a torch Linear stores
(out, in) where lineage's Dense stores (in, out), except the MLP's output kernel which
lineage keeps (out, in) too (layers.Dense `store_transposed`); lineage fuses query, key
and value into one `qkv` kernel, [q | k | v] along the output; and the MLM output matrix
is the token embedding in both (tied), so it is not stored twice.

A directory is `config.json` + `model.safetensors`, what `BertForPreTraining.from_pretrained`
reads; `save_pretrained` also puts the run's tokenizer under `artifacts/tokenizer/`, where a
run keeps it, so the directory can serve as `train.init_from` (`init_from_hf`). A foreign
Hugging Face checkpoint has a WordPiece vocabulary that lineage cannot tokenize with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import nnx

from research.config import ConfigError
from research.models import bert

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


# ------------------------------------------------------------------------------ config


def hf_config(cfg: bert.Config) -> dict:
  """The config.json of a BertConfig equal to `cfg`."""
  return {
      "architectures": ["BertForPreTraining"], "model_type": "bert",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer,
      "num_attention_heads": cfg.n_head, "intermediate_size": cfg.mlp_width, "hidden_act": "gelu",
      "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
      "max_position_embeddings": cfg.max_len, "type_vocab_size": cfg.type_vocab, "initializer_range": 0.02,
      "layer_norm_eps": cfg.ln_eps, "pad_token_id": 0, "tie_word_embeddings": True, "dtype": "float32",
  }


def is_hf_bert(directory: str | Path) -> bool:
  """Whether `directory` holds a Hugging Face BERT (config.json with "model_type": "bert"), not a run."""
  file = Path(directory) / CONFIG_FILE
  return file.is_file() and json.loads(file.read_text()).get("model_type") == "bert"


def model_settings(hf: dict) -> dict:
  """The `model` section (as a dict) of a Hugging Face BERT config.json; what lineage cannot run is an error."""
  for key, ok, want in (("hidden_act", hf.get("hidden_act", "gelu") == "gelu", "'gelu'"),
                        ("is_decoder", not hf.get("is_decoder", False), "false"),
                        ("position_embedding_type", hf.get("position_embedding_type", "absolute") == "absolute",
                         "'absolute'")):
    if not ok:
      raise ConfigError(f"Hugging Face config {key}={hf.get(key)!r}: lineage's BERT needs {want}")
  intermediate = hf.get("intermediate_size", 4 * hf["hidden_size"])
  return {"name": "bert", "vocab_size": hf["vocab_size"], "max_len": hf.get("max_position_embeddings", 512),
          "n_layer": hf["num_hidden_layers"], "n_head": hf["num_attention_heads"], "n_embd": hf["hidden_size"],
          "n_mlp": 0 if intermediate == 4 * hf["hidden_size"] else intermediate,
          "dropout": hf.get("hidden_dropout_prob", 0.1), "type_vocab": hf.get("type_vocab_size", 2),
          "ln_eps": hf.get("layer_norm_eps", 1e-12)}


# ------------------------------------------------------------------------------ names


def _names(n_layer: int):
  """(lineage path, Hugging Face name, transpose?) of every tensor but the fused qkv."""
  e = "bert.embeddings."
  yield "encoder/embed/tok/embedding", e + "word_embeddings.weight", False
  yield "encoder/embed/pos/embedding", e + "position_embeddings.weight", False
  yield "encoder/embed/seg/embedding", e + "token_type_embeddings.weight", False
  yield "encoder/embed/ln/scale", e + "LayerNorm.weight", False
  yield "encoder/embed/ln/bias", e + "LayerNorm.bias", False
  for i in range(n_layer):
    ours, theirs = f"encoder/layers/{i}/", f"bert.encoder.layer.{i}."
    for a, b, t in (("attn/proj/kernel", "attention.output.dense.weight", True),
                    ("attn/proj/bias", "attention.output.dense.bias", False),
                    ("ln_1/scale", "attention.output.LayerNorm.weight", False),
                    ("ln_1/bias", "attention.output.LayerNorm.bias", False),
                    ("mlp/fc/kernel", "intermediate.dense.weight", True),
                    ("mlp/fc/bias", "intermediate.dense.bias", False),
                    ("mlp/proj/kernel", "output.dense.weight", False),  # both (out, in)
                    ("mlp/proj/bias", "output.dense.bias", False),
                    ("ln_2/scale", "output.LayerNorm.weight", False),
                    ("ln_2/bias", "output.LayerNorm.bias", False)):
      yield ours + a, theirs + b, t
  yield "encoder/pooler/kernel", "bert.pooler.dense.weight", True
  yield "encoder/pooler/bias", "bert.pooler.dense.bias", False
  p = "cls.predictions."
  yield "mlm/dense/kernel", p + "transform.dense.weight", True
  yield "mlm/dense/bias", p + "transform.dense.bias", False
  yield "mlm/ln/scale", p + "transform.LayerNorm.weight", False
  yield "mlm/ln/bias", p + "transform.LayerNorm.bias", False
  yield "mlm/bias", p + "bias", False  # decoder.weight / decoder.bias are tied to the embedding and this
  yield "nsp/dense/kernel", "cls.seq_relationship.weight", True
  yield "nsp/dense/bias", "cls.seq_relationship.bias", False


def _qkv(i: int) -> tuple[str, list[str]]:
  return f"encoder/layers/{i}/attn/qkv/", [f"bert.encoder.layer.{i}.attention.self.{n}." for n in ("query", "key", "value")]


def to_hf(params: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
  """Lineage's flat parameters (path -> array) as a BertForPreTraining state dict; absent heads stay absent."""
  out = {}
  for ours, theirs, transpose in _names(n_layer):
    if ours in params:
      out[theirs] = np.ascontiguousarray(params[ours].T if transpose else params[ours])
  for i in range(n_layer):
    ours, theirs = _qkv(i)
    for part, w, b in zip(theirs, np.split(params[ours + "kernel"], 3, axis=1), np.split(params[ours + "bias"], 3)):
      out[part + "weight"], out[part + "bias"] = np.ascontiguousarray(w.T), b
  return out


def from_hf(state: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
  """A BertForPreTraining (or BertModel with a "bert." prefix) state dict as lineage's flat parameters."""
  out = {ours: (state[theirs].T if transpose else state[theirs])
         for ours, theirs, transpose in _names(n_layer) if theirs in state}
  for i in range(n_layer):
    ours, theirs = _qkv(i)
    if all(part + "weight" in state for part in theirs):
      out[ours + "kernel"] = np.concatenate([state[part + "weight"].T for part in theirs], axis=1)
      out[ours + "bias"] = np.concatenate([state[part + "bias"] for part in theirs])
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


# ------------------------------------------------------------------------------ models


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
  return {"/".join(map(str, path)): np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def load_params(model: nnx.Module, params: dict[str, np.ndarray]) -> None:
  """Sets every parameter of `model` from `params` (path -> array), in place; each must be there, shaped alike."""
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = "/".join(map(str, path))
    if name not in params:
      raise KeyError(f"no weights for parameter {name!r}")
    if params[name].shape != variable.get_value().shape:
      raise ValueError(f"{name}: shape {params[name].shape}, expected {variable.get_value().shape}")
    variable.set_value(np.asarray(params[name], variable.get_value().dtype))


def save_pretrained(model: nnx.Module, cfg: bert.Config, directory: str | Path, tokenizer=None) -> Path:
  """Writes config.json + model.safetensors (and the tokenizer) that `BertForPreTraining.from_pretrained` loads."""
  from safetensors.numpy import save_file

  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / CONFIG_FILE).write_text(json.dumps(hf_config(cfg), indent=2) + "\n")
  save_file(to_hf(flat_params(model), cfg.n_layer), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
  if tokenizer is not None:
    tokenizer.save(directory / "artifacts" / "tokenizer")
  return directory


def load_pretrained(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(model settings, lineage's flat parameters) of a Hugging Face BERT directory."""
  from safetensors.numpy import load_file

  directory = Path(directory)
  hf = json.loads((directory / CONFIG_FILE).read_text())
  if not (directory / WEIGHTS_FILE).is_file():
    raise ConfigError(f"{directory} holds no {WEIGHTS_FILE} (a PyTorch .bin checkpoint is not read; re-save it "
                      "with safe_serialization=True)")
  settings = model_settings(hf)
  return settings, from_hf(load_file(str(directory / WEIGHTS_FILE)), settings["n_layer"])
