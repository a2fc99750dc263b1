"""What summing a step's gradients costs on a TPU slice, and what summing them in bfloat16 would
save: the TPU cost model's estimates (not measurements) for one all-reduce of every parameter's
gradient over the batch devices, float32 (the step's sums) against bfloat16.

  python benchmarks/tpu_gradient_sum.py [--config=configs/pretrain.py:base] [--topology=v5e-16]

The parameters are the config's model (its real shapes, nothing allocated); each chip holds one
gradient per parameter and a `jax.shard_map` psums them over all chips of the slice, as
`gradient_sum='once'` does after the passes (libtpu compiles 'scatter''s reduce-scatter on v5e as
the same all-reduce; README, "Where the base step's time goes"). Two compiles, seconds each.
"""

import argparse
import importlib.util
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from unimo_jax.compile import analysis, topology
from unimo_jax.model.params import abstract_params, strip_boxes


def loaded_config(arg: str):
  """'configs/pretrain.py:base' -> that file's get_config('base')."""
  path, _, preset = arg.rpartition(":")
  if not path or not pathlib.Path(path).is_file():
    raise SystemExit(f"--config: expected <config file>:<preset>, e.g. configs/pretrain.py:base, "
                     f"found {arg!r}")
  spec = importlib.util.spec_from_file_location("benchmarked_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def gradient_shapes(config) -> list:
  """The shapes of the config model's parameters, in tree order."""
  return [leaf.shape for leaf in jax.tree.leaves(strip_boxes(abstract_params(config.model)))]


def all_reduce_estimate(shapes, dtype, mesh) -> dict:
  """The cost model's figures for psumming one [*shape] gradient per chip, for every shape."""
  axis = mesh.axis_names[0]
  per_chip = [jax.ShapeDtypeStruct((mesh.size,) + s, dtype, sharding=NamedSharding(mesh, P(axis)))
              for s in shapes]

  def summed(*grads):  # each chip's [1, *shape] slice is its own gradient
    return jax.shard_map(lambda *g: [jax.lax.psum(x[0], axis) for x in g], mesh=mesh,
                         in_specs=P(axis), out_specs=P(), check_vma=False)(*grads)

  compiled = jax.jit(summed).lower(*per_chip).compile()
  cost = analysis.cost(compiled)
  counts = analysis.collectives(compiled.as_text())
  gradient_bytes = sum(np.prod(s) for s in shapes) * jnp.dtype(dtype).itemsize
  return {"dtype": jnp.dtype(dtype).name, "est_ms": round(cost["estimated_seconds"] * 1e3, 3),
          "bytes_accessed_GB": round(cost["bytes_accessed"] / 1e9, 3),
          "gradient_MiB": round(gradient_bytes / 2 ** 20, 1),
          "collectives": {kind: c for kind, c in counts.items() if c["count"]}}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/pretrain.py:base")
  parser.add_argument("--topology", default="v5e-16")
  args = parser.parse_args(argv)
  config = loaded_config(args.config)
  slice_ = topology.parse_slice(args.topology)
  mesh = Mesh(np.array(topology.abstract_devices(slice_)), ("chips",))
  shapes = gradient_shapes(config)
  print(f"{args.config}: {sum(np.prod(s) for s in shapes) / 1e6:.1f} M parameters in "
        f"{len(shapes)} arrays, summed over the {mesh.size} chips of {args.topology}; "
        "estimates of XLA's TPU cost model", flush=True)
  for dtype in (jnp.float32, jnp.bfloat16):
    print(json.dumps(all_reduce_estimate(shapes, dtype, mesh)), flush=True)


if __name__ == "__main__":
  sys.exit(main())
