"""The train state: a plain dict {params, opt_state, step, rng}, created directly sharded.

Keys and abstract state are made under jax.eval_shape, so the same code serves a mesh of real
devices and one of abstract (compile-only) devices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from unimo_jax.model.params import init_boxed_params
from unimo_jax.train.data_parallel import batch_devices, scattered_spec


def _params_fn(config, boxed_params_fn):
  """boxed_params_fn(key) -> params with logical-axis metadata; default: the pretraining model."""
  return boxed_params_fn or (lambda key: init_boxed_params(config.model, key))


def dropout_key_impl(config) -> str:
  """The PRNG implementation of the dropout keys (config.rng_impl; JAX's default threefry when
  unset). Parameters are always initialised from a threefry key, so they do not depend on it."""
  return config.get("rng_impl", "threefry2x32")


def _init_state(config, tx, boxed_params_fn):
  params = nn.unbox(boxed_params_fn(jax.random.key(config.seed)))
  dropout_key = jax.random.key(config.seed, impl=dropout_key_impl(config))
  return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.key_data(jax.random.fold_in(dropout_key, 1))}


def moment_shardings(config, mesh, abstract_params, param_shardings):
  """The sharding of each parameter's optimizer moments: the parameter's own, or under
  gradient_sum='scatter' the slice of the batch devices its summed gradient arrives in
  (train/data_parallel.py)."""
  if config.get("gradient_sum", "partitioner") != "scatter":
    return param_shardings
  devices = batch_devices(mesh)
  return jax.tree.map(lambda p: NamedSharding(mesh, scattered_spec(p.shape, devices)),
                      abstract_params)


def state_shardings(config, tx, mesh, rules, boxed_params_fn=None):
  """(abstract state, NamedSharding tree): params by the logical rules, optimizer moments like
  their parameters (or sliced over the batch devices, gradient_sum='scatter'), scalars
  replicated. boxed_params_fn(key) -> params with logical partitioning metadata (default: the
  pretraining model's). Nothing is allocated."""
  params_fn = _params_fn(config, boxed_params_fn)
  boxed = jax.eval_shape(lambda: params_fn(jax.random.key(config.seed)))
  param_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  abstract = jax.eval_shape(lambda: _init_state(config, tx, params_fn))
  replicated = NamedSharding(mesh, P())
  opt_shardings = optax.tree_map_params(
      tx, lambda _, sharding: sharding, abstract["opt_state"],
      moment_shardings(config, mesh, abstract["params"], param_shardings),
      transform_non_params=lambda _: replicated)
  shardings = {"params": param_shardings, "opt_state": opt_shardings, "step": replicated,
               "rng": replicated}
  return abstract, shardings


def create_state(config, tx, shardings, boxed_params_fn=None):
  """A fresh state, each array created on its devices (no host copy of the full model)."""
  params_fn = _params_fn(config, boxed_params_fn)
  return jax.jit(lambda: _init_state(config, tx, params_fn), out_shardings=shardings)()


def state_with_params(state, params, shardings, key=None):
  """`state` with its params (or its params[key] sub-tree) replaced, e.g. by converted RoBERTa
  weights or a pretrained backbone, placed as `shardings`."""
  if key is None:
    return dict(state, params=jax.device_put(params, shardings["params"]))
  placed = jax.device_put(params, shardings["params"][key])
  return dict(state, params=dict(state["params"], **{key: placed}))
