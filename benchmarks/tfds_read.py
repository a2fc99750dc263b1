"""Shards or tfds: the same region features prepared both ways, then read back.

  python benchmarks/tfds_read.py [--images 1000] [--boxes 50] [--dim 2048] [--workdir DIR]

Writes a bottom-up-attention TSV of --images images (--boxes regions of --dim float32 features
each, base64 as the detector writes them), then prepares it
  - as shards:   python -m unimo_jax.data bua-tsv   (ShardWriter: msgpack records, features
                 stored float16)
  - with tfds:   python -m unimo_jax.data tfds unimo_bottom_up/regions   (tf.train.Example
                 records in array_record through tfds, features stored float16)
and prints for each the preparation time, the size on disk, and the read time per record
through the records API the pipeline uses (ShardSource / TfdsSource), in random order (what a
shuffled grain pipeline does) and in order, with the ratio tfds / shards.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def write_tsv(path, images, boxes, dim, seed=0):
  import base64
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for i in range(images):
      xy = rng.uniform(0, 400, (boxes, 2))
      box = np.concatenate([xy, xy + rng.uniform(10, 200, (boxes, 2))], 1).astype(np.float32)
      feats = rng.gamma(1.0, 1.0, (boxes, dim)).astype(np.float32)  # ReLU-like, non-negative
      f.write("\t".join([str(i), "640", "480", str(boxes),
                         base64.b64encode(box.tobytes()).decode(),
                         base64.b64encode(feats.tobytes()).decode()]) + "\n")


def timed(command):
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "unimo_jax.data", *command], check=True, cwd=ROOT,
                 stdout=subprocess.DEVNULL)
  return time.perf_counter() - start


def size_of(path):
  return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


def read_ms(source, order):
  start = time.perf_counter()
  for i in order:
    source[int(i)]["region_features"].sum(dtype=np.float32)
  return (time.perf_counter() - start) / len(order) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--images", type=int, default=1000)
  parser.add_argument("--boxes", type=int, default=50)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--workdir")
  args = parser.parse_args()
  work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="tfds_read_"))
  manual = work / "manual"
  manual.mkdir(parents=True, exist_ok=True)
  write_tsv(manual / "features.tsv", args.images, args.boxes, args.dim)
  print(f"{args.images:,} images x {args.boxes} regions x {args.dim} features "
        f"(TSV {size_of(manual) / 2**20:,.0f} MiB) in {work}", flush=True)
  shards_s = timed(["bua-tsv", str(manual / "features.tsv"), "--out", str(work / "shards")])
  tfds_s = timed(["tfds", "unimo_bottom_up/regions", "--manual-dir", str(manual),
                  "--data-dir", str(work / "tfds")])

  from unimo_jax.data.pipeline.examples import data_config
  from unimo_jax.data.formats.tfds_source import open_records
  cfg = data_config()
  cfg.tfds_data_dir = str(work / "tfds")
  shards = open_records(str(work / "shards"), "image", cfg)
  tfds = open_records("tfds:unimo_bottom_up/regions@train", "image", cfg)
  assert len(shards) == len(tfds) == args.images
  np.testing.assert_array_equal(shards[7]["region_features"], tfds[7]["region_features"])
  random = np.random.default_rng(1).permutation(args.images)
  in_order = np.arange(args.images)
  rows = []
  for name, source, prep, path in (("shards", shards, shards_s, work / "shards"),
                                   ("tfds", tfds, tfds_s, work / "tfds")):
    read_ms(source, in_order[:50])  # warm the file cache
    rows.append((name, prep, size_of(path) / 2**20, read_ms(source, random),
                 read_ms(source, in_order)))
  print(f"{'':8}{'prepare s':>11}{'MiB':>9}{'random ms/rec':>15}{'in order ms/rec':>17}")
  for name, prep, mib, rand, seq in rows:
    print(f"{name:8}{prep:11.1f}{mib:9.0f}{rand:15.3f}{seq:17.3f}")
  (_, ps, ms, rs, ss), (_, pt, mt, rt, st) = rows
  print(f"tfds / shards: prepare x{pt / ps:.2f}, size x{mt / ms:.2f}, random read x{rt / rs:.2f}, "
        f"in-order read x{st / ss:.2f}")


if __name__ == "__main__":
  main()
