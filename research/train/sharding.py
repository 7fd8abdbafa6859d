"""The device mesh and the rule table that maps logical axis names onto it.

One mesh with axes (`data`, `fsdp`, `tensor`). A parameter declares what its dimensions
mean (`embed`, `mlp`, `heads`, `kv`, `vocab`, `layers`); `RULES` says which mesh axis
shards each meaning. Batches are split over `data` and `fsdp` together: FSDP is data
parallelism whose parameters are also sharded (over `embed`), gathered when used.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from research.config import ConfigError, MeshConfig

AXES = ("data", "fsdp", "tensor")

RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv": None,
    "vocab": "tensor",
    "layers": None,
}


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
  sizes = [cfg.data, cfg.fsdp, cfg.tensor]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n_devices % known:
      raise ConfigError(f"mesh: {n_devices} devices cannot be split with fixed sizes whose product is {known}")
    sizes[sizes.index(-1)] = n_devices // known
  if math.prod(sizes) != n_devices:
    raise ConfigError(f"mesh: data*fsdp*tensor = {math.prod(sizes)} but there are {n_devices} devices")
  return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(cfg, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(axes, shape, mesh: Mesh) -> P:
  """The PartitionSpec for a value whose dims mean `axes`.

  A dim whose size the mesh axis does not divide is replicated rather than padded (e.g. a
  vocabulary of 65 characters over tensor=2), and a mesh axis is used at most once.
  """
  used, spec = set(), []
  for name, size in zip(axes, shape):
    target = RULES.get(name) if name is not None else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    targets = tuple(t for t in targets if t not in used and mesh.shape[t] > 1)
    if targets and size % math.prod(mesh.shape[t] for t in targets) == 0:
      used.update(targets)
      spec.append(targets[0] if len(targets) == 1 else targets)
    else:
      spec.append(None)
  return P(*spec)


def state_shardings(state, mesh: Mesh):
  """NamedShardings for a pytree whose leaves may sit in nnx Variables with `out_sharding`.

  Optimizer moments built by optax from an nnx.State keep the Variable wrappers, so they get
  the same sharding as their parameter. Everything else (step counters) is replicated.
  """
  def one(leaf):
    if isinstance(leaf, nnx.Variable):
      axes = leaf.get_metadata().get("out_sharding") or ()
      spec = logical_to_spec(axes, leaf.get_value().shape, mesh) if axes else P()
      return leaf.replace(value=NamedSharding(mesh, spec))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(RULES["batch"]))


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Places a global host batch on the mesh; on many hosts each contributes its own rows."""
  n, i = jax.process_count(), jax.process_index()
  def one(x):
    rows = x.shape[0] // n
    return jax.make_array_from_process_local_data(sharding, x[i * rows:(i + 1) * rows], x.shape)
  return {k: one(v) for k, v in batch.items()}
