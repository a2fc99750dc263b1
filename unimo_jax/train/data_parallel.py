"""Gradients summed over the batch axes once per step (config.gradient_sum = 'once').

Under jax.jit with the batch split over ('data', 'fsdp') and the parameters replicated, XLA's
SPMD partitioner sums each forward pass's weight gradients over the devices where that pass's
backward matmuls produce them: pretraining runs ten passes per step (one per objective and CMCL
block), so every weight's gradient crosses the network about ten times. Here the whole loss and
gradient run as a jax.shard_map over the batch axes instead: each device differentiates the loss
of its own rows with respect to its own copy of the parameters (typed as varying, so autodiff
adds no collective of its own), adds up its passes' gradients locally, and the step sums them
over the devices with one psum per parameter.

The loss inside must be written for this: `loss_fn(params, batch, rng, batch_axes=axes)` gets
this device's rows and reduces every term over the axes itself (pretraining_loss does: counts
and sums by psum, CMCL's columns by all_gather), so the loss and metrics it returns are the
global batch's, the same on every device. Dropout draws its masks from the step's key folded
with the device's index along the batch axes: each device's rows get their own masks, but not
the masks jax.jit would draw for the same rows of the global batch, so a step matches the
'partitioner' one only without dropout (tests/test_data_parallel.py), and it depends on the
number of batch devices (a run resumes on the same mesh).
"""

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from unimo_jax.parallel import BATCH_AXES

GRADIENT_SUMS = ("partitioner", "once")


def check_gradient_sum(gradient_sum: str, mesh_sizes: dict, experiment_kind) -> None:
  """ValueError unless `gradient_sum` names a choice the mesh and the experiment can run."""
  if gradient_sum not in GRADIENT_SUMS:
    raise ValueError(f"gradient_sum: expected one of {GRADIENT_SUMS}, found {gradient_sum!r}")
  if gradient_sum != "once":
    return
  if mesh_sizes["fsdp"] != 1 or mesh_sizes["tensor"] != 1:
    raise ValueError(f"gradient_sum='once' keeps a whole copy of the parameters on every device: "
                     f"expected mesh fsdp=1 and tensor=1, found fsdp={mesh_sizes['fsdp']} and "
                     f"tensor={mesh_sizes['tensor']} (use gradient_sum='partitioner')")
  if not getattr(experiment_kind, "per_device_loss", False):
    raise ValueError(f"gradient_sum='once': {experiment_kind.__name__}'s loss is written for the "
                     "global batch only (use gradient_sum='partitioner')")


def summed_once(grad_fn, mesh, batch_axes=BATCH_AXES):
  """grad_fn(params, batch, rng) -> ((loss, metrics), grads), run per device as a jax.shard_map
  over `batch_axes` (parameters and key replicated, batch rows split), its gradients summed over
  the axes with one psum. grad_fn computes with this device's rows and a per-device key; its
  loss and metrics must already be the global batch's (see the module docstring)."""
  def per_device(params, batch, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(batch_axes))
    own = jax.lax.pcast(params, batch_axes, to="varying")  # this device's copy
    with nn.logical_axis_rules(()):  # every array here is this device's: no sharding to constrain
      (loss, metrics), grads = grad_fn(own, batch, rng)
    return (loss, metrics), jax.lax.psum(grads, batch_axes)

  def run(params, batch, rng):
    devices = int(np.prod([mesh.shape[a] for a in batch_axes]))
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
      if leaf.shape[0] % devices:
        raise ValueError(f"batch{jax.tree_util.keystr(path)}: expected a leading dimension "
                         f"divisible by the {devices} devices of {batch_axes}, found "
                         f"{leaf.shape}")
    fn = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(batch_axes), P()),
                       out_specs=((P(), P()), P()))
    return fn(params, batch, rng)
  return run
