"""The train state: a plain dict {params, opt_state, step, rng}, created directly sharded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from unimo_jax.model.params import init_boxed_params


def _pretraining_params(config, key):
  return init_boxed_params(config.model, key)


def _init_state(config, tx, key, boxed_params_fn=_pretraining_params):
  params = nn.unbox(boxed_params_fn(config, key))
  return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.key_data(jax.random.fold_in(key, 1))}


def state_shardings(config, tx, mesh, rules, boxed_params_fn=_pretraining_params):
  """(abstract state, NamedSharding tree): params by the logical rules, optimizer moments like
  their parameters, scalars replicated. boxed_params_fn(config, key) -> params with logical
  partitioning metadata (default: the pretraining model's)."""
  key = jax.random.key(config.seed)
  boxed = jax.eval_shape(lambda: boxed_params_fn(config, key))
  param_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  abstract = jax.eval_shape(lambda: _init_state(config, tx, key, boxed_params_fn))
  replicated = NamedSharding(mesh, P())
  opt_shardings = optax.tree_map_params(
      tx, lambda _, sharding: sharding, abstract["opt_state"], param_shardings,
      transform_non_params=lambda _: replicated)
  shardings = {"params": param_shardings, "opt_state": opt_shardings, "step": replicated,
               "rng": replicated}
  return abstract, shardings


def create_state(config, tx, shardings, boxed_params_fn=_pretraining_params):
  """A fresh state, each array created on its devices (no host copy of the full model)."""
  key = jax.random.key(config.seed)
  return jax.jit(lambda: _init_state(config, tx, key, boxed_params_fn), out_shardings=shardings)()


def state_with_params(state, params, shardings):
  """`state` with its params replaced (e.g. converted RoBERTa weights), placed as `shardings`."""
  return dict(state, params=jax.device_put(params, shardings["params"]))
