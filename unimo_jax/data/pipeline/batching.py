"""Evaluation-style batching on the host: stack per-example rows, pad to a fixed batch size (one
compilation for any count), run a jitted function batch by batch and trim the padding."""

import jax
import numpy as np

from unimo_jax.parallel import batch_sharding


def stack_rows(rows):
  """[{field: array}] -> {field: stacked array}, nested dicts included."""
  return jax.tree.map(lambda *xs: np.stack(xs), *rows)


def pad_rows(tree, size):
  """Pads the leading dimension of every leaf to `size` by repeating the first row."""
  def pad(x):
    x = np.asarray(x)
    if len(x) == size:
      return x
    return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])
  return jax.tree.map(pad, tree)


def place_on_mesh(x, mesh):
  """A host array every process holds in full -> a global array sharded on the batch axes
  (each process places its own devices' rows)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda i: x[i])


def batched_apply(fn, params, rows, size: int, mesh=None):
  """fn(params, stacked rows) over `rows` in batches of `size` (rounded up to the mesh's batch
  devices and sharded over them when `mesh` is given); the outputs' leaves concatenated and
  trimmed to len(rows). Every process passes the same rows and gets the whole result."""
  size = int(size)
  if mesh is not None:
    devices = mesh.shape["data"] * mesh.shape["fsdp"]
    size = -(-size // devices) * devices
  outs = []
  for start in range(0, len(rows), size):
    chunk = rows[start:start + size]
    batch = pad_rows(stack_rows(chunk), size)
    if mesh is not None:
      batch = jax.tree.map(lambda x: place_on_mesh(x, mesh), batch)
    out = fn(params, batch)
    if jax.process_count() > 1:  # every process computed its shards; gather the whole batch
      from jax.experimental import multihost_utils
      out = multihost_utils.process_allgather(out, tiled=True)
    outs.append(jax.tree.map(lambda x, n=len(chunk): np.asarray(x)[:n], jax.device_get(out)))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def contrastive_embedder(model):
  """Jitted (variables, batch, key) -> the model's CMCL embedding `key` ('image_embedding' or
  'text_embedding') of an image-only or text-only batch."""
  return jax.jit(lambda variables, batch, key: model.apply(variables, batch,
                                                           heads={"contrastive"})[key],
                 static_argnums=2)
