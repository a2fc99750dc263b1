"""What the checkpoint digests cost at save time, on the base preset's train state.

  python benchmarks/checkpoint_digest.py [--preset base] [--repeats 3] [--tpu v5e-16]

Creates the preset's full train state (params + AdamW moments + step + rng) on this machine's
first device, then times, each as the median of --repeats runs:
  digest   train/digest.py::manifest (every array's two digest words, fetched to the host)
  save     Checkpointer.save + wait into a temporary directory (synchronous; it includes digest)
and prints the state size, both times and digest / save. The digest reads each array once on
the device that holds it; a save also copies every array to the host and writes it. On a CPU,
XLA's integer reductions are scalar loops (a float32 sum of the same array is about 10x faster),
so the CPU figure is the worst case. With --tpu (and libtpu installed) it also compiles the
digest of the state, sharded as a real run on that slice shards it, for libtpu's abstract chips
and prints the TPU cost model's time per chip: an estimate, not a measurement.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))


def median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="base")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tpu", default="v5e-16", help="slice for the cost-model estimate "
                      "('' to skip)")
  args = parser.parse_args()

  import flax.linen as nn
  from train_helpers import config_from_file
  from unimo_jax.parallel import make_mesh, rules_from_config
  from unimo_jax.train import digest
  from unimo_jax.train.checkpoint import Checkpointer
  from unimo_jax.train.optimizer import make_optimizer
  from unimo_jax.train.state import create_state, state_shardings

  config = config_from_file("pretrain", args.preset)
  mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
  rules = rules_from_config(config.logical_axis_rules)
  tx = make_optimizer(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_shardings(config, tx, mesh, rules)
    state = jax.block_until_ready(create_state(config, tx, shardings))
  leaves = jax.tree.leaves(state)
  gib = sum(x.size * x.dtype.itemsize for x in leaves) / 2**30
  print(f"{args.preset} train state: {len(leaves)} arrays, {gib:.2f} GiB on "
        f"{jax.devices()[0].device_kind}", flush=True)

  start = time.perf_counter()
  digest.manifest(state)
  print(f"digest, first call (compiles): {time.perf_counter() - start:.2f} s", flush=True)
  digest_s = median_seconds(lambda: digest.manifest(state), args.repeats)

  with tempfile.TemporaryDirectory() as root:
    step = iter(range(1, 1000))

    def save():
      checkpoints = Checkpointer(pathlib.Path(root) / "ckpt", every=1, keep=1, use_async=False)
      checkpoints.save(next(step), state, {"position": 0}, force=True)
      checkpoints.close()

    save()  # warm-up: orbax and tensorstore set-up
    save_s = median_seconds(save, args.repeats)
  print(f"digest {digest_s:.3f} s ({gib / digest_s:.2f} GiB/s); save with digests {save_s:.3f} s; "
        f"digest / save = {digest_s / save_s:.1%}", flush=True)
  if args.tpu:
    tpu_estimate(config, args.tpu)


def tpu_estimate(config, slice_name):
  """The TPU cost model's seconds for the digest of the run's sharded state on `slice_name`."""
  from unimo_jax.compile import analysis, topology
  from unimo_jax.train import digest, driver
  try:
    slice_ = topology.parse_slice(slice_name)
    devices = topology.abstract_devices(slice_)
  except ValueError as e:
    print(f"no TPU estimate: {e}")
    return
  with tempfile.TemporaryDirectory() as workdir:
    run = driver.start(config, workdir, "compile", devices=devices, read_data=False,
                       verbose=False)
  structs = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
             for a, s in zip(jax.tree.leaves(run.abstract), jax.tree.leaves(run.shardings))]
  with run.context():
    compiled = digest._digests.lower(structs).compile()
  cost = analysis.cost(compiled)
  per_chip = sum(analysis.shard_bytes(x) for x in structs) / 2**30
  print(f"{slice_.name} (estimate, XLA's TPU cost model): digest of the sharded state "
        f"({per_chip:.3f} GiB per chip) {cost['estimated_seconds'] * 1e3:.2f} ms per chip")


if __name__ == "__main__":
  main()
