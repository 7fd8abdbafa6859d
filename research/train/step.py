"""The pure train and eval steps: functions of arrays only, so they jit, shard and test simply.

The train state is a dict `{"step", "params", "opt"}`. The model's structure (its nnx
graph definition) is closed over; its parameters travel as an `nnx.State`.
Randomness for a step is `fold_in(key(seed), step)`: a resumed run draws the same dropout
masks as one that never stopped.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

# loss_fn(model, batch, rng, train) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def init_state(params, tx: optax.GradientTransformation) -> dict:
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params)}


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    *, seed: int, grad_accum: int = 1, lr_schedule=None):
  def loss_of(params, batch, rng):
    return loss_fn(nnx.merge(graphdef, params), batch, rng, True)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)

  def accumulate(params, batch, rng):
    """Mean loss, metrics and gradient over `grad_accum` micro-batches, one at a time."""
    if grad_accum == 1:
      (loss, metrics), grads = grad_fn(params, batch, rng)
      return loss, metrics, grads
    micro = jax.tree.map(lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

    def body(carry, xs):
      i, mb = xs
      (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng))
    zeros = (zeros[0][0], zeros[0][1], zeros[1])
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum), micro))
    return jax.tree.map(lambda x: x / grad_accum, total)

  def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
    rng = jax.random.fold_in(jax.random.key(seed), state["step"])
    loss, metrics, grads = accumulate(state["params"], batch, rng)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    if lr_schedule is not None:
      metrics["lr"] = lr_schedule(state["step"])
    return {"step": state["step"] + 1, "params": params, "opt": opt}, metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef, loss_fn: LossFn):
  def eval_step(params, batch) -> dict:
    loss, metrics = loss_fn(nnx.merge(graphdef, params), batch, jax.random.key(0), False)
    return {**metrics, "loss": loss}
  return eval_step
