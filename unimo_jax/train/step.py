"""The jitted train step: (state, batch) -> (state, metrics), every objective in one jax.jit."""

import functools

import jax
import jax.numpy as jnp
import optax

from unimo_jax.objectives.pretraining_loss import pretraining_loss
from unimo_jax.parallel import BATCH_AXES
from unimo_jax.train.data_parallel import PER_DEVICE_SUMS, summed_once
from unimo_jax.train.optimizer import learning_rate_schedule
from unimo_jax.train.state import dropout_key_impl


def _micro_batches(batch, count):
  """Splits every leaf's leading (batch) dimension into [count, batch / count, ...]."""
  def split(x):
    if x.shape[0] % count:
      raise ValueError(f"gradient accumulation: batch dimension {x.shape[0]} is not divisible "
                       f"by optimizer.accumulation_steps={count}")
    return x.reshape((count, x.shape[0] // count) + x.shape[1:])
  return jax.tree.map(split, batch)


def pretraining_loss_fn(config, mesh):
  """(params, batch, rng) -> (loss, metrics) of the pretraining objectives, dropout on."""
  def loss_fn(p, b, key, batch_axes=None):
    return pretraining_loss({"params": p}, b, config, rng=key, mesh=mesh, deterministic=False,
                            batch_axes=batch_axes)
  return loss_fn


def loss_and_grads(params, batch, rng, config, loss_fn, mesh=None):
  """((loss, metrics), grads), averaged over optimizer.accumulation_steps micro-batches. With
  config.gradient_sum 'once' or 'scatter' each device runs this on its own rows and the gradients
  are summed over the batch axes once, whole or sliced (train/data_parallel.py); 'partitioner'
  leaves the sums to XLA."""
  gradient_sum = config.get("gradient_sum", "partitioner")
  if gradient_sum in PER_DEVICE_SUMS:
    if mesh is None:
      raise ValueError(f"gradient_sum={gradient_sum!r}: expected the device mesh, found mesh=None")
    local_loss = functools.partial(loss_fn, batch_axes=BATCH_AXES)
    local = functools.partial(_accumulated, config=config, loss_fn=local_loss)
    return summed_once(local, mesh, scatter=gradient_sum == "scatter")(params, batch, rng)
  return _accumulated(params, batch, rng, config, loss_fn)


def _accumulated(params, batch, rng, config, loss_fn):
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  count = int(config.optimizer.accumulation_steps)
  if count <= 1:
    return grad_fn(params, batch, rng)

  def body(carry, inputs):
    micro, index = inputs
    (loss, metrics), grads = grad_fn(params, micro, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, ((loss, metrics), grads)), None

  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, jax.tree.map(
      lambda x: x[0], _micro_batches(batch, count)), rng))
  total, _ = jax.lax.scan(body, zeros, (_micro_batches(batch, count), jnp.arange(count)))
  return jax.tree.map(lambda x: x / count, total)


def train_step(state, batch, *, config, tx, mesh=None, loss_fn=None):
  """One optimizer step on one batch. Pure: the dropout key comes from (state rng, step).
  loss_fn(params, batch, rng) -> (loss, metrics); default: the pretraining objectives."""
  key = jax.random.wrap_key_data(state["rng"], impl=dropout_key_impl(config))
  rng = jax.random.fold_in(key, state["step"])
  loss_fn = loss_fn or pretraining_loss_fn(config, mesh)
  (loss, metrics), grads = loss_and_grads(state["params"], batch, rng, config, loss_fn, mesh)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                 param_norm=optax.tree.norm(params),
                 learning_rate=learning_rate_schedule(config)(state["step"]))
  new_state = dict(state, params=params, opt_state=opt_state, step=state["step"] + 1)
  return new_state, metrics


def jit_train_step(config, tx, mesh, state_shardings, batch_shardings, loss_fn=None):
  """train_step under jax.jit with donated state and explicit shardings."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  step = functools.partial(train_step, config=config, tx=tx, mesh=mesh, loss_fn=loss_fn)
  return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, NamedSharding(mesh, P())), donate_argnums=(0,))
