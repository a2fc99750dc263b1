"""Can one host's input pipeline feed the TPU step? Host batches/s against the estimated step rate.

  python benchmarks/input_vs_step.py [--presets pretrain:base,caption:base,...]
      [--workers 0,1,2] [--seconds 20] [--records 1000] [--threads 2] [--prefetch 2]

For every preset with a compile-report row (docs/tpu_sizing.md), this writes shards in the
preset's real layout (100 regions x 2048 float16 features, 1,601-class float16 soft labels,
128-token texts, 40-token captions with the CMCL extras; pixel mode: 640x480 JPEGs), builds one
host's training batches exactly as a run does (the pretraining streams, or the task's
train_example batches) with 0, 1 and 2 input worker processes, and reports host batches/s on
this machine. One worker process is one core of batch building: the per-core rate is the rate
with one worker (alone on a core while the training process receives on another), and from it
comes the number of host cores needed to feed the compile report's estimated step time three
times over (the estimates are XLA's TPU cost model, not measured). The host's share: the
slice's global batch divided by its hosts (v5e-16 and v5p-32: 4 hosts; v5e-8: 1 host).

1,000 records per dataset (5,000 texts) are reused across epochs (the pipeline's work per
record is the same); the first batch of each setting (worker start-up) is not timed.
"""

import argparse
import io
import math
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
# name: (config file, preset, slice, hosts, estimated step seconds from docs/tpu_sizing.md)
PRESETS = {
    "pretrain:base": ("pretrain", "base", "v5e-16", 4, 0.236),
    "pretrain:large": ("pretrain", "large", "v5p-32", 4, 0.367),
    # no compile row of its own: pixel mode on pretrain:base's slice and step time
    "pretrain:base-pixels": ("pretrain", "base", "v5e-16", 4, 0.236),
    "caption:base": ("caption", "base", "v5e-8", 1, 0.167),
    "retrieval:base": ("retrieval", "base", "v5e-8", 1, 0.152),
    "vqa:base": ("vqa", "base", "v5e-8", 1, 0.015),
    "snli_ve:base": ("snli_ve", "base", "v5e-8", 1, 0.254),
}


def load(name):
  from unimo_jax.train.config_parts import config_from_path
  file, preset, *_ = PRESETS[name]
  config = config_from_path(ROOT / "configs" / f"{file}.py", preset)
  if name.endswith("-pixels"):
    config.model.image_input = config.data.image_input = "pixels"
    config.batch.image = 0  # pixel mode has no region stream
  return config


def jpeg(rng, width=640, height=480):
  from PIL import Image
  pixels = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8)
  image = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)  # photo-like: smooth
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=90)
  return np.frombuffer(buffer.getvalue(), np.uint8)


def randomised(record, rng, pixels):
  """A placeholder record (the largest shapes the config allows) with random contents."""
  out = dict(record)
  if pixels:
    out.pop("pixels", None)
    out["image_bytes"] = jpeg(rng)
  elif "region_features" in out:
    n = len(out["region_features"])
    xy = rng.uniform(0, 300, (n, 2))
    out["region_features"] = rng.random(out["region_features"].shape, np.float32)
    out["boxes"] = np.concatenate([xy, xy + rng.uniform(10, 200, (n, 2))], 1).astype(np.float32)
    if "class_probs" in out:
      out["class_probs"] = rng.dirichlet(np.ones(out["class_probs"].shape[1]) * 0.1, n)
  for key in ("caption_ids", "input_ids", "tag_ids"):
    if key in out and len(out[key]):
      out[key] = rng.integers(4, 50000, len(out[key])).astype(np.int32)
  return out


def write_pretraining(root, config, records):
  from unimo_jax.data.formats.records import write_examples
  from unimo_jax.data.synthetic import placeholder_records as ph
  d, m = config.data, config.model
  rng = np.random.default_rng(0)
  pixels = d.image_input == "pixels"
  meta = dict(region_feature_dim=m.region_feature_dim, num_classes=m.num_region_classes)
  write_examples(root / "text", "text", (randomised(ph.text_record(d), rng, False)
                                         for _ in range(records * 5)))
  image = ph.image_record(d, m)
  write_examples(root / "image", "image",
                 (dict(randomised(image, rng, pixels), image_id=str(i)) for i in range(records)),
                 **meta)
  pair = ph.pair_record(d, m)
  write_examples(root / "pair", "pair", (dict(
      randomised(pair, rng, pixels), image_id=str(i),
      retrieved_images=np.array([(i * 7) % records], np.int64)) for i in range(records)), **meta)
  return {k: str(root / k) for k in ("text", "image", "pair")}


def write_task(root, task, records):
  from unimo_jax.data.formats.records import write_examples
  rng = np.random.default_rng(0)
  m = task.config.model
  placeholder = task.placeholder_record()
  write_examples(root / "train", "pair", (dict(randomised(placeholder, rng, False),
                                               image_id=str(i)) for i in range(records)),
                 region_feature_dim=m.region_feature_dim, num_classes=m.num_region_classes)
  return str(root / "train")


def tokenizer():
  """A byte-level stand-in with the base vocabulary's size and special ids (the pipeline only
  reads the ids and the size)."""
  class Base:
    vocab_size = 50265
    special_ids = {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 50264}
  return Base()


def iterator(name, config, root, records, workers, threads=2, prefetch=2):
  d = config.data
  d.workers, d.num_threads, d.prefetch = workers, threads, prefetch
  if name.startswith("pretrain"):
    from unimo_jax.data.pipeline.streams import make_pretraining_iterator
    dirs = write_pretraining(root, config, records) if not (root / "pair").exists() else {
        k: str(root / k) for k in ("text", "image", "pair")}
    _, _, _, hosts, _ = PRESETS[name]
    tok = tokenizer()
    # this host's share as a one-host run: the same per-host work, without splitting the
    # benchmark's few records over hosts (grain's shuffle costs more per index on tiny splits)
    return make_pretraining_iterator(
        d, {s: config.batch[s] // hosts for s in ("text", "image", "pair")}, tok.special_ids,
        tok.vocab_size, dirs=dirs, process_index=0, process_count=1,
        image_size=config.model.get("image_size"))
  from unimo_jax.tasks.registry import make_task
  task = make_task(config, root / "workdir", data_paths={"train": "", "tokenizer": ""},
                   tokenizer=tokenizer())
  train = root / "train"
  path = write_task(root, task, records) if not train.exists() else str(train)
  task = make_task(config, root / "workdir", data_paths={"train": path, "eval": path,
                                                         "tokenizer": ""}, tokenizer=tokenizer())
  return task.train_batches()


def rate(it, seconds):
  """Host batches/s after the first batch (start-up), at least 3 batches."""
  next(it)
  start, count = time.perf_counter(), 0
  while count < 3 or time.perf_counter() - start < seconds:
    next(it)
    count += 1
  return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default=",".join(PRESETS))
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--records", type=int, default=1000)
  parser.add_argument("--threads", type=int, default=2, help="data.num_threads")
  parser.add_argument("--prefetch", type=int, default=2, help="data.prefetch")
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(",")]
  print(f"host: {os.cpu_count()} cores; host batches/s with "
        f"{', '.join(f'{w} workers' for w in workers)}; step rates are XLA TPU cost-model "
        "estimates (docs/tpu_sizing.md)", flush=True)
  header = (f"{'preset':<22}{'slice':<8}{'host batch':<22}{'est. step/s':>12}"
            + "".join(f"{f'{w} workers':>11}" for w in workers)
            + f"{'per core':>10}{'x step':>8}{'cores for 3x':>14}")
  print(header, flush=True)
  for name in args.presets.split(","):
    config = load(name)
    _, _, slice_name, hosts, step = PRESETS[name]
    if name.startswith("pretrain"):
      shares = [f"{config.batch[s] // hosts} {s}" for s in ("text", "image", "pair")
                if config.batch[s]]
    else:
      shares = [f"{config.batch_size} examples"]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
      for w in workers:
        it = iterator(name, load(name), pathlib.Path(tmp), args.records, w, args.threads,
                      args.prefetch)
        try:
          rates[w] = rate(it, args.seconds)
        finally:
          getattr(it, "close", lambda: None)()  # (older pipelines had no close)
    # one worker alone on a core (the training process receiving on another); more workers than
    # spare cores share them with the training process, so their rate per worker is lower
    per_core = rates.get(1, rates[max(rates)] / max(1, max(rates)))
    best = max(rates.values())
    print(f"{name:<22}{slice_name:<8}{' + '.join(shares):<22}{1 / step:>12.2f}"
          + "".join(f"{rates[w]:>11.2f}" for w in workers)
          + f"{per_core:>10.2f}{best * step:>7.1f}x{math.ceil(3 / step / per_core):>14d}",
          flush=True)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # host-side work only
  sys.path.insert(0, str(ROOT))
  main()
