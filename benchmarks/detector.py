"""The region detector's speed: images/s on this CPU against the torch reference of the same
network in the same run, and the compile report for a TPU slice (fits, GiB per chip, and images/s
per chip from XLA's TPU cost model: an estimate, not a measurement).

  python benchmarks/detector.py [--images=3] [--skip-cpu] [--tpu=v5e-8 --per-chip-batch=4]

CPU: the full ResNet-101 detector (random weights in the converted layout, so the work is the
real one) on photo-sized images (480x640, 640x480, 375x500 -> the 600x800, 800x600 and 600x800
buckets), after one untimed compile / warm-up call per bucket. The reference is
tests/detector_reference.py: torch (oneDNN) for the network, numpy loops for RoIPool, NMS and the
selection; its network alone is timed too, since its Python loops are not what a torch user
would ship. TPU: `detect` jitted data-parallel over the slice's chips (the batch split over
chips, parameters replicated) and compiled by libtpu's compile-only client. The cost model counts
the body of each while loop (the two NMS loops) once, so its estimate is a lower bound on their
share; the report says how many loops the program has.
"""

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = ((480, 640), (640, 480), (375, 500))


def _photo_like(rng, height, width):
  import numpy as np
  coarse = rng.uniform(0, 255, (height // 16 + 2, width // 16 + 2, 3))
  ys = np.linspace(0, coarse.shape[0] - 1.01, height).astype(int)
  xs = np.linspace(0, coarse.shape[1] - 1.01, width).astype(int)
  return np.clip(coarse[ys][:, xs] + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(
      np.uint8)


def cpu_benchmark(count: int) -> None:
  import jax
  import numpy as np
  import torch
  from tests import detector_reference as ref
  from unimo_jax.convert.detector import params_from_state_dict, random_state_dict
  from unimo_jax.detector import preprocess
  from unimo_jax.detector.config import DetectorConfig
  from unimo_jax.detector.extractor import Extractor
  config = DetectorConfig()
  state = random_state_dict(config)
  params, _ = params_from_state_dict(state, config)
  rng = np.random.default_rng(0)
  images = [_photo_like(rng, *SIZES[i % len(SIZES)]) for i in range(count)]
  extractor = Extractor(config, params)
  start = time.perf_counter()
  extractor(images[:len(SIZES)])  # compile every bucket once
  print(f"compile + first pass: {time.perf_counter() - start:.1f} s", flush=True)
  start = time.perf_counter()
  extractor(images)
  ours = count / (time.perf_counter() - start)
  print(f"ours (jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores): "
        f"{ours:.3f} images/s", flush=True)
  torch.set_num_threads(os.cpu_count())
  prepared = [preprocess.prepare(image, config) for image in images]
  ref.detect(state, config, *prepared[0])  # warm-up
  start = time.perf_counter()
  for blob, scale in prepared:
    ref.detect(state, config, blob, scale)
  theirs = count / (time.perf_counter() - start)
  print(f"torch reference, whole ({torch.__version__}, {torch.get_num_threads()} threads): "
        f"{theirs:.3f} images/s -> ours / torch = {ours / theirs:.2f}x", flush=True)
  network = _torch_network_seconds(ref, state, config, prepared)
  print(f"torch reference, network only (C4 + RPN + res5 on its 300 regions, no RoIPool / NMS "
        f"loops): {count / network:.3f} images/s -> ours / torch network = "
        f"{ours / (count / network):.2f}x", flush=True)


def _torch_network_seconds(ref, state, config, prepared) -> float:
  """Seconds of the torch reference's convolutions alone: the trunk and RPN on each image and
  res5 on post_nms_top_n regions of 14 x 14 (the proposals' count)."""
  import numpy as np
  import torch
  total = 0.0
  channels = config.stage_widths(4)[1]
  with torch.no_grad():
    for blob, _ in prepared:
      x = torch.from_numpy(np.ascontiguousarray(blob.transpose(2, 0, 1)[None]))
      pooled = torch.randn(config.post_nms_top_n, channels, config.pooled_size, config.pooled_size)
      start = time.perf_counter()
      feature = ref.c4(state, x, config.blocks)
      ref.rpn(state, feature, config.num_anchors)
      ref.res5(state, pooled, config.blocks[3])
      total += time.perf_counter() - start
  return total


def tpu_report(topology_name: str, per_chip_batch: int, bucket) -> None:
  from unimo_jax.detector.compile_report import compile_for_slice
  from unimo_jax.detector.config import DetectorConfig
  r = compile_for_slice(DetectorConfig(), topology_name, per_chip_batch, bucket)
  memory, cost = r["memory"], r["cost"]
  print(f"{topology_name}: {r['images_per_step']} images of {bucket[0]}x{bucket[1]} per step "
        f"({per_chip_batch} per chip), compiled in {r['compile_seconds']:.0f} s")
  print(f"  memory per chip: {memory['total'] / 2**30:.2f} GiB of "
        f"{r['usable_hbm_bytes'] / 2**30:.1f} GiB usable (fits: {r['fits']})")
  print(f"  FLOPs per chip: {cost['flops'] / 1e12:.2f} T; estimated step "
        f"{cost['estimated_seconds'] * 1e3:.1f} ms -> {r['images_per_second_per_chip']:.1f} "
        f"images/s per chip (XLA TPU cost-model estimate; {int(cost['loops'])} while loops "
        "counted once)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=3)
  parser.add_argument("--skip-cpu", action="store_true")
  parser.add_argument("--tpu", default="", help="a slice to compile for, e.g. v5e-8")
  parser.add_argument("--per-chip-batch", type=int, default=4)
  parser.add_argument("--bucket", default="600x1000")
  args = parser.parse_args()
  if args.tpu:
    tpu_report(args.tpu, args.per_chip_batch, tuple(int(n) for n in args.bucket.split("x")))
    return
  from unimo_jax.compile.topology import skip_absent_tpu
  skip_absent_tpu()
  if not args.skip_cpu:
    cpu_benchmark(args.images)


if __name__ == "__main__":
  main()
