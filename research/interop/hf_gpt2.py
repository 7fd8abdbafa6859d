"""Lineage's GPT as a Hugging Face `transformers` GPT2LMHeadModel directory, and back.

`export(run, out_dir)` writes config.json and model.safetensors (the layout `save_pretrained`
writes: "transformer."-prefixed names, the tied head left out) plus the run's tokenizer under
artifacts/tokenizer, so `GPT2LMHeadModel.from_pretrained(out_dir)` computes the function
lineage's GPT computes, and `train.init_from=out_dir` fine-tunes it in lineage again.

The two models are one function (Radford et al. 2019): token + learned position embeddings,
pre-LayerNorm blocks, a tied head. What has to be mapped:
- GELU: lineage's is exact (erf), which is transformers' activation_function="gelu"; GPT-2's
  own checkpoints use "gelu_new", the tanh approximation, which lineage cannot express.
- biases: lineage's `model.bias=False` has none; zeros are written, which is exact. An HF
  directory whose biases are all zero comes back as bias=False.
- LayerNorm eps 1e-5 on both sides; attention scaled by 1/sqrt(head_dim) (scale_attn_weights).
- layout: HF's Conv1D stores weights (in, out), as lineage's Dense does, and fuses q, k, v in
  that order as lineage's `qkv` does; lineage stores the MLP's output projection (out, in)
  (research/models/layers.py `store_transposed`), so that one is transposed.
- special tokens: lineage trains on documents joined by eos (id 3), so eos is both the
  bos and eos of the HF config, as GPT-2's <|endoftext|> is; pad is 0.
A model GPT-2 cannot express (another architecture, a GPT setting this mapping does not
know) is refused with one line naming what.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from research.config import ConfigError
from research.models import gpt
from research.run import RunError
from research.tokenizers import EOS_ID, PAD_ID

WEIGHTS = "model.safetensors"
PREFIX = "transformer."
# The GPT settings this mapping knows; any other field of gpt.Config is refused until mapped.
KNOWN_SETTINGS = {"name", "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias"}


class ExportError(RunError):
  """A model GPT-2 cannot express; the message names the setting or parameter."""


def is_hf_gpt2(directory: str | Path) -> bool:
  """A transformers GPT-2 directory: config.json with "model_type": "gpt2"."""
  file = Path(directory) / "config.json"
  try:
    return json.loads(file.read_text()).get("model_type") == "gpt2"
  except (OSError, ValueError):
    return False


# ------------------------------------------------------------------------ parameter names


def name_pairs(n_layer: int) -> list[tuple[str, str, bool]]:
  """(lineage path, HF name without the prefix, transposed?) for every tensor, biases included."""
  pairs = [("wte/embedding", "wte.weight", False), ("wpe/embedding", "wpe.weight", False),
           ("ln_f/scale", "ln_f.weight", False), ("ln_f/bias", "ln_f.bias", False)]
  for i in range(n_layer):
    ours, theirs = f"blocks/{i}/", f"h.{i}."
    for a, b in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
      pairs += [(ours + a + "/scale", theirs + b + ".weight", False), (ours + a + "/bias", theirs + b + ".bias", False)]
    for a, b in (("attn/qkv", "attn.c_attn"), ("attn/proj", "attn.c_proj"), ("mlp/fc", "mlp.c_fc"),
                 ("mlp/proj", "mlp.c_proj")):
      pairs += [(ours + a + "/kernel", theirs + b + ".weight", a == "mlp/proj"),
                (ours + a + "/bias", theirs + b + ".bias", False)]
  return pairs


def flat_params(params: nnx.State) -> dict[str, np.ndarray]:
  """{"blocks/0/attn/qkv/kernel": array, ...} of an nnx parameter state."""
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(jax.device_get(v.get_value()))
          for path, v in flat}


# ------------------------------------------------------------------------------- export


def hf_config(cfg: gpt.Config) -> dict:
  """The GPT2Config (as JSON) of a lineage GPT, or ExportError naming what it cannot express."""
  unknown = {f.name for f in dataclasses.fields(cfg)} - KNOWN_SETTINGS
  if cfg.name != "gpt":
    raise ExportError(f"a {cfg.name!r} model is not a GPT; GPT-2 export needs model.name='gpt'")
  if unknown:
    key = sorted(unknown)[0]
    raise ExportError(f"model.{key}={getattr(cfg, key)!r} has no GPT-2 counterpart in research/interop/hf_gpt2.py")
  return {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
      "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
      "n_head": cfg.n_head, "n_inner": None, "activation_function": "gelu",  # exact erf, as lineage's MLP
      "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
      "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "scale_attn_weights": True,
      "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "tie_word_embeddings": True,
      "use_cache": True, "bos_token_id": EOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "dtype": "float32",
  }


def to_hf_tensors(cfg: gpt.Config, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF-named float32 tensors of lineage parameters; missing biases (bias=False) become zeros."""
  pairs = name_pairs(cfg.n_layer)
  extra = sorted(set(params) - {ours for ours, _, _ in pairs})
  if extra:
    raise ExportError(f"parameter {extra[0]!r} has no GPT-2 counterpart")
  out = {}
  for ours, theirs, transposed in pairs:
    if ours in params:
      value = params[ours].T if transposed else params[ours]
    elif ours.endswith("/bias") and not cfg.bias:  # its weight came just before: HF's (in, out) layout
      value = np.zeros(out[PREFIX + theirs.replace(".bias", ".weight")].shape[-1])
    else:
      raise ExportError(f"the model has no parameter {ours!r}, which GPT-2 needs")
    out[PREFIX + theirs] = np.ascontiguousarray(value, np.float32)
  return out


def export(cfg: gpt.Config, params: nnx.State, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
  """Writes a GPT2LMHeadModel directory of a GPT's parameters; returns it."""
  from safetensors.numpy import save_file

  config = hf_config(cfg)
  tensors = to_hf_tensors(cfg, flat_params(params))
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
  save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})  # from_pretrained requires "format"
  if tokenizer_dir is not None:
    shutil.copytree(tokenizer_dir, out / "artifacts" / "tokenizer", dirs_exist_ok=True)
  return out


# ------------------------------------------------------------------------------- import


def lineage_config(hf: dict, tensors: dict[str, np.ndarray] | None = None, where: str = "the HF directory") -> gpt.Config:
  """The lineage GPT config of a GPT2Config dict, or ConfigError naming what lineage cannot express."""
  def refuse(key, why):
    raise ConfigError(f"{where}: {key}={hf.get(key)!r} {why}; lineage's GPT cannot express it")

  if hf.get("activation_function", "gelu_new") != "gelu":
    refuse("activation_function", "is not exact-erf GELU (\"gelu_new\" is GPT-2's tanh approximation)")
  if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
    refuse("layer_norm_epsilon", "differs from lineage's 1e-5")
  if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
    refuse("n_inner", f"is not 4 * n_embd = {4 * hf['n_embd']}")
  for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False), ("tie_word_embeddings", True)):
    if hf.get(key, want) != want:
      refuse(key, f"is not {want}")
  biases = [v for k, v in (tensors or {}).items() if k.endswith(".bias")]
  return gpt.Config(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                    n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=float(hf.get("resid_pdrop", 0.0)),
                    bias=tensors is None or any(np.any(b != 0) for b in biases))


def read(hf_dir: str | Path) -> tuple[gpt.Config, dict[str, np.ndarray]]:
  """(lineage config, lineage-named parameters) of a GPT2LMHeadModel (or GPT2Model) directory.

  The zero biases of a bias=False config are among the parameters, for a model.bias=true override.
  """
  from safetensors.numpy import load_file

  hf_dir = Path(hf_dir)
  hf = json.loads((hf_dir / "config.json").read_text())
  if not (hf_dir / WEIGHTS).is_file():
    raise ConfigError(f"{hf_dir} has no {WEIGHTS} (lineage reads safetensors only)")
  tensors = {k.removeprefix(PREFIX): v for k, v in load_file(str(hf_dir / WEIGHTS)).items()}
  head = tensors.pop("lm_head.weight", None)
  if head is not None and not np.array_equal(head, tensors.get("wte.weight")):
    raise ConfigError(f"{hf_dir}: lm_head.weight differs from wte.weight; lineage's GPT ties them")
  cfg = lineage_config(hf, tensors, str(hf_dir))
  params = {}
  for ours, theirs, transposed in name_pairs(cfg.n_layer):
    if theirs not in tensors:
      raise ConfigError(f"{hf_dir} has no tensor {PREFIX + theirs}")
    params[ours] = tensors[theirs].T if transposed else tensors[theirs]
  return cfg, params


def load_params(model_params: nnx.State, values: dict[str, np.ndarray]) -> nnx.State:
  """`model_params` with each leaf named in `values` replaced by it, in the leaf's sharding."""
  def put(path, variable):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    if name not in values:
      return variable
    old = variable.get_value()
    return variable.replace(value=jax.device_put(np.asarray(values[name], old.dtype), old.sharding))

  return jax.tree_util.tree_map_with_path(put, model_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def model_from_hf(hf_dir: str | Path) -> gpt.GPT:
  """A lineage GPT with the parameters of a GPT-2 directory."""
  cfg, values = read(hf_dir)
  graphdef, params = nnx.split(gpt.build(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  return nnx.merge(graphdef, load_params(params, values))


def model_config(hf_dir: str | Path) -> dict:
  """For `train.init_from=HF_DIR`: the lineage model settings (research.config.inherit_model).

  The run reuses the tokenizer `export` stored with the weights: a GPT-2 directory made
  elsewhere has a tokenizer lineage does not have.
  """
  if not (Path(hf_dir) / "artifacts" / "tokenizer").is_dir():
    raise ConfigError(f"train.init_from={str(hf_dir)!r} has no lineage tokenizer (artifacts/tokenizer); "
                      "lineage fine-tunes the GPT-2 directories `lineage export --to hf` writes")
  return dataclasses.asdict(read(hf_dir)[0])


def init_from_hf(hf_dir: str | Path, params: nnx.State, skip: str = "", log=print) -> nnx.State:
  """`train.init_from=HF_DIR`: `params` with every non-skipped leaf taken from the directory."""
  from research.train.finetune import select_parameters

  _, values = read(hf_dir)
  load, kept = select_parameters(str(hf_dir), params, {k: tuple(v.shape) for k, v in values.items()}, skip)
  new = load_params(params, {k: values[k] for k in load})
  log(f"fine-tuning from the GPT-2 directory {hf_dir}: {len(load)} parameters loaded"
      + (f", {len(kept)} fresh" if kept else ""))
  return new
