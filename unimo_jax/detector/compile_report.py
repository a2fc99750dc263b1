"""The detector compiled for a TPU slice on any machine (libtpu's compile-only client): images
split over the chips, parameters replicated (inference is data-parallel; no chip needs another's
data). Memory per chip, FLOPs and the TPU cost model's estimated time (an estimate, not a
measurement; the NMS loops' bodies are counted once, so images/s is an upper bound)."""

import functools
import time

import jax
import numpy as np

from unimo_jax.compile import analysis, topology
from unimo_jax.detector.config import DetectorConfig
from unimo_jax.detector.network import detect
from unimo_jax.detector.params import random_params


def compile_for_slice(config: DetectorConfig, slice_name: str, per_chip_batch: int,
                      bucket: tuple) -> dict:
  """{slice, images_per_step, memory (per chip), cost, collectives, fits, images_per_second_per
  _chip (estimate), compile_seconds} of `detect` for `bucket`-sized images."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  slice_ = topology.parse_slice(slice_name)
  devices = topology.abstract_devices(slice_)
  mesh = Mesh(np.array(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = per_chip_batch * len(devices)
  replicated = NamedSharding(mesh, P())

  def split(rank):
    return NamedSharding(mesh, P("data", *([None] * (rank - 1))))

  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32, sharding=replicated),
                        random_params(config))
  args = (params,
          jax.ShapeDtypeStruct((batch, *bucket, 3), np.float32, sharding=split(4)),
          jax.ShapeDtypeStruct((batch, 2), np.int32, sharding=split(2)),
          jax.ShapeDtypeStruct((batch,), np.float32, sharding=split(1)))
  start = time.perf_counter()
  # a compile-only client cannot load executables: keep it out of the persistent cache
  cached = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    compiled = jax.jit(functools.partial(detect, config=config)).lower(*args).compile()
  finally:
    jax.config.update("jax_enable_compilation_cache", cached)
  report = analysis.program_report(compiled)
  seconds = report["cost"]["estimated_seconds"]
  return dict(report, slice=slice_name, images_per_step=batch,
              fits=report["memory"]["total"] <= slice_.chip.usable_hbm_bytes,
              usable_hbm_bytes=slice_.chip.usable_hbm_bytes,
              parameter_bytes=sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(params)),
              images_per_second_per_chip=per_chip_batch / seconds,
              compile_seconds=time.perf_counter() - start)
