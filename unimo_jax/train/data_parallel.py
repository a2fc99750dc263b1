"""Gradients summed over the batch axes once per step (config.gradient_sum = 'once' or 'scatter').

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

'scatter' sums the same gradients with a reduce-scatter instead (ZeRO's first stage): each device
receives the sum of one slice of every parameter's gradient, along the dimension
`scattered_dimension` picks, and the optimizer's moments live sliced the same way
(train/state.py), so each device updates its slice of the parameters, which the step then
all-gathers (the parameters stay replicated). The optimizer update, which reads and writes the
parameters, the gradients and both moments, and the moments' HBM shrink by the number of batch
devices; the network carries the all-gather of the parameters besides the sum (a reduce-scatter
is half an all-reduce, but libtpu 0.0.42.1 compiles it for a v5e slice as an all-reduce of the
whole gradient followed by a slice: docs/notes/base_step_time.md). Parameters with
no dimension divisible by that number (e.g. the 50,265-word output bias) are summed and
updated whole, as under 'once'.
"""

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from unimo_jax.parallel import BATCH_AXES

GRADIENT_SUMS = ("partitioner", "once", "scatter")
PER_DEVICE_SUMS = ("once", "scatter")  # the loss runs per device, inside a jax.shard_map


def check_gradient_sum(gradient_sum: str, mesh_sizes: dict, experiment_kind) -> None:
  """ValueError unless `gradient_sum` names a choice the mesh and the experiment can run."""
  if gradient_sum not in GRADIENT_SUMS:
    raise ValueError(f"gradient_sum: expected one of {GRADIENT_SUMS}, found {gradient_sum!r}")
  if gradient_sum not in PER_DEVICE_SUMS:
    return
  if mesh_sizes["fsdp"] != 1 or mesh_sizes["tensor"] != 1:
    raise ValueError(f"gradient_sum={gradient_sum!r} keeps a whole copy of the parameters on "
                     f"every device: expected mesh fsdp=1 and tensor=1, found "
                     f"fsdp={mesh_sizes['fsdp']} and "
                     f"tensor={mesh_sizes['tensor']} (use gradient_sum='partitioner')")
  if not getattr(experiment_kind, "per_device_loss", False):
    raise ValueError(f"gradient_sum={gradient_sum!r}: {experiment_kind.__name__}'s loss is "
                     "written for the global batch only (use gradient_sum='partitioner')")


def batch_devices(mesh, batch_axes=BATCH_AXES) -> int:
  """How many devices split the batch: the product of the mesh's batch axes."""
  return int(np.prod([mesh.shape[a] for a in batch_axes]))


def scattered_dimension(shape, devices: int) -> int:
  """The dimension along which 'scatter' slices a parameter's gradient and optimizer moments over
  `devices`: the largest one divisible by it (the first of equals), or -1 where none is (the
  parameter is then summed and updated whole on every device)."""
  divisible = [(size, -d) for d, size in enumerate(shape) if size % devices == 0]
  return -max(divisible)[1] if devices > 1 and divisible else -1


def spec_along(dim: int, ndim: int, batch_axes) -> P:
  """P() for dim -1; otherwise the `ndim`-dimensional spec splitting `dim` over the batch axes."""
  return P(*[batch_axes if d == dim else None for d in range(ndim)]) if dim >= 0 else P()


def scattered_spec(shape, devices: int, batch_axes=BATCH_AXES) -> P:
  """The PartitionSpec of a parameter's gradient and moments under 'scatter'; P() when whole."""
  return spec_along(scattered_dimension(shape, devices), len(shape), batch_axes)


def summed_along(grad, dim: int, batch_axes):
  """Inside a jax.shard_map over `batch_axes`: this device's `grad` summed over the axes, whole
  (one psum) for dim -1, else reduce-scattered along `dim` (this device's slice of the sum)."""
  if dim < 0:
    return jax.lax.psum(grad, batch_axes)
  return jax.lax.psum_scatter(grad, batch_axes, scatter_dimension=dim, tiled=True)


def summed_once(grad_fn, mesh, batch_axes=BATCH_AXES, scatter: bool = False):
  """grad_fn(params, batch, rng) -> ((loss, metrics), grads), run per device as a jax.shard_map
  over `batch_axes` (parameters and key replicated, batch rows split), its gradients summed over
  the axes once: by one psum each (replicated), or with scatter=True by one reduce-scatter each,
  sliced as `scattered_spec` says (whole and psummed where it gives P()). grad_fn computes with
  this device's rows and a per-device key; its loss and metrics must already be the global
  batch's (see the module docstring)."""
  def run(params, batch, rng):
    devices = batch_devices(mesh, batch_axes)
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
      if leaf.shape[0] % devices:
        raise ValueError(f"batch{jax.tree_util.keystr(path)}: expected a leading dimension "
                         f"divisible by the {devices} devices of {batch_axes}, found "
                         f"{leaf.shape}")
    dims = jax.tree.map(lambda p: scattered_dimension(p.shape, devices) if scatter else -1,
                        params)

    def per_device(params, batch, rng):
      rng = jax.random.fold_in(rng, jax.lax.axis_index(batch_axes))
      own = jax.lax.pcast(params, batch_axes, to="varying")  # this device's copy
      with nn.logical_axis_rules(()):  # every array here is this device's: nothing to constrain
        (loss, metrics), grads = grad_fn(own, batch, rng)
      return (loss, metrics), jax.tree.map(
          lambda g, dim: summed_along(g, dim, batch_axes), grads, dims)

    grad_specs = jax.tree.map(lambda p, dim: spec_along(dim, p.ndim, batch_axes), params, dims)
    fn = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(batch_axes), P()),
                       out_specs=((P(), P()), grad_specs))
    return fn(params, batch, rng)
  return run
