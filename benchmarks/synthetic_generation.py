"""Time to generate and write the synthetic-scenes dataset (default: 50k pairs + 1k held out).

  python benchmarks/synthetic_generation.py [--pairs 50000] [--runs 3]
"""

import argparse
import statistics
import tempfile
import time

from unimo_jax.data.synthetic.scene_dataset import write_synthetic


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=50_000)
  parser.add_argument("--runs", type=int, default=3)
  args = parser.parse_args()
  times = []
  for _ in range(args.runs):
    with tempfile.TemporaryDirectory() as tmp:
      start = time.perf_counter()
      metas = write_synthetic(tmp, pairs=args.pairs, log=lambda *_: None)
      times.append(time.perf_counter() - start)
  counts = {name: meta["num_records"] for name, meta in metas.items()}
  print(f"wrote {counts}")
  print(f"seconds per run: {', '.join(f'{t:.1f}' for t in times)}; median "
        f"{statistics.median(times):.1f} s = {args.pairs / statistics.median(times):.0f} pairs/s "
        f"(everything included: scenes, rendering, features, tokenizer, retrieval, shards)")


if __name__ == "__main__":
  main()
