"""What a train step costs once its passes are done: the TPU cost model's estimates (not
measurements) for summing every gradient over the slice's chips, and for the optimizer update
that follows, each compiled alone for the slice on this machine (libtpu's compile-only client).

  python benchmarks/tpu_update_probe.py [--config=configs/pretrain.py:base] [--topology=v5e-16]

- sum: every parameter's float32 gradient summed over all chips in a `jax.shard_map`: psummed
  whole (as `gradient_sum='once'` does after the passes), reduce-scattered along the dimension
  'scatter' slices (`train/data_parallel.py::scattered_dimension`) or along the first divisible
  one (libtpu compiles each reduce-scatter as an all-reduce and a slice; a slice of the minor
  dimension, the one on the TPU's lanes, costs a transposing copy as well), and psummed whole in
  bfloat16.
- update: `tx.update` + `optax.apply_updates` on the run's own train state and shardings
  (`driver.start`, as `--mode=compile` sets them up; the gradients arrive sharded like the
  optimizer's moments), with the step's logged gradient and parameter norms, without the
  parameter norm, and with it computed on the moments' slices.
Seconds per compile.
"""

import argparse
import json
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from unimo_jax.compile import analysis, topology
from unimo_jax.compile.aot import compile_run
from unimo_jax.train.config_parts import config_from_path
from unimo_jax.train.data_parallel import scattered_dimension, spec_along, summed_along
from unimo_jax.train.state import moment_shardings


def loaded_config(arg: str):
  """'configs/pretrain.py:base' -> that file's config at that preset."""
  path, _, preset = arg.rpartition(":")
  if not path or not pathlib.Path(path).is_file():
    raise SystemExit(f"--config: expected <config file>:<preset>, e.g. configs/pretrain.py:base, "
                     f"found {arg!r}")
  return config_from_path(path, preset)


def figures(compiled) -> dict:
  cost = analysis.cost(compiled)
  counts = analysis.collectives(compiled.as_text())
  return {"est_ms": round(cost["estimated_seconds"] * 1e3, 3),
          "bytes_accessed_GB": round(cost["bytes_accessed"] / 1e9, 3),
          "collectives": {kind: c for kind, c in counts.items() if c["count"]}}


def first_divisible_dimension(shape, devices: int) -> int:
  """The alternative slicing rule: the first (most major) dimension divisible by `devices`."""
  return next((d for d, size in enumerate(shape) if size % devices == 0), -1)


SLICING_RULES = {
    "whole": lambda shape, devices: -1,
    "scattered_dimension (the shipped rule: the largest divisible)": scattered_dimension,
    "the first divisible dimension": first_divisible_dimension}


def gradient_sum_estimate(shapes, dtype, devices, rule: str = "whole") -> dict:
  """Summing one [*shape] gradient per chip over all `devices`, for every shape: psummed whole,
  or reduce-scattered (psum_scatter, as 'scatter' does) along the dimension `rule` picks."""
  mesh = Mesh(np.array(devices), ("chips",))
  per_chip = [jax.ShapeDtypeStruct((mesh.size,) + s, dtype,
                                   sharding=NamedSharding(mesh, P("chips"))) for s in shapes]
  dims = [SLICING_RULES[rule](s, mesh.size) for s in shapes]

  specs = [spec_along(dim, len(s), "chips") for s, dim in zip(shapes, dims)]

  def summed(*grads):  # each chip's [1, *shape] slice is its own gradient, summed as the step does
    return jax.shard_map(lambda *g: [summed_along(x[0], d, "chips") for x, d in zip(g, dims)],
                         mesh=mesh, in_specs=P("chips"), out_specs=specs, check_vma=False)(*grads)

  gradient_bytes = sum(np.prod(s) for s in shapes) * jnp.dtype(dtype).itemsize
  minor = sum(0 <= dim == len(s) - 1 for s, dim in zip(shapes, dims))
  return {"program": f"sum, {jnp.dtype(dtype).name}, sliced: {rule}",
          "gradient_MiB": round(gradient_bytes / 2 ** 20, 1),
          "arrays_sliced_along_their_minor_dimension": int(minor),
          **figures(jax.jit(summed).lower(*per_chip).compile())}


def update_estimate(run, param_norm: str) -> dict:
  """The optimizer update on the run's state layout; param_norm 'whole', 'none' or 'slices'."""
  state, shardings, tx = run.abstract, run.shardings, run.tx
  placed = lambda tree, where: jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, where)
  params = placed(state["params"], shardings["params"])
  opt_state = placed(state["opt_state"], shardings["opt_state"])
  # the summed gradients arrive laid out like the moments (sliced under 'scatter')
  slices = moment_shardings(run.config, run.mesh, state["params"], shardings["params"])
  grads = placed(state["params"], slices)

  def update(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"grad_norm": optax.tree.norm(grads)}
    if param_norm == "whole":
      metrics["param_norm"] = optax.tree.norm(params)
    elif param_norm == "slices":
      metrics["param_norm"] = optax.tree.norm(jax.lax.with_sharding_constraint(params, slices))
    return params, opt_state, metrics

  out = (shardings["params"], shardings["opt_state"], NamedSharding(run.mesh, P()))
  with run.context():
    compiled = jax.jit(update, out_shardings=out, donate_argnums=(0, 1)).lower(
        params, opt_state, grads).compile()
  return {"program": f"update, param_norm {param_norm}", **figures(compiled)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/pretrain.py:base")
  parser.add_argument("--topology", default="v5e-16")
  args = parser.parse_args(argv)
  config = loaded_config(args.config)
  devices = topology.abstract_devices(topology.parse_slice(args.topology))
  with tempfile.TemporaryDirectory() as workdir:
    run = compile_run(config, workdir, devices)
  shapes = [x.shape for x in jax.tree.leaves(run.abstract["params"])]
  millions = sum(np.prod(s) for s in shapes) / 1e6
  print(f"{args.config} on {args.topology} (mesh {dict(run.mesh.shape)}, gradient_sum "
        f"{config.get('gradient_sum', 'partitioner')!r}): {millions:.1f} M parameters in "
        f"{len(shapes)} arrays; estimates of XLA's TPU cost model", flush=True)
  for rule in SLICING_RULES:
    print(json.dumps(gradient_sum_estimate(shapes, jnp.float32, devices, rule)), flush=True)
  print(json.dumps(gradient_sum_estimate(shapes, jnp.bfloat16, devices)), flush=True)
  for param_norm in ("whole", "none", "slices"):
    print(json.dumps(update_estimate(run, param_norm)), flush=True)


if __name__ == "__main__":
  sys.exit(main())
