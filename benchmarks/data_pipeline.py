"""Examples/s through the full data pipeline vs what a base-preset train step consumes.

  python benchmarks/data_pipeline.py [--records 1000] [--seconds 10]

Writes temporary shards in the real layout (text: 128-token documents; image: 100 x 2048 float16
regions with 1601-class soft labels; pair: the same image fields + a 40-token caption, paraphrase,
hard negatives and retrieved images), then reads each stream alone through
make_pretraining_iterator (decode, mask, pad, batch; in-process threads) and reports examples/s
(median of 3 timed windows). For comparison it times the base preset's forward+backward on one
batch of the same shape (from benchmarks/model_step.py) and prints pipeline rate / step rate.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

SPECIAL = {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 50264}
VOCAB, DIM, CLASSES, REGIONS = 50265, 2048, 1601, 100


def image_record(rng, i):
  xy = rng.uniform(0, 300, (REGIONS, 2))
  return {"image_id": str(i), "image_w": 640, "image_h": 480,
          "region_features": rng.random((REGIONS, DIM), np.float32).astype(np.float16),
          "boxes": np.concatenate([xy, xy + rng.uniform(10, 200, (REGIONS, 2))], 1).astype(
              np.float32),
          "class_probs": rng.dirichlet(np.ones(CLASSES) * 0.1, REGIONS).astype(np.float16)}


def write_data(root, records):
  from unimo_jax.data.formats.records import write_examples
  rng = np.random.default_rng(0)
  ids = lambda n: rng.integers(4, 50000, n).astype(np.int32)
  write_examples(root / "text", "text", ({"input_ids": ids(126)} for _ in range(records * 10)))
  meta = dict(region_feature_dim=DIM, num_classes=CLASSES, records_per_shard=500)
  write_examples(root / "image", "image", (image_record(rng, i) for i in range(records)), **meta)
  write_examples(root / "pair", "pair", (dict(
      image_record(rng, i), caption_ids=ids(38), paraphrase_ids=[ids(30)],
      hard_negative_ids=[ids(38), ids(36)], retrieved_images=np.array([i % records], np.int64))
      for i in range(records)), **meta)


def pipeline_rate(root, stream, batch, seconds):
  from unimo_jax.data.pipeline.examples import data_config
  from unimo_jax.data.pipeline.streams import make_pretraining_iterator
  cfg = data_config()
  cfg.text_dir, cfg.image_dir, cfg.pair_dir = (str(root / k) for k in ("text", "image", "pair"))
  cfg.max_text_length, cfg.max_caption_length, cfg.max_regions = 128, 40, REGIONS
  it = make_pretraining_iterator(cfg, {stream: batch}, SPECIAL, VOCAB, process_index=0,
                                 process_count=1)
  next(it)  # warm up threads and readers
  rates = []
  for _ in range(3):
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 3:
      next(it)
      n += batch
    rates.append(n / (time.perf_counter() - start))
  return statistics.median(rates)


def step_rate(stream, batch):
  """Examples/s of the base preset's forward+backward on one batch of this stream's shape."""
  from model_step import jax_step, time_steps
  from unimo_jax.model import model_config
  from unimo_jax.data.synthetic.random_batch import random_regions, random_text
  config = model_config("base")
  rng = np.random.default_rng(0)
  inputs = {
      "text": {"input_ids": random_text(config, rng, batch, 128)},
      "image": random_regions(config, rng, batch, REGIONS),
      "pair": dict(random_regions(config, rng, batch, REGIONS),
                   input_ids=random_text(config, rng, batch, 40)),
  }[stream]
  step, _ = jax_step(config, inputs)
  return batch / time_steps(step, 2, 3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--records", type=int, default=1000)
  parser.add_argument("--seconds", type=float, default=9.0)
  parser.add_argument("--batch", type=int, default=8)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    start = time.perf_counter()
    write_data(root, args.records)
    print(f"wrote {args.records * 10} text, {args.records} image and {args.records} pair records "
          f"in {time.perf_counter() - start:.1f} s")
    print(f"{'stream':<8}{'pipeline ex/s':>15}{'base step ex/s':>16}{'ratio':>8}")
    for stream in ("text", "image", "pair"):
      rate = pipeline_rate(root, stream, args.batch, args.seconds)
      consume = step_rate(stream, args.batch)
      print(f"{stream:<8}{rate:>15.1f}{consume:>16.2f}{rate / consume:>7.0f}x", flush=True)


if __name__ == "__main__":
  main()
