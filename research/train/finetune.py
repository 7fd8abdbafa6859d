"""Fine-tuning: a new run's parameters taken from another run's checkpoint (`train.init_from`).

The new run starts at step 0 with a fresh optimizer. Every parameter of the new model is
loaded from the source run's latest checkpoint by its path (e.g. `encoder/layers/0/attn/qkv/kernel`),
except those matching a `train.init_skip` pattern (fnmatch), which keep their fresh
initialisation: the heads a fine-tuning objective adds. Source parameters the new model
does not have (a pretraining head) are left behind. A path the source lacks, or a shape
that differs, is a `ConfigError` naming the first such path and both shapes.

`train.init_from` may also name a Hugging Face directory as `lineage export --to hf` writes
(config.json with "model_type" "bert" or "gpt2", model.safetensors): its weights are
renamed to lineage's paths (research/interop/hf_bert.py, hf_gpt2.py) and loaded by the same rules.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from research.config import ConfigError
from research.interop import hf_bert


def _path(keys) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)


def _source_shapes(checkpoints: Path) -> tuple[int, dict[str, tuple]]:
  manager = ocp.CheckpointManager(checkpoints.absolute(), item_handlers=ocp.StandardCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(create=False))
  step = manager.latest_step()
  if step is None:
    raise ConfigError(f"train.init_from: no checkpoint in {checkpoints}")
  tree = manager.item_metadata(step)["params"]
  manager.close()
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  # Checkpointed nnx Variables end in a "value" key: drop it, so paths read as parameter names.
  return step, {_path(p[:-1] if _path(p[-1:]) == "value" else p): tuple(meta.shape) for p, meta in flat}


def select_parameters(where: str, params: nnx.State, source: dict[str, tuple], skip: str):
  """(parameters to load: name -> Variable, names kept fresh); a ConfigError names the first that cannot load."""
  patterns = [p.strip() for p in skip.split(",") if p.strip()]
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  load, kept = {}, []
  for keys, variable in flat:
    name, shape = _path(keys), tuple(variable.get_value().shape)
    if any(fnmatch.fnmatchcase(name, p) for p in patterns):
      kept.append(name)
      continue
    if name not in source:
      raise ConfigError(f"train.init_from={where!r} has no parameter {name!r} (shape {shape}); "
                        f"add it to train.init_skip if it is a new head")
    if source[name] != shape:
      raise ConfigError(f"train.init_from={where!r}: parameter {name!r} has shape {source[name]} there "
                        f"but {shape} here; the model settings differ")
    load[name] = variable
  unused = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in kept)]
  if unused:
    raise ConfigError(f"train.init_skip pattern(s) {', '.join(map(repr, unused))} match no parameter of this model")
  return load, kept


def _report(log, where, load: dict, kept: list, n_source: int) -> None:
  left = n_source - len(load)
  log(f"fine-tuning from {where}: {len(load)} parameters loaded"
      + (f", {len(kept)} fresh ({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})" if kept else "")
      + (f", {left} of the source not used" if left else ""))


def init_from_run(run_dir: str | Path, params: nnx.State, skip: str = "", log=print) -> nnx.State:
  """`params` (initialised, sharded) with every non-skipped leaf replaced by the source run's."""
  run_dir = Path(run_dir)
  if hf_bert.is_hf_bert(run_dir):
    return init_from_hf(run_dir, params, skip, log)
  from research.interop import hf_gpt2

  if hf_gpt2.is_hf_gpt2(run_dir):
    return hf_gpt2.init_from_hf(run_dir, params, skip, log)
  step, source = _source_shapes(run_dir / "checkpoints")
  load, kept = select_parameters(str(run_dir), params, source, skip)

  # Restore exactly the loaded leaves, each straight into its parameter's sharding.
  def nest(names_to_value):
    tree: dict = {}
    for name, value in names_to_value.items():
      node = tree
      *parents, last = name.split("/")
      for part in parents:
        node = node.setdefault(part, {})
      node[last] = {"value": value}
    return tree

  abstract = nest({n: jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=v.get_value().sharding)
                   for n, v in load.items()})
  manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(create=False))
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), {"params": abstract})
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item={"params": abstract}, restore_args=restore_args, partial_restore=True))["params"]
  manager.close()

  def put(keys, variable):
    name = _path(keys)
    if name not in load:
      return variable
    node = restored
    for part in name.split("/"):
      node = node[part]
    return variable.replace(value=node["value"])

  new = jax.tree_util.tree_map_with_path(put, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  _report(log, f"{run_dir} (step {step})", load, kept, len(source))
  return new


def init_from_hf(directory: str | Path, params: nnx.State, skip: str = "", log=print) -> nnx.State:
  """`params` with every non-skipped leaf taken from a Hugging Face BERT directory."""
  _, weights = hf_bert.load_pretrained(directory)
  load, kept = select_parameters(str(directory), params, {k: v.shape for k, v in weights.items()}, skip)

  def put(keys, variable):
    name = _path(keys)
    if name not in load:
      return variable
    return variable.replace(value=jax.device_put(weights[name], variable.get_value().sharding))

  new = jax.tree_util.tree_map_with_path(put, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  _report(log, f"{directory} (Hugging Face)", load, kept, len(weights))
  return new
