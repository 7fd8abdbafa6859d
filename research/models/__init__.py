"""Architectures of the lineage, one file each; `research.config` finds them by `model.name`."""

import flax

# Parameters are placed on the mesh at the jit boundary (research/train/sharding.py), so
# their logical axis names are metadata only, not a request to shard at creation.
flax.config.update("flax_always_shard_variable", False)
