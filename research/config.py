"""Typed experiment configuration: dataclasses, command-line overrides, save and load.

An experiment is one `Config`. Its `model` field holds the config dataclass of one
architecture (`research/models/<name>.py` defines `Config`), found by `model.name`, and its
`objective` field the config dataclass of one objective (`research/objectives/<name>.py`
defines `Config`: masking rate, label smoothing, negatives, ...), found by `objective.name`,
so the trainer never needs an `if model == ...` ladder. `objective="lm"` is shorthand for
that objective's default config.

Every section checks its own values when the config is loaded: a model or objective
config may define `validate(self)` raising `ConfigError`, called by `validate(cfg)` before
anything is written to disk.

Overrides are `section.key=value` strings. Values are parsed against the field's type;
an unknown key or a value of the wrong type raises `ConfigError` with a one-line message
naming the key and what would have been valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
  """A config key or value that cannot be used; the message is one line a user can act on."""


@dataclass
class DataConfig:
  # Where the text comes from, in this order: local files, a hub dataset, the bundled default.
  path: str = ""  # local .txt / .jsonl / .json / .parquet file(s); a comma list or a glob
  hub_name: str = ""  # a `datasets` hub name, e.g. "wikitext" (needs network)
  hub_config: str = ""  # e.g. "wikitext-103-raw-v1"
  hub_split: str = "train"
  bundled: str = "enwiki"  # used when path and hub_name are empty; see research/data/bundled.py
  text_column: str = "text"  # column of jsonl / parquet / hub rows holding the text
  source_column: str = ""  # sentence pairs (TSV header / hub): the source and target columns
  target_column: str = ""  # or languages, e.g. "en" and "es"; "" = the file's default columns
  txt_unit: str = "document"  # a .txt file is one "document", or one per "paragraph" / "line"
  max_docs: int = 0  # keep only the first N documents (0 = all); for quick runs
  val_fraction: float = 0.1  # share of the corpus held out for validation (never trained on)
  cache_dir: str = ""  # where extracted corpora and tokenizers are cached; "" = ~/.cache/lineage


@dataclass
class TokenizerConfig:
  kind: str = "bpe"  # "bpe" | "unigram" (sentencepiece) | "char"
  vocab_size: int = 8000  # sentencepiece only; the char tokenizer's size is set by the text
  character_coverage: float = 0.9995
  max_train_chars: int = 20_000_000  # train sentencepiece on at most this much text


@dataclass
class OptimConfig:
  lr: float = 6e-4  # peak learning rate, reached after warmup
  warmup_steps: int = 100
  # "cosine" (to min_lr_ratio * lr at train.steps) | "constant" | "inverse_sqrt": the Transformer's
  # lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), where lr is a scale (1.0 in the paper)
  schedule: str = "cosine"
  d_model: int = 0  # inverse_sqrt only: 0 = model.n_embd, filled in by the task
  min_lr_ratio: float = 0.1
  weight_decay: float = 0.1  # AdamW, applied to matrices only (not biases, norms)
  beta1: float = 0.9
  beta2: float = 0.95
  eps: float = 1e-8
  grad_clip: float = 1.0  # global-norm clip; 0 = off


@dataclass
class TrainConfig:
  steps: int = 2000
  batch_size: int = 12  # global batch, over all devices and accumulation steps
  grad_accum: int = 1  # the batch is split into this many micro-batches
  seed: int = 0
  compute_dtype: str = "float32"  # "float32" | "bfloat16"; parameters stay float32
  log_every: int = 10
  eval_every: int = 250
  eval_batches: int = 20  # at most this many validation batches per evaluation (0 = all)
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  runs_dir: str = "runs"
  run_name: str = ""  # "" = a timestamp; reusing a name resumes that run
  progress: bool = True  # a progress bar on stderr
  # Fine-tuning: start this run (step 0, a fresh optimizer) from another run's parameters,
  # tokenizer and model settings. `init_skip` is a comma list of parameter-path patterns
  # (fnmatch, '/'-separated, e.g. "classifier/*,pooler/*") left at their fresh init: new heads.
  init_from: str = ""
  init_skip: str = ""
  # CPU-only compute tricks in the hot layers (research/models/vjp.py): "auto" = on when the
  # backend is CPU, "on", "off". They change speed, never the numbers or parameter shapes.
  cpu_tricks: str = "auto"


@dataclass
class MeshConfig:
  # Sizes of the mesh axes; their product is the device count. One -1 fills the rest.
  data: int = -1
  fsdp: int = 1
  tensor: int = 1


@dataclass
class Config:
  experiment: str = ""
  objective: Any = "lm"  # the `Config` of research/objectives/<objective.name>.py (or its name)
  model: Any = None  # the `Config` of research/models/<model.name>.py
  data: DataConfig = field(default_factory=DataConfig)
  tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
  optim: OptimConfig = field(default_factory=OptimConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  mesh: MeshConfig = field(default_factory=MeshConfig)

  def __post_init__(self):
    if isinstance(self.objective, str):
      self.objective = objective_config_class(self.objective)()


def _config_class(kind: str, name: str) -> type:
  """`Config` of research/<kind>/<name>.py, or a ConfigError listing the known names."""
  folder = Path(__file__).parent / kind
  if not (folder / f"{name}.py").is_file():
    known = sorted(p.stem for p in folder.glob("*.py") if p.stem[0] != "_" and p.stem not in ("base", "losses"))
    what = "model" if kind == "models" else "objective"
    raise ConfigError(f"{what}.name={name!r} names no {what}; known: {', '.join(known)}")
  return importlib.import_module(f"research.{kind}.{name}").Config


def model_config_class(name: str) -> type:
  return _config_class("models", name)


def objective_config_class(name: str) -> type:
  return _config_class("objectives", name)


def flat_dict(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}: how configs are compared and shown."""
  out = {}
  for k, v in d.items():
    out.update(flat_dict(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


# ---------------------------------------------------------------------------- overrides


def _is_dataclass_instance(x) -> bool:
  return dataclasses.is_dataclass(x) and not isinstance(x, type)


def _parse_value(key: str, text: str, annotation) -> Any:
  """Parses `text` as a value of `annotation` (str, int, float, bool, or Optional of one)."""
  if isinstance(annotation, str):  # `from __future__ import annotations` leaves names as strings
    annotation = {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, str)
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if text.lower() in ("none", "null") and len(options) < len(typing.get_args(annotation)):
      return None
    annotation = options[0]
  if annotation is bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
  elif annotation is int:
    try:
      return int(text.replace("_", ""))
    except ValueError:
      pass
  elif annotation is float:
    try:
      return float(text)
    except ValueError:
      pass
  else:
    return text
  raise ConfigError(f"config key {key!r} expects {annotation.__name__}, got {text!r}")


def _field_types(obj) -> dict[str, Any]:
  hints = typing.get_type_hints(type(obj))
  return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(obj)}


def _valid_keys_message(prefix: str, names) -> str:
  where = f"under {prefix!r}" if prefix else "at the top level"
  return f"valid keys {where}: {', '.join(sorted(names))}"


def apply_override(cfg: Config, override: str) -> None:
  """Sets one `a.b.c=value` override on `cfg` in place."""
  if "=" not in override:
    raise ConfigError(f"override {override!r} is not of the form key=value (e.g. train.steps=100)")
  key, text = override.split("=", 1)
  key = key.strip()
  parts = key.split(".")
  node, prefix = cfg, ""
  for i, part in enumerate(parts):
    types_ = _field_types(node)
    if part not in types_:
      close = difflib.get_close_matches(part, types_, n=1)
      hint = f" (did you mean {'.'.join(parts[:i] + close)!r}?)" if close else ""
      raise ConfigError(f"unknown config key {key!r}{hint}; {_valid_keys_message(prefix, types_)}")
    value = getattr(node, part)
    if i == len(parts) - 1:
      if _is_dataclass_instance(value):
        raise ConfigError(
            f"config key {key!r} is a section, not a value; {_valid_keys_message(key, _field_types(value))}")
      if key in ("model.name", "objective.name"):
        raise ConfigError(f"{key} cannot be overridden: choose it in the experiment's config.py")
      setattr(node, part, _parse_value(key, text, types_[part]))
      return
    if not _is_dataclass_instance(value):
      raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is a value, not a section")
    node, prefix = value, ".".join(parts[: i + 1])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
  for override in overrides:
    apply_override(cfg, override)
  if cfg.train.init_from:
    inherit_model(cfg, overrides)
  validate(cfg)
  return cfg


def inherit_model(cfg: Config, overrides: list[str] = ()) -> None:
  """Fine-tuning: the model settings of the `train.init_from` run, so its parameters fit.

  The source run's model config replaces the experiment's; `model.*` overrides on the
  command line are applied on top (e.g. a fine-tuning dropout). One that changes a
  parameter's shape then fails when the parameters load, naming the path.
  """
  source_file = Path(cfg.train.init_from) / "config.json"
  if not source_file.is_file():
    return  # validate() names the problem
  saved = json.loads(source_file.read_text())
  if saved.get("model_type") == "bert":  # a Hugging Face directory, not a run (research/interop/hf_bert.py)
    from research.interop.hf_bert import model_settings

    saved = {"model": model_settings(saved)}
  elif saved.get("model_type") == "gpt2":  # a transformers GPT-2 directory (research/interop/hf_gpt2.py)
    from research.interop.hf_gpt2 import model_config

    saved = {"model": model_config(cfg.train.init_from)}
  source = saved.get("model") or {}
  if source.get("name") != cfg.model.name:
    raise ConfigError(f"train.init_from={cfg.train.init_from!r} holds a {source.get('name')!r} model; "
                      f"this experiment's model is {cfg.model.name!r}")
  names = {f.name for f in dataclasses.fields(cfg.model)}
  cfg.model = type(cfg.model)(**{k: v for k, v in source.items() if k in names})
  for override in overrides:
    if override.split("=", 1)[0].strip().startswith("model."):
      apply_override(cfg, override)


def need(ok: bool, message: str) -> None:
  """Raises ConfigError(message) unless ok: how every `validate` states a rule."""
  if not ok:
    raise ConfigError(message)


def one_of(key: str, value, choices) -> None:
  need(value in choices, f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def positive(prefix: str, section, *keys: str) -> None:
  for key in keys:
    need(getattr(section, key) > 0, f"{prefix}.{key} must be positive, got {getattr(section, key)}")


def probability(key: str, value: float) -> None:
  """A dropout rate or a masking share: in [0, 1)."""
  need(0.0 <= value < 1.0, f"{key} must be in [0, 1), got {value}")


def validate(cfg: Config) -> None:
  """Checks the choices that no type can express; each failure names its key."""
  t = cfg.train
  # 0 = derived by the objective (Word2Vec: from its epochs and the corpus)
  need(t.steps >= 0, f"train.steps must be positive, got {t.steps}")
  need(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}")
  need(t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
       f"train.batch_size={t.batch_size} must be a multiple of train.grad_accum={t.grad_accum}")
  need(t.compute_dtype in ("float32", "bfloat16"),
       f"train.compute_dtype must be 'float32' or 'bfloat16', got {t.compute_dtype!r}")
  for name in ("log_every", "eval_every", "checkpoint_every"):
    need(getattr(t, name) > 0, f"train.{name} must be positive, got {getattr(t, name)}")
  need(cfg.tokenizer.kind in ("bpe", "unigram", "char"),
       f"tokenizer.kind must be 'bpe', 'unigram' or 'char', got {cfg.tokenizer.kind!r}")
  need(0.0 < cfg.data.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
  need(cfg.data.txt_unit in ("document", "paragraph", "line"),
       f"data.txt_unit must be 'document', 'paragraph' or 'line', got {cfg.data.txt_unit!r}")
  one_of("optim.schedule", cfg.optim.schedule, ("cosine", "constant", "inverse_sqrt"))
  one_of("train.cpu_tricks", t.cpu_tricks, ("auto", "on", "off"))
  need(not t.init_from or Path(t.init_from, "config.json").is_file(),
       f"train.init_from={t.init_from!r} is not a run directory (no config.json)")
  sizes = [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]
  need(sizes.count(-1) <= 1 and all(s == -1 or s > 0 for s in sizes),
       f"mesh sizes must be positive with at most one -1, got data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]}")
  for section in (cfg.model, cfg.objective):
    if hasattr(section, "validate"):
      section.validate()


# ----------------------------------------------------------------------- save and load


def to_dict(cfg: Config) -> dict:
  return dataclasses.asdict(cfg)


def _typed_section(what: str, d: dict, config_class) -> Any:
  cls = config_class(d["name"])
  unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
  if unknown:
    raise ConfigError(f"unknown config key(s) {what}.{sorted(unknown)} for {what} {d['name']!r}")
  return cls(**d)


def from_dict(d: dict) -> Config:
  """Rebuilds a Config written by `save`; keys it does not know are errors."""
  d = dict(d)
  model = d.pop("model", None)
  objective = d.pop("objective", "lm")
  cfg = Config(objective=objective if isinstance(objective, str) else
               _typed_section("objective", objective, objective_config_class))
  sections = {f.name for f in dataclasses.fields(Config) if _is_dataclass_instance(getattr(cfg, f.name))}
  for key, value in d.items():
    if key in sections:
      section = getattr(cfg, key)
      for sub, v in value.items():
        if sub not in _field_types(section):
          raise ConfigError(f"unknown config key {key}.{sub!r} in saved config")
        setattr(section, sub, v)
    elif key in _field_types(cfg):
      setattr(cfg, key, value)
    else:
      raise ConfigError(f"unknown config key {key!r} in saved config")
  if model is not None:
    cfg.model = _typed_section("model", model, model_config_class)
  return cfg


def save(cfg: Config, path: str | Path) -> None:
  """Atomically (a temp file renamed): another host or a crash never sees half a config."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
  os.replace(tmp, path)


def load(path: str | Path) -> Config:
  return from_dict(json.loads(Path(path).read_text()))


def load_experiment(experiment_dir: str | Path, overrides: list[str] = ()) -> Config:
  """Runs `get_config()` from `<experiment_dir>/config.py`, then applies the overrides."""
  path = Path(experiment_dir)
  file = path / "config.py" if path.is_dir() else path
  if not file.is_file():
    raise ConfigError(f"no experiment at {str(experiment_dir)!r}: expected a directory holding config.py")
  spec = importlib.util.spec_from_file_location(f"experiment_{file.parent.name}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{file} defines no get_config() returning a research.config.Config")
  cfg = module.get_config()
  cfg.experiment = cfg.experiment or file.parent.name
  return apply_overrides(cfg, list(overrides))
