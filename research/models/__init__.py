"""Architectures of the lineage, one file each; `research.config` finds them by `model.name`."""

import flax

# Parameters are placed on the mesh at the jit boundary (research/train/sharding.py), so
# their logical axis names are metadata only, not a request to shard at creation.
flax.config.update("flax_always_shard_variable", False)


def model_module(name: str):
  """research/models/<name>.py: its `Config`, `build`, and optionally `train_flops`."""
  import importlib

  return importlib.import_module(f"research.models.{name}")


def build_model(cfg, rngs, dtype=None):
  """The model of an experiment config (`cfg.model.name` picks the module)."""
  import jax.numpy as jnp

  return model_module(cfg.model.name).build(cfg.model, rngs=rngs, dtype=dtype or jnp.float32)
